//! Image data for ldm-train: finding images, turning them into samples, and
//! streaming deterministic, resumable batches of plain `Vec<f32>`.
//!
//! This crate deliberately knows nothing about burn or tensors: the trainer
//! uploads [`Batch::images`] (NCHW, values in `[-1, 1]`) itself. Keeping the
//! data side backend-free lets it be tested in milliseconds and reused by
//! tools that never build a model.
//!
//! ```no_run
//! use ldm_data::{DataPosition, ImageFolder, Loader, LoaderConfig, Transform};
//! # fn main() -> Result<(), ldm_data::DataError> {
//! let folder = ImageFolder::scan("datasets/faces".as_ref())?;
//! let cfg = LoaderConfig {
//!     batch_size: 8,
//!     workers: 0,
//!     seed: 42,
//!     shuffle: true,
//!     drop_last: true,
//!     repeat: true,
//!     transform: Transform { size: 256, resize: None, random_crop: true, hflip: true },
//!     prefetch: 4,
//! };
//! let mut loader = Loader::new(folder, cfg, DataPosition::default())?;
//! let batch = loader.next_batch()?.expect("repeat never ends");
//! assert_eq!(batch.shape(), [8, 3, 256, 256]);
//! // Save `batch.next` in the checkpoint to resume right after this batch.
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod assemble;
mod batch;
mod decode;
mod error;
mod folder;
mod grid;
mod loader;
mod order;
mod rng;
mod transform;

pub use batch::{Batch, DataPosition};
pub use decode::decode_rgb8;
pub use error::DataError;
pub use folder::ImageFolder;
pub use grid::{grid_rgb8, save_grid_png, GRID_PADDING};
pub use loader::{Loader, LoaderConfig};
pub use order::epoch_order;
pub use rng::{sample_seed, SplitMix64};
pub use transform::{load_image_chw, Transform};
