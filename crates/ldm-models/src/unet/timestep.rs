//! The sinusoidal timestep embedding of the UNet (`timestep_embedding` in
//! openaimodel's `util.py`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// `[cos(t·f_0) … cos(t·f_{h−1}), sin(t·f_0) … sin(t·f_{h−1})]` with
/// `f_i = 10000^(−i/h)`, `h = dim/2`, zero-padded to `dim` when odd.
///
/// Cosines come first, as in the UNet's reference helper (the autoencoder
/// side's `get_timestep_embedding` puts sines first): swapping them would
/// silently break imported weights. Computed on the host in f64 and rounded
/// once, so every backend sees the same embedding.
pub fn timestep_embedding<B: Backend>(
    timesteps: &[f64],
    dim: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f64> = (0..half)
            .map(|i| t * (-(10_000f64.ln()) * i as f64 / half as f64).exp())
            .collect();
        out.extend(args.iter().map(|a| a.cos() as f32));
        out.extend(args.iter().map(|a| a.sin() as f32));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(out, [timesteps.len(), dim]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn cosines_first_and_known_values() {
        let e = timestep_embedding::<Flex>(&[0.0, 10.0], 5, &Default::default());
        let v: Vec<f32> = e.into_data().to_vec().unwrap();
        // t = 0: cos 0 = 1 twice, sin 0 = 0 twice, then the odd-dim pad.
        assert_eq!(&v[..5], &[1.0, 1.0, 0.0, 0.0, 0.0]);
        // t = 10, h = 2: frequencies 1 and 10000^(-1/2) = 0.01.
        let want = [10f64.cos(), 0.1f64.cos(), 10f64.sin(), 0.1f64.sin(), 0.0];
        for (a, b) in v[5..].iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
