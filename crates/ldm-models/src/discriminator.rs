//! PatchGAN `NLayerDiscriminator` (pix2pix / taming) with BatchNorm or ActNorm.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::leaky_relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which normalization the inner layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscNorm {
    /// BatchNorm in training mode (the reference default).
    #[default]
    Batch,
    /// Glow's ActNorm: per-channel affine, initialized from the first batch.
    Act,
}

/// Discriminator hyper-parameters (`[loss]` keys `disc_in_channels`, `disc_num_layers`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct DiscriminatorConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Base width (ndf).
    pub ndf: usize,
    /// Number of stride-2 layers.
    pub n_layers: usize,
    /// Inner normalization.
    pub norm: DiscNorm,
}

/// Per-channel affine `scale·(x + loc)`; `loc`, `scale` start so that the
/// first batch comes out with zero mean and unit variance per channel.
#[derive(Module, Debug)]
pub struct ActNorm<B: Backend> {
    /// Additive offset, `[1, C, 1, 1]`.
    pub loc: Param<Tensor<B, 4>>,
    /// Multiplicative scale, `[1, C, 1, 1]`.
    pub scale: Param<Tensor<B, 4>>,
}

impl<B: Backend> ActNorm<B> {
    fn new(c: usize, device: &B::Device) -> Self {
        Self {
            loc: Param::from_tensor(Tensor::zeros([1, c, 1, 1], device)),
            scale: Param::from_tensor(Tensor::ones([1, c, 1, 1], device)),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        (x + self.loc.val()) * self.scale.val()
    }

    /// Data-dependent initialization from a batch (detached statistics).
    fn initialize(&mut self, x: &Tensor<B, 4>) {
        let [n, c, h, w] = x.dims();
        let flat = x.clone().detach().swap_dims(0, 1).reshape([c, n * h * w]);
        let mean = flat.clone().mean_dim(1);
        let std = (flat - mean.clone()).powi_scalar(2).mean_dim(1).sqrt();
        self.loc = Param::from_tensor((-mean).reshape([1, c, 1, 1]));
        self.scale = Param::from_tensor((std + 1e-6).recip().reshape([1, c, 1, 1]));
    }
}

/// conv4 s2 + LReLU; (n−1)× [conv4 s2 + norm + LReLU]; conv4 s1 + norm + LReLU;
/// conv4 s1 → 1 logit per patch (256² input → 30×30 logits for n = 3).
#[derive(Module, Debug)]
pub struct NLayerDiscriminator<B: Backend> {
    /// The `n_layers + 2` convolutions in order.
    pub convs: Vec<Conv2d<B>>,
    /// BatchNorm after convs 1..=n_layers (empty with ActNorm).
    pub bn: Vec<BatchNorm<B>>,
    /// ActNorm after convs 1..=n_layers (empty with BatchNorm).
    pub actnorm: Vec<ActNorm<B>>,
}

impl<B: Backend> NLayerDiscriminator<B> {
    /// Builds the discriminator with the reference init: conv weights
    /// N(0, 0.02), norm weights N(1, 0.02), norm biases 0.
    pub fn new(cfg: &DiscriminatorConfig, device: &B::Device) -> Self {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        // The reference drops the conv bias only when BatchNorm follows.
        let inner_bias = cfg.norm != DiscNorm::Batch;
        let conv = |cin: usize, cout: usize, stride: usize, bias: bool| {
            let mut c = Conv2dConfig::new([cin, cout], [4, 4])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(bias)
                .init::<B>(device);
            // Only the weight is re-initialized; the bias keeps PyTorch's default.
            c.weight = init.init_with(c.weight.dims(), None, None, device);
            c
        };
        let ndf = cfg.ndf;
        let mut convs = vec![conv(cfg.in_channels, ndf, 2, true)];
        let mut widths = Vec::new();
        let mut mult = 1;
        for n in 1..=cfg.n_layers {
            let prev = mult;
            mult = (1 << n).min(8);
            let stride = if n < cfg.n_layers { 2 } else { 1 };
            convs.push(conv(ndf * prev, ndf * mult, stride, inner_bias));
            widths.push(ndf * mult);
        }
        convs.push(conv(ndf * mult, 1, 1, true));
        let (bn, actnorm) = match cfg.norm {
            DiscNorm::Batch => {
                let bn = widths
                    .iter()
                    .map(|&c| {
                        let mut b = BatchNormConfig::new(c).init::<B>(device);
                        b.gamma = Initializer::Normal {
                            mean: 1.0,
                            std: 0.02,
                        }
                        .init_with([c], None, None, device);
                        b
                    })
                    .collect();
                (bn, Vec::new())
            }
            DiscNorm::Act => (
                Vec::new(),
                widths.iter().map(|&c| ActNorm::new(c, device)).collect(),
            ),
        };
        Self { convs, bn, actnorm }
    }

