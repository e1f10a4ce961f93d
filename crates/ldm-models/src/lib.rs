//! Networks of ldm-train, generic over the burn backend: the KL and VQ
//! autoencoders (encoder, decoder, Gaussian posterior, vector quantizer), the
//! PatchGAN discriminator, LPIPS, the FID Inception-v3, the diffusion UNet
//! and its conditioners (class embedding, text transformer, pretrained BERT
//! and CLIP text encoders), and their shared blocks. Parameter paths are the
//! reference checkpoint keys.

pub mod attention;
pub mod autoencoder;
pub mod blocks;
pub mod conditioner;
pub mod config;
pub mod decoder;
pub mod discriminator;
pub mod encoder;
pub mod inception;
mod inception_blocks;
pub mod kl;
pub mod layer_norm;
pub mod lpips;
pub mod multi_head;
pub mod norm;
pub mod quantizer;
pub mod resample;
pub mod resnet;
pub mod sequential;
pub mod tensor_bytes;
pub mod torch_weights;
pub mod unet;

pub use autoencoder::{Autoencoder, Encoded};
pub use config::{AttnType, AutoencoderConfig, Regularizer};
pub use discriminator::{DiscNorm, DiscriminatorConfig, NLayerDiscriminator};
pub use inception::{InceptionFid, InceptionLoadError};
pub use kl::DiagonalGaussian;
pub use lpips::Lpips;
pub use quantizer::{QuantizerConfig, VectorQuantizer};
pub use unet::{UNet, UNetConfig};
