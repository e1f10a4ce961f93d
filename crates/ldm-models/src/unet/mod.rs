//! The diffusion UNet of latent diffusion (the ADM-derived openaimodel
//! `UNetModel`): timestep embedding, time-conditioned ResBlocks, spatial
//! transformers with cross-attention (or plain self-attention blocks),
//! optional class-label embedding (`adm`), zero-initialized output.
//!
//! Parameter paths are the reference's `model.diffusion_model.*` keys without
//! that prefix (`input_blocks.1.0.in_layers.0.weight`, `time_embed.2.bias`,
//! …), so a CompVis checkpoint loads by its prefix; burn stores `Linear`
//! weights as `[in, out]`, the transpose of PyTorch's, which the import path
//! has to account for.

pub mod attention_block;
pub mod config;
pub mod cross_attention;
pub mod resample;
pub mod resblock;
pub mod spatial_transformer;
pub mod timestep;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::resample::Upsample;
use crate::sequential::{run, Layer, Silu};
pub use attention_block::AttentionBlock;
pub use config::UNetConfig;
pub use resample::Downsample;
pub use resblock::ResBlock;
pub use spatial_transformer::SpatialTransformer;
pub use timestep::timestep_embedding;

use resblock::{conv3_init, unet_norm};

/// One layer of a UNet block (`TimestepEmbedSequential`): each gets the
/// embedding or the context only if it uses them.
#[derive(Module, Debug)]
pub enum UNetLayer<B: Backend> {
    /// The input convolution (`input_blocks.0.0`).
    Conv(burn::nn::conv::Conv2d<B>),
    /// Time-conditioned residual block.
    Res(ResBlock<B>),
    /// Spatial transformer (cross-attention to the context).
    Transformer(SpatialTransformer<B>),
    /// Plain self-attention.
    Attention(AttentionBlock<B>),
    /// Stride-2 downsampling.
    Down(Downsample<B>),
    /// Nearest ×2 upsampling + conv.
    Up(Upsample<B>),
}

impl<B: Backend> UNetLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 4>,
        emb: &Tensor<B, 2>,
        ctx: &Option<Tensor<B, 3>>,
    ) -> Tensor<B, 4> {
        match self {
            UNetLayer::Conv(c) => c.forward(x),
            UNetLayer::Res(r) => r.forward(x, emb.clone()),
            UNetLayer::Transformer(t) => t.forward(x, ctx.clone()),
            UNetLayer::Attention(a) => a.forward(x),
            UNetLayer::Down(d) => d.forward(x),
            UNetLayer::Up(u) => u.forward(x),
        }
    }
}

fn run_block<B: Backend>(
    block: &[UNetLayer<B>],
    x: Tensor<B, 4>,
    emb: &Tensor<B, 2>,
    ctx: &Option<Tensor<B, 3>>,
) -> Tensor<B, 4> {
    block.iter().fold(x, |h, l| l.forward(h, emb, ctx))
}

/// The UNet. Build it with [`UNet::new`] from a [`UNetConfig`].
#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    /// `[Linear(mc → 4mc), SiLU, Linear(4mc → 4mc)]` over the sinusoidal embedding.
    pub time_embed: Vec<Layer<B>>,
    /// Class-label embedding added to the time embedding (`num_classes`, the `adm` key).
    pub label_emb: Option<Embedding<B>>,
    /// The encoder half: input conv, then per level ResBlocks (+ attention) and a Downsample.
    pub input_blocks: Vec<Vec<UNetLayer<B>>>,
    /// Res → attention → Res at the lowest resolution.
    pub middle_block: Vec<UNetLayer<B>>,
    /// The decoder half, each block taking the matching skip by concatenation.
    pub output_blocks: Vec<Vec<UNetLayer<B>>>,
    /// `[GroupNorm, SiLU, zero conv3]` to the output channels.
    pub out: Vec<Layer<B>>,
    /// Width of the sinusoidal embedding (`model_channels`).
    pub model_channels: usize,
    /// Total downsampling factor, 2^(levels − 1): inputs must divide by it.
    pub factor: usize,
}

