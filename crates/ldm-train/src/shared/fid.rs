//! Fréchet distance between two sets of Inception features (FID / rFID).
//!
//! FID = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂), with Σ the unbiased
//! sample covariance (divisor n − 1, as `numpy.cov`).
//!
//! The usual recipe (`scipy.linalg.sqrtm(Σ₁Σ₂)`) needs the d×d product to be
//! well conditioned; with a few images and d = 2048 both covariances are
//! rank-deficient, and sqrtm returns complex parts, NaN or a visibly wrong
//! trace. We never form a matrix square root. Write each covariance as
//! Σ = FᵀF with a thin factor F (k×d): the eigenvalues of Σ₁Σ₂ = F₁ᵀF₁F₂ᵀF₂
//! are, apart from zeros, those of (F₁F₂ᵀ)(F₁F₂ᵀ)ᵀ, so
//! tr √(Σ₁Σ₂) = ‖F₁F₂ᵀ‖_* (the nuclear norm: sum of singular values) — a k₁×k₂
//! SVD, exact for any rank, with no complex intermediate. The factor is
//! * the centered features / √(n − 1) when n ≤ d (k = n: cheap, the normal
//!   case for evaluation sets of 6–64 images);
//! * Λ^{½}Vᵀ from the symmetric eigen-decomposition Σ = VΛVᵀ when n > d
//!   (k ≤ d; round-off eigenvalues dropped). Two 2048² eigen-decompositions
//!   and a 2048² SVD take ~30 s on a 2-core CPU (nalgebra, no BLAS).
//!
//! All sums are in f64; the result is clamped at 0 (round-off can push the
//! distance of two identical sets a few ulps below zero).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use nalgebra::{DMatrix, SymmetricEigen, SVD};

/// Feature vectors of one image set, kept in f64 until the distance is taken.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    dim: usize,
    rows: Vec<f64>,
}

impl FeatureSet {
    /// An empty set of `dim`-dimensional features (2048 for Inception).
    pub fn new(dim: usize) -> Self {
        assert!(dim > 0, "FeatureSet::new: dim must be positive");
        Self {
            dim,
            rows: Vec::new(),
        }
    }

    /// Appends a batch `[N, dim]` of features.
    pub fn push<B: Backend>(&mut self, features: Tensor<B, 2>) {
        let [_, d] = features.dims();
        assert_eq!(
            d, self.dim,
            "FeatureSet::push: features have width {d}, expected {}",
            self.dim
        );
        let values: Vec<f32> = features
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 feature data");
        self.push_slice(&values);
    }

    /// Appends row-major feature vectors (`len` a multiple of `dim`).
    pub fn push_slice(&mut self, values: &[f32]) {
        assert_eq!(
            values.len() % self.dim,
            0,
            "FeatureSet::push_slice: {} values is not a whole number of {}-d rows",
            values.len(),
            self.dim
        );
        self.rows.extend(values.iter().map(|&v| f64::from(v)));
    }

    /// Number of feature vectors.
    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    /// Whether no vector was pushed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The feature vectors, row-major (`len() · dim()` values).
    pub fn rows(&self) -> &[f64] {
        &self.rows
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The mean vector μ.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.len().max(1) as f64;
        let mut mu = vec![0.0; self.dim];
        for row in self.rows.chunks_exact(self.dim) {
            for (m, v) in mu.iter_mut().zip(row) {
                *m += v;
            }
        }
        mu.iter_mut().for_each(|m| *m /= n);
        mu
    }

    /// Centered rows scaled by 1/√(n − 1): A (n×d) with AᵀA = Σ.
    fn centered(&self, mu: &[f64]) -> DMatrix<f64> {
        let n = self.len();
        let s = 1.0 / ((n - 1) as f64).sqrt();
        DMatrix::from_fn(n, self.dim, |i, j| {
            (self.rows[i * self.dim + j] - mu[j]) * s
        })
    }
}

