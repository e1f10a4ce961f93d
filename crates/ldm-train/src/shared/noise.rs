//! Reproducible Gaussian noise generated on the host.
//!
//! Backend RNGs are global and their state cannot be saved, so noise that
//! must survive a resume (the posterior sample) comes from a counter-based
//! generator keyed by (seed, stream, step): the same key gives the same noise
//! on every backend and after any restart.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// splitmix64: a fast, well-mixed 64-bit step; good enough for noise and seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a key of several words into one seed.
pub fn mix(words: &[u64]) -> u64 {
    let mut s = 0x243F_6A88_85A3_08D3u64;
    for w in words {
        s ^= *w;
        s = splitmix64(&mut s);
    }
    s
}

/// Streams of randomness, so that adding a consumer never shifts another's numbers.
#[derive(Clone, Copy, Debug)]
#[repr(u64)]
pub enum Stream {
    /// Posterior sampling noise.
    Posterior = 1,
    /// Backend seed for ops that draw their own randomness (dropout).
    Backend = 2,
    /// Weight initialization.
    Init = 3,
    /// Choice and jitter of re-seeded VQ codes.
    CodeRestart = 4,
    /// Diffusion training: the timestep of each sample.
    Timestep = 5,
    /// Diffusion training: the noise ε added to the latent.
    DiffusionNoise = 6,
    /// Diffusion training: which conditions are dropped for guidance.
    CondDropout = 7,
    /// Diffusion training: the posterior sample of a cached KL latent.
    LatentSample = 8,
    /// Diffusion training: which of the plain and mirrored latents is used.
    LatentFlip = 9,
}

/// A uniform integer in `0..bound` for key `(seed, stream, step, index)`.
pub fn uniform_index(seed: u64, stream: Stream, step: u64, index: u64, bound: u64) -> u64 {
    // Modulo bias is below bound / 2^64: invisible for any bound used here.
    mix(&[seed, stream as u64, step, index]) % bound
}

/// A uniform float in [0, 1) for key `(seed, stream, step, index)`.
pub fn uniform_unit(seed: u64, stream: Stream, step: u64, index: u64) -> f64 {
    (mix(&[seed, stream as u64, step, index]) >> 11) as f64 / (1u64 << 53) as f64
}

/// `n` standard-normal samples (Box–Muller on 53-bit uniforms).
pub fn normal(key: u64, n: usize) -> Vec<f32> {
    let mut state = key;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = ((splitmix64(&mut state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A noise tensor for `(seed, stream, step)` with the given shape.
pub fn normal_tensor<B: Backend, const D: usize>(
    seed: u64,
    stream: Stream,
    step: u64,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    let values = normal(mix(&[seed, stream as u64, step]), n);
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_standard() {
        let a = normal(mix(&[1, 2, 3]), 20_000);
        assert_eq!(a, normal(mix(&[1, 2, 3]), 20_000));
        assert_ne!(a[..10], normal(mix(&[1, 2, 4]), 10)[..]);
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
