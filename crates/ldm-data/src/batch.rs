//! What the loader hands to the trainer, and where it is in the stream.

use std::path::PathBuf;

/// Where the loader is in the data stream.
///
/// Save the `next` position of the last batch a step consumed in the
/// checkpoint; a [`crate::Loader`] created with it yields exactly the batches
/// the uninterrupted run would have seen next, because epoch orders and
/// per-sample randomness are pure functions of `(seed, epoch, cursor)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataPosition {
    /// Zero-based epoch number; also selects the epoch's shuffle.
    pub epoch: u64,
    /// Index into that epoch's order of the next file to try. Counts files,
    /// not samples: skipped (undecodable) files advance it too.
    pub cursor: u64,
}

/// One batch of samples, laid out NCHW and ready to upload as a tensor.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `n * 3 * height * width` values in `[-1, 1]`, sample-major, then
    /// channel (R, G, B), then row, then column.
    pub images: Vec<f32>,
    /// Samples in this batch: `batch_size`, or fewer for the last batch of
    /// an epoch when `drop_last` is off.
    pub n: usize,
    /// Sample height in pixels.
    pub height: usize,
    /// Sample width in pixels.
    pub width: usize,
    /// The file each sample came from, in batch order (for logging and for
    /// debugging a bad sample); `<file>#<index>` for items inside one file
    /// (IDX), see [`crate::ImageSource::name`].
    pub paths: Vec<PathBuf>,
    /// The item index (into the [`crate::ImageSource`]) of each sample, in
    /// batch order: what a latent cache keys its entries by.
    pub indices: Vec<usize>,
    /// The class index of each sample, in batch order, when the source is
    /// labelled ([`crate::LabelledImages`]); `None` for an
    /// [`crate::ImageFolder`].
    pub labels: Option<Vec<usize>>,
    /// The position just after this batch: store it to resume from here.
    pub next: DataPosition,
}

impl Batch {
    /// The tensor shape `[n, 3, height, width]` of [`Batch::images`].
    pub fn shape(&self) -> [usize; 4] {
        [self.n, 3, self.height, self.width]
    }

    /// The CHW values of sample `i`.
    ///
    /// # Panics
    /// If `i >= n`.
    pub fn sample(&self, i: usize) -> &[f32] {
        assert!(i < self.n, "sample {i} of a batch of {}", self.n);
        let len = 3 * self.height * self.width;
        &self.images[i * len..(i + 1) * len]
    }
}