/// How a covariance is factored (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factor {
    /// F = centered rows (k = n).
    Rows,
    /// F = Λ^{½}Vᵀ from the eigen-decomposition of Σ (k ≤ d).
    Eigen,
}

/// A thin F with FᵀF = Σ of the set whose centered rows are `a`.
fn factor(a: DMatrix<f64>, how: Factor) -> DMatrix<f64> {
    match how {
        Factor::Rows => a,
        Factor::Eigen => {
            let d = a.ncols();
            let eig = SymmetricEigen::new(a.tr_mul(&a));
            // Eigenvalues below d·ε·λ_max are round-off of a rank-deficient Σ;
            // kept, their square roots (~1e-8 relative) would bias the trace.
            let cut = eig.eigenvalues.max() * d as f64 * f64::EPSILON;
            let keep: Vec<usize> = (0..eig.eigenvalues.len())
                .filter(|&i| eig.eigenvalues[i] > cut)
                .collect();
            DMatrix::from_fn(keep.len(), d, |r, j| {
                let i = keep[r];
                eig.eigenvalues[i].sqrt() * eig.eigenvectors[(j, i)]
            })
        }
    }
}

/// The Fréchet distance between the Gaussians fitted to `a` and `b`.
///
/// # Panics
/// If the sets differ in width or either holds fewer than two vectors (the
/// sample covariance needs n ≥ 2).
pub fn frechet_distance(a: &FeatureSet, b: &FeatureSet) -> f64 {
    let pick = |s: &FeatureSet| {
        if s.len() <= s.dim() {
            Factor::Rows
        } else {
            Factor::Eigen
        }
    };
    frechet_distance_with(a, b, pick(a), pick(b))
}

