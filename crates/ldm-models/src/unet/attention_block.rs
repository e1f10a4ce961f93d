//! The UNet's plain self-attention block (openaimodel `AttentionBlock` with
//! `QKVAttentionLegacy`), used where a config has no cross-attention
//! (`use_spatial_transformer = false`, e.g. the unconditional LDMs).

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::Initializer;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

use crate::norm::GroupNorm;
use crate::unet::resblock::UNET_NORM_EPS;

/// GN → one 1×1 `qkv` conv → per-head attention → zero-init 1×1 `proj_out`,
/// residual.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    /// GroupNorm(the UNet's groups, eps 1e-5).
    pub norm: GroupNorm<B>,
    /// channels → 3·channels, laid out head by head as `[q, k, v]` (the
    /// legacy order: `qkv.reshape(B·H, 3·ch, T).split(ch)`).
    pub qkv: Conv1d<B>,
    /// channels → channels, zero-initialized.
    pub proj_out: Conv1d<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> AttentionBlock<B> {
    /// Self-attention over a `channels`-wide map with `heads` heads,
    /// normalized in `groups` groups.
    pub fn new(channels: usize, heads: usize, groups: usize, device: &B::Device) -> Self {
        assert!(
            channels.is_multiple_of(heads),
            "AttentionBlock: {channels} channels do not split into {heads} heads"
        );
        Self {
            norm: GroupNorm::new(groups, channels, UNET_NORM_EPS, device),
            qkv: Conv1dConfig::new(channels, 3 * channels, 1).init(device),
            proj_out: Conv1dConfig::new(channels, channels, 1)
                .with_initializer(Initializer::Zeros)
                .init(device),
            heads,
        }
    }

    /// `[B, C, H, W]` → same shape.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let (heads, ch, t) = (self.heads, c / self.heads, h * w);
        let flat = x.clone().reshape([b, c, t]);
        let hn: Tensor<B, 3> = self
            .norm
            .forward(flat.reshape([b, c, h, w]))
            .reshape([b, c, t]);
        let qkv = self.qkv.forward(hn).reshape([b, heads, 3, ch, t]);
        // [B, H, 1, ch, T] → [B, H, T, ch] for the fused op.
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i, 1)
                .reshape([b, heads, ch, t])
                .swap_dims(2, 3)
        };
        // Scaling q and k each by ch^-¼ (the reference) = scaling q·kᵀ by ch^-½.
        let a = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        );
        let a = a.swap_dims(2, 3).reshape([b, c, t]);
        x + self.proj_out.forward(a).reshape([b, c, h, w])
    }
}
