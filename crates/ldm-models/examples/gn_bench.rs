//! Forward+backward timing of our GroupNorm against burn-nn's, and of the
//! ops around it, on the Flex CPU backend (medians of 5 after a warm-up).
//!
//! `cargo run --release -p ldm-models --example gn_bench`

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::{Distribution, Tensor};
use ldm_models::norm::GroupNorm;

type B = Autodiff<Flex>;

fn median_ms(name: &str, mut f: impl FnMut()) {
    f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    println!("{name:<32} {:8.2} ms", v[2]);
}

/// Runs `layer` forward and backward to the input.
fn fwd_bwd(x: &Tensor<B, 4>, layer: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>) {
    let x = x.clone().require_grad();
    let grads = layer(x.clone()).sum().backward();
    let _ = x.grad(&grads).expect("input grad").into_data();
}

fn main() {
    let dev = Default::default();
    let (n, c, h, w) = (8, 64, 32, 32);
    println!("shape [{n}, {c}, {h}, {w}], forward + backward");
    let x = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &dev);
    let ours = GroupNorm::<B>::new(32, c, 1e-6, &dev);
    let theirs = GroupNormConfig::new(32, c).init::<B>(&dev);
    let conv = Conv2dConfig::new([c, c], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init::<B>(&dev);
    median_ms("ldm-models GroupNorm", || fwd_bwd(&x, |t| ours.forward(t)));
    median_ms("burn-nn GroupNorm", || fwd_bwd(&x, |t| theirs.forward(t)));
    median_ms("conv3x3 64->64", || fwd_bwd(&x, |t| conv.forward(t)));
    median_ms("silu", || fwd_bwd(&x, silu));
}
