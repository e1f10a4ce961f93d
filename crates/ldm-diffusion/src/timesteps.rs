//! Which of the T training timesteps a sampler visits in S steps, and the
//! DDIM noise level between two of them.

/// How S sampling steps are spread over T training steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// The LDM reference: every ⌊T/S⌋-th step from 0, plus one
    /// (`make_ddim_timesteps(..., "uniform")`: 1, 1 + T/S, …; as there, an S
    /// that does not divide T can give more than S steps).
    Uniform,
    /// The LDM reference's "quad": (linspace(0, √(0.8·T), S)²) as integers, plus one.
    Quad,
    /// diffusers "leading": every T/S-th step from 0 (0, T/S, …).
    Leading,
    /// diffusers "trailing": round(T − k·T/S) − 1, so the first sampling
    /// step is T − 1 (needed with zero-terminal-SNR schedules).
    Trailing,
}

/// The timesteps a sampler visits, in ascending order (samplers walk them
/// backwards). Panics unless 1 ≤ `steps` ≤ `timesteps`.
pub fn sampling_timesteps(spacing: Spacing, timesteps: usize, steps: usize) -> Vec<usize> {
    assert!(
        (1..=timesteps).contains(&steps),
        "{steps} sampling steps for a {timesteps}-step schedule"
    );
    let (t, s) = (timesteps, steps);
    match spacing {
        Spacing::Uniform => (0..t).step_by(t / s).map(|k| k + 1).collect(),
        Spacing::Quad => {
            let top = (0.8 * t as f64).sqrt();
            (0..s)
                .map(|k| {
                    let x = if s == 1 {
                        0.0
                    } else {
                        top * k as f64 / (s - 1) as f64
                    };
                    (x * x) as usize + 1
                })
                .collect()
        }
        Spacing::Leading => (0..s).map(|k| k * (t / s)).collect(),
        Spacing::Trailing => {
            let stride = t as f64 / s as f64;
            let mut v: Vec<usize> = (0..s)
                .map(|k| (t as f64 - k as f64 * stride).round() as usize - 1)
                .collect();
            v.reverse();
            v
        }
    }
}

/// DDIM's σ for the step from ᾱ = `alpha` to ᾱ_prev = `alpha_prev`:
/// η·√((1 − ᾱ_prev)/(1 − ᾱ) · (1 − ᾱ/ᾱ_prev)). η = 0 is deterministic DDIM,
/// η = 1 has DDPM's posterior variance when S = T.
pub fn ddim_sigma(alpha: f64, alpha_prev: f64, eta: f64) -> f64 {
    eta * ((1.0 - alpha_prev) / (1.0 - alpha) * (1.0 - alpha / alpha_prev)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BetaSchedule, NoiseSchedule};

    #[test]
    fn spacings_match_their_reference_formulas() {
        let u = sampling_timesteps(Spacing::Uniform, 1000, 50);
        assert_eq!(u.len(), 50);
        assert_eq!((u[0], u[1], u[49]), (1, 21, 981));
        // linspace(0, √800, 5)² = 0, 50, 200, 450, 800.
        assert_eq!(
            sampling_timesteps(Spacing::Quad, 1000, 5),
            [1, 51, 201, 451, 801]
        );
        assert_eq!(
            sampling_timesteps(Spacing::Leading, 1000, 4),
            [0, 250, 500, 750]
        );
        assert_eq!(
            sampling_timesteps(Spacing::Trailing, 1000, 4),
            [249, 499, 749, 999]
        );
        assert_eq!(
            sampling_timesteps(Spacing::Trailing, 1000, 3),
            [332, 666, 999]
        );
        // S = T visits every step.
        assert_eq!(
            sampling_timesteps(Spacing::Leading, 10, 10),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    #[should_panic(expected = "sampling steps")]
    fn more_steps_than_the_schedule_is_refused() {
        sampling_timesteps(Spacing::Uniform, 100, 101);
    }

    /// With S = T and η = 1, σ² is DDPM's posterior variance
    /// β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t.
    #[test]
    fn eta_one_is_the_ddpm_posterior_variance() {
        let s = NoiseSchedule::new(
            BetaSchedule::ScaledLinear {
                start: 0.0015,
                end: 0.0195,
            },
            1000,
        );
        for t in [1usize, 10, 500, 999] {
            let (a, prev) = (s.alphas_cumprod[t], s.alphas_cumprod[t - 1]);
            let posterior = (1.0 - prev) / (1.0 - a) * s.betas[t];
            let sigma = ddim_sigma(a, prev, 1.0);
            assert!(
                (sigma * sigma - posterior).abs() <= 1e-12 * posterior,
                "t {t}"
            );
            assert_eq!(ddim_sigma(a, prev, 0.0), 0.0);
        }
    }
}
