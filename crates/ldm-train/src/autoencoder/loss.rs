//! The terms of the autoencoder loss (ldm's `LPIPSWithDiscriminator` and
//! taming's `VQLPIPSWithDiscriminator`), with the reference reductions: the KL
//! model's NLL and KL summed per image then divided by the batch, the VQ
//! model's NLL a plain mean, GAN terms as means.

use burn::tensor::activation::{relu, softplus};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ldm_models::Lpips;

use crate::autoencoder::config::DiscLoss;

/// How the reconstruction loss is reduced (the two references differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// KL model: Σ over each image of (rec/e^logvar + logvar), divided by N.
    SumPerImage,
    /// VQ model: mean over all elements of rec; no log-variance.
    Mean,
}

/// Reconstruction terms of one batch.
pub struct NllTerms<B: Backend> {
    /// The reduced reconstruction loss (see [`Reduction`]), rec = |x − x̂| + w·LPIPS.
    pub nll: Tensor<B, 1>,
    /// Mean absolute error (for logging).
    pub l1: Tensor<B, 1>,
    /// Mean LPIPS distance (for logging; zero when LPIPS is off).
    pub lpips: Tensor<B, 1>,
}

/// The NLL of the reference: LPIPS is a per-image scalar broadcast over every
/// pixel and channel before the sum, so it weighs C·H·W times per image.
pub fn nll<B: Backend>(
    x: Tensor<B, 4>,
    recon: Tensor<B, 4>,
    lpips: Option<(&Lpips<B>, f64)>,
    logvar: Tensor<B, 1>,
    reduction: Reduction,
) -> NllTerms<B> {
    let [n, c, h, w] = x.dims();
    let abs = (x.clone() - recon.clone()).abs();
    let device = abs.device();
    let l1_sum = abs.sum();
    let (rec_sum, p_mean) = match lpips {
        Some((net, weight)) if weight > 0.0 => {
            let p = net.forward(x, recon); // [N]
            let p_sum = p.clone().sum();
            let rec = l1_sum.clone() + p_sum * (weight * (c * h * w) as f64);
            (rec, p.mean())
        }
        _ => (l1_sum.clone(), Tensor::zeros([1], &device)),
    };
    let numel = (n * c * h * w) as f64;
    let nll = match reduction {
        // Σ (rec/e^lv + lv) = Σrec·e^−lv + numel·lv, for a scalar logvar.
        Reduction::SumPerImage => (rec_sum * (-logvar.clone()).exp() + logvar * numel) / n as f64,
        Reduction::Mean => rec_sum / numel,
    };
    NllTerms {
        nll,
        l1: l1_sum / numel,
        lpips: p_mean,
    }
}

/// Discriminator loss on real and fake logits.
pub fn disc_loss<B: Backend>(
    kind: DiscLoss,
    real: Tensor<B, 4>,
    fake: Tensor<B, 4>,
) -> Tensor<B, 1> {
    match kind {
        DiscLoss::Hinge => (relu(-real + 1.0).mean() + relu(fake + 1.0).mean()) * 0.5,
        DiscLoss::Vanilla => (softplus(-real, 1.0).mean() + softplus(fake, 1.0).mean()) * 0.5,
    }
}

/// The GAN factor at `step`: zero before `start`, `factor` from then on.
pub fn adopt_weight(factor: f64, step: u64, start: u64) -> f64 {
    if step < start {
        0.0
    } else {
        factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn t4(v: Vec<f32>, s: [usize; 4]) -> Tensor<Flex, 4> {
        Tensor::from_data(TensorData::new(v, s), &Default::default())
    }

    #[test]
    fn nll_reduction_is_sum_per_image_over_batch() {
        // Two 1×1×2 images; |diff| = [1, 2 | 3, 4], logvar = ln 2.
        let x = t4(vec![0.0; 4], [2, 1, 1, 2]);
        let r = t4(vec![1.0, -2.0, 3.0, -4.0], [2, 1, 1, 2]);
        let lv = 2f32.ln();
        let logvar = || Tensor::from_floats([lv], &Default::default());
        let terms = nll(x.clone(), r.clone(), None, logvar(), Reduction::SumPerImage);
        // (Σ|d|/2 + 4·ln2)/2 = (10/2 + 4 ln 2)/2
        let expected = (10.0 / 2.0 + 4.0 * lv) / 2.0;
        assert!((terms.nll.into_scalar() - expected).abs() < 1e-5);
        assert!((terms.l1.into_scalar() - 2.5).abs() < 1e-6);
        // VQ: plain mean 10/4, logvar ignored.
        let vq = nll(x, r, None, logvar(), Reduction::Mean);
        assert!((vq.nll.into_scalar() - 2.5).abs() < 1e-6);
    }

    #[test]
    fn hinge_and_vanilla_values() {
        let real = t4(vec![2.0, 0.5], [1, 1, 1, 2]);
        let fake = t4(vec![-2.0, 0.0], [1, 1, 1, 2]);
        // hinge: real relu(1−[2, .5]) = [0, .5] → .25; fake relu(1+[−2, 0]) = [0, 1] → .5
        let h = disc_loss(DiscLoss::Hinge, real.clone(), fake.clone()).into_scalar();
        assert!((h - 0.375).abs() < 1e-6);
        let sp = |v: f32| (1.0 + v.exp()).ln();
        let expect = 0.5 * ((sp(-2.0) + sp(-0.5)) / 2.0 + (sp(-2.0) + sp(0.0)) / 2.0);
        let v = disc_loss(DiscLoss::Vanilla, real, fake).into_scalar();
        assert!((v - expect).abs() < 1e-6, "{v} vs {expect}");
    }

    #[test]
    fn gan_starts_at_disc_start() {
        assert_eq!(adopt_weight(1.0, 9, 10), 0.0);
        assert_eq!(adopt_weight(1.0, 10, 10), 1.0);
    }
}
