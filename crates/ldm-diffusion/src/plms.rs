//! PLMS, pseudo linear multistep (Liu et al. 2022), as the LDM/CompVis
//! `PLMSSampler` runs it (η = 0 only): every step is a deterministic DDIM
//! update, but with an ε that extrapolates the last few predictions —
//! Adams–Bashforth of orders 2, 3, 4 — so the same number of model calls
//! follows the probability-flow ODE more closely than DDIM's single ε.
//!
//! A multistep method has no history on its first step; there the reference
//! takes a "pseudo improved Euler" (Heun-like) step instead: a provisional
//! DDIM step with e_t, a second model call at its landing point, and the
//! mean of the two ε. That is one extra model call in the whole run (S
//! steps cost S + 1 calls). The history keeps the model's own ε at each
//! visited x_t, not the combined ε, as the reference does.
//!
//! Levels follow [`crate::ddim()`]: the caller's timesteps, and ᾱ_0 (not 1)
//! after the first one. Any parameterization works: each prediction is
//! turned into ε at its own x_t and ᾱ_t before combining, so ε-, x0- and
//! v-models give the same sampler. (At ᾱ_t = 0, zero terminal SNR, an ε
//! carries no information about x0 and the DDIM update divides by √ᾱ_t;
//! use DPM-Solver++ or DDIM with a v-model there.)

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::ddim::{ddim_step, Denoiser};
use crate::{NoiseSchedule, Parameterization};

/// The model's ε for `x` at timestep `t` (level `alpha`), whatever it predicts.
fn eps_of<B: Backend>(
    denoiser: &mut impl Denoiser<B>,
    param: Parameterization,
    x: Tensor<B, 4>,
    t: usize,
    alpha: f64,
) -> Tensor<B, 4> {
    let (e1, e2) = param.eps(alpha);
    let pred = denoiser.predict(x.clone(), t);
    x * e1 + pred * e2
}

/// The deterministic DDIM update from x_t (level `alpha`) to `alpha_prev`
/// with a given ε.
fn eps_step<B: Backend>(
    x: Tensor<B, 4>,
    eps: Tensor<B, 4>,
    alpha: f64,
    alpha_prev: f64,
) -> Tensor<B, 4> {
    ddim_step(
        Parameterization::Eps,
        x,
        eps,
        alpha,
        alpha_prev,
        0.0,
        || unreachable!("η = 0 draws no noise"),
    )
}

