//! Image data for ldm-train: finding images, turning them into samples, and
//! streaming deterministic, resumable batches of plain `Vec<f32>`.
//!
//! Images come from an [`ImageSource`]: an unlabelled [`ImageFolder`];
//! [`LabelledImages`] — a class folder, an IDX pair such as Fashion-MNIST,
//! or a JSONL/CSV manifest; or [`CaptionedImages`] for text-to-image
//! training — a `<stem>.txt` beside each image or a Hugging Face style
//! `metadata.jsonl`, with [`caption_for_epoch`] picking one of an image's
//! captions per epoch. Each is opened by kind or detected with
//! [`open_source`] (or [`LabelledImages::open`] for labels only).
//!
//! This crate deliberately knows nothing about burn or tensors: the trainer
//! uploads [`Batch::images`] (NCHW, values in `[-1, 1]`) itself. Keeping the
//! data side backend-free lets it be tested in milliseconds and reused by
//! tools that never build a model.
//!
//! ```no_run
//! use ldm_data::{DataPosition, Fit, ImageFolder, Loader, LoaderConfig, Transform};
//! # fn main() -> Result<(), ldm_data::DataError> {
//! let folder = ImageFolder::scan("datasets/faces".as_ref())?;
//! let cfg = LoaderConfig {
//!     batch_size: 8,
//!     workers: 0,
//!     seed: 42,
//!     shuffle: true,
//!     drop_last: true,
//!     repeat: true,
//!     transform: Transform {
//!         size: 256,
//!         resize: None,
//!         resize_max: None,
//!         random_crop: true,
//!         hflip: true,
//!         channel_shuffle: false,
//!         fit: Fit::Crop,
//!         pad_value: 0,
//!     },
//!     prefetch: 4,
//!     cache_mb: 0,
//! };
//! let mut loader = Loader::new(folder, cfg, DataPosition::default())?;
//! let batch = loader.next_batch()?.expect("repeat never ends");
//! assert_eq!(batch.shape(), [8, 3, 256, 256]);
//! // Save `batch.next` in the checkpoint to resume right after this batch.
//! # Ok(()) }
//! ```
//!
//! Labelled data, e.g. Fashion-MNIST's 28 × 28 images padded to 32 × 32:
//!
//! ```no_run
//! use std::sync::Arc;
//! use ldm_data::{DataPosition, Fit, LabelledImages, Loader, LoaderConfig, SourceKind, Transform};
//! # fn main() -> Result<(), ldm_data::DataError> {
//! let data = Arc::new(LabelledImages::open(
//!     "/root/.cache/ldm-train/fashion-mnist".as_ref(),
//!     SourceKind::Auto,
//!     Some("train"),
//! )?);
//! assert_eq!(data.class_names()[9], "Ankle boot");
//! let transform = Transform {
//!     size: 32,
//!     resize: None,
//!     resize_max: None,
//!     random_crop: false,
//!     hflip: false,
//!     channel_shuffle: false,
//!     fit: Fit::Pad,
//!     pad_value: 0,
//! };
//! let cfg = LoaderConfig {
//!     batch_size: 64,
//!     workers: 0,
//!     seed: 0,
//!     shuffle: true,
//!     drop_last: true,
//!     repeat: true,
//!     transform,
//!     prefetch: 4,
//!     cache_mb: 0,
//! };
//! let mut loader = Loader::new(Arc::clone(&data), cfg, DataPosition::default())?;
//! let batch = loader.next_batch()?.expect("repeat never ends");
//! let labels = batch.labels.as_ref().expect("a labelled source");
//! assert_eq!(labels[0], data.label(batch.indices[0]));
//! # Ok(()) }
//! ```
//!
//! Captioned images (`photos/a.png` + `photos/a.txt`, … or a
//! `photos/metadata.jsonl`) for text-to-image training. The loader streams
//! their pixels like any other source; the caption of each batch item comes
//! from the source by index, one of its captions per epoch:
//!
//! ```no_run
//! use ldm_data::{caption_for_epoch, open_source, SourceKind};
//! # fn main() -> Result<(), ldm_data::DataError> {
//! let data = open_source("photos".as_ref(), SourceKind::Auto, None)?;
//! let (seed, epoch, index) = (0, 3, 0);
//! let text = caption_for_epoch(data.captions(index), seed, epoch, index)
//!     .expect("a captioned folder has a caption for every image");
//! println!("{}: {text}", data.name(index).display());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod assemble;
mod batch;
mod captioned;
mod decode;
mod error;
mod folder;
mod grid;
mod hash;
pub mod idx;
mod image_cache;
mod labelled;
pub mod latent_cache;
mod loader;
mod manifest;
mod order;
mod rng;
mod source;
mod transform;

pub use batch::{Batch, DataPosition};
pub use captioned::{caption_for_epoch, is_captioned_dir, CaptionFormat, CaptionedImages};
pub use decode::{decode_rgb8, decode_rgb8_bytes};
pub use error::DataError;
pub use folder::ImageFolder;
pub use grid::{grid_rgb8, save_grid_png, GRID_PADDING};
pub use idx::IdxImages;
pub use labelled::{Item, LabelledImages, SourceKind};
pub use loader::{Loader, LoaderConfig};
pub use order::epoch_order;
pub use rng::{sample_seed, SplitMix64};
pub use source::{open_source, ImageSource};
pub use transform::{load_image_chw, u8_to_unit, unit_to_u8, Fit, Transform};
