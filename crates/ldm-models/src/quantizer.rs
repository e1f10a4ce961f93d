//! Vector quantizer of the VQ autoencoder (taming's `VectorQuantizer`), with
//! two optional extras beyond the reference: EMA codebook updates and the
//! re-seeding of dead codes.
//!
//! The codebook is keyed `embedding.weight` `[n_embed, embed_dim]` as in the
//! reference, so `quantize.embedding.weight` maps straight onto a taming or
//! LDM checkpoint.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// Hyper-parameters of the quantizer.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizerConfig {
    /// Codebook size.
    pub n_embed: usize,
    /// Code vector width (`embed_dim`).
    pub embed_dim: usize,
    /// Weight β of the second loss term (see [`VectorQuantizer::forward`]).
    pub beta: f64,
    /// Reference (taming `legacy=True`) placement of β: on the codebook term.
    pub legacy: bool,
    /// EMA decay of the codebook statistics; `None` learns codes by gradient.
    pub ema_decay: Option<f64>,
}

/// The quantizer's output for one batch.
pub struct Quantized<B: Backend> {
    /// Quantized latent with straight-through gradient to the encoder:
    /// z + sg(z_q − z).
    pub z_q: Tensor<B, 4>,
    /// Codebook + commitment loss (means over all latent elements).
    pub loss: Tensor<B, 1>,
    /// Code index of every latent vector, in `[N, h, w]` row-major order.
    pub indices: Tensor<B, 1, Int>,
    /// The encoder output as rows `[N·h·w, embed_dim]`, detached (for EMA
    /// updates and dead-code restarts).
    pub z_rows: Tensor<B, 2>,
}

/// Nearest-neighbour vector quantizer with a learned (or EMA) codebook.
#[derive(Module, Debug)]
pub struct VectorQuantizer<B: Backend> {
    /// Codebook `[n_embed, embed_dim]`, initialized uniform(±1/n_embed).
    pub embedding: Embedding<B>,
    /// EMA mode: running count of vectors assigned to each code.
    pub ema_cluster_size: Option<Param<Tensor<B, 1>>>,
    /// EMA mode: running sum of vectors assigned to each code.
    pub ema_embed_sum: Option<Param<Tensor<B, 2>>>,
    /// Weight β.
    pub beta: f64,
    /// β on the codebook term (reference) rather than the commitment term.
    pub legacy: bool,
    /// EMA decay (0 = gradient-learned codebook).
    pub ema_decay: f64,
}

/// Laplace smoothing of EMA cluster sizes, so a rare code never divides by 0.
const EMA_EPS: f64 = 1e-5;

impl<B: Backend> VectorQuantizer<B> {
    /// A fresh quantizer. In EMA mode the codebook takes no gradient, and the
    /// statistics start as if each code had seen one vector equal to itself
    /// (taming starts the counts at zero, which blows unused codes up by
    /// 1/ε on the first update).
    pub fn new(cfg: &QuantizerConfig, device: &B::Device) -> Self {
        let bound = 1.0 / cfg.n_embed as f64;
        let mut embedding = EmbeddingConfig::new(cfg.n_embed, cfg.embed_dim)
            .with_initializer(Initializer::Uniform {
                min: -bound,
                max: bound,
            })
            .init(device);
        let (cluster, sum) = match cfg.ema_decay {
            Some(_) => {
                let w = embedding.weight.val().detach();
                embedding.weight = Param::from_tensor(w.clone()).set_require_grad(false);
                (
                    Some(
                        Param::from_tensor(Tensor::ones([cfg.n_embed], device))
                            .set_require_grad(false),
                    ),
                    Some(Param::from_tensor(w).set_require_grad(false)),
                )
            }
            None => (None, None),
        };
        Self {
            embedding,
            ema_cluster_size: cluster,
            ema_embed_sum: sum,
            beta: cfg.beta,
            legacy: cfg.legacy,
            ema_decay: cfg.ema_decay.unwrap_or(0.0),
        }
    }

    /// Codebook size.
    pub fn n_embed(&self) -> usize {
        self.embedding.weight.dims()[0]
    }

    /// Index of the nearest code (Euclidean) for each row of `rows`.
    pub fn nearest(&self, rows: Tensor<B, 2>) -> Tensor<B, 1, Int> {
        let e = self.embedding.weight.val().detach();
        let k = e.dims()[0];
        let m = rows.dims()[0];
        // ‖z‖² is the same for every code of a row, so argmin needs only
        // ‖e‖² − 2 z·e.
        let e2 = e.clone().powi_scalar(2).sum_dim(1).reshape([1, k]);
        let dist = e2 - rows.matmul(e.transpose()) * 2.0;
        dist.argmin(1).reshape([m])
    }

