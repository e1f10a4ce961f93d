//! The spatial transformer of the LDM UNet (ldm `SpatialTransformer` and
//! `BasicTransformerBlock`), where the conditioning enters through
//! cross-attention.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{
    Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::norm::GroupNorm;
use crate::resnet::conv1;
use crate::unet::cross_attention::CrossAttention;

/// Epsilon of the transformer's input GroupNorm (ldm `Normalize`).
pub const TRANSFORMER_NORM_EPS: f64 = 1e-6;

/// GELU-gated linear unit: one projection to twice the width, then
/// `a · gelu(b)` of its halves.
#[derive(Module, Debug)]
pub struct Geglu<B: Backend> {
    /// dim → 2·inner.
    pub proj: Linear<B>,
}

/// The layers of the transformer's feed-forward (`ff.net`): GEGLU, dropout,
/// output projection. Its own enum keeps the reference indices `net.0.proj`
/// and `net.2`.
#[derive(Module, Debug)]
pub enum FfLayer<B: Backend> {
    /// `net.0`.
    Geglu(Geglu<B>),
    /// `net.1`.
    Dropout(Dropout),
    /// `net.2`.
    Linear(Linear<B>),
}

/// `FeedForward(dim, mult 4, glu)`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `[GEGLU(dim → 4·dim), Dropout, Linear(4·dim → dim)]`.
    pub net: Vec<FfLayer<B>>,
}

impl<B: Backend> FeedForward<B> {
    /// A GEGLU feed-forward with inner width `mult · dim`.
    pub fn new(dim: usize, mult: usize, dropout: f64, device: &B::Device) -> Self {
        let inner = dim * mult;
        Self {
            net: vec![
                FfLayer::Geglu(Geglu {
                    proj: LinearConfig::new(dim, 2 * inner).init(device),
                }),
                FfLayer::Dropout(DropoutConfig::new(dropout).init()),
                FfLayer::Linear(LinearConfig::new(inner, dim).init(device)),
            ],
        }
    }

    /// `[B, T, dim]` → `[B, T, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.iter().fold(x, |h, layer| match layer {
            FfLayer::Geglu(g) => {
                let [a, gate] = g
                    .proj
                    .forward(h)
                    .chunk(2, 2)
                    .try_into()
                    .expect("two halves");
                a * gelu(gate)
            }
            FfLayer::Dropout(d) => d.forward(h),
            FfLayer::Linear(l) => l.forward(h),
        })
    }
}

/// Pre-norm residual block: self-attention, cross-attention, feed-forward.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    /// Self-attention.
    pub attn1: CrossAttention<B>,
    /// GEGLU feed-forward.
    pub ff: FeedForward<B>,
    /// Cross-attention over the context (self-attention when there is none).
    pub attn2: CrossAttention<B>,
    /// Norm before `attn1`.
    pub norm1: LayerNorm<B>,
    /// Norm before `attn2`.
    pub norm2: LayerNorm<B>,
    /// Norm before `ff`.
    pub norm3: LayerNorm<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// A block over `dim`-wide tokens.
    pub fn new(
        dim: usize,
        heads: usize,
        dim_head: usize,
        context_dim: Option<usize>,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let ln = || LayerNormConfig::new(dim).init(device);
        Self {
            attn1: CrossAttention::new(dim, None, heads, dim_head, dropout, device),
            ff: FeedForward::new(dim, 4, dropout, device),
            attn2: CrossAttention::new(dim, context_dim, heads, dim_head, dropout, device),
            norm1: ln(),
            norm2: ln(),
            norm3: ln(),
        }
    }

    /// `x`: `[B, T, dim]`.
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self.attn2.forward(self.norm2.forward(x.clone()), context) + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// GN → 1×1 `proj_in` → tokens → `depth` transformer blocks → back to a map
/// → zero-init 1×1 `proj_out`, added to the input.
#[derive(Module, Debug)]
pub struct SpatialTransformer<B: Backend> {
    /// Input normalization (the UNet's groups, eps 1e-6).
    pub norm: GroupNorm<B>,
    /// channels → heads·d.
    pub proj_in: Conv2d<B>,
    /// The transformer blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// heads·d → channels, zero-initialized so a new block is the identity.
    pub proj_out: Conv2d<B>,
}

impl<B: Backend> SpatialTransformer<B> {
    /// A transformer over a `channels`-wide map, normalized in `groups` groups.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channels: usize,
        groups: usize,
        heads: usize,
        dim_head: usize,
        depth: usize,
        context_dim: Option<usize>,
        dropout: f64,
        device: &B::Device,
    ) -> Self {
        let inner = heads * dim_head;
        Self {
            norm: GroupNorm::new(groups, channels, TRANSFORMER_NORM_EPS, device),
            proj_in: conv1(channels, inner, device),
            transformer_blocks: (0..depth)
                .map(|_| {
                    BasicTransformerBlock::new(inner, heads, dim_head, context_dim, dropout, device)
                })
                .collect(),
            proj_out: Conv2dConfig::new([inner, channels], [1, 1])
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }

    /// `x`: `[B, C, H, W]`; `context`: `[B, S, context_dim]`.
    pub fn forward(&self, x: Tensor<B, 4>, context: Option<Tensor<B, 3>>) -> Tensor<B, 4> {
        let [b, _, h, w] = x.dims();
        let t = self.proj_in.forward(self.norm.forward(x.clone()));
        let inner = t.dims()[1];
        let mut tokens = t.reshape([b, inner, h * w]).swap_dims(1, 2);
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context.clone());
        }
        let t = tokens.swap_dims(1, 2).reshape([b, inner, h, w]);
        self.proj_out.forward(t) + x
    }
}
