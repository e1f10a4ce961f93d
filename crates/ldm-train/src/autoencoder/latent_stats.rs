//! Running per-channel statistics of the sampled latent, written with each
//! checkpoint so the diffusion stage can choose `scale_factor` (1/std).
//!
//! Per-batch channel means of z and z² are summed on the device and read
//! only when a checkpoint is written, so training never waits on them.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::shared::checkpoint::LatentStats;

/// Sums over batches of per-channel E[z] and E[z²].
#[derive(Clone, Debug)]
pub struct LatentAccumulator<B: Backend> {
    sums: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    batches: u64,
    elements: u64,
}

impl<B: Backend> Default for LatentAccumulator<B> {
    fn default() -> Self {
        Self {
            sums: None,
            batches: 0,
            elements: 0,
        }
    }
}

impl<B: Backend> LatentAccumulator<B> {
    /// Adds a latent batch `[N, C, h, w]` (all batches must share C).
    pub fn add(&mut self, z: Tensor<B, 4>) {
        let [n, c, h, w] = z.dims();
        let flat = z.swap_dims(0, 1).reshape([c, n * h * w]);
        let mean = flat.clone().mean_dim(1).reshape([c]);
        let mean_sq = flat.powi_scalar(2).mean_dim(1).reshape([c]);
        self.sums = Some(match self.sums.take() {
            Some((s, s2)) => (s + mean, s2 + mean_sq),
            None => (mean, mean_sq),
        });
        self.batches += 1;
        self.elements += (n * c * h * w) as u64;
    }

    /// Mean and std per channel and overall; None before any batch.
    pub fn stats(&self) -> Option<LatentStats> {
        let (s, s2) = self.sums.as_ref()?;
        let k = self.batches as f64;
        let mean: Vec<f64> = s.clone().into_data().iter::<f64>().map(|v| v / k).collect();
        let mean_sq: Vec<f64> = s2
            .clone()
            .into_data()
            .iter::<f64>()
            .map(|v| v / k)
            .collect();
        let std = mean
            .iter()
            .zip(&mean_sq)
            .map(|(m, m2)| (m2 - m * m).max(0.0).sqrt())
            .collect();
        let c = mean.len() as f64;
        let m_all = mean.iter().sum::<f64>() / c;
        let m2_all = mean_sq.iter().sum::<f64>() / c;
        Some(LatentStats {
            mean,
            std,
            std_all: (m2_all - m_all * m_all).max(0.0).sqrt(),
            count: self.elements,
        })
    }

    /// Starts a new window (after each checkpoint).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn per_channel_mean_and_std() {
        let dev = Default::default();
        let mut acc = LatentAccumulator::<Flex>::default();
        assert!(acc.stats().is_none());
        // Channel 0: values 1, 3 (mean 2, std 1); channel 1: all 5.
        let z = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![1.0f32, 3.0, 5.0, 5.0], [1, 2, 1, 2]),
            &dev,
        );
        acc.add(z.clone());
        acc.add(z);
        let s = acc.stats().unwrap();
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.std, vec![1.0, 0.0]);
        assert_eq!(s.count, 8);
    }
}
