//! Building batches deterministically: the walk through epochs, the skipping
//! of undecodable files, and the parallel decode of each batch's candidates.
//!
//! This is the single-threaded "brain" of the loader; [`crate::Loader`] only
//! decides on which thread it runs. Parallelism is confined to decoding a
//! list of candidates chosen *before* any decoding starts, and results are
//! collected in candidate order, so the batches cannot depend on the number
//! of workers or on which worker finishes first.

use std::path::PathBuf;

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::image_cache::ImageCache;
use crate::order::epoch_order;
use crate::rng::sample_seed;
use crate::{Batch, DataError, DataPosition, ImageSource, LoaderConfig};

/// The loader's state machine. Owns everything it needs so it can be moved
/// to the background producer thread.
pub(crate) struct Assembler {
    source: Box<dyn ImageSource>,
    cfg: LoaderConfig,
    pool: ThreadPool,
    position: DataPosition,
    /// The order of `order_epoch`, rebuilt only when the epoch changes.
    order: Vec<usize>,
    order_epoch: u64,
    /// Per file index: known not to decode. Never retried, so each broken
    /// file costs one warning and one failed decode per run.
    failed: Vec<bool>,
    failed_count: usize,
    /// Prepared images of files already decoded (within `cfg.cache_mb`).
    cache: ImageCache,
}

/// A decoded sample with its item index, name and label.
struct Sample {
    index: usize,
    name: PathBuf,
    label: Option<usize>,
    values: Vec<f32>,
}

/// One file chosen to fill a batch slot: its place in the epoch order (which
/// seeds its augmentation) and its file index.
#[derive(Clone, Copy)]
struct Candidate {
    position: u64,
    file: usize,
}

impl Assembler {
    /// Validates `cfg` and `start` against `source` and starts the decode pool.
    pub(crate) fn new(
        source: Box<dyn ImageSource>,
        cfg: LoaderConfig,
        start: DataPosition,
    ) -> Result<Self, DataError> {
        cfg.validate()?;
        let len = source.len();
        if start.cursor > len as u64 {
            return Err(DataError::BadPosition {
                root: source.root().to_path_buf(),
                epoch: start.epoch,
                cursor: start.cursor,
                len,
            });
        }
        let threads = match cfg.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ldm-data-decode-{i}"))
            .build()
            .map_err(|e| {
                DataError::Config(format!("cannot start {threads} decode threads: {e}"))
            })?;
        let order = epoch_order(len, cfg.shuffle, cfg.seed, start.epoch);
        let assembler = Self {
            cache: ImageCache::new(cfg.cache_mb << 20),
            failed: vec![false; len],
            failed_count: 0,
            order,
            order_epoch: start.epoch,
            position: start,
            source,
            cfg,
            pool,
        };
        assembler.check_feasible()?;
        Ok(assembler)
    }

    /// Files found undecodable so far.
    pub(crate) fn skipped(&self) -> usize {
        self.failed_count
    }

    /// The next batch, `None` at the end of the (single) epoch without `repeat`.
    pub(crate) fn next_batch(&mut self) -> Result<Option<Batch>, DataError> {
        let len = self.source.len() as u64;
        loop {
            if self.position.cursor >= len {
                if !self.cfg.repeat {
                    return Ok(None);
                }
                self.position = DataPosition {
                    epoch: self.position.epoch + 1,
                    cursor: 0,
                };
            }
            self.check_feasible()?;
            if self.order_epoch != self.position.epoch {
                self.order = epoch_order(
                    self.source.len(),
                    self.cfg.shuffle,
                    self.cfg.seed,
                    self.position.epoch,
                );
                self.order_epoch = self.position.epoch;
            }
            let (samples, cursor) = self.fill_from(self.position.cursor);
            self.check_feasible()?;
            let short = samples.len() < self.cfg.batch_size;
            if samples.is_empty() || (short && self.cfg.drop_last) {
                // Only the epoch's tail can come up short: drop it and let the
                // top of the loop roll over or end.
                self.position.cursor = len;
                continue;
            }
            self.position = self.normalized(cursor);
            return Ok(Some(self.pack(samples)));
        }
    }

