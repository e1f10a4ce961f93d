//! Group normalization written for speed on the CPU backend.
//!
//! burn-nn's `GroupNorm` applies four broadcast ops over the full activation,
//! and on Flex a broadcast binary op costs about ten times a same-shape one.
//! Here the group statistics are reduced once and folded into one per-channel
//! scale and shift, so the full-size tensor sees a square, two reductions, one
//! multiply and one add.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `GroupNorm(num_groups, channels, eps)` with affine weight and bias, keyed
/// `weight`/`bias` like PyTorch so checkpoints map onto reference names.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Per-channel scale γ, initialized to 1.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift β, initialized to 0.
    pub bias: Param<Tensor<B, 1>>,
    /// Number of channel groups sharing one mean and variance.
    pub num_groups: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// A fresh norm layer over `channels` (must divide by `num_groups`).
    pub fn new(num_groups: usize, channels: usize, eps: f64, device: &B::Device) -> Self {
        assert!(
            channels.is_multiple_of(num_groups),
            "GroupNorm: {channels} channels do not split into {num_groups} groups"
        );
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            num_groups,
            eps,
        }
    }

    /// Normalizes `x` of shape `[N, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let g = self.num_groups;
        let grouped = x.reshape([n, g, (c / g) * h * w]);
        // Two-pass variance: E[x²] − E[x]² in f32 loses the variance of
        // activations whose mean dwarfs their spread (large decoder features).
        let mean = grouped.clone().mean_dim(2);
        let centered = grouped - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(2); // [n, g, 1]
        let inv_std = (var + self.eps).sqrt().recip();
        // Fold 1/σ and γ into one per-channel scale: [n, g, 1] -> [n, c].
        let inv_std = inv_std.expand([n, g, c / g]).reshape([n, c]);
        let scale = inv_std * self.weight.val().unsqueeze_dim(0);
        let shift = self.bias.val().reshape([1, c, 1, 1]);
        centered.reshape([n, c, h, w]) * scale.reshape([n, c, 1, 1]) + shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    /// The textbook formula, kept here only as the reference for the fast one.
    fn naive(x: Tensor<Flex, 4>, groups: usize, eps: f64) -> Tensor<Flex, 4> {
        let [n, c, h, w] = x.dims();
        let xg = x.reshape([n, groups, (c / groups) * h * w]);
        let mean = xg.clone().mean_dim(2);
        let centered = xg - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(2);
        (centered / (var + eps).sqrt()).reshape([n, c, h, w])
    }

    #[test]
    fn matches_textbook_group_norm() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 8, 5, 3], Distribution::Normal(0.5, 2.0), &dev);
        let norm = GroupNorm::<Flex>::new(4, 8, 1e-6, &dev);
        norm.forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&naive(x, 4, 1e-6).into_data(), Tolerance::absolute(1e-4));
    }

    /// Activations with a mean 1000× their spread still normalize to unit variance.
    #[test]
    fn large_mean_small_spread() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 32, 8, 8], Distribution::Normal(100.0, 0.1), &dev);
        let y = GroupNorm::<Flex>::new(32, 32, 1e-6, &dev).forward(x);
        let var: f32 = y.powi_scalar(2).mean().into_scalar();
        assert!((var - 1.0).abs() < 1e-2, "variance {var}");
    }
}
