//! Exponential moving average of a model's weights (the reference `LitEma`).
//!
//! The shadow copy lives on the inner (non-autodiff) backend: reading the
//! trained model through `valid()` takes its current values without touching
//! its autograd graph, so the average never holds on to graph memory.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

/// The decay after `n` updates (counting this one): min(cap, (1 + n)/(10 + n)).
/// Early averages forget fast, so the EMA is not dragged back to the random
/// initialization.
pub fn ema_decay(cap: f64, n: u64) -> f64 {
    cap.min((1.0 + n as f64) / (10.0 + n as f64))
}

/// Collects every float parameter, in visiting order.
struct Gather<B: Backend>(Vec<Tensor<B, 1>>);

impl<B: Backend> ModuleVisitor<B> for Gather<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().flatten(0, D - 1));
    }
}

/// Moves each shadow parameter toward the gathered one:
/// s ← s − (1 − decay)·(s − p). Both modules have the same structure, so
/// visiting order pairs them up.
struct Blend<B: Backend> {
    current: std::vec::IntoIter<Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, shadow, mapper) = param.consume();
        let p = self
            .current
            .next()
            .expect("EMA and model have the same parameters");
        let p: Tensor<B, D> = p.reshape(shadow.dims());
        let updated = shadow.clone() - (shadow - p) * (1.0 - self.decay);
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// The EMA of a module `M` trained on the autodiff backend `B`.
pub struct Ema<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// The averaged weights, ready for inference.
    pub shadow: M::InnerModule,
    /// Updates so far (the `n` of [`ema_decay`]).
    pub updates: u64,
    /// Decay cap.
    pub cap: f64,
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Ema<B, M> {
    /// Starts the average at the model's current weights.
    pub fn new(model: &M, cap: f64) -> Self {
        Self {
            shadow: model.valid(),
            updates: 0,
            cap,
        }
    }

    /// One update toward `model`'s current weights; returns the decay used.
    pub fn update(&mut self, model: &M) -> f64 {
        self.updates += 1;
        let decay = ema_decay(self.cap, self.updates);
        let mut gather = Gather(Vec::new());
        model.valid().visit(&mut gather);
        let mut blend = Blend {
            current: gather.0.into_iter(),
            decay,
        };
        self.shadow = self.shadow.clone().map(&mut blend);
        decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn decay_follows_the_reference_formula() {
        assert_eq!(ema_decay(0.9999, 1), 2.0 / 11.0);
        assert_eq!(ema_decay(0.9999, 90), 91.0 / 100.0);
        assert_eq!(ema_decay(0.9999, 10_000_000), 0.9999);
    }

    #[test]
    fn update_blends_toward_the_model() {
        type A = Autodiff<Flex>;
        let dev = Default::default();
        let model: Linear<A> = LinearConfig::new(2, 1).init(&dev);
        let mut ema = Ema::<A, Linear<A>>::new(&model, 0.9999);
        let start: Vec<f32> = ema.shadow.weight.val().into_data().to_vec().unwrap();
        let moved = Linear {
            weight: model.weight.clone().map(|w| w + 1.0),
            bias: model.bias.clone(),
        };
        let d = ema.update(&moved);
        let now: Vec<f32> = ema.shadow.weight.val().into_data().to_vec().unwrap();
        for (a, b) in start.iter().zip(&now) {
            assert!(((b - a) as f64 - (1.0 - d)).abs() < 1e-6, "{a} → {b}");
        }
        assert_eq!(ema.updates, 1);
    }
}