    /// Quantizes `z` `[N, embed_dim, h, w]`.
    ///
    /// Loss, with sg = stop-gradient and means over all elements:
    /// legacy (reference) `mean((sg[z_q] − z)²) + β·mean((z_q − sg[z])²)`;
    /// otherwise `β·mean((sg[z_q] − z)²) + mean((z_q − sg[z])²)`; in EMA mode
    /// only the commitment term `β·mean((sg[z_q] − z)²)` (codes move by EMA).
    pub fn forward(&self, z: Tensor<B, 4>) -> Quantized<B> {
        let [n, c, h, w] = z.dims();
        let rows = z.clone().permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        let z_rows = rows.detach();
        let indices = self.nearest(z_rows.clone());
        let codes = self.embedding.weight.val().select(0, indices.clone());
        let z_q = codes.reshape([n, h, w, c]).permute([0, 3, 1, 2]);
        let commit = (z_q.clone().detach() - z.clone()).powi_scalar(2).mean();
        let loss = if self.ema_cluster_size.is_some() {
            commit * self.beta
        } else {
            let codebook = (z_q.clone() - z.clone().detach()).powi_scalar(2).mean();
            if self.legacy {
                commit + codebook * self.beta
            } else {
                commit * self.beta + codebook
            }
        };
        let z_q = z.clone() + (z_q - z).detach();
        Quantized {
            z_q,
            loss,
            indices,
            z_rows,
        }
    }

    /// Quantizes without loss or gradient bookkeeping (LDM's `decode`).
    pub fn quantize(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = z.dims();
        let rows = z.permute([0, 2, 3, 1]).reshape([n * h * w, c]);
        let indices = self.nearest(rows);
        self.lookup(indices, [n, h, w])
    }

    /// Code vectors for `indices` as a latent `[N, embed_dim, h, w]`.
    pub fn lookup(&self, indices: Tensor<B, 1, Int>, shape: [usize; 3]) -> Tensor<B, 4> {
        let [n, h, w] = shape;
        let c = self.embedding.weight.dims()[1];
        self.embedding
            .weight
            .val()
            .select(0, indices)
            .reshape([n, h, w, c])
            .permute([0, 3, 1, 2])
    }

    /// EMA mode: folds one batch's assignments into the running statistics
    /// and sets each code to its smoothed cluster mean. No-op otherwise.
    pub fn ema_update(mut self, z_rows: Tensor<B, 2>, indices: Tensor<B, 1, Int>) -> Self {
        let (Some(size), Some(sum)) = (self.ema_cluster_size.take(), self.ema_embed_sum.take())
        else {
            return self;
        };
        let k = self.n_embed();
        let d = self.ema_decay;
        let onehot = indices.one_hot::<2>(k).float(); // [M, K]
        let counts = onehot.clone().sum_dim(0).reshape([k]);
        let sums = onehot.transpose().matmul(z_rows.detach());
        let size = size.val().detach() * d + counts * (1.0 - d);
        let sum = sum.val().detach() * d + sums * (1.0 - d);
        let total = size.clone().sum();
        let smoothed = (size.clone() + EMA_EPS) / (total.clone() + k as f64 * EMA_EPS) * total;
        let weight = sum.clone() / smoothed.reshape([k, 1]);
        self.embedding.weight = Param::from_tensor(weight).set_require_grad(false);
        self.ema_cluster_size = Some(Param::from_tensor(size).set_require_grad(false));
        self.ema_embed_sum = Some(Param::from_tensor(sum).set_require_grad(false));
        self
    }

