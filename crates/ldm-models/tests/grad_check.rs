//! Autodiff gradients of the autoencoder against central finite differences
//! (f64 arithmetic is not available on every backend, so f32 with a smooth
//! loss and a relative tolerance of 2 %): input gradients through the whole
//! network, and weight gradients of a strided, asymmetrically padded conv
//! and of our GroupNorm.

use burn::backend::{Autodiff, Flex};
use burn::module::{Param, ParamId};
use burn::tensor::module::conv2d;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{Distribution, Tensor, TensorData};
use ldm_models::norm::GroupNorm;
use ldm_models::{Autoencoder, AutoencoderConfig};

type B = Autodiff<Flex>;

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn with(base: &[f32], i: usize, delta: f32, shape: [usize; 4]) -> Tensor<B, 4> {
    let mut v = base.to_vec();
    v[i] += delta;
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Compares ∂f/∂t[i] from autodiff with (f(t+h) − f(t−h)) / 2h at a few indices.
fn check(name: &str, t: Tensor<B, 4>, f: impl Fn(Tensor<B, 4>) -> Tensor<B, 1>) {
    let shape = t.dims();
    let base = values(t.clone());
    let leaf = t.require_grad();
    let grads = f(leaf.clone()).backward();
    let g: Vec<f32> = leaf.grad(&grads).unwrap().into_data().to_vec().unwrap();
    let h = 1e-2;
    let n = base.len();
    for i in [0, n / 3, n / 2, n - 1] {
        let up: f32 = f(with(&base, i, h, shape)).into_scalar();
        let down: f32 = f(with(&base, i, -h, shape)).into_scalar();
        let fd = (up - down) / (2.0 * h);
        let tol = 0.02 * fd.abs().max(g[i].abs()) + 1e-3;
        assert!(
            (fd - g[i]).abs() <= tol,
            "{name}[{i}]: autodiff {} vs finite difference {fd}",
            g[i]
        );
    }
}

#[test]
fn autoencoder_input_gradient() {
    let dev = Default::default();
    let cfg = AutoencoderConfig {
        attn_resolutions: vec![4],
        z_channels: 2,
        embed_dim: 2,
        norm_groups: 8,
        ..AutoencoderConfig::small(8)
    };
    let ae = Autoencoder::<B>::new(&cfg, &dev);
    let x = Tensor::<B, 4>::random([2, 3, 8, 8], Distribution::Uniform(-1.0, 1.0), &dev);
    check("ae input", x, |x| ae.reconstruct(x).powi_scalar(2).sum());
}

#[test]
fn strided_conv_weight_gradient() {
    let dev = Default::default();
    let x = Tensor::<B, 4>::random([2, 4, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<B, 4>::random([5, 4, 3, 3], Distribution::Normal(0.0, 0.3), &dev);
    let opts = || PaddedConvOptions::asymmetric([2, 2], [0, 0], [1, 1], [1, 1], 1);
    check("conv weight", w, |w| {
        conv2d(x.clone(), w, None, opts()).powi_scalar(2).sum()
    });
}

#[test]
fn group_norm_weight_gradient_through_a_square() {
    let dev = Default::default();
    let x = Tensor::<B, 4>::random([2, 8, 5, 5], Distribution::Normal(1.0, 2.0), &dev);
    let gamma = Tensor::<B, 4>::random([1, 8, 1, 1], Distribution::Normal(1.0, 0.3), &dev);
    check("group norm gamma", gamma, |g| {
        let mut gn = GroupNorm::<B>::new(4, 8, 1e-6, &dev);
        // `initialized` keeps the tracked (non-leaf) tensor as it is.
        gn.weight = Param::initialized(ParamId::new(), g.reshape([8]));
        gn.forward(x.clone()).powi_scalar(3).sum()
    });
    check("group norm input", x.clone(), |x| {
        GroupNorm::<B>::new(4, 8, 1e-6, &dev)
            .forward(x)
            .powi_scalar(3)
            .sum()
    });
}