/// Samples deterministically from x_T = `x` down through `timesteps`
/// (ascending; visited from the last), calling the denoiser S + 1 times.
///
/// With a single timestep the reference evaluates the Heun correction at
/// that same timestep although the provisional step landed on ᾱ_0; here it
/// is evaluated at timestep 0, the one whose level the point is at.
pub fn plms<B: Backend>(
    schedule: &NoiseSchedule,
    param: Parameterization,
    timesteps: &[usize],
    mut x: Tensor<B, 4>,
    denoiser: &mut impl Denoiser<B>,
) -> Tensor<B, 4> {
    let a = &schedule.alphas_cumprod;
    // ε at the last visited points, newest last; at most three are needed.
    let mut old: Vec<Tensor<B, 4>> = Vec::with_capacity(4);
    for i in (0..timesteps.len()).rev() {
        let t = timesteps[i];
        let t_next = if i > 0 { timesteps[i - 1] } else { 0 };
        let (alpha, prev) = (a[t], a[t_next]);
        let e = eps_of(denoiser, param, x.clone(), t, alpha);
        let combined = match old.len() {
            0 => {
                let provisional = eps_step(x.clone(), e.clone(), alpha, prev);
                let e_next = eps_of(denoiser, param, provisional, t_next, prev);
                (e.clone() + e_next) / 2.0
            }
            1 => (e.clone() * 3.0 - old[0].clone()) / 2.0,
            2 => (e.clone() * 23.0 - old[1].clone() * 16.0 + old[0].clone() * 5.0) / 12.0,
            _ => {
                (e.clone() * 55.0 - old[2].clone() * 59.0 + old[1].clone() * 37.0
                    - old[0].clone() * 9.0)
                    / 24.0
            }
        };
        x = eps_step(x, combined, alpha, prev);
        if old.len() == 3 {
            old.remove(0);
        }
        old.push(e);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ddim::ddim;
    use crate::timesteps::{sampling_timesteps, Spacing};
    use crate::toy::{flow_error, schedule, tensor, values, Gaussian, B};

    const PARAMS: [Parameterization; 3] = [
        Parameterization::Eps,
        Parameterization::X0,
        Parameterization::V,
    ];

    /// The call pattern and the multistep coefficients against a scalar
    /// transcription of the reference loop: an ε-model answering call k with
    /// the constant c_k (whatever x is) makes every update a known affine
    /// map of scalars, so any wrong coefficient, history entry or level shows.
    #[test]
    fn follows_the_reference_recurrence() {
        let sch = schedule();
        // 8 timesteps (1000/7 does not divide): every history length occurs.
        let ts = sampling_timesteps(Spacing::Uniform, 1000, 7);
        let n = ts.len();
        let c = |k: usize| (k as f64 * 1.7).sin();
        let mut calls = Vec::new();
        let mut den = |x: Tensor<B, 4>, t: usize| {
            calls.push(t);
            x.zeros_like() + c(calls.len() - 1)
        };
        let x = tensor(vec![0.8; 4], [1, 1, 2, 2]);
        let got = values(plms(&sch, Parameterization::Eps, &ts, x, &mut den))[0] as f64;
        // Reference order: t_S, then the Heun point at t_{S−1}, then t_{S−1} … t_1.
        let mut want_calls = vec![ts[n - 1], ts[n - 2]];
        want_calls.extend(ts[..n - 1].iter().rev());
        assert_eq!(calls, want_calls);

        let a = &sch.alphas_cumprod;
        let step = |x: f64, e: f64, at: f64, ap: f64| {
            let x0 = (x - (1.0 - at).sqrt() * e) / at.sqrt();
            ap.sqrt() * x0 + (1.0 - ap).sqrt() * e
        };
        let (mut x, mut k, mut old): (f64, usize, Vec<f64>) = (0.8, 0, vec![]);
        for i in (0..n).rev() {
            let (at, ap) = (a[ts[i]], if i > 0 { a[ts[i - 1]] } else { a[0] });
            let e = c(k);
            k += 1;
            let n = old.len();
            let ep = match n {
                0 => {
                    let e_next = c(k);
                    k += 1;
                    (e + e_next) / 2.0
                }
                1 => (3.0 * e - old[n - 1]) / 2.0,
                2 => (23.0 * e - 16.0 * old[n - 1] + 5.0 * old[n - 2]) / 12.0,
                _ => (55.0 * e - 59.0 * old[n - 1] + 37.0 * old[n - 2] - 9.0 * old[n - 3]) / 24.0,
            };
            x = step(x, ep, at, ap);
            old.push(e);
        }
        assert!((got - x).abs() < 1e-5 * x.abs().max(1.0), "{got} vs {x}");
    }

    /// On Gaussian data PLMS must follow the exact flow (see [`crate::toy`])
    /// far closer than DDIM with the same steps (S + 1 vs S model calls),
    /// and converge faster than first order.
    ///
    /// Measured max relative errors (m = 0.5, s = 0.6, the reference's
    /// uniform spacing; the same to 4 digits in every parameterization):
    ///
    /// | steps | DDIM    | PLMS    | ratio |
    /// |-------|---------|---------|-------|
    /// | 20    | 1.017e-1 | 1.445e-2 | 7.0  |
    /// | 50    | 4.450e-2 | 2.657e-3 | 16.7 |
    ///
    /// PLMS gains 5.4× from 20 to 50 steps (first order would give 2.5×).
    /// Asserted: ratio > 5 at 20, > 10 at 50, gain > 4.
    #[test]
    fn plms_tracks_the_exact_flow_better_than_ddim() {
        let sch = schedule();
        let toy = Gaussian { m: 0.5, s2: 0.36 };
        for p in PARAMS {
            let errors = |steps: usize| {
                let ts = sampling_timesteps(Spacing::Uniform, 1000, steps);
                let d = flow_error(toy, &sch, &ts, |x| {
                    let mut den = toy.denoiser(p, sch.clone());
                    ddim(&sch, p, &ts, 0.0, x, &mut den, |_| unreachable!())
                });
                let m = flow_error(toy, &sch, &ts, |x| {
                    let mut den = toy.denoiser(p, sch.clone());
                    plms(&sch, p, &ts, x, &mut den)
                });
                (d, m)
            };
            let ((d20, m20), (d50, m50)) = (errors(20), errors(50));
            eprintln!("{p:?}: DDIM 20 {d20:.3e} 50 {d50:.3e}; PLMS 20 {m20:.3e} 50 {m50:.3e}");
            assert!(
                d20 > 5.0 * m20,
                "{p:?}: PLMS {m20} vs DDIM {d20} at 20 steps"
            );
            assert!(
                d50 > 10.0 * m50,
                "{p:?}: PLMS {m50} vs DDIM {d50} at 50 steps"
            );
            assert!(
                m20 > 4.0 * m50,
                "{p:?}: PLMS not converging ({m20} → {m50})"
            );
        }
    }
}