    /// Replaces the codes `dead` with `replacements` `[dead.len(), embed_dim]`
    /// (encoder outputs), and resets their EMA statistics to match.
    pub fn restart(mut self, dead: Tensor<B, 1, Int>, replacements: Tensor<B, 2>) -> Self {
        let m = dead.dims()[0];
        if m == 0 {
            return self;
        }
        let learned = self.ema_cluster_size.is_none();
        let w = overwrite_rows(
            self.embedding.weight.val().detach(),
            dead.clone(),
            replacements.clone(),
        );
        self.embedding.weight = Param::from_tensor(w).set_require_grad(learned);
        if let (Some(size), Some(sum)) = (self.ema_cluster_size.take(), self.ema_embed_sum.take()) {
            let ones = Tensor::<B, 2>::ones([m, 1], &replacements.device());
            let s = overwrite_rows(size.val().detach().reshape([-1, 1]), dead.clone(), ones);
            let e = overwrite_rows(sum.val().detach(), dead, replacements);
            self.ema_cluster_size =
                Some(Param::from_tensor(s.reshape([-1])).set_require_grad(false));
            self.ema_embed_sum = Some(Param::from_tensor(e).set_require_grad(false));
        }
        self
    }
}

/// `t` with rows `rows` set to `values`. Written as an add of the difference
/// because every backend implements the additive `select_assign`.
fn overwrite_rows<B: Backend>(
    t: Tensor<B, 2>,
    rows: Tensor<B, 1, Int>,
    values: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let old = t.clone().select(0, rows.clone());
    // Detached: the result becomes a parameter, which must be a graph leaf.
    t.select_assign(0, rows, values - old, IndexingUpdateOp::Add)
        .detach()
}

