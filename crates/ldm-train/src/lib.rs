//! ldm-train: training of latent-diffusion models with burn. The `ldm-train`
//! binary is a thin CLI over this library, whose folders follow the flow:
//! [`shared`] (config loading, run directory, checkpoints, TensorBoard,
//! backend choice…), one folder per stage ([`autoencoder`], [`diffusion`]), and [`interop`]
//! with the reference formats.

pub mod autoencoder;
pub mod diffusion;
pub mod interop;
pub mod shared;
