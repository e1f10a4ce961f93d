//! What both stages share: config loading, the run directory, checkpoints,
//! TensorBoard, progress bars, backend choice, weights files, parameter ids,
//! reproducible noise, the pretrained assets and the Fréchet distance.

pub mod assets;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod fid;
pub mod noise;
pub mod param_ids;
pub mod progress;
pub mod run_dir;
pub mod shipped;
pub mod tensorboard;
pub mod weights;