impl<B: Backend> UNet<B> {
    /// A freshly initialized UNet (`cfg` must have passed [`UNetConfig::validate`]).
    pub fn new(cfg: &UNetConfig, device: &B::Device) -> Self {
        let mc = cfg.model_channels;
        let emb_dim = 4 * mc;
        let res = |cin: usize, cout: usize| {
            UNetLayer::Res(ResBlock::new(
                cin,
                cout,
                emb_dim,
                cfg.dropout,
                cfg.use_scale_shift_norm,
                cfg.norm_groups,
                device,
            ))
        };
        let attn = |ch: usize| {
            let (heads, dim_head) = cfg.heads(ch);
            if cfg.use_spatial_transformer {
                UNetLayer::Transformer(SpatialTransformer::new(
                    ch,
                    cfg.norm_groups,
                    heads,
                    dim_head,
                    cfg.transformer_depth,
                    cfg.context_dim,
                    cfg.dropout,
                    device,
                ))
            } else {
                UNetLayer::Attention(AttentionBlock::new(ch, heads, cfg.norm_groups, device))
            }
        };
        let mut input_blocks = vec![vec![UNetLayer::Conv(conv3_init(
            cfg.in_channels,
            mc,
            false,
            device,
        ))]];
        let mut skips = vec![mc];
        let (mut ch, mut ds) = (mc, 1);
        let levels = cfg.channel_mult.len();
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let mut block = vec![res(ch, mult * mc)];
                ch = mult * mc;
                if cfg.attention_resolutions.contains(&ds) {
                    block.push(attn(ch));
                }
                input_blocks.push(block);
                skips.push(ch);
            }
            if level + 1 != levels {
                input_blocks.push(vec![UNetLayer::Down(Downsample::new(ch, device))]);
                skips.push(ch);
                ds *= 2;
            }
        }
        let middle_block = vec![res(ch, ch), attn(ch), res(ch, ch)];
        let mut output_blocks = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.num_res_blocks {
                let skip = skips.pop().expect("one skip per input block");
                let mut block = vec![res(ch + skip, mult * mc)];
                ch = mult * mc;
                if cfg.attention_resolutions.contains(&ds) {
                    block.push(attn(ch));
                }
                if level > 0 && i == cfg.num_res_blocks {
                    block.push(UNetLayer::Up(Upsample::new(ch, device)));
                    ds /= 2;
                }
                output_blocks.push(block);
            }
        }
        Self {
            time_embed: vec![
                Layer::Linear(LinearConfig::new(mc, emb_dim).init(device)),
                Layer::Silu(Silu),
                Layer::Linear(LinearConfig::new(emb_dim, emb_dim).init(device)),
            ],
            label_emb: cfg
                .num_classes
                .map(|n| EmbeddingConfig::new(n, emb_dim).init(device)),
            input_blocks,
            middle_block,
            output_blocks,
            out: vec![
                unet_norm(cfg.norm_groups, ch, device),
                Layer::Silu(Silu),
                Layer::Conv(conv3_init(mc, cfg.out_channels, true, device)),
            ],
            model_channels: mc,
            factor: 1 << (levels - 1),
        }
    }

    /// Predicts from the noisy input `x` `[B, C, H, W]` at `timesteps` (one
    /// per sample), with the cross-attention `context` `[B, S, context_dim]`
    /// and the class labels `y` `[B]` where the model has them. H and W must
    /// divide by [`UNet::factor`] (see [`UNet::check_size`]).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        timesteps: &[f64],
        context: Option<Tensor<B, 3>>,
        y: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 4> {
        let [b, _, _, _] = x.dims();
        assert_eq!(timesteps.len(), b, "one timestep per sample");
        let t = timestep_embedding::<B>(timesteps, self.model_channels, &x.device());
        let mut emb = run(&self.time_embed, t);
        if let (Some(table), Some(y)) = (&self.label_emb, y) {
            let e: Tensor<B, 3> = table.forward(y.reshape([b, 1]));
            emb = emb + e.reshape([b, self.time_embed_dim()]);
        }
        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x;
        for block in &self.input_blocks {
            h = run_block(block, h, &emb, &context);
            skips.push(h.clone());
        }
        h = run_block(&self.middle_block, h, &emb, &context);
        for block in &self.output_blocks {
            let skip = skips.pop().expect("one skip per output block");
            h = run_block(block, Tensor::cat(vec![h, skip], 1), &emb, &context);
        }
        run(&self.out, h)
    }

    /// Width of the time embedding (4 · `model_channels`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    /// Why a latent of `height × width` cannot go through this UNet, if it can't.
    pub fn check_size(&self, height: usize, width: usize) -> Result<(), String> {
        if height.is_multiple_of(self.factor) && width.is_multiple_of(self.factor) {
            Ok(())
        } else {
            Err(format!(
                "latent {height}×{width} does not divide by the UNet's downsampling factor {}",
                self.factor
            ))
        }
    }
}
