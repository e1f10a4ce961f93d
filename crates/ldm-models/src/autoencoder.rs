//! The first-stage autoencoder: encoder, a regularized latent (diagonal
//! Gaussian for KL, vector quantizer for VQ) between the 1×1 `quant_conv` and
//! `post_quant_conv`, and the decoder.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::{AutoencoderConfig, Regularizer};
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::kl::DiagonalGaussian;
use crate::quantizer::VectorQuantizer;
use crate::resnet::conv1;

/// The first-stage model (LDM's `AutoencoderKL` or `VQModelInterface`).
/// Parameter paths equal the reference checkpoint keys
/// (`encoder.down.0.block.0.norm1.weight`, `quant_conv.weight`,
/// `quantize.embedding.weight`, …).
#[derive(Module, Debug)]
pub struct Autoencoder<B: Backend> {
    /// Image → moments (KL) or pre-quantization features (VQ).
    pub encoder: Encoder<B>,
    /// Latent → image.
    pub decoder: Decoder<B>,
    /// KL: `2·z` → `2·embed_dim` moments; VQ: `z` → `embed_dim`.
    pub quant_conv: Conv2d<B>,
    /// `embed_dim` → `z_channels`.
    pub post_quant_conv: Conv2d<B>,
    /// The codebook (VQ only).
    pub quantize: Option<VectorQuantizer<B>>,
}

/// What [`Autoencoder::encode`] returns: the latent the diffusion stage sees.
pub enum Encoded<B: Backend> {
    /// KL: the posterior; sample it in training, take its mode otherwise.
    Gaussian(DiagonalGaussian<B>),
    /// VQ: the pre-quantization latent (LDM's `VQModelInterface.encode`);
    /// [`Autoencoder::decode`] quantizes it.
    PreQuant(Tensor<B, 4>),
}

impl<B: Backend> Encoded<B> {
    /// The deterministic latent: posterior mean, or the pre-quantization latent.
    pub fn mode(&self) -> Tensor<B, 4> {
        match self {
            Encoded::Gaussian(p) => p.mode(),
            Encoded::PreQuant(h) => h.clone(),
        }
    }
}

impl<B: Backend> Autoencoder<B> {
    /// A randomly initialized model (PyTorch's default conv init).
    pub fn new(cfg: &AutoencoderConfig, device: &B::Device) -> Self {
        let (z, e) = (cfg.z_channels, cfg.embed_dim);
        let (quant_conv, quantize, enc_out) = match cfg.regularizer {
            Regularizer::Kl => {
                let mut quant_conv = conv1(2 * z, 2 * e, device);
                if let Some(v) = cfg.posterior_logvar_init {
                    // Moments are [mean | logvar]: set the second half of the bias.
                    // (Take the bias only here: without an init it must stay.)
                    if let Some(bias) = quant_conv.bias.take() {
                        let b = bias
                            .val()
                            .detach()
                            .slice_assign(e..2 * e, Tensor::full([e], v, device))
                            .detach();
                        quant_conv.bias = Some(Param::from_tensor(b));
                    }
                }
                (quant_conv, None, 2 * z)
            }
            Regularizer::Vq => (
                conv1(z, e, device),
                Some(VectorQuantizer::new(&cfg.quantizer(), device)),
                z,
            ),
        };
        Self {
            encoder: Encoder::new(cfg, enc_out, device),
            decoder: Decoder::new(cfg, device),
            quant_conv,
            post_quant_conv: conv1(e, z, device),
            quantize,
        }
    }

    /// `quant_conv(encoder(x))` for images in [−1, 1]: KL moments or the VQ
    /// pre-quantization latent.
    pub fn moments(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.quant_conv.forward(self.encoder.forward(x))
    }

    /// The latent of `x` in [−1, 1] (see [`Encoded`]).
    pub fn encode(&self, x: Tensor<B, 4>) -> Encoded<B> {
        let m = self.moments(x);
        match self.quantize {
            Some(_) => Encoded::PreQuant(m),
            None => Encoded::Gaussian(DiagonalGaussian::from_moments(m)),
        }
    }

    /// Decoder features before `decoder.conv_out` (see
    /// [`Decoder::forward_features`]) of a latent already in decoder space
    /// (KL sample, or VQ codes: no quantization here).
    pub fn decode_features(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decoder
            .forward_features(self.post_quant_conv.forward(z))
    }

    /// Latent `[N, embed_dim, h, w]` → image; a VQ model quantizes first.
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.quantize {
            Some(q) => q.quantize(z),
            None => z,
        };
        self.decode_quantized(z)
    }

    /// Image from a latent already in decoder space (KL sample, or VQ codes
    /// looked up by the caller), without quantizing again.
    pub fn decode_quantized(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decoder.conv_out.forward(self.decode_features(z))
    }

    /// Reconstruction through the deterministic latent (evaluation).
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
        let ae = Autoencoder::<Flex>::new(&cfg, &dev);
        // Non-square input: the asymmetric pad must still halve exactly.
        let x = Tensor::<Flex, 4>::random([2, 3, 16, 24], Distribution::Uniform(-1.0, 1.0), &dev);
        let post = ae.encode(x.clone());
        assert_eq!(post.mode().dims(), [2, 3, 8, 12]);
        assert_eq!(ae.reconstruct(x).dims(), [2, 3, 16, 24]);
        // Attention at resolution 8 exists in level 1 of both halves.
        assert_eq!(ae.encoder.down[1].attn.len(), 1);
        assert_eq!(ae.decoder.up[1].attn.len(), 2);
        assert!(ae.encoder.down[0].attn.is_empty());
    }

    #[test]
    fn every_conv_keeps_its_bias_without_a_logvar_init() {
        let ae = Autoencoder::<Flex>::new(&tiny(), &Default::default());
        assert!(ae.quant_conv.bias.is_some() && ae.post_quant_conv.bias.is_some());
    }

    #[test]
    fn posterior_logvar_init_sets_the_logvar_bias() {
        let dev = Default::default();
        let cfg = AutoencoderConfig {
            posterior_logvar_init: Some(-6.0),
            ..tiny()
        };
        // On the autodiff backend: the bias must stay a trainable leaf.
        let ae = Autoencoder::<Autodiff<Flex>>::new(&cfg, &dev);
        let bias = ae.quant_conv.bias.unwrap().val();
        assert!(bias.is_require_grad());
        let b: Vec<f32> = bias.into_data().to_vec().unwrap();
        assert!(
            b[..3].iter().all(|v| v.abs() < 1.0) && b[3..] == [-6.0; 3],
            "{b:?}"
        );
    }

    #[test]
    fn vq_encodes_before_quantization_and_decode_quantizes() {
        let dev = Default::default();
        let cfg = AutoencoderConfig {
            regularizer: Regularizer::Vq,
            n_embed: Some(16),
            ..tiny()
        };
        let ae = Autoencoder::<Flex>::new(&cfg, &dev);
        let x = Tensor::<Flex, 4>::random([1, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &dev);
        let Encoded::PreQuant(h) = ae.encode(x.clone()) else {
            panic!("a VQ model encodes to its pre-quantization latent");
        };
        assert_eq!(h.dims(), [1, 3, 8, 8]);
        assert_eq!(ae.quant_conv.weight.dims(), [3, 4, 1, 1]);
        let q = ae.quantize.as_ref().unwrap();
        let direct = ae.decode(h.clone());
        let via_codes = ae
            .decoder
            .conv_out
            .forward(ae.decode_features(q.quantize(h)));
        direct
            .into_data()
            .assert_approx_eq::<f32>(&via_codes.into_data(), Default::default());
    }
}
