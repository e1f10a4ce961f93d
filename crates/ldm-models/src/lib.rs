//! Networks of ldm-train, generic over the burn backend: the KL autoencoder
//! (encoder, decoder, Gaussian posterior), the PatchGAN discriminator, LPIPS,
//! and their shared blocks. Parameter paths follow the reference checkpoints.

pub mod attention;
pub mod autoencoder;
pub mod config;
pub mod decoder;
pub mod discriminator;
pub mod encoder;
pub mod kl;
pub mod lpips;
pub mod norm;
pub mod resample;
pub mod resnet;

pub use autoencoder::AutoencoderKl;
pub use config::{AutoencoderConfig, Regularizer};
pub use discriminator::{DiscNorm, DiscriminatorConfig, NLayerDiscriminator};
pub use kl::DiagonalGaussian;
pub use lpips::Lpips;
