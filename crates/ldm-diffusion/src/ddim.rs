//! The DDIM sampler (Song et al.), η from 0 (deterministic) to 1 (DDPM's
//! posterior variance when every timestep is visited), with the LDM
//! reference's conventions: the caller's timesteps (see [`crate::timesteps`])
//! and, on the last step, ᾱ_prev = ᾱ_0 rather than 1.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::timesteps::ddim_sigma;
use crate::{NoiseSchedule, Parameterization};

/// A denoiser: the model's output, in its parameterization, for x_t at
/// training timestep t. Any `FnMut(x, t) -> output` is one.
pub trait Denoiser<B: Backend> {
    /// The prediction for `x` at timestep `t`.
    fn predict(&mut self, x: Tensor<B, 4>, t: usize) -> Tensor<B, 4>;
}

impl<B: Backend, F: FnMut(Tensor<B, 4>, usize) -> Tensor<B, 4>> Denoiser<B> for F {
    fn predict(&mut self, x: Tensor<B, 4>, t: usize) -> Tensor<B, 4> {
        self(x, t)
    }
}

/// One DDIM update from x_t (ᾱ = `alpha`) to the level `alpha_prev`, given
/// the model's `pred`; `noise` is drawn only when σ > 0.
pub fn ddim_step<B: Backend>(
    param: Parameterization,
    x: Tensor<B, 4>,
    pred: Tensor<B, 4>,
    alpha: f64,
    alpha_prev: f64,
    eta: f64,
    noise: impl FnOnce() -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let (x1, x2) = param.x0(alpha);
    let (e1, e2) = param.eps(alpha);
    let x0 = x.clone() * x1 + pred.clone() * x2;
    let eps = x * e1 + pred * e2;
    let sigma = ddim_sigma(alpha, alpha_prev, eta);
    let out = x0 * alpha_prev.sqrt() + eps * (1.0 - alpha_prev - sigma * sigma).max(0.0).sqrt();
    if sigma > 0.0 {
        out + noise() * sigma
    } else {
        out
    }
}

/// Samples from x_T = `x` down through `timesteps` (ascending; visited from
/// the last), calling `noise(i)` for the i-th step's fresh noise when η > 0.
pub fn ddim<B: Backend>(
    schedule: &NoiseSchedule,
    param: Parameterization,
    timesteps: &[usize],
    eta: f64,
    mut x: Tensor<B, 4>,
    denoiser: &mut impl Denoiser<B>,
    mut noise: impl FnMut(usize) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let a = &schedule.alphas_cumprod;
    for i in (0..timesteps.len()).rev() {
        let t = timesteps[i];
        let prev = if i > 0 { a[timesteps[i - 1]] } else { a[0] };
        let pred = denoiser.predict(x.clone(), t);
        x = ddim_step(param, x, pred, a[t], prev, eta, || noise(i));
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timesteps::{sampling_timesteps, Spacing};
    use crate::toy::{schedule, tensor, values, Gaussian, B};
    use burn::tensor::Distribution;

    #[test]
    fn eta_zero_is_deterministic_whatever_the_noise() {
        let sch = schedule();
        let ts = sampling_timesteps(Spacing::Uniform, 1000, 20);
        let x = Tensor::<B, 4>::random(
            [1, 2, 3, 3],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let run = |seed: f64| {
            let mut den =
                Gaussian { m: 0.0, s2: 0.25 }.denoiser(Parameterization::Eps, sch.clone());
            values(ddim(
                &sch,
                Parameterization::Eps,
                &ts,
                0.0,
                x.clone(),
                &mut den,
                |i| Tensor::<B, 4>::full([1, 2, 3, 3], seed + i as f64, &Default::default()),
            ))
        };
        assert_eq!(run(1.0), run(-7.0));
    }

    /// For Gaussian data the probability-flow ODE keeps x_t / √(ᾱs² + 1 − ᾱ)
    /// fixed (see [`crate::toy`]), so deterministic DDIM from x_T must approach
    /// x_T · √(ᾱ_0 s² + 1 − ᾱ_0) / √(ᾱ_T s² + 1 − ᾱ_T), as a first-order
    /// method: measured (and matched by a scalar recurrence in Python) 3.7 %
    /// off with 100 steps and 0.39 % with all 1000, in every parameterization.
    #[test]
    fn ddim_converges_to_the_exact_flow_on_gaussian_data() {
        let sch = schedule();
        let toy = Gaussian { m: 0.0, s2: 0.25 };
        let x_t = [1.0f32, -0.5, 2.0, 0.25];
        let x = tensor(x_t.to_vec(), [1, 1, 2, 2]);
        for p in [
            Parameterization::Eps,
            Parameterization::X0,
            Parameterization::V,
        ] {
            let error = |steps: usize| {
                let ts: Vec<usize> = (0..1000).step_by(1000 / steps).collect();
                let (want, _) =
                    toy.flow(sch.alphas_cumprod[ts[ts.len() - 1]], sch.alphas_cumprod[0]);
                let mut den = toy.denoiser(p, sch.clone());
                let out = values(ddim(
                    &sch,
                    p,
                    &ts,
                    0.0,
                    x.clone(),
                    &mut den,
                    |_| unreachable!(),
                ));
                out.iter()
                    .zip(x_t)
                    .map(|(o, i)| ((*o / i) as f64 - want).abs() / want)
                    .fold(0.0, f64::max)
            };
            let (coarse, fine) = (error(100), error(1000));
            assert!(fine < 6e-3, "{p:?}: {fine} off the flow with 1000 steps");
            assert!(
                coarse > 5.0 * fine,
                "{p:?}: not first order ({coarse} vs {fine})"
            );
        }
    }

    /// With neighbouring timesteps and η = 1 the mean of a DDIM step is DDPM's
    /// posterior mean μ̃ = √ᾱ_{t−1}β_t/(1−ᾱ_t)·x̂0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t.
    #[test]
    fn eta_one_step_has_the_ddpm_posterior_mean() {
        let sch = schedule();
        let dev = Default::default();
        let x = Tensor::<B, 4>::random([1, 1, 4, 4], Distribution::Normal(0.0, 1.0), &dev);
        let x0 = Tensor::<B, 4>::random([1, 1, 4, 4], Distribution::Normal(0.0, 0.5), &dev);
        for t in [1usize, 300, 999] {
            let (a, prev, beta) = (
                sch.alphas_cumprod[t],
                sch.alphas_cumprod[t - 1],
                sch.betas[t],
            );
            let zero = Tensor::<B, 4>::zeros([1, 1, 4, 4], &dev);
            let got = ddim_step(
                Parameterization::X0,
                x.clone(),
                x0.clone(),
                a,
                prev,
                1.0,
                || zero,
            );
            let want = x0.clone() * (prev.sqrt() * beta / (1.0 - a))
                + x.clone() * ((1.0 - beta).sqrt() * (1.0 - prev) / (1.0 - a));
            for (g, w) in values(got).iter().zip(values(want)) {
                assert!((g - w).abs() < 1e-5, "t {t}: {g} vs {w}");
            }
        }
    }
}
