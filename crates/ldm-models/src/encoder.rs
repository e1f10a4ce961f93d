//! The convolutional encoder: image → `2·z_channels` moments (KL) map at 1/f size.

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
use crate::resample::Downsample;
use crate::resnet::{ae_norm, conv3, ResnetBlock};

/// One resolution level: residual blocks, optional attention after each, and
/// a downsample unless it is the last level.
#[derive(Module, Debug)]
pub struct EncoderLevel<B: Backend> {
    /// Residual blocks of this level.
    pub block: Vec<ResnetBlock<B>>,
    /// Attention after each block (empty when this resolution has none).
    pub attn: Vec<AttnBlock<B>>,
    /// Halving at the end of the level (absent on the last level).
    pub downsample: Option<Downsample<B>>,
}

/// The reference `Encoder` (with `double_z`: it outputs mean and log-variance).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Image → `ch` channels.
    pub conv_in: Conv2d<B>,
    /// Levels from full to lowest resolution.
    pub down: Vec<EncoderLevel<B>>,
    /// Bottleneck.
    pub mid: MidBlock<B>,
    /// Final normalization.
    pub norm_out: GroupNorm<B>,
    /// Features → latent moments.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    /// Builds the encoder; `out_channels` is 2·z for a Gaussian posterior.
    pub fn new(cfg: &AutoencoderConfig, out_channels: usize, device: &B::Device) -> Self {
        let mut curr_res = cfg.resolution;
        let mut block_in = cfg.ch;
        let levels = cfg.ch_mult.len();
        let mut down = Vec::with_capacity(levels);
        for (i, mult) in cfg.ch_mult.iter().enumerate() {
            let (block, attn) = build_blocks(
                cfg,
                block_in,
                cfg.ch * mult,
                cfg.num_res_blocks,
                curr_res,
                device,
            );
            block_in = cfg.ch * mult;
            let downsample = (i + 1 != levels).then(|| Downsample::new(block_in, device));
            if downsample.is_some() {
                curr_res /= 2;
            }
            down.push(EncoderLevel {
                block,
                attn,
                downsample,
            });
        }
        Self {
            conv_in: conv3(cfg.in_channels, cfg.ch, device),
            down,
            mid: MidBlock::new(
                block_in,
                cfg.norm_groups,
                cfg.dropout,
                cfg.attn_type == AttnType::Vanilla,
                device,
            ),
            norm_out: ae_norm(cfg.norm_groups, block_in, device),
            conv_out: conv3(block_in, out_channels, device),
        }
    }

    /// `[N, 3, H, W]` → `[N, out_channels, H/f, W/f]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(x);
        for level in &self.down {
            h = run_blocks(&level.block, &level.attn, h);
            if let Some(ds) = &level.downsample {
                h = ds.forward(h);
            }
        }
        let h = self.mid.forward(h);
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }
}
