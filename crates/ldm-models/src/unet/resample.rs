//! The UNet's downsampling layer (openaimodel `Downsample`); its upsampling
//! is the autoencoder's [`crate::resample::Upsample`] (nearest ×2, conv3,
//! key `conv`), which is the same layer.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Stride-2 3×3 conv with symmetric padding 1, key `op` — unlike the
/// autoencoder's bottom-right-padded one, so the two are separate layers.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// The strided convolution.
    pub op: Conv2d<B>,
}

impl<B: Backend> Downsample<B> {
    /// Halves the resolution of a `channels`-wide map (odd sizes round up).
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            op: Conv2dConfig::new([channels, channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        }
    }

    /// `[N, C, H, W]` → `[N, C, ⌈H/2⌉, ⌈W/2⌉]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.op.forward(x)
    }
}
