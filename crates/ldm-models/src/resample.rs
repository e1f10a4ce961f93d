//! Down- and upsampling layers of the autoencoder.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use crate::resnet::conv3;

/// Stride-2 3×3 conv after padding only bottom and right by one, as the
/// reference does (`pad (0,1,0,1)`): symmetric padding would shift the grid
/// by half a pixel and break weight compatibility.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// The strided convolution.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample<B> {
    /// Halves the resolution of a `channels`-wide map.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        let conv = Conv2dConfig::new([channels, channels], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(device);
        Self { conv }
    }

    /// `[N, C, H, W]` -> `[N, C, H/2, W/2]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

/// Nearest ×2 upsampling followed by a 3×3 conv (no transposed conv: its
/// gradients are slow in burn and it creates checkerboard artifacts).
#[derive(Module, Debug)]
pub struct Upsample<B: Backend> {
    /// The convolution after upsampling.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample<B> {
    /// Doubles the resolution of a `channels`-wide map.
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv3(channels, channels, device),
        }
    }

    /// `[N, C, H, W]` -> `[N, C, 2H, 2W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let up = interpolate(
            x,
            [2 * h, 2 * w],
            InterpolateOptions::new(InterpolateMode::Nearest),
        );
        self.conv.forward(up)
    }
}
