//! Per-timestep loss weights.

use crate::Parameterization;

/// Min-SNR-γ weighting (Hang et al. 2023): caps each timestep's effective
/// weight at γ in x0 terms so low-noise steps, whose SNR is huge, stop
/// dominating training. For a loss on the model's own target the weight is
/// min(SNR, γ)/SNR (ε), min(SNR, γ)/(SNR + 1) (v) or min(SNR, γ) (x0).
/// γ = 5 in the paper. SNR 0 (zero terminal SNR) weighs 0 for x0, 1 for ε
/// and 0 for v.
pub fn min_snr_gamma(snr: f64, gamma: f64, p: Parameterization) -> f64 {
    let capped = snr.min(gamma);
    match p {
        Parameterization::Eps if snr == 0.0 => 1.0,
        Parameterization::Eps => capped / snr,
        Parameterization::V => capped / (snr + 1.0),
        Parameterization::X0 => capped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Parameterization::*;

    #[test]
    fn closed_form_weights() {
        // High SNR: capped at γ.
        assert!((min_snr_gamma(50.0, 5.0, Eps) - 0.1).abs() < 1e-15);
        assert!((min_snr_gamma(50.0, 5.0, V) - 5.0 / 51.0).abs() < 1e-15);
        assert_eq!(min_snr_gamma(50.0, 5.0, X0), 5.0);
        // Low SNR: uncapped, ε weight 1, v weight SNR/(SNR+1), x0 weight SNR.
        assert_eq!(min_snr_gamma(0.5, 5.0, Eps), 1.0);
        assert!((min_snr_gamma(0.5, 5.0, V) - 0.5 / 1.5).abs() < 1e-15);
        assert_eq!(min_snr_gamma(0.5, 5.0, X0), 0.5);
        assert_eq!(min_snr_gamma(0.0, 5.0, V), 0.0);
    }

    /// The three weightings are one weighting: each target's loss equals a
    /// multiple of the x0 loss (ε: SNR·, v: (SNR+1)·), so weight × that
    /// factor must be min(SNR, γ) for all of them.
    #[test]
    fn weights_agree_in_x0_terms() {
        for snr in [0.01, 1.0, 4.9, 5.0, 123.0] {
            let want = f64::min(snr, 5.0);
            assert!((min_snr_gamma(snr, 5.0, Eps) * snr - want).abs() < 1e-12);
            assert!((min_snr_gamma(snr, 5.0, V) * (snr + 1.0) - want).abs() < 1e-12);
            assert!((min_snr_gamma(snr, 5.0, X0) - want).abs() < 1e-12);
        }
    }
}
