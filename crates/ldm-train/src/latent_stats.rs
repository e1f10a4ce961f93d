//! Running per-channel statistics of the sampled latent, written with each
//! checkpoint so the diffusion stage can choose `scale_factor` (1/std).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::checkpoint::LatentStats;

/// Sums of z and z² per channel (f64 on the host).
#[derive(Clone, Debug, Default)]
pub struct LatentAccumulator {
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    count: u64,
}

impl LatentAccumulator {
    /// Adds a latent batch `[N, C, h, w]`.
    pub fn add<B: Backend>(&mut self, z: &Tensor<B, 4>) {
        let [n, c, h, w] = z.dims();
        let flat = z.clone().swap_dims(0, 1).reshape([c, n * h * w]);
        let s: Vec<f64> = flat.clone().sum_dim(1).into_data().iter::<f64>().collect();
        let s2: Vec<f64> = flat
            .powi_scalar(2)
            .sum_dim(1)
            .into_data()
            .iter::<f64>()
            .collect();
        if self.sum.len() != c {
            self.sum = vec![0.0; c];
            self.sum_sq = vec![0.0; c];
            self.count = 0;
        }
        for i in 0..c {
            self.sum[i] += s[i];
            self.sum_sq[i] += s2[i];
        }
        self.count += (n * h * w) as u64;
    }

    /// Mean and std per channel and overall; None before any batch.
    pub fn stats(&self) -> Option<LatentStats> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std = self
            .sum_sq
            .iter()
            .zip(&mean)
            .map(|(s2, m)| (s2 / n - m * m).max(0.0).sqrt())
            .collect();
        let c = self.sum.len() as f64;
        let m_all = self.sum.iter().sum::<f64>() / (n * c);
        let s2_all = self.sum_sq.iter().sum::<f64>() / (n * c);
        Some(LatentStats {
            mean,
            std,
            std_all: (s2_all - m_all * m_all).max(0.0).sqrt(),
            count: self.count * self.sum.len() as u64,
        })
    }

    /// Starts a new window (after each checkpoint).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}
