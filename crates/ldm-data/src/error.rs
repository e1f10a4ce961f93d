//! The one error type of this crate.
//!
//! Every message is a single line that names the file or folder involved, so
//! a failed run can be diagnosed from the last line of its log.

use std::path::PathBuf;

/// Everything that can go wrong while finding, decoding, batching or writing
/// images.
///
/// A file that fails to decode during loading is *not* an error of the loader
/// (it is warned about and skipped, see [`crate::Loader::skipped`]);
/// [`DataError::Decode`] reaches the caller only from direct calls such as
/// [`crate::load_image_chw`].
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset root does not exist (or is not a folder).
    #[error("dataset folder {root} does not exist or is not a directory")]
    MissingRoot {
        /// The path as it was given.
        root: PathBuf,
    },

    /// The root exists but holds no file with an image extension anywhere below it.
    #[error("no .png/.jpg/.jpeg/.webp files found under {root}")]
    NoImages {
        /// The scanned folder.
        root: PathBuf,
    },

    /// A filesystem operation failed (listing a folder, reading metadata, writing a file).
    #[error("{path}: {source}")]
    Io {
        /// The file or folder the operation was about.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// One image could not be decoded.
    #[error("cannot decode {path}: {reason}")]
    Decode {
        /// The offending file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },

    /// Every candidate file of the dataset failed to decode.
    #[error("no readable images in {root}: all {failed} files failed to decode")]
    NoReadableImages {
        /// The dataset folder.
        root: PathBuf,
        /// How many files were tried (all of them).
        failed: usize,
    },

    /// `drop_last` is set but the dataset cannot fill even one batch, so every
    /// epoch would be empty.
    #[error(
        "only {readable} readable images in {root}, fewer than batch_size {batch_size} \
         with drop_last: lower batch_size or disable drop_last"
    )]
    TooFewImages {
        /// The dataset folder.
        root: PathBuf,
        /// Upper bound on the decodable images (files minus known failures).
        readable: usize,
        /// The configured batch size.
        batch_size: usize,
    },

    /// A resume position that cannot belong to this dataset.
    #[error(
        "data position (epoch {epoch}, cursor {cursor}) is past the end of the \
         {len}-file epoch of {root}; was the checkpoint made on another dataset?"
    )]
    BadPosition {
        /// The dataset folder.
        root: PathBuf,
        /// Epoch of the rejected position.
        epoch: u64,
        /// Cursor of the rejected position.
        cursor: u64,
        /// Number of files in this dataset.
        len: usize,
    },

    /// An IDX file (MNIST format) that cannot be read: missing, not gzip
    /// decodable, wrong magic, truncated, or not matching its labels file.
    #[error("bad IDX file {path}: {reason}")]
    Idx {
        /// The IDX file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A labelled dataset whose layout is wrong: a class folder with stray
    /// or no images, an unusable `classes.txt`, an undetectable kind.
    #[error("{path}: {reason}")]
    Dataset {
        /// The dataset root or the offending file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// One line of a JSONL/CSV manifest is unusable (syntax, missing field,
    /// bad label, missing image file).
    #[error("{path}:{line}: {reason}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },

    /// A folder of sidecar-captioned images ([`crate::CaptionedImages`]) in
    /// which some images have no `<stem>.txt`. Reported as a count plus the
    /// first offender, so one message covers a folder with thousands missing.
    #[error(
        "{missing} of {total} images under {root} have no caption file, the first is \
         {first} (expected {expected}); add the missing captions or move those images out"
    )]
    MissingCaptions {
        /// The dataset folder.
        root: PathBuf,
        /// How many images have no caption file.
        missing: usize,
        /// How many images the folder holds.
        total: usize,
        /// The first image (in path order) without a caption file.
        first: PathBuf,
        /// The caption file `first` would need.
        expected: PathBuf,
    },

    /// A configuration value that cannot work (zero batch size, zero image size, ...).
    #[error("invalid data configuration: {0}")]
    Config(String),

    /// Image buffers handed to the grid writer do not match the shape they claim.
    #[error("bad image grid input: {0}")]
    Shape(String),

    /// Encoding or writing an output image failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// The encoder's or OS's explanation.
        reason: String,
    },

    /// The background loading thread is gone: it stopped after an earlier
    /// error, or it panicked (a bug in this crate).
    #[error("data loader stopped: {0}")]
    Stopped(String),
}
