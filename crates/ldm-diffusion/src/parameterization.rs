//! What the denoiser predicts, and how to get x0 and ε back from it.
//!
//! With x_t = a·x0 + b·ε, a = √ᾱ_t, b = √(1−ᾱ_t): ε-prediction (LDM,
//! SD 1.x), x0-prediction (LDM option) and v = a·ε − b·x0 (Salimans & Ho;
//! SD 2.x, sgm). Every quantity is a linear combination of two tensors, so
//! each function returns the two coefficients; the caller applies them to
//! tensors of whatever backend it trains on.

/// The model's prediction target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parameterization {
    /// The noise ε.
    Eps,
    /// The clean sample x0.
    X0,
    /// The velocity v = √ᾱ·ε − √(1−ᾱ)·x0.
    V,
}

/// Coefficients (c_1, c_2) of a combination c_1·u + c_2·w of two tensors.
pub type Mix = (f64, f64);

/// (√ᾱ, √(1−ᾱ)) for ᾱ = `alpha_cumprod`.
fn ab(alpha_cumprod: f64) -> Mix {
    (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt())
}

/// x_t = c_1·x0 + c_2·ε (the forward process, `q_sample`).
pub fn noising(alpha_cumprod: f64) -> Mix {
    ab(alpha_cumprod)
}

impl Parameterization {
    /// The training target as c_1·x0 + c_2·ε.
    pub fn target(self, alpha_cumprod: f64) -> Mix {
        let (a, b) = ab(alpha_cumprod);
        match self {
            Self::Eps => (0.0, 1.0),
            Self::X0 => (1.0, 0.0),
            Self::V => (-b, a),
        }
    }

    /// The predicted x0 as c_1·x_t + c_2·prediction.
    pub fn x0(self, alpha_cumprod: f64) -> Mix {
        let (a, b) = ab(alpha_cumprod);
        match self {
            // ᾱ = 0 (zero terminal SNR) leaves x0 undetermined by ε: the
            // reference would divide by zero; samplers there use v.
            Self::Eps => (1.0 / a, -b / a),
            Self::X0 => (0.0, 1.0),
            Self::V => (a, -b),
        }
    }

    /// The predicted ε as c_1·x_t + c_2·prediction.
    pub fn eps(self, alpha_cumprod: f64) -> Mix {
        let (a, b) = ab(alpha_cumprod);
        match self {
            Self::Eps => (0.0, 1.0),
            Self::X0 => (1.0 / b, -a / b),
            Self::V => (b, a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noises a known (x0, ε), forms each target, converts it back.
    #[test]
    fn every_parameterization_recovers_x0_and_eps() {
        let (x0, eps) = (0.37, -1.21);
        for alpha in [0.9991, 0.5, 0.0047] {
            let (na, nb) = noising(alpha);
            let xt = na * x0 + nb * eps;
            for p in [
                Parameterization::Eps,
                Parameterization::X0,
                Parameterization::V,
            ] {
                let (t1, t2) = p.target(alpha);
                let pred = t1 * x0 + t2 * eps;
                let (x1, x2) = p.x0(alpha);
                let (e1, e2) = p.eps(alpha);
                assert!(
                    (x1 * xt + x2 * pred - x0).abs() < 1e-9,
                    "{p:?} x0 at ᾱ {alpha}"
                );
                assert!(
                    (e1 * xt + e2 * pred - eps).abs() < 1e-9,
                    "{p:?} ε at ᾱ {alpha}"
                );
            }
        }
    }

    #[test]
    fn v_matches_its_definition() {
        let alpha: f64 = 0.3;
        let (c1, c2) = Parameterization::V.target(alpha);
        assert!((c1 + (1.0 - alpha).sqrt()).abs() < 1e-15);
        assert!((c2 - alpha.sqrt()).abs() < 1e-15);
        // At zero terminal SNR v is −x0, and x_t (pure noise) still gives it back.
        let (x1, x2) = Parameterization::V.x0(0.0);
        assert_eq!((x1, x2), (0.0, -1.0));
    }
}