fn frechet_distance_with(a: &FeatureSet, b: &FeatureSet, fa: Factor, fb: Factor) -> f64 {
    assert_eq!(a.dim(), b.dim(), "frechet_distance: feature widths differ");
    assert!(
        a.len() >= 2 && b.len() >= 2,
        "frechet_distance: needs at least 2 feature vectors per set (got {} and {})",
        a.len(),
        b.len()
    );
    let (mu_a, mu_b) = (a.mean(), b.mean());
    let mean_term: f64 = mu_a.iter().zip(&mu_b).map(|(x, y)| (x - y).powi(2)).sum();
    let (ca, cb) = (a.centered(&mu_a), b.centered(&mu_b));
    // tr Σ = ‖A‖_F² for centered rows A.
    let (tr_a, tr_b) = (ca.norm_squared(), cb.norm_squared());
    let (fa, fb) = (factor(ca, fa), factor(cb, fb));
    let cross = &fa * fb.transpose();
    let tr_sqrt: f64 = if cross.is_empty() {
        0.0
    } else {
        SVD::new(cross, false, false).singular_values.sum()
    };
    (mean_term + tr_a + tr_b - 2.0 * tr_sqrt).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 → uniform [−1, 1), enough for test data without a rand dependency.
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (z >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    fn set(dim: usize, values: &[f32]) -> FeatureSet {
        let mut s = FeatureSet::new(dim);
        s.push_slice(values);
        s
    }

    #[test]
    fn identical_sets_are_zero() {
        for (n, d) in [(6, 2048), (50, 8)] {
            let x = set(d, &noise(1, n * d));
            let fid = frechet_distance(&x, &x);
            let trace = x.centered(&x.mean()).norm_squared();
            assert!(fid <= 1e-9 * trace, "n={n} d={d}: {fid} vs trace {trace}");
        }
    }

    #[test]
    fn shifted_mean_adds_its_squared_norm() {
        let (n, d) = (7, 64);
        let x = noise(2, n * d);
        let shift = noise(3, d);
        let y: Vec<f32> = x
            .chunks(d)
            .flat_map(|r| r.iter().zip(&shift).map(|(a, b)| a + b))
            .collect();
        let want: f64 = shift.iter().map(|&s| f64::from(s).powi(2)).sum();
        let got = frechet_distance(&set(d, &x), &set(d, &y));
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    }

    /// The four corners (±s₀, ±s₁) + μ: mean μ, covariance exactly diag(4s²/3).
    fn corners(mu: [f32; 2], s: [f32; 2]) -> Vec<f32> {
        let mut v = Vec::new();
        for (a, b) in [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)] {
            v.extend([mu[0] + a * s[0], mu[1] + b * s[1]]);
        }
        v
    }

    #[test]
    fn diagonal_gaussians_match_the_closed_form() {
        // Diagonal covariances: FID = ‖μ₁ − μ₂‖² + Σᵢ (σ₁ᵢ − σ₂ᵢ)².
        let (mu1, s1, mu2, s2) = ([0.5f32, -1.0], [1.0f32, 2.0], [1.5f32, 0.0], [3.0f32, 0.5]);
        let sd = |s: f32| (4.0 * f64::from(s).powi(2) / 3.0).sqrt();
        let want = (1.0 + 1.0) + (sd(1.0) - sd(3.0)).powi(2) + (sd(2.0) - sd(0.5)).powi(2);
        let (a, b) = (set(2, &corners(mu1, s1)), set(2, &corners(mu2, s2)));
        for (fa, fb) in [(Factor::Rows, Factor::Rows), (Factor::Eigen, Factor::Eigen)] {
            let got = frechet_distance_with(&a, &b, fa, fb);
            assert!((got - want).abs() < 1e-9 * want, "{fa:?}: {got} vs {want}");
        }
        // One dimension: (μ₁ − μ₂)² + (σ₁ − σ₂)² with sample σ.
        let x = noise(4, 30);
        let y: Vec<f32> = noise(5, 25).iter().map(|v| 3.0 * v + 1.0).collect();
        let stats = |v: &[f32]| {
            let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
            let var =
                v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
            (m, var.sqrt())
        };
        let ((m1, sd1), (m2, sd2)) = (stats(&x), stats(&y));
        let want = (m1 - m2).powi(2) + (sd1 - sd2).powi(2);
        let got = frechet_distance(&set(1, &x), &set(1, &y));
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
    }

    #[test]
    fn rank_deficient_sets_give_finite_non_negative_values() {
        let d = 2048;
        let a = set(d, &noise(6, 3 * d));
        // Five copies of two vectors: rank-1 covariance.
        let two = noise(7, 2 * d);
        let rep: Vec<f32> = (0..5)
            .flat_map(|i| two[(i % 2) * d..(i % 2 + 1) * d].to_vec())
            .collect();
        let b = set(d, &rep);
        // Constant set: zero covariance.
        let c = set(d, &[noise(8, d), noise(8, d)].concat());
        for (x, y) in [(&a, &b), (&b, &c), (&c, &c), (&a, &c)] {
            let fid = frechet_distance(x, y);
            assert!(fid.is_finite() && fid >= 0.0, "{fid}");
        }
        assert_eq!(frechet_distance(&c, &c), 0.0);
    }

    #[test]
    fn row_and_eigen_factors_agree() {
        // n > d (the eigen path's home) and n < d (rank-deficient Σ).
        for (n1, n2, d) in [(40, 30, 6), (5, 9, 16)] {
            let a = set(d, &noise(9, n1 * d));
            let y: Vec<f32> = noise(10, n2 * d).iter().map(|v| 0.7 * v + 0.2).collect();
            let b = set(d, &y);
            let rows = frechet_distance_with(&a, &b, Factor::Rows, Factor::Rows);
            let eig = frechet_distance_with(&a, &b, Factor::Eigen, Factor::Eigen);
            let mixed = frechet_distance_with(&a, &b, Factor::Rows, Factor::Eigen);
            for other in [eig, mixed] {
                assert!(
                    (rows - other).abs() < 1e-9 * rows,
                    "n={n1},{n2} d={d}: {rows} vs {other}"
                );
            }
            assert!(rows > 0.0);
        }
    }
}
