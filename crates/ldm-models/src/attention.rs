//! Single-head spatial self-attention of the autoencoder (`AttnBlock`).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

use crate::norm::GroupNorm;
use crate::resnet::{ae_norm, conv1};

/// GN → q, k, v (1×1 convs) → softmax(qkᵀ·c^-½)·v → 1×1 `proj_out`, residual.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    /// Normalization before the projections.
    pub norm: GroupNorm<B>,
    /// Query projection.
    pub q: Conv2d<B>,
    /// Key projection.
    pub k: Conv2d<B>,
    /// Value projection.
    pub v: Conv2d<B>,
    /// Output projection.
    pub proj_out: Conv2d<B>,
}

impl<B: Backend> AttnBlock<B> {
    /// Attention over `channels`-wide feature maps.
    pub fn new(channels: usize, groups: usize, device: &B::Device) -> Self {
        Self {
            norm: ae_norm(groups, channels, device),
            q: conv1(channels, channels, device),
            k: conv1(channels, channels, device),
            v: conv1(channels, channels, device),
            proj_out: conv1(channels, channels, device),
        }
    }

    /// Applies attention to `[N, C, H, W]`; every pixel attends to every pixel.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let hn = self.norm.forward(x.clone());
        // [N, C, H, W] -> [N, 1 head, HW, C]: the fused op wants heads explicit.
        let tokens = |t: Tensor<B, 4>| t.reshape([n, c, h * w]).swap_dims(1, 2).unsqueeze_dim(1);
        let q = tokens(self.q.forward(hn.clone()));
        let k = tokens(self.k.forward(hn.clone()));
        let v = tokens(self.v.forward(hn));
        // Default scale is head_dim^-½ = c^-½, as in the reference.
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let out: Tensor<B, 4> = out
            .squeeze_dim::<3>(1)
            .swap_dims(1, 2)
            .reshape([n, c, h, w]);
        x + self.proj_out.forward(out)
    }
}
