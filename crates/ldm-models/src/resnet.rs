//! The autoencoder's residual block (taming/LDM `ResnetBlock`, no time embedding).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::norm::GroupNorm;

/// Epsilon of every GroupNorm in the autoencoder (the reference uses 1e-6, not PyTorch's 1e-5).
pub const AE_NORM_EPS: f64 = 1e-6;

/// GroupNorm as the autoencoder uses it (`groups` = 32 in the reference).
pub fn ae_norm<B: Backend>(groups: usize, channels: usize, device: &B::Device) -> GroupNorm<B> {
    GroupNorm::new(groups, channels, AE_NORM_EPS, device)
}

/// A 3×3 convolution with padding 1, the workhorse of both halves.
pub fn conv3<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A 1×1 convolution (shortcuts, attention projections, quant convs).
pub fn conv1<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [1, 1]).init(device)
}

/// GN → swish → conv3 → GN → swish → dropout → conv3, plus a 1×1 shortcut when
/// the channel count changes. Field names follow the reference checkpoint keys.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    /// First normalization.
    pub norm1: GroupNorm<B>,
    /// First convolution (in → out channels).
    pub conv1: Conv2d<B>,
    /// Second normalization.
    pub norm2: GroupNorm<B>,
    /// Dropout before the second convolution (0 in every released config).
    pub dropout: Dropout,
    /// Second convolution (out → out channels).
    pub conv2: Conv2d<B>,
    /// 1×1 projection of the input when in ≠ out (`nin_shortcut` in the reference).
    pub nin_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    /// A block mapping `cin` to `cout` channels, normalizing in `groups` groups.
    pub fn new(cin: usize, cout: usize, groups: usize, dropout: f64, device: &B::Device) -> Self {
        Self {
            norm1: ae_norm(groups, cin, device),
            conv1: conv3(cin, cout, device),
            norm2: ae_norm(groups, cout, device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: conv3(cout, cout, device),
            nin_shortcut: (cin != cout).then(|| conv1(cin, cout, device)),
        }
    }

    /// Applies the block to `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = silu(self.norm2.forward(h));
        let h = self.conv2.forward(self.dropout.forward(h));
        let skip = match &self.nin_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}
