//! The first stage: `ldm-train autoencoder` (config, the G/D step, the
//! adaptive GAN weight, the loss terms, the loop), its evaluation and metrics,
//! the latent statistics it records, and its benchmark.

pub mod bench;
pub mod config;
pub mod eval;
pub mod gan_weight;
pub mod latent_stats;
pub mod loss;
pub mod metrics;
pub mod train;
pub mod trainer;
