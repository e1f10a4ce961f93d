//! The one toy problem every sampler test shares: data x0 ~ N(m, s²) per
//! element. Its noised marginal stays Gaussian, so both the exact denoiser
//! and the exact probability-flow map x_T ↦ x_0 are closed forms, and a
//! sampler's error can be measured against the truth rather than against
//! another implementation.
//!
//! With x_t = a·x0 + b·ε (a = √ᾱ_t, b = √(1−ᾱ_t)), x_t ~ N(a·m, v_t) with
//! v_t = a²s² + b², and
//! - E[x0 | x_t] = m + (a·s²/v_t)·(x_t − a·m),
//! - E[ε | x_t] = (b/v_t)·(x_t − a·m).
//!
//! The flow: in DDIM's variables x̄ = x/a, σ̄ = b/a the probability-flow ODE
//! is dx̄/dσ̄ = E[ε | x_t] = σ̄·(x̄ − m)/(s² + σ̄²), whose solution keeps
//! (x̄ − m)/√(s² + σ̄²) — equivalently (x_t − a·m)/√v_t — constant. So the
//! exact deterministic map between two levels is affine:
//! x_to = a_to·m + √(v_to/v_from)·(x_from − a_from·m).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

use crate::schedule::{BetaSchedule, NoiseSchedule};
use crate::Parameterization;

/// The backend every test in the crate runs on.
pub(crate) type B = Flex;

/// The LDM reference's default schedule (scaled-linear 0.0015 → 0.0195, T = 1000).
pub(crate) fn schedule() -> NoiseSchedule {
    NoiseSchedule::new(
        BetaSchedule::ScaledLinear {
            start: 0.0015,
            end: 0.0195,
        },
        1000,
    )
}

/// x0 ~ N(`m`, `s2`) per element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gaussian {
    pub m: f64,
    pub s2: f64,
}

impl Gaussian {
    /// Variance of x_t at level ᾱ = `alpha`.
    pub fn var(&self, alpha: f64) -> f64 {
        alpha * self.s2 + 1.0 - alpha
    }

    /// The exact prediction in `p` at level `alpha` as gain·x_t + offset,
    /// folded into one affine map in f64 so the toy adds a single f32 rounding.
    pub fn prediction(&self, p: Parameterization, alpha: f64) -> (f64, f64) {
        let (a, b) = (alpha.sqrt(), (1.0 - alpha).sqrt());
        let v = self.var(alpha);
        // x̂0 = k·x + k0, ε̂ = e·x + e0.
        let (k, k0) = (a * self.s2 / v, self.m * (1.0 - alpha * self.s2 / v));
        let (e, e0) = (b / v, -b * a * self.m / v);
        let (t1, t2) = p.target(alpha);
        (t1 * k + t2 * e, t1 * k0 + t2 * e0)
    }

    /// The exact denoiser in parameterization `p`.
    pub fn denoiser(
        self,
        p: Parameterization,
        sch: NoiseSchedule,
    ) -> impl FnMut(Tensor<B, 4>, usize) -> Tensor<B, 4> {
        move |x, t| {
            let (gain, offset) = self.prediction(p, sch.alphas_cumprod[t]);
            x * gain + offset
        }
    }

    /// The exact probability-flow map from level `from` to level `to` as
    /// (gain, offset): x_to = gain·x_from + offset.
    pub fn flow(&self, from: f64, to: f64) -> (f64, f64) {
        let gain = (self.var(to) / self.var(from)).sqrt();
        (gain, self.m * (to.sqrt() - gain * from.sqrt()))
    }
}

/// A tensor of shape `shape` holding `v`.
pub(crate) fn tensor(v: Vec<f32>, shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// The elements of `x`.
pub(crate) fn values(x: Tensor<B, 4>) -> Vec<f32> {
    x.into_data().to_vec().unwrap()
}

/// `n` standard normal draws from `seed` (splitmix64 + Box–Muller): tests
/// own their randomness so they neither race on a backend's global seed nor
/// change when its generator does.
pub(crate) fn normal(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // In (0, 1]: never 0, so the logarithm below stays finite.
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, w) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()) as f32
        })
        .collect()
}

/// Sample mean and (population) standard deviation of `v`, in f64.
pub(crate) fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Largest |got − want| over the elements, relative to the largest |want|.
pub(crate) fn max_rel_error(got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// How far a deterministic sampler lands from the exact flow: x_T is 64
/// fixed N(0, 1) draws at the level of the last of `timesteps`, `run` maps
/// it to x_0 (which every sampler here puts at ᾱ_0), and the result is the
/// largest deviation from the exact map relative to the largest target.
pub(crate) fn flow_error(
    toy: Gaussian,
    sch: &NoiseSchedule,
    timesteps: &[usize],
    run: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
) -> f64 {
    let x_t = normal(42, 64);
    let (gain, offset) = toy.flow(
        sch.alphas_cumprod[timesteps[timesteps.len() - 1]],
        sch.alphas_cumprod[0],
    );
    let want: Vec<f64> = x_t.iter().map(|x| gain * *x as f64 + offset).collect();
    max_rel_error(&values(run(tensor(x_t, [1, 1, 8, 8]))), &want)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The toy's closed forms against their definitions: x̂0 and ε̂ must
    /// reassemble x_t (x_t = a·x̂0 + b·ε̂ holds for conditional means too),
    /// and the flow must compose and map the marginals onto each other.
    #[test]
    fn the_toy_is_self_consistent() {
        let g = Gaussian { m: 0.7, s2: 0.3 };
        for alpha in [0.998, 0.4, 0.005] {
            let (a, b) = (f64::sqrt(alpha), f64::sqrt(1.0 - alpha));
            let (k, k0) = g.prediction(Parameterization::X0, alpha);
            let (e, e0) = g.prediction(Parameterization::Eps, alpha);
            let x = -1.3;
            assert!((a * (k * x + k0) + b * (e * x + e0) - x).abs() < 1e-12);
            // v = a·ε̂ − b·x̂0 in the toy's own V prediction.
            let (v1, v0) = g.prediction(Parameterization::V, alpha);
            let want = a * (e * x + e0) - b * (k * x + k0);
            assert!((v1 * x + v0 - want).abs() < 1e-12);
        }
        let (g1, o1) = g.flow(0.01, 0.5);
        let (g2, o2) = g.flow(0.5, 0.99);
        let (g3, o3) = g.flow(0.01, 0.99);
        assert!((g2 * g1 - g3).abs() < 1e-12 && (g2 * o1 + o2 - o3).abs() < 1e-12);
        // Mean a·m and variance v map onto the target level's.
        assert!((g3 * 0.01f64.sqrt() * g.m + o3 - 0.99f64.sqrt() * g.m).abs() < 1e-12);
        assert!((g3 * g3 * g.var(0.01) - g.var(0.99)).abs() < 1e-12);
        let (mean, std) = moments(&normal(7, 100_000));
        assert!(
            mean.abs() < 0.01 && (std - 1.0).abs() < 0.01,
            "{mean} {std}"
        );
    }
}
