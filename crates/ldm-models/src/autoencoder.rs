//! `AutoencoderKL`: encoder, Gaussian posterior and decoder with the 1×1
//! `quant_conv` / `post_quant_conv` between them.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::AutoencoderConfig;
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::kl::DiagonalGaussian;
use crate::resnet::conv1;

/// The first-stage model. Parameter paths equal the reference checkpoint
/// keys (`encoder.down.0.block.0.norm1.weight`, `quant_conv.weight`, …).
#[derive(Module, Debug)]
pub struct AutoencoderKl<B: Backend> {
    /// Image → moments.
    pub encoder: Encoder<B>,
    /// Latent → image.
    pub decoder: Decoder<B>,
    /// Moments `2·z` → `2·embed_dim`.
    pub quant_conv: Conv2d<B>,
    /// `embed_dim` → `z_channels`.
    pub post_quant_conv: Conv2d<B>,
}

impl<B: Backend> AutoencoderKl<B> {
    /// A randomly initialized model (PyTorch's default conv init).
    pub fn new(cfg: &AutoencoderConfig, device: &B::Device) -> Self {
        let mut quant_conv = conv1(2 * cfg.z_channels, 2 * cfg.embed_dim, device);
        if let (Some(v), Some(bias)) = (cfg.posterior_logvar_init, quant_conv.bias.take()) {
            // Moments are [mean | logvar]: set the second half of the bias.
            let e = cfg.embed_dim;
            let b = bias
                .val()
                .detach()
                .slice_assign(e..2 * e, Tensor::full([e], v, device))
                .detach();
            quant_conv.bias = Some(Param::from_tensor(b));
        }
        Self {
            encoder: Encoder::new(cfg, 2 * cfg.z_channels, device),
            decoder: Decoder::new(cfg, device),
            quant_conv,
            post_quant_conv: conv1(cfg.embed_dim, cfg.z_channels, device),
        }
    }

    /// q(z|x) for images in [−1, 1].
    pub fn encode(&self, x: Tensor<B, 4>) -> DiagonalGaussian<B> {
        DiagonalGaussian::from_moments(self.quant_conv.forward(self.encoder.forward(x)))
    }

    /// Decoder features before `decoder.conv_out` (see [`Decoder::forward_features`]).
    pub fn decode_features(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decoder
            .forward_features(self.post_quant_conv.forward(z))
    }

    /// Latent `[N, embed_dim, h, w]` → image.
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decoder.conv_out.forward(self.decode_features(z))
    }

    /// Reconstruction through the posterior mode (evaluation).
    pub fn reconstruct(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decode(self.encode(x).mode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::Distribution;

    fn tiny() -> AutoencoderConfig {
        AutoencoderConfig {
            attn_resolutions: vec![8],
            ..AutoencoderConfig::small(16)
        }
    }

    #[test]
    fn shapes_follow_the_downsampling_factor() {
        let dev = Default::default();
        let cfg = tiny();
        let ae = AutoencoderKl::<Flex>::new(&cfg, &dev);
        // Non-square input: the asymmetric pad must still halve exactly.
        let x = Tensor::<Flex, 4>::random([2, 3, 16, 24], Distribution::Uniform(-1.0, 1.0), &dev);
        let post = ae.encode(x.clone());
        assert_eq!(post.mean.dims(), [2, 3, 8, 12]);
        assert_eq!(ae.reconstruct(x).dims(), [2, 3, 16, 24]);
        // Attention at resolution 8 exists in level 1 of both halves.
        assert_eq!(ae.encoder.down[1].attn.len(), 1);
        assert_eq!(ae.decoder.up[1].attn.len(), 2);
        assert!(ae.encoder.down[0].attn.is_empty());
    }

    #[test]
    fn posterior_logvar_init_sets_the_logvar_bias() {
        let dev = Default::default();
        let cfg = AutoencoderConfig {
            posterior_logvar_init: Some(-6.0),
            ..tiny()
        };
        // On the autodiff backend: the bias must stay a trainable leaf.
        let ae = AutoencoderKl::<Autodiff<Flex>>::new(&cfg, &dev);
        let bias = ae.quant_conv.bias.unwrap().val();
        assert!(bias.is_require_grad());
        let b: Vec<f32> = bias.into_data().to_vec().unwrap();
        assert!(
            b[..3].iter().all(|v| v.abs() < 1.0) && b[3..] == [-6.0; 3],
            "{b:?}"
        );
    }
}
