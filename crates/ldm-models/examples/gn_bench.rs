use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;
type B = Autodiff<Flex>;

fn time<F: FnMut()>(name: &str, mut f: F) {
    f();
    let mut v = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    println!("{name}: {:.2} ms", v[2]);
}

fn main() {
    let dev = Default::default();
    let (n, c, h, w) = (8, 64, 32, 32);
    let x0 = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &dev);
    let a0 = Tensor::<B, 4>::random([n, c, 1, 1], Distribution::Normal(0.0, 1.0), &dev);
    let full = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &dev);
    time("same-shape mul fwd+bwd", || {
        let x = x0.clone().require_grad();
        let y = x.clone() * full.clone();
        let g = y.sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
    });
    time("broadcast mul [n,c,1,1] fwd+bwd", || {
        let x = x0.clone().require_grad();
        let a = a0.clone().require_grad();
        let y = x.clone() * a.clone();
        let g = y.sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
        let _ = a.grad(&g).unwrap().into_data();
    });
    time("broadcast mul fwd only", || {
        let y = x0.clone().inner() * a0.clone().inner();
        let _ = y.into_data();
    });
    time("depthwise conv1x1 fwd+bwd", || {
        let x = x0.clone().require_grad();
        let a = a0.clone().require_grad();
        let xr = x.clone().reshape([1, n * c, h, w]);
        let y = conv2d(
            xr,
            a.clone().reshape([n * c, 1, 1, 1]),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], n * c),
        );
        let g = y.sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
        let _ = a.grad(&g).unwrap().into_data();
    });
    time("mean_dim(2) of [n,g,k] fwd+bwd", || {
        let x = x0.clone().require_grad();
        let m = x.clone().reshape([n, 32, c / 32 * h * w]).mean_dim(2);
        let g = m.sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
    });
    time("ldm GroupNorm fwd+bwd", || {
        let gn = ldm_models::norm::GroupNorm::<B>::new(32, c, 1e-6, &dev);
        let x = x0.clone().require_grad();
        let g = gn.forward(x.clone()).sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
    });
    time("burn-nn GroupNorm fwd+bwd", || {
        let gn = burn::nn::GroupNormConfig::new(32, c).init::<B>(&dev);
        let x = x0.clone().require_grad();
        let g = gn.forward(x.clone()).sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
    });
    time("conv3x3 64->64 fwd+bwd", || {
        let conv = burn::nn::conv::Conv2dConfig::new([c, c], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<B>(&dev);
        let x = x0.clone().require_grad();
        let g = conv.forward(x.clone()).sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
    });
    time("silu fwd+bwd", || {
        let x = x0.clone().require_grad();
        let g = burn::tensor::activation::silu(x.clone()).sum().backward();
        let _ = x.grad(&g).unwrap().into_data();
    });
}
