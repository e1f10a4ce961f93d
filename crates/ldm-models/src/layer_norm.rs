//! Layer normalization keyed like PyTorch's `nn.LayerNorm`.
//!
//! burn-nn's `LayerNorm` names its parameters `gamma`/`beta`; the text
//! encoders' checkpoints (x_transformer, BERT) say `weight`/`bias`, and with
//! this layer their keys are the reference's as they are. The arithmetic is
//! burn's own fused `layer_norm` op, so it is the same as burn-nn's.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

/// `(x − mean) / sqrt(var + eps) · weight + bias` over the last dimension
/// (biased variance, like PyTorch).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale `[dim]`, initialized to ones.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift `[dim]`, initialized to zeros.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance (PyTorch's default 1e-5; BERT uses 1e-12).
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// The identity-initialized norm over `dim` features.
    pub fn new(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([dim], device)),
            bias: Param::from_tensor(Tensor::zeros([dim], device)),
            eps,
        }
    }

    /// Normalizes `[…, dim]` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            self.weight.val().into_primitive().tensor(),
            Some(self.bias.val().into_primitive().tensor()),
            self.eps,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn normalizes_then_scales_and_shifts() {
        let dev = Default::default();
        let mut ln = LayerNorm::<Flex>::new(4, 1e-5, &dev);
        ln.weight = Param::from_data(TensorData::from([1.0f32, 2.0, 1.0, 1.0]), &dev);
        ln.bias = Param::from_data(TensorData::from([0.0f32, 0.0, 0.0, 1.0]), &dev);
        let x = Tensor::<Flex, 2>::from_data([[1.0f32, 2.0, 3.0, 4.0]], &dev);
        let y: Vec<f32> = ln.forward(x).into_data().to_vec().unwrap();
        // mean 2.5, biased variance 1.25.
        let s = (1.25f32 + 1e-5).sqrt();
        let want = [-1.5 / s, 2.0 * -0.5 / s, 0.5 / s, 1.5 / s + 1.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