    /// Decodes candidates from `cursor` on until a batch is full or the epoch
    /// is exhausted. Returns the samples and the cursor after the last file tried.
    fn fill_from(&mut self, mut cursor: u64) -> (Vec<Sample>, u64) {
        let len = self.source.len() as u64;
        let batch_size = self.cfg.batch_size;
        let mut samples = Vec::with_capacity(batch_size);
        while samples.len() < batch_size && cursor < len {
            let need = batch_size - samples.len();
            if self.cfg.drop_last && self.at_most_usable_from(cursor) < need {
                // The tail cannot complete the batch, so decoding it is wasted
                // work: the batch is dropped either way.
                return (samples, len);
            }
            let mut candidates = Vec::with_capacity(need);
            while candidates.len() < need && cursor < len {
                let file = self.order[cursor as usize];
                if !self.failed[file] {
                    candidates.push(Candidate {
                        position: cursor,
                        file,
                    });
                }
                cursor += 1;
            }
            for (candidate, result) in candidates.iter().zip(self.decode_all(&candidates)) {
                match result {
                    Ok(values) => samples.push(Sample {
                        index: candidate.file,
                        name: self.source.name(candidate.file),
                        label: self.source.class_of(candidate.file),
                        values,
                    }),
                    Err(err) => self.mark_failed(candidate.file, &err),
                }
            }
        }
        (samples, cursor)
    }

    /// Decodes and transforms `candidates` on the pool, results in input order.
    fn decode_all(&self, candidates: &[Candidate]) -> Vec<Result<Vec<f32>, DataError>> {
        let (source, cache) = (&*self.source, &self.cache);
        let (transform, seed, epoch) = (&self.cfg.transform, self.cfg.seed, self.position.epoch);
        self.pool.install(|| {
            candidates
                .par_iter()
                .map(|c| {
                    // What `load_image_chw` does for a file (the transform
                    // was validated with the config), the prepared image
                    // kept for the next epochs.
                    let prepared = match cache.get(c.file) {
                        Some(image) => image,
                        None => {
                            let image = source.load_rgb(c.file)?;
                            let prepared = transform.prepare(&image).unwrap_or(image);
                            cache.offer(c.file, prepared)
                        }
                    };
                    let rng_seed = sample_seed(seed, epoch, c.position);
                    Ok(transform.apply_prepared(&prepared, rng_seed))
                })
                .collect()
        })
    }

    fn mark_failed(&mut self, file: usize, err: &DataError) {
        if !self.failed[file] {
            self.failed[file] = true;
            self.failed_count += 1;
            // The error already names the path and the decoder's reason.
            eprintln!("warning: skipping unreadable image: {err}");
        }
    }

    /// An upper bound on the decodable files in `order[cursor..]`: exact
    /// counting is only needed (and only cheap) near the end of the epoch.
    fn at_most_usable_from(&self, cursor: u64) -> usize {
        let remaining = self.source.len() - cursor as usize;
        if remaining > self.cfg.batch_size + self.failed_count {
            return remaining;
        }
        self.order[cursor as usize..]
            .iter()
            .filter(|&&f| !self.failed[f])
            .count()
    }

    /// Errors that would otherwise make `repeat` spin forever on a dataset
    /// that can never produce a batch.
    fn check_feasible(&self) -> Result<(), DataError> {
        let len = self.source.len();
        let root = self.source.root().to_path_buf();
        if self.failed_count == len {
            return Err(DataError::NoReadableImages { root, failed: len });
        }
        let readable = len - self.failed_count;
        if self.cfg.drop_last && readable < self.cfg.batch_size {
            return Err(DataError::TooFewImages {
                root,
                readable,
                batch_size: self.cfg.batch_size,
            });
        }
        Ok(())
    }

    /// With `repeat`, a cursor at the end of an epoch is reported as the start
    /// of the next one, so a checkpoint's epoch number matches what a user
    /// expects ("epoch 3 done" reads as epoch 4, cursor 0).
    fn normalized(&self, cursor: u64) -> DataPosition {
        if self.cfg.repeat && cursor >= self.source.len() as u64 {
            DataPosition {
                epoch: self.position.epoch + 1,
                cursor: 0,
            }
        } else {
            DataPosition {
                epoch: self.position.epoch,
                cursor,
            }
        }
    }

    fn pack(&self, samples: Vec<Sample>) -> Batch {
        let side = self.cfg.transform.size as usize;
        let mut images = Vec::with_capacity(samples.len() * self.cfg.transform.sample_len());
        let mut paths = Vec::with_capacity(samples.len());
        let mut indices = Vec::with_capacity(samples.len());
        let mut labels = Vec::with_capacity(samples.len());
        for sample in samples {
            images.extend_from_slice(&sample.values);
            paths.push(sample.name);
            indices.push(sample.index);
            labels.push(sample.label);
        }
        Batch {
            n: paths.len(),
            images,
            height: side,
            width: side,
            paths,
            indices,
            labels: labels.into_iter().collect(),
            next: self.position,
        }
    }
}
