//! The second stage: `ldm-train diffusion` on cached latents of a frozen
//! autoencoder (config, the latent cache, conditions, the model, the
//! training step and loop), sampling, and loading a trained model back.

pub mod bench;
pub mod cache;
pub mod condition;
pub mod config;
pub mod eval;
pub mod load;
pub mod model;
pub mod retrieval;
pub mod sample;
pub mod sampler;
pub mod train;
pub mod trainer;
