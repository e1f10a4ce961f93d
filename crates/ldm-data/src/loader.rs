//! The public loader: batch assembly moved onto a background thread so the
//! trainer's step overlaps with decoding the next batches.

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use crate::assemble::Assembler;
use crate::{Batch, DataError, DataPosition, ImageSource, Transform};

/// How a [`Loader`] walks and decodes a dataset.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Decode threads; 0 means one per CPU. Affects speed only, never the
    /// batches produced.
    pub workers: usize,
    /// Seed of every shuffle and augmentation; a run's seed plus a
    /// [`DataPosition`] pins down all future batches.
    pub seed: u64,
    /// A fresh permutation per epoch; off visits files in sorted-path order.
    pub shuffle: bool,
    /// Drop an epoch's last batch when it would be smaller than
    /// `batch_size`, so every training step sees the same batch shape.
    pub drop_last: bool,
    /// Roll over into the next epoch forever (training); off stops after one
    /// epoch (evaluation, caching latents).
    pub repeat: bool,
    /// How each image becomes a sample.
    pub transform: Transform,
    /// Batches kept ready ahead of the trainer. 0 assembles each batch on
    /// the caller's thread when asked (still decoding in parallel), which is
    /// handy when debugging. Affects speed and memory only, never the batches.
    pub prefetch: usize,
    /// MiB of prepared images (decoded and brought to the transform's
    /// largest scale) kept in memory, so later epochs skip decoding and
    /// resizing them; 0 keeps none. Affects speed and memory only, never the
    /// batches.
    #[serde(default)]
    pub cache_mb: usize,
}

impl LoaderConfig {
    /// Rejects settings that cannot produce batches.
    ///
    /// # Errors
    /// [`DataError::Config`] for a zero batch size or an invalid transform.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.batch_size == 0 {
            return Err(DataError::Config("batch_size must be > 0".into()));
        }
        self.transform.validate()
    }
}

/// What the producer sends: a batch (or the end) with the skip count as of
/// that batch, so [`Loader::skipped`] does not run ahead of what the trainer
/// has consumed.
type Message = Result<(Option<Batch>, usize), DataError>;

enum Source {
    Inline(Box<Assembler>),
    Background {
        // Both optional only so `Drop` can close the channel before joining.
        batches: Option<Receiver<Message>>,
        producer: Option<JoinHandle<()>>,
    },
}

/// Why no more batches will come.
enum Finished {
    EndOfData,
    Failed(String),
}

/// Streams [`Batch`]es from an [`ImageSource`] — an [`crate::ImageFolder`]
/// or a [`crate::LabelledImages`] (class folder, IDX, manifest) —
/// deterministically.
///
/// The batches depend only on the source, the config's `seed`, `shuffle`,
/// `drop_last`, `repeat`, `batch_size` and `transform`, and the start
/// position — not on `workers` or `prefetch` — so runs are reproducible on
/// any machine and resumable from a [`DataPosition`].
///
/// Files that fail to decode are warned about once on stderr and skipped;
/// see [`Loader::skipped`]. Dropping the loader stops its background thread
/// (after at most the batch it is currently assembling).
pub struct Loader {
    source: Source,
    skipped: usize,
    position: DataPosition,
    finished: Option<Finished>,
}

impl Loader {
    /// Creates a loader that continues from `start` (use
    /// `DataPosition::default()` for a fresh run) and, unless `prefetch` is
    /// 0, starts assembling batches in the background immediately.
    ///
    /// # Errors
    /// [`DataError::Config`] for invalid settings, [`DataError::BadPosition`]
    /// if `start` lies outside this dataset, [`DataError::TooFewImages`] if
    /// `drop_last` is set and the dataset has fewer files than a batch.
    ///
    /// For an [`crate::ImageFolder`] the batches are exactly those of the
    /// folder-only loader this crate had before [`ImageSource`] existed.
    /// Pass an `Arc` of the source to keep using it beside the loader.
    pub fn new(
        source: impl ImageSource + 'static,
        cfg: LoaderConfig,
        start: DataPosition,
    ) -> Result<Self, DataError> {
        let prefetch = cfg.prefetch;
        let assembler = Assembler::new(Box::new(source), cfg, start)?;
        let source = if prefetch == 0 {
            Source::Inline(Box::new(assembler))
        } else {
            spawn_producer(assembler, prefetch)?
        };
        Ok(Self {
            source,
            skipped: 0,
            position: start,
            finished: None,
        })
    }

    /// The next batch, or `Ok(None)` once the single epoch is over when
    /// `repeat` is off. With `repeat`, epochs roll over forever, each with a
    /// new shuffle drawn from `(seed, epoch)`.
    ///
    /// # Errors
    /// [`DataError::NoReadableImages`] once every file has failed to decode,
    /// [`DataError::TooFewImages`] once `drop_last` can never fill a batch.
    /// After an error every later call returns [`DataError::Stopped`].
    pub fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        match &self.finished {
            Some(Finished::EndOfData) => return Ok(None),
            Some(Finished::Failed(reason)) => {
                return Err(DataError::Stopped(format!(
                    "an earlier error ended it: {reason}"
                )))
            }
            None => {}
        }
        let message = match &mut self.source {
            Source::Inline(assembler) => assembler.next_batch().map(|b| (b, assembler.skipped())),
            Source::Background { batches, .. } => batches
                .as_ref()
                .and_then(|rx| rx.recv().ok())
                .unwrap_or_else(|| {
                    Err(DataError::Stopped(
                        "the background thread exited unexpectedly".into(),
                    ))
                }),
        };
        match message {
            Ok((batch, skipped)) => {
                self.skipped = skipped;
                match &batch {
                    Some(b) => self.position = b.next,
                    None => self.finished = Some(Finished::EndOfData),
                }
                Ok(batch)
            }
            Err(err) => {
                self.finished = Some(Finished::Failed(err.to_string()));
                Err(err)
            }
        }
    }

    /// Number of files that failed to decode so far (as of the last batch
    /// returned). Each was warned about once, with its path and the
    /// decoder's reason, and is skipped for the rest of the run.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The position after the last batch returned (the start position before
    /// the first call): what to save in a checkpoint.
    pub fn position(&self) -> DataPosition {
        self.position
    }
}

fn spawn_producer(mut assembler: Assembler, prefetch: usize) -> Result<Source, DataError> {
    let (tx, rx) = mpsc::sync_channel::<Message>(prefetch);
    let producer = std::thread::Builder::new()
        .name("ldm-data-producer".into())
        .spawn(move || loop {
            let message = assembler.next_batch().map(|b| (b, assembler.skipped()));
            let last = !matches!(message, Ok((Some(_), _)));
            // A send error means the Loader was dropped: nobody wants more.
            if tx.send(message).is_err() || last {
                return;
            }
        })
        .map_err(|e| DataError::Config(format!("cannot start the data producer thread: {e}")))?;
    Ok(Source::Background {
        batches: Some(rx),
        producer: Some(producer),
    })
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Source::Background { batches, producer } = &mut self.source {
            // Closing the channel first turns the producer's next (or
            // pending) send into an error, so the join below cannot hang.
            drop(batches.take());
            if let Some(handle) = producer.take() {
                // A panicked producer has already reported itself; re-raising
                // here would abort if we are unwinding already.
                let _ = handle.join();
            }
        }
    }
}
