//! Noise schedules: β_t for t = 0…T−1 and the cumulative ᾱ_t = Π_{s≤t}(1−β_s)
//! that `q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I)` is built from.

/// How β_t runs over the T steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// β = linspace(√start, √end, T)²: what the LDM/SD configs call "linear"
    /// (diffusers: "scaled_linear"). LDM 0.0015→0.0195, SD 0.00085→0.012.
    ScaledLinear {
        /// β_0.
        start: f64,
        /// β_{T−1}.
        end: f64,
    },
    /// β = linspace(start, end, T) (DDPM's; diffusers "linear", LDM "sqrt_linear").
    Linear {
        /// β_0.
        start: f64,
        /// β_{T−1}.
        end: f64,
    },
    /// Nichol & Dhariwal: ᾱ(t) ∝ cos²((t/T + s)/(1 + s) · π/2), each β capped
    /// at 0.999 (diffusers "squaredcos_cap_v2"; the reference uses s = 8e-3).
    Cosine {
        /// Offset s that keeps β_0 from vanishing.
        s: f64,
    },
}

/// Largest β the cosine schedule allows (its last steps would reach 1).
pub const COSINE_MAX_BETA: f64 = 0.999;

/// β_t and ᾱ_t of a T-step diffusion.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    /// β_t, t = 0…T−1.
    pub betas: Vec<f64>,
    /// ᾱ_t = Π_{s≤t} (1 − β_s).
    pub alphas_cumprod: Vec<f64>,
}

/// `n` evenly spaced values from `a` to `b` inclusive (numpy's linspace).
fn linspace(a: f64, b: f64, n: usize) -> impl Iterator<Item = f64> {
    let step = if n > 1 { (b - a) / (n - 1) as f64 } else { 0.0 };
    (0..n).map(move |i| if i + 1 == n { b } else { a + step * i as f64 })
}

impl NoiseSchedule {
    /// The schedule `kind` over `timesteps` steps.
    pub fn new(kind: BetaSchedule, timesteps: usize) -> Self {
        assert!(timesteps > 0, "a schedule needs at least one step");
        let betas: Vec<f64> = match kind {
            BetaSchedule::ScaledLinear { start, end } => {
                linspace(start.sqrt(), end.sqrt(), timesteps)
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::Linear { start, end } => linspace(start, end, timesteps).collect(),
            BetaSchedule::Cosine { s } => {
                let f = |t: f64| {
                    ((t / timesteps as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..timesteps)
                    .map(|t| (1.0 - f(t as f64 + 1.0) / f(t as f64)).min(COSINE_MAX_BETA))
                    .collect()
            }
        };
        Self::from_betas(betas)
    }

    /// A schedule from explicit β_t (each in (0, 1]).
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// Number of steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) (∞ where ᾱ_t = 1, 0 where ᾱ_t = 0).
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        a / (1.0 - a)
    }

    /// Lin et al. 2024 ("Common diffusion noise schedules and sample steps are
    /// flawed"): shifts and scales √ᾱ so the last step is pure noise (ᾱ_{T−1}
    /// = 0, SNR 0) while ᾱ_0 stays, then recovers β. Train with v-prediction
    /// and sample with trailing spacing when using it.
    pub fn rescale_zero_terminal_snr(&self) -> Self {
        let sqrt: Vec<f64> = self.alphas_cumprod.iter().map(|a| a.sqrt()).collect();
        let (first, last) = (sqrt[0], sqrt[sqrt.len() - 1]);
        let cumprod: Vec<f64> = sqrt
            .iter()
            .map(|s| ((s - last) * first / (first - last)).powi(2))
            .collect();
        let betas = cumprod
            .iter()
            .enumerate()
            .map(|(t, a)| {
                if t == 0 {
                    1.0 - a
                } else {
                    1.0 - a / cumprod[t - 1]
                }
            })
            .collect();
        Self {
            betas,
            alphas_cumprod: cumprod,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn scaled_linear_is_a_squared_linspace_of_roots() {
        let s = NoiseSchedule::new(
            BetaSchedule::ScaledLinear {
                start: 0.00085,
                end: 0.012,
            },
            1000,
        );
        assert_eq!(s.len(), 1000);
        assert!(close(s.betas[0], 0.00085, 1e-15));
        assert!(close(s.betas[999], 0.012, 1e-15));
        // Closed form at a middle step.
        let k = 417.0;
        let want = (0.00085f64.sqrt() + k * (0.012f64.sqrt() - 0.00085f64.sqrt()) / 999.0).powi(2);
        assert!(close(s.betas[417], want, 1e-13));
        // ᾱ_t is the running product of (1 − β).
        let prod: f64 = s.betas[..=300].iter().map(|b| 1.0 - b).product();
        assert!(close(s.alphas_cumprod[300], prod, 1e-12));
        // SD's figure: ᾱ_999 ≈ 0.0047 (√ᾱ ≈ 0.068).
        assert!(
            (s.alphas_cumprod[999].sqrt() - 0.0683).abs() < 5e-4,
            "{}",
            s.alphas_cumprod[999]
        );
    }

    #[test]
    fn linear_is_a_linspace() {
        let s = NoiseSchedule::new(
            BetaSchedule::Linear {
                start: 1e-4,
                end: 0.02,
            },
            1000,
        );
        assert!(close(s.betas[0], 1e-4, 1e-15));
        assert!(close(s.betas[999], 0.02, 1e-15));
        assert!(close(
            s.betas[500],
            1e-4 + 500.0 * (0.02 - 1e-4) / 999.0,
            1e-13
        ));
    }

    #[test]
    fn cosine_follows_its_alpha_bar() {
        let t_max = 1000;
        let s = NoiseSchedule::new(BetaSchedule::Cosine { s: 8e-3 }, t_max);
        let f = |t: f64| {
            ((t / t_max as f64 + 8e-3) / (1.0 + 8e-3) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        // Until the cap binds, ᾱ_t = f(t + 1) / f(0) exactly.
        for t in [0usize, 10, 500, 900] {
            assert!(
                close(s.alphas_cumprod[t], f(t as f64 + 1.0) / f(0.0), 1e-9),
                "t {t}"
            );
        }
        assert_eq!(s.betas[t_max - 1], COSINE_MAX_BETA);
        assert!(s.betas.iter().all(|b| *b > 0.0 && *b <= COSINE_MAX_BETA));
    }

    #[test]
    fn zero_terminal_snr_ends_in_pure_noise_and_keeps_the_start() {
        let s = NoiseSchedule::new(
            BetaSchedule::ScaledLinear {
                start: 0.00085,
                end: 0.012,
            },
            1000,
        );
        let z = s.rescale_zero_terminal_snr();
        assert_eq!(z.alphas_cumprod[999], 0.0);
        assert_eq!(z.snr(999), 0.0);
        assert!(close(z.alphas_cumprod[0], s.alphas_cumprod[0], 1e-12));
        assert_eq!(z.betas[999], 1.0);
        // β recovers ᾱ, and SNR still falls monotonically.
        let rebuilt = NoiseSchedule::from_betas(z.betas.clone());
        for t in [0usize, 1, 250, 998] {
            assert!(
                close(rebuilt.alphas_cumprod[t], z.alphas_cumprod[t], 1e-9),
                "t {t}"
            );
        }
        assert!(z.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
    }
}