/// Perplexity exp(H) of a code-usage histogram, and the fraction of codes used.
pub fn usage_stats(counts: &[u64]) -> (f64, f64) {
    let total: u64 = counts.iter().sum();
    if total == 0 || counts.is_empty() {
        return (0.0, 0.0);
    }
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    let used = counts.iter().filter(|&&c| c > 0).count();
    (entropy.exp(), used as f64 / counts.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    type A = Autodiff<Flex>;

    fn cfg(legacy: bool, ema: Option<f64>) -> QuantizerConfig {
        QuantizerConfig {
            n_embed: 4,
            embed_dim: 2,
            beta: 0.25,
            legacy,
            ema_decay: ema,
        }
    }

    fn with_codes<B: Backend>(
        mut q: VectorQuantizer<B>,
        codes: [[f32; 2]; 4],
    ) -> VectorQuantizer<B> {
        let flat: Vec<f32> = codes.iter().flatten().copied().collect();
        let t = Tensor::from_data(TensorData::new(flat, [4, 2]), &Default::default());
        let learned = q.ema_cluster_size.is_none();
        q.embedding.weight = Param::from_tensor(t).set_require_grad(learned);
        q
    }

    const CODES: [[f32; 2]; 4] = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]];

    fn latent<B: Backend>(v: [[f32; 2]; 3]) -> Tensor<B, 4> {
        // Three vectors as a 1×2×1×3 latent (channels first).
        let data = vec![v[0][0], v[1][0], v[2][0], v[0][1], v[1][1], v[2][1]];
        Tensor::from_data(TensorData::new(data, [1, 2, 1, 3]), &Default::default())
    }

    #[test]
    fn picks_nearest_codes_and_hand_computed_losses() {
        let q = with_codes(
            VectorQuantizer::<Flex>::new(&cfg(true, None), &Default::default()),
            CODES,
        );
        let z = latent::<Flex>([[0.9, 0.2], [0.1, 0.1], [-0.6, -0.8]]);
        let out = q.forward(z);
        let idx: Vec<i64> = out.indices.into_data().iter::<i64>().collect();
        assert_eq!(idx, vec![1, 0, 3]);
        // squared errors: (.01+.04) + (.01+.01) + (.16+.04) = 0.27 over 6 elements
        let mse = 0.27 / 6.0;
        let legacy = out.loss.into_scalar() as f64;
        assert!((legacy - (mse + 0.25 * mse)).abs() < 1e-6, "{legacy}");
        let q2 = with_codes(
            VectorQuantizer::<Flex>::new(&cfg(false, None), &Default::default()),
            CODES,
        );
        let l2 = q2
            .forward(latent([[0.9, 0.2], [0.1, 0.1], [-0.6, -0.8]]))
            .loss
            .into_scalar() as f64;
        assert!((l2 - (0.25 * mse + mse)).abs() < 1e-6);
    }

    #[test]
    fn straight_through_and_loss_gradients() {
        // legacy: loss = mean((sg[zq]−z)²) + β·mean((zq−sg[z])²).
        let q = with_codes(
            VectorQuantizer::<A>::new(&cfg(true, None), &Default::default()),
            CODES,
        );
        let z = latent::<A>([[0.9, 0.2], [0.1, 0.1], [-0.6, -0.8]]).require_grad();
        let probe = Tensor::<A, 4>::random(
            [1, 2, 1, 3],
            Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        );
        let out = q.forward(z.clone());
        let total = (out.z_q.clone() * probe.clone()).sum() + out.loss;
        let grads = total.backward();
        let gz: Vec<f32> = z.grad(&grads).unwrap().into_data().to_vec().unwrap();
        let zv: Vec<f32> = z.inner().into_data().to_vec().unwrap();
        let zq: Vec<f32> = out.z_q.inner().into_data().to_vec().unwrap();
        let p: Vec<f32> = probe.inner().into_data().to_vec().unwrap();
        for i in 0..6 {
            // straight-through passes the probe; the commitment term adds 2(z − zq)/6.
            let expect = p[i] + 2.0 * (zv[i] - zq[i]) / 6.0;
            assert!((gz[i] - expect).abs() < 1e-5, "{i}: {} vs {expect}", gz[i]);
        }
        // The codebook gets β·2(zq − z)/6 summed over its assigned vectors.
        let ge: Vec<f32> = q
            .embedding
            .weight
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        // code 1 ← vector 0 = (0.9, 0.2): zq − z = (0.1, −0.2)
        assert!((ge[2] - 0.25 * 2.0 * 0.1 / 6.0).abs() < 1e-6, "{ge:?}");
        assert!((ge[3] - 0.25 * 2.0 * -0.2 / 6.0).abs() < 1e-6, "{ge:?}");
        // code 2 is unused: no gradient.
        assert_eq!(&ge[4..6], &[0.0, 0.0]);
    }

    #[test]
    fn ema_moves_codes_to_cluster_means_and_takes_no_gradient() {
        let q = with_codes(
            VectorQuantizer::<Flex>::new(&cfg(true, Some(0.5)), &Default::default()),
            CODES,
        );
        let q = VectorQuantizer {
            ema_embed_sum: Some(Param::from_tensor(q.embedding.weight.val())),
            ..q
        };
        let out = q.forward(latent([[0.9, 0.2], [0.7, 0.0], [-0.6, -0.8]]));
        let q = q.ema_update(out.z_rows, out.indices);
        let w: Vec<f32> = q.embedding.weight.val().into_data().to_vec().unwrap();
        // code 1: size .5·1 + .5·2 = 1.5, sum .5·(1,0) + .5·(1.6, .2) = (1.3, .1)
        // smoothing with total 1.5+1+1+… leaves ≈ the plain ratio.
        assert!(
            (w[2] - 1.3 / 1.5).abs() < 1e-3 && (w[3] - 0.1 / 1.5).abs() < 1e-3,
            "{w:?}"
        );
        // unused code 2 keeps its value (size stays ≥ 0.5 with sum 0.5·code).
        assert!(
            (w[4] - 0.0).abs() < 1e-4 && (w[5] - 1.0).abs() < 2e-3,
            "{w:?}"
        );
        assert!(!q.embedding.weight.is_require_grad());
    }

    #[test]
    fn restart_replaces_only_dead_codes() {
        let q = with_codes(
            VectorQuantizer::<Flex>::new(&cfg(true, None), &Default::default()),
            CODES,
        );
        let dev = Default::default();
        let dead = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![2i64], [1]), &dev);
        let rep = Tensor::<Flex, 2>::from_data(TensorData::new(vec![5.0f32, 6.0], [1, 2]), &dev);
        let w: Vec<f32> = q
            .restart(dead, rep)
            .embedding
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(w, vec![0.0, 0.0, 1.0, 0.0, 5.0, 6.0, -1.0, -1.0]);
    }

    #[test]
    fn restarted_codebook_stays_a_trainable_leaf() {
        let q = VectorQuantizer::<A>::new(&cfg(true, None), &Default::default());
        let dev = Default::default();
        let dead = Tensor::<A, 1, Int>::from_data(TensorData::new(vec![0i64, 3], [2]), &dev);
        let rep = Tensor::<A, 2>::ones([2, 2], &dev);
        let q = q.restart(dead, rep);
        assert!(q.embedding.weight.val().is_require_grad());
    }

    #[test]
    fn perplexity_and_usage() {
        let (p, u) = usage_stats(&[5, 5, 0, 0]);
        assert!((p - 2.0).abs() < 1e-12 && (u - 0.5).abs() < 1e-12);
        assert_eq!(usage_stats(&[0, 0]), (0.0, 0.0));
    }
}
