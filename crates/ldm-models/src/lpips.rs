//! LPIPS v0.1 (VGG16 variant): the perceptual distance of the autoencoder loss.
//!
//! Weights come from `scripts/setup.sh`, which converts the real ImageNet VGG16
//! and the published linear heads to safetensors (`vgg.conv{k}.*`, `lin{k}.weight`).
//! The network is frozen and has no dropout or batch norm, so there is no
//! train/eval distinction to get wrong (the reference re-enables its dropout
//! by accident; we do not reproduce that).

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use crate::resnet::conv3;
use crate::tensor_bytes::f32_values;

/// Output channels of VGG16's 13 convs; `MaxPool` falls after conv 1, 3, 6, 9.
const VGG_CHANNELS: [usize; 13] = [
    64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
];
/// Index of the conv whose ReLU output is an LPIPS tap (relu1_2 … relu5_3).
const TAPS: [usize; 5] = [1, 3, 6, 9, 12];
/// Input normalization of LPIPS' `ScalingLayer`, for inputs in [−1, 1].
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// Frozen VGG16 features plus the five learned 1×1 heads.
#[derive(Module, Debug)]
pub struct Lpips<B: Backend> {
    /// The 13 3×3 convolutions of VGG16 `features`.
    pub vgg: Vec<Conv2d<B>>,
    /// Non-negative channel weights `[1, C, 1, 1]` per tap.
    pub lin: Vec<Param<Tensor<B, 4>>>,
}

/// Why LPIPS weights could not be loaded.
#[derive(Debug)]
pub struct LpipsLoadError(pub String);

impl std::fmt::Display for LpipsLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LpipsLoadError {}

impl<B: Backend> Lpips<B> {
    /// Random weights with the right shapes (tests and benchmarks only).
    pub fn random(device: &B::Device) -> Self {
        let mut cin = 3;
        let vgg = VGG_CHANNELS
            .iter()
            .map(|&c| {
                let conv = conv3(cin, c, device);
                cin = c;
                conv
            })
            .collect();
        let lin = TAPS
            .iter()
            .map(|&t| Param::from_tensor(Tensor::ones([1, VGG_CHANNELS[t], 1, 1], device)))
            .collect();
        Self { vgg, lin }.no_grad()
    }

    /// Loads the converted weights and freezes them. Every expected key must
    /// be present with the right shape; the error names the file and the key.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self, LpipsLoadError> {
        let err = |why: String| LpipsLoadError(format!("{}: {why}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| err(format!("not a safetensors file ({e})")))?;
        let fetch = |key: &str, shape: Vec<usize>| -> Result<TensorData, LpipsLoadError> {
            let view = st
                .tensor(key)
                .map_err(|_| err(format!("missing key `{key}`")))?;
            if view.shape() != shape.as_slice() || view.dtype() != safetensors::Dtype::F32 {
                return Err(err(format!(
                    "key `{key}` is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            Ok(TensorData::new(f32_values(view.data()), shape))
        };
        let mut model = Self::random(device);
        let mut cin = 3;
        for (k, conv) in model.vgg.iter_mut().enumerate() {
            let c = VGG_CHANNELS[k];
            let w = fetch(&format!("vgg.conv{k}.weight"), vec![c, cin, 3, 3])?;
            let b = fetch(&format!("vgg.conv{k}.bias"), vec![c])?;
            conv.weight = Param::from_data(w, device);
            conv.bias = Some(Param::from_data(b, device));
            cin = c;
        }
        for (k, lin) in model.lin.iter_mut().enumerate() {
            let c = VGG_CHANNELS[TAPS[k]];
            *lin = Param::from_data(fetch(&format!("lin{k}.weight"), vec![1, c, 1, 1])?, device);
        }
        Ok(model.no_grad())
    }

    /// The five tap activations of VGG16 for inputs already scaled.
    fn features(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let mut taps = Vec::with_capacity(TAPS.len());
        let mut h = x;
        for (k, conv) in self.vgg.iter().enumerate() {
            if k > 0 && TAPS.contains(&(k - 1)) {
                h = max_pool2d(h, [2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            h = relu(conv.forward(h));
            if TAPS.contains(&k) {
                taps.push(h.clone());
            }
        }
        taps
    }

    fn scale_input(x: Tensor<B, 4>) -> Tensor<B, 4> {
        let dev = x.device();
        let shift = Tensor::<B, 1>::from_floats(SHIFT, &dev).reshape([1, 3, 1, 1]);
        let scale = Tensor::<B, 1>::from_floats(SCALE, &dev).reshape([1, 3, 1, 1]);
        (x - shift) / scale
    }

    /// Per-image, per-tap distances `[N, 5]` between `x` and `y` in [−1, 1].
    pub fn forward_per_tap(&self, x: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        // One VGG pass over the stacked pair halves the number of kernel launches.
        let both = Self::scale_input(Tensor::cat(vec![x, y], 0));
        let per_tap: Vec<Tensor<B, 2>> = self
            .features(both)
            .into_iter()
            .zip(&self.lin)
            .map(|(f, lin)| {
                let [n2, c, h, w] = f.dims();
                let norm = f.clone().powi_scalar(2).sum_dim(1).sqrt() + 1e-10;
                let f = f / norm;
                let fx = f.clone().slice([0..n, 0..c, 0..h, 0..w]);
                let fy = f.slice([n..n2, 0..c, 0..h, 0..w]);
                let d = (fx - fy).powi_scalar(2);
                let weighted = conv2d(
                    d,
                    lin.val(),
                    None,
                    ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                );
                weighted.mean_dim(2).mean_dim(3).reshape([n, 1])
            })
            .collect();
        Tensor::cat(per_tap, 1)
    }

    /// LPIPS distance per image `[N]`.
    pub fn forward(&self, x: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
        self.forward_per_tap(x, y).sum_dim(1).flatten(0, 1)
    }
}
