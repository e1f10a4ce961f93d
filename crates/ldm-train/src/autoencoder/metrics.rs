//! Reconstruction metrics per image: PSNR (RGB and luma), SSIM, and the
//! trivial downsample-then-upsample baseline they are compared against.
//!
//! Images are in [−1, 1] and are clamped and mapped to [0, 1] first, so the
//! numbers match the usual 8-bit-range definitions (peak = 1).

use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};

fn unit<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    (x.clamp(-1.0, 1.0) + 1.0) * 0.5
}

fn per_image<B: Backend>(t: Tensor<B, 4>) -> Vec<f64> {
    let n = t.dims()[0];
    t.reshape([n as i32, -1])
        .mean_dim(1)
        .into_data()
        .iter::<f64>()
        .collect()
}

/// PSNR in dB per image (peak 1 on the [0, 1] scale); ∞ for identical images.
pub fn psnr<B: Backend>(x: Tensor<B, 4>, y: Tensor<B, 4>) -> Vec<f64> {
    psnr_unit(unit(x), unit(y))
}

/// PSNR per image of tensors already on the [0, 1] scale (any channels).
fn psnr_unit<B: Backend>(x: Tensor<B, 4>, y: Tensor<B, 4>) -> Vec<f64> {
    let mse = per_image((x - y).powi_scalar(2));
    mse.into_iter().map(|m| -10.0 * m.log10()).collect()
}

/// ITU-R BT.601 luma weights of R, G, B: the Y of YCbCr on which the
/// super-resolution literature reports PSNR.
const BT601_LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// PSNR of the BT.601 luma channel only, in dB per image (peak 1).
///
/// Next to [`psnr`] this separates the two ways a reconstruction can fail:
/// structure and brightness (luma) versus colour. A small autoencoder early in
/// training typically matches the baseline's luma long before its colours.
pub fn psnr_luma<B: Backend>(x: Tensor<B, 4>, y: Tensor<B, 4>) -> Vec<f64> {
    let [_, c, _, _] = x.dims();
    assert_eq!(c, 3, "psnr_luma needs RGB images, got {c} channels");
    let weights = Tensor::<B, 1>::from_data(TensorData::new(BT601_LUMA.to_vec(), [3]), &x.device())
        .reshape([1, 3, 1, 1]);
    let luma = |t: Tensor<B, 4>| (unit(t) * weights.clone()).sum_dim(1);
    psnr_unit(luma(x), luma(y))
}

/// Gaussian window (11×11, σ = 1.5) as a depthwise conv weight for 3 channels.
fn gaussian_window<B: Backend>(channels: usize, size: usize, device: &B::Device) -> Tensor<B, 4> {
    let sigma = 1.5f64;
    let c = (size / 2) as f64;
    let g: Vec<f64> = (0..size)
        .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    let mut w = Vec::with_capacity(channels * size * size);
    for _ in 0..channels {
        for a in &g {
            for b in &g {
                w.push((a * b / (s * s)) as f32);
            }
        }
    }
    Tensor::from_data(TensorData::new(w, [channels, 1, size, size]), device)
}

/// SSIM (Wang et al. 2004: Gaussian 11×11, σ 1.5, K1 0.01, K2 0.03, valid
/// windows only), averaged over channels and positions, per image.
pub fn ssim<B: Backend>(x: Tensor<B, 4>, y: Tensor<B, 4>) -> Vec<f64> {
    let [_, c, h, w] = x.dims();
    let size = 11.min(h).min(w);
    let win = gaussian_window::<B>(c, size, &x.device());
    let opts = || ConvOptions::new([1, 1], [0, 0], [1, 1], c);
    let blur = |t: Tensor<B, 4>| conv2d(t, win.clone(), None, opts());
    let (x, y) = (unit(x), unit(y));
    let mx = blur(x.clone());
    let my = blur(y.clone());
    let sxx = blur(x.clone().powi_scalar(2)) - mx.clone().powi_scalar(2);
    let syy = blur(y.clone().powi_scalar(2)) - my.clone().powi_scalar(2);
    let sxy = blur(x * y) - mx.clone() * my.clone();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let num = (mx.clone() * my.clone() * 2.0 + c1) * (sxy * 2.0 + c2);
    let den = (mx.powi_scalar(2) + my.powi_scalar(2) + c1) * (sxx + syy + c2);
    per_image(num / den)
}

/// The trivial baseline at factor f: average-pool by f, then bilinear back.
/// An autoencoder at the same f must beat it to be worth its latent.
pub fn downsample_baseline<B: Backend>(x: Tensor<B, 4>, f: usize) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let small = avg_pool2d(x, [f, f], [f, f], [0, 0], true, false);
    interpolate(
        small,
        [h, w],
        InterpolateOptions::new(InterpolateMode::Bilinear),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn psnr_of_known_error() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::zeros([1, 3, 4, 4], &dev);
        // +0.2 in [−1, 1] is +0.1 in [0, 1]: MSE 0.01 → 20 dB.
        let y = x.clone() + 0.2;
        assert!((psnr(x, y)[0] - 20.0).abs() < 1e-4);
    }

    #[test]
    fn luma_psnr_ignores_luma_neutral_colour_shifts() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::zeros([2, 3, 4, 4], &dev);
        // A grey shift of +0.1 (unit scale) moves luma by 0.1 as well: 20 dB.
        let grey = x.clone() + 0.2;
        assert!((psnr_luma(x.clone(), grey)[0] - 20.0).abs() < 1e-3);
        // Red up and green down in the ratio of their luma weights leave luma
        // unchanged, so only the RGB PSNR sees the colour error.
        let shift = [0.2 * 0.587, -0.2 * 0.299, 0.0];
        let tint = Tensor::<Flex, 1>::from_floats(shift, &dev).reshape([1, 3, 1, 1]);
        let tinted = x.clone() + tint;
        assert!(psnr_luma(x.clone(), tinted.clone())[0] > 60.0);
        assert!(psnr(x, tinted)[0] < 30.0);
    }

    #[test]
    fn ssim_is_one_for_identical_and_drops_with_noise() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &dev);
        let same = ssim(x.clone(), x.clone());
        assert!(same.iter().all(|s| (s - 1.0).abs() < 1e-4), "{same:?}");
        let noisy =
            x.clone() + Tensor::random([2, 3, 32, 32], Distribution::Normal(0.0, 0.3), &dev);
        assert!(ssim(x, noisy).iter().all(|s| *s < 0.9));
    }

    #[test]
    fn baseline_keeps_constant_images() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::ones([1, 3, 16, 16], &dev) * 0.3;
        assert!(psnr(x.clone(), downsample_baseline(x, 4))[0] > 60.0);
    }
}
