//! ldm-train: training of latent-diffusion autoencoders with burn — config,
//! the training step and loop, checkpoints, TensorBoard logging, evaluation
//! and benchmarks. The `ldm-train` binary is a thin CLI over this library.

pub mod ae_trainer;
pub mod assets;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod export;
pub mod fid;
pub mod gan_weight;
pub mod import;
pub mod import_config;
pub mod key_map;
pub mod latent_stats;
pub mod loss;
pub mod metrics;
pub mod noise;
pub mod param_ids;
pub mod progress;
pub mod run_dir;
pub mod shipped;
pub mod tensorboard;
pub mod train_autoencoder;
pub mod weights;
