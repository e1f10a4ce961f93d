//! Networks of ldm-train, generic over the burn backend: the KL autoencoder
//! (encoder, decoder, Gaussian posterior), the PatchGAN discriminator, LPIPS,
//! and their shared blocks. The autoencoder's parameter paths are the reference
//! checkpoint keys.

pub mod attention;
pub mod autoencoder;
pub mod blocks;
pub mod config;
pub mod decoder;
pub mod discriminator;
pub mod encoder;
pub mod kl;
pub mod lpips;
pub mod norm;
pub mod resample;
pub mod resnet;
pub mod tensor_bytes;

pub use autoencoder::AutoencoderKl;
pub use config::{AutoencoderConfig, Regularizer};
pub use discriminator::{DiscNorm, DiscriminatorConfig, NLayerDiscriminator};
pub use kl::DiagonalGaussian;
pub use lpips::Lpips;
