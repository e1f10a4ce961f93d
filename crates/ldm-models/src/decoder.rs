//! The convolutional decoder: latent → image, mirroring the encoder without skips.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::attention::AttnBlock;
use crate::blocks::{build_blocks, run_blocks, MidBlock};
use crate::config::AttnType;
use crate::config::AutoencoderConfig;
use crate::norm::GroupNorm;
use crate::resample::Upsample;
use crate::resnet::{ae_norm, conv3, ResnetBlock};

/// One resolution level of the decoder.
#[derive(Module, Debug)]
pub struct DecoderLevel<B: Backend> {
    /// `num_res_blocks + 1` residual blocks.
    pub block: Vec<ResnetBlock<B>>,
    /// Attention after each block where the resolution asks for it.
    pub attn: Vec<AttnBlock<B>>,
    /// Doubling at the end of the level (absent on level 0, the full resolution).
    pub upsample: Option<Upsample<B>>,
}

/// The reference `Decoder`. `up[0]` is the full-resolution level, as in the
/// reference checkpoints, although it runs last.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Latent → widest channels.
    pub conv_in: Conv2d<B>,
    /// Bottleneck.
    pub mid: MidBlock<B>,
    /// Levels indexed by resolution (0 = full), run from the last to the first.
    pub up: Vec<DecoderLevel<B>>,
    /// Final normalization.
    pub norm_out: GroupNorm<B>,
    /// Features → image; its weight is the "last layer" of the adaptive GAN weight.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    /// Builds the decoder for `cfg`.
    pub fn new(cfg: &AutoencoderConfig, device: &B::Device) -> Self {
        let levels = cfg.ch_mult.len();
        let mut block_in = cfg.ch * cfg.ch_mult[levels - 1];
        let mut curr_res = cfg.resolution / cfg.downsampling();
        let conv_in = conv3(cfg.z_channels, block_in, device);
        let mid = MidBlock::new(
            block_in,
            cfg.norm_groups,
            cfg.dropout,
            cfg.attn_type == AttnType::Vanilla,
            device,
        );
        let mut up = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let block_out = cfg.ch * cfg.ch_mult[i];
            let blocks = cfg.num_res_blocks + 1;
            let (block, attn) = build_blocks(cfg, block_in, block_out, blocks, curr_res, device);
            block_in = block_out;
            let upsample = (i != 0).then(|| Upsample::new(block_in, device));
            if upsample.is_some() {
                curr_res *= 2;
            }
            up.push(DecoderLevel {
                block,
                attn,
                upsample,
            });
        }
        up.reverse();
        Self {
            conv_in,
            mid,
            up,
            norm_out: ae_norm(cfg.norm_groups, block_in, device),
            conv_out: conv3(block_in, cfg.out_ch, device),
        }
    }

    /// Everything up to (not including) `conv_out`: the adaptive GAN weight
    /// re-runs only that last conv on this detached output.
    pub fn forward_features(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid.forward(self.conv_in.forward(z));
        for level in self.up.iter().rev() {
            h = run_blocks(&level.block, &level.attn, h);
            if let Some(us) = &level.upsample {
                h = us.forward(h);
            }
        }
        silu(self.norm_out.forward(h))
    }

    /// `[N, z, h, w]` → `[N, 3, h·f, w·f]`.
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv_out.forward(self.forward_features(z))
    }
}
