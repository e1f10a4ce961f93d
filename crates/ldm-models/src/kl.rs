//! The diagonal-Gaussian posterior of `AutoencoderKL` and its KL term.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// q(z|x) = N(mean, exp(logvar)) per latent element.
#[derive(Clone, Debug)]
pub struct DiagonalGaussian<B: Backend> {
    /// Posterior mean, `[N, C, h, w]`.
    pub mean: Tensor<B, 4>,
    /// Log-variance, clamped to [−30, 20] like the reference to keep exp finite.
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> DiagonalGaussian<B> {
    /// Splits `moments` `[N, 2C, h, w]` into mean (first C) and log-variance.
    pub fn from_moments(moments: Tensor<B, 4>) -> Self {
        let [n, c2, h, w] = moments.dims();
        let c = c2 / 2;
        let mean = moments.clone().slice([0..n, 0..c, 0..h, 0..w]);
        let logvar = moments.slice([0..n, c..c2, 0..h, 0..w]).clamp(-30.0, 20.0);
        Self { mean, logvar }
    }

    /// Reparameterized sample `mean + std·noise`; `noise` ~ N(0, 1) comes from
    /// the caller so that runs are reproducible on every backend.
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + (self.logvar.clone() * 0.5).exp() * noise
    }

    /// The mode (= mean), used at evaluation.
    pub fn mode(&self) -> Tensor<B, 4> {
        self.mean.clone()
    }

    /// KL(q ‖ N(0, I)) summed over each image's latent: `[N]`.
    /// 0.5·Σ(μ² + σ² − 1 − log σ²).
    pub fn kl(&self) -> Tensor<B, 1> {
        let per_elem = self.mean.clone().powi_scalar(2) + self.logvar.clone().exp()
            - 1.0
            - self.logvar.clone();
        per_elem.sum_dim(1).sum_dim(2).sum_dim(3).flatten(0, 3) * 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn kl_matches_hand_computation() {
        let dev = Default::default();
        // One image, C = 1, 1×2 latent: μ = (1, 0), log σ² = (0, ln 4).
        let moments = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 0.0, 4f32.ln()], [1, 2, 1, 2]),
            &dev,
        );
        let post = DiagonalGaussian::from_moments(moments);
        // 0.5·[(1 + 1 − 1 − 0) + (0 + 4 − 1 − ln 4)] = 0.5·(4 − ln 4)
        let expected = 0.5 * (4.0 - 4f32.ln());
        let got = post.kl().into_scalar();
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn logvar_is_clamped() {
        let dev = Default::default();
        let moments =
            Tensor::<Flex, 4>::from_data(TensorData::new(vec![0.0f32, 100.0], [1, 2, 1, 1]), &dev);
        let post = DiagonalGaussian::from_moments(moments);
        assert_eq!(post.logvar.into_scalar(), 20.0);
    }
}