    fn norm(&self, i: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match (self.bn.get(i), self.actnorm.get(i)) {
            (Some(bn), _) => bn.forward(x),
            (None, Some(an)) => an.forward(x),
            (None, None) => x,
        }
    }

    /// Patch logits `[N, 1, h, w]` for images in [−1, 1].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let last = self.convs.len() - 1;
        let mut h = leaky_relu(self.convs[0].forward(x), 0.2);
        for i in 1..last {
            h = leaky_relu(self.norm(i - 1, self.convs[i].forward(h)), 0.2);
        }
        self.convs[last].forward(h)
    }

    /// ActNorm's data-dependent init on the first real batch; a no-op with BatchNorm.
    pub fn initialize_actnorm(&mut self, x: Tensor<B, 4>) {
        if self.actnorm.is_empty() {
            return;
        }
        let last = self.convs.len() - 1;
        let mut h = leaky_relu(self.convs[0].forward(x.detach()), 0.2);
        for i in 1..last {
            let pre = self.convs[i].forward(h);
            self.actnorm[i - 1].initialize(&pre);
            h = leaky_relu(self.actnorm[i - 1].forward(pre), 0.2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    #[test]
    fn patch_logits_have_reference_size() {
        let dev = Default::default();
        let cfg = DiscriminatorConfig {
            in_channels: 3,
            ndf: 8,
            n_layers: 3,
            norm: DiscNorm::Batch,
        };
        let d = NLayerDiscriminator::<Autodiff<Flex>>::new(&cfg, &dev);
        // 256 → 128 → 64 → 32 → 31 → 30, scaled down: 64 → 32 → 16 → 8 → 7 → 6.
        let x = Tensor::random([2, 3, 64, 64], Distribution::Uniform(-1.0, 1.0), &dev);
        assert_eq!(d.forward(x).dims(), [2, 1, 6, 6]);
        assert_eq!(d.convs.len(), 5);
        assert!(d.convs[1].bias.is_none() && d.convs[0].bias.is_some());
    }

    #[test]
    fn actnorm_whitens_first_batch() {
        let dev = Default::default();
        let cfg = DiscriminatorConfig {
            in_channels: 3,
            ndf: 8,
            n_layers: 2,
            norm: DiscNorm::Act,
        };
        let mut d = NLayerDiscriminator::<Flex>::new(&cfg, &dev);
        let x = Tensor::random([4, 3, 32, 32], Distribution::Normal(0.3, 2.0), &dev);
        d.initialize_actnorm(x.clone());
        let pre = d.convs[1].forward(leaky_relu(d.convs[0].forward(x), 0.2));
        let out = d.actnorm[0].forward(pre);
        let [n, c, h, w] = out.dims();
        let flat = out.swap_dims(0, 1).reshape([c, n * h * w]);
        let mean: Vec<f32> = flat.clone().mean_dim(1).into_data().to_vec().unwrap();
        assert!(mean.iter().all(|m| m.abs() < 1e-4), "{mean:?}");
        assert!(d.convs[1].bias.is_some());
    }
}
