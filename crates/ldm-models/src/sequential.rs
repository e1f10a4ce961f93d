//! A list of layers whose parameter paths are their positions, like PyTorch's
//! `nn.Sequential`.
//!
//! The UNet's reference keys number the layers of each sequential block,
//! parameterless ones included (`in_layers.0` is the norm, `in_layers.2` the
//! conv, with the SiLU at 1). A `Vec` of [`Layer`] reproduces exactly those
//! paths once enum variant names are left out of them (the weights code
//! collects and applies with `skip_enum_variants`), so a reference checkpoint
//! maps onto ours by its prefix alone.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, Linear};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::norm::GroupNorm;

/// The SiLU (swish) activation as a parameterless layer, so it can hold its
/// index in a [`Layer`] list.
#[derive(Module, Clone, Debug, Default)]
pub struct Silu;

/// One entry of a sequential block.
#[derive(Module, Debug)]
pub enum Layer<B: Backend> {
    /// Group normalization (`[N, C, H, W]` only).
    Norm(GroupNorm<B>),
    /// SiLU activation.
    Silu(Silu),
    /// 2-D convolution (`[N, C, H, W]` only).
    Conv(Conv2d<B>),
    /// Fully connected layer over the last dimension.
    Linear(Linear<B>),
    /// Dropout (identity at inference and when the probability is 0).
    Dropout(Dropout),
}

/// Reinterprets a `D`-dimensional tensor as 4-D; the layers that need
/// `[N, C, H, W]` only ever see image tensors, and a wrong rank is a bug.
fn as_4d<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 4> {
    assert_eq!(D, 4, "convolution and group norm take [N, C, H, W] tensors");
    Tensor::from_primitive(TensorPrimitive::Float(x.into_primitive().tensor()))
}

fn from_4d<B: Backend, const D: usize>(x: Tensor<B, 4>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x.into_primitive().tensor()))
}

impl<B: Backend> Layer<B> {
    /// Applies the layer.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Layer::Norm(n) => from_4d(n.forward(as_4d(x))),
            Layer::Silu(_) => silu(x),
            Layer::Conv(c) => from_4d(c.forward(as_4d(x))),
            Layer::Linear(l) => l.forward(x),
            Layer::Dropout(d) => d.forward(x),
        }
    }
}

/// Applies `layers` in order.
pub fn run<B: Backend, const D: usize>(layers: &[Layer<B>], x: Tensor<B, D>) -> Tensor<B, D> {
    layers.iter().fold(x, |h, l| l.forward(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::LinearConfig;
    use burn_store::ModuleSnapshot;

    #[derive(Module, Debug)]
    struct Block<B: Backend> {
        seq: Vec<Layer<B>>,
    }

    #[test]
    fn paths_are_positions_with_parameterless_layers_counted() {
        let dev = Default::default();
        let block = Block::<Flex> {
            seq: vec![
                Layer::Silu(Silu),
                Layer::Linear(LinearConfig::new(3, 4).init(&dev)),
            ],
        };
        let mut paths: Vec<String> = block
            .collect(None, None, true)
            .iter()
            .map(|s| s.full_path())
            .collect();
        paths.sort();
        assert_eq!(paths, ["seq.1.bias", "seq.1.weight"]);
        let y = run(&block.seq, Tensor::<Flex, 2>::zeros([2, 3], &dev));
        assert_eq!(y.dims(), [2, 4]);
    }
}
