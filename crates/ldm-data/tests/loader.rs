//! Batching semantics: determinism, resume, epochs, drop_last, skipping.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{write_broken, write_rgb_pngs, write_varied_formats, TempDir};
use ldm_data::{
    load_image_chw, sample_seed, Batch, DataError, DataPosition, Fit, ImageFolder, Loader,
    LoaderConfig, Transform,
};

/// 10 good RGB files + 5 other good formats + 4 broken ones.
fn mixed_dataset(label: &str) -> (TempDir, usize, Vec<PathBuf>) {
    let dir = TempDir::new(label);
    let good = write_rgb_pngs(dir.path(), 10).len() + write_varied_formats(dir.path()).len();
    let broken = write_broken(dir.path());
    (dir, good, broken)
}

fn config(batch_size: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers: 2,
        seed: 1234,
        shuffle: true,
        drop_last: false,
        repeat: true,
        transform: Transform {
            size: 8,
            resize: None,
            resize_max: None,
            random_crop: true,
            hflip: true,
            channel_shuffle: false,
            fit: Fit::Crop,
            pad_value: 0,
        },
        prefetch: 2,
        cache_mb: 0,
    }
}

fn loader(root: &Path, cfg: LoaderConfig, start: DataPosition) -> Loader {
    Loader::new(ImageFolder::scan(root).unwrap(), cfg, start).unwrap()
}

fn take(loader: &mut Loader, count: usize) -> Vec<Batch> {
    (0..count)
        .map(|_| loader.next_batch().unwrap().expect("a batch"))
        .collect()
}

/// The parts of a batch that must match bit for bit.
fn key(batch: &Batch) -> (Vec<u32>, Vec<PathBuf>, DataPosition) {
    let bits = batch.images.iter().map(|v| v.to_bits()).collect();
    (bits, batch.paths.clone(), batch.next)
}

#[test]
fn loader_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Loader>();
}

#[test]
fn batches_have_the_right_shape_and_range() {
    let (dir, _, _) = mixed_dataset("shape");
    let mut l = loader(dir.path(), config(4), DataPosition::default());
    for batch in take(&mut l, 6) {
        assert_eq!(batch.shape(), [batch.n, 3, 8, 8]);
        assert_eq!(batch.images.len(), batch.n * 3 * 8 * 8);
        assert_eq!(batch.paths.len(), batch.n);
        assert!(batch.images.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}

#[test]
fn output_is_identical_for_any_workers_and_prefetch() {
    let (dir, _, _) = mixed_dataset("workers");
    let run = |workers, prefetch| {
        let cfg = LoaderConfig {
            workers,
            prefetch,
            ..config(3)
        };
        take(&mut loader(dir.path(), cfg, DataPosition::default()), 12)
            .iter()
            .map(key)
            .collect::<Vec<_>>()
    };
    let reference = run(1, 0);
    assert_eq!(reference, run(4, 0));
    assert_eq!(reference, run(4, 1));
    assert_eq!(reference, run(1, 5));
    assert_eq!(reference, run(0, 3));
}

/// Keeping prepared images between epochs is invisible in the batches, for
/// every fit, with scale augmentation and colour shuffling too.
#[test]
fn the_image_cache_changes_no_sample() {
    let (dir, _, _) = mixed_dataset("cache");
    for fit in [Fit::Crop, Fit::Pad, Fit::Resize] {
        for (resize, resize_max, channel_shuffle) in [
            (None, None, false),
            (Some(10), None, false),
            (Some(8), Some(24), true),
        ] {
            let run = |cache_mb| {
                let base = config(4);
                let cfg = LoaderConfig {
                    cache_mb,
                    transform: Transform {
                        fit,
                        resize,
                        resize_max,
                        channel_shuffle,
                        ..base.transform.clone()
                    },
                    ..base
                };
                // 15 readable files: 12 batches of 4 are three epochs.
                take(&mut loader(dir.path(), cfg, DataPosition::default()), 12)
                    .iter()
                    .map(key)
                    .collect::<Vec<_>>()
            };
            assert_eq!(run(0), run(1), "{fit:?} {resize:?} {resize_max:?}");
        }
    }
}

#[test]
fn resuming_at_batch_next_continues_exactly() {
    let (dir, _, _) = mixed_dataset("resume");
    for drop_last in [false, true] {
        let cfg = LoaderConfig {
            drop_last,
            ..config(4)
        };
        // 15 readable of 19 files: 9 batches cross at least two epoch boundaries.
        let all = take(
            &mut loader(dir.path(), cfg.clone(), DataPosition::default()),
            9,
        );
        for k in [1, 3, 4, 6] {
            let resumed = take(&mut loader(dir.path(), cfg.clone(), all[k - 1].next), 9 - k);
            let expected: Vec<_> = all[k..].iter().map(key).collect();
            let got: Vec<_> = resumed.iter().map(key).collect();
            assert_eq!(
                got, expected,
                "resume after {k} batches, drop_last {drop_last}"
            );
        }
    }
}

#[test]
fn samples_match_load_image_chw_with_their_sample_seed() {
    let dir = TempDir::new("seed");
    write_rgb_pngs(dir.path(), 5);
    let cfg = LoaderConfig {
        shuffle: false,
        ..config(5)
    };
    let batch = take(
        &mut loader(dir.path(), cfg.clone(), DataPosition::default()),
        1,
    )
    .remove(0);
    for (i, path) in batch.paths.iter().enumerate() {
        let expected =
            load_image_chw(path, &cfg.transform, sample_seed(cfg.seed, 0, i as u64)).unwrap();
        assert_eq!(batch.sample(i), &expected[..]);
    }
}

#[test]
fn shuffled_epochs_visit_every_file_once_in_different_orders() {
    let dir = TempDir::new("epochs");
    write_rgb_pngs(dir.path(), 12);
    let mut l = loader(dir.path(), config(12), DataPosition::default());
    let [a, b]: [Batch; 2] = take(&mut l, 2).try_into().unwrap();
    assert_eq!(
        a.next,
        DataPosition {
            epoch: 1,
            cursor: 0
        }
    );
    assert_eq!(
        b.next,
        DataPosition {
            epoch: 2,
            cursor: 0
        }
    );
    assert_ne!(a.paths, b.paths);
    let (mut sa, mut sb) = (a.paths.clone(), b.paths.clone());
    sa.sort();
    sb.sort();
    assert_eq!(sa, sb);
    assert_eq!(sa, ImageFolder::scan(dir.path()).unwrap().paths());

    let unshuffled = LoaderConfig {
        shuffle: false,
        ..config(12)
    };
    let batches = take(
        &mut loader(dir.path(), unshuffled, DataPosition::default()),
        2,
    );
    assert_eq!(batches[0].paths, sa);
    assert_eq!(batches[0].paths, batches[1].paths);
}

#[test]
fn drop_last_controls_the_short_tail_of_a_single_epoch() {
    let (dir, good, _) = mixed_dataset("drop");
    assert_eq!(good, 15);
    let single = |drop_last| {
        let cfg = LoaderConfig {
            drop_last,
            repeat: false,
            ..config(4)
        };
        let mut l = loader(dir.path(), cfg, DataPosition::default());
        let mut sizes = Vec::new();
        while let Some(batch) = l.next_batch().unwrap() {
            sizes.push(batch.n);
        }
        // The end is sticky.
        assert!(l.next_batch().unwrap().is_none());
        sizes
    };
    assert_eq!(single(true), vec![4, 4, 4]);
    assert_eq!(single(false), vec![4, 4, 4, 3]);

    // With repeat, the dropped tail rolls into the next epoch.
    let cfg = LoaderConfig {
        drop_last: true,
        ..config(4)
    };
    let batches = take(&mut loader(dir.path(), cfg, DataPosition::default()), 7);
    assert!(batches.iter().all(|b| b.n == 4));
    assert_eq!(batches[3].next.epoch, 1);
}

#[test]
fn broken_files_are_skipped_and_counted() {
    let (dir, good, broken) = mixed_dataset("skip");
    let cfg = LoaderConfig {
        repeat: false,
        ..config(4)
    };
    let mut l = loader(dir.path(), cfg, DataPosition::default());
    let mut seen = Vec::new();
    while let Some(batch) = l.next_batch().unwrap() {
        seen.extend(batch.paths);
    }
    assert_eq!(seen.len(), good);
    assert!(broken.iter().all(|b| !seen.contains(b)));
    assert_eq!(l.skipped(), broken.len());
}

#[test]
fn all_broken_folder_reports_no_readable_images() {
    let dir = TempDir::new("all-broken");
    let broken = write_broken(dir.path());
    for repeat in [false, true] {
        let cfg = LoaderConfig {
            repeat,
            ..config(2)
        };
        let mut l = loader(dir.path(), cfg, DataPosition::default());
        let err = l.next_batch().unwrap_err();
        assert!(
            matches!(err, DataError::NoReadableImages { failed, .. } if failed == broken.len()),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&*dir.path().to_string_lossy()),
            "{message}"
        );
        assert!(
            message.contains(&format!("all {} files failed to decode", broken.len())),
            "{message}"
        );
        assert!(matches!(l.next_batch(), Err(DataError::Stopped(_))));
    }
}

#[test]
fn too_few_images_for_drop_last_is_a_clear_error() {
    let (dir, good, _) = mixed_dataset("too-few");
    let cfg = LoaderConfig {
        drop_last: true,
        ..config(good + 1)
    };
    let mut l = loader(dir.path(), cfg, DataPosition::default());
    let err = l.next_batch().unwrap_err();
    assert!(
        matches!(err, DataError::TooFewImages { readable, .. } if readable == good),
        "{err}"
    );

    // Fewer files than one batch is caught before any decoding.
    let cfg = LoaderConfig {
        drop_last: true,
        ..config(100)
    };
    let err = Loader::new(
        ImageFolder::scan(dir.path()).unwrap(),
        cfg,
        DataPosition::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, DataError::TooFewImages { .. }), "{err}");
}

#[test]
fn invalid_config_and_positions_are_rejected() {
    let dir = TempDir::new("invalid");
    write_rgb_pngs(dir.path(), 3);
    let folder = || ImageFolder::scan(dir.path()).unwrap();
    let zero_batch = LoaderConfig {
        batch_size: 0,
        ..config(1)
    };
    assert!(matches!(
        Loader::new(folder(), zero_batch, DataPosition::default()),
        Err(DataError::Config(_))
    ));
    let mut zero_size = config(1);
    zero_size.transform.size = 0;
    assert!(matches!(
        Loader::new(folder(), zero_size, DataPosition::default()),
        Err(DataError::Config(_))
    ));
    let past_end = DataPosition {
        epoch: 0,
        cursor: 4,
    };
    assert!(matches!(
        Loader::new(folder(), config(1), past_end),
        Err(DataError::BadPosition { .. })
    ));
    // The very end of an epoch is a valid place to resume from.
    let at_end = DataPosition {
        epoch: 0,
        cursor: 3,
    };
    let single = LoaderConfig {
        repeat: false,
        ..config(1)
    };
    assert!(Loader::new(folder(), single, at_end)
        .unwrap()
        .next_batch()
        .unwrap()
        .is_none());
}

#[test]
fn dropping_a_prefetching_loader_does_not_hang() {
    let (dir, _, _) = mixed_dataset("drop-loader");
    let started = Instant::now();
    for prefetch in [1, 4] {
        let mut l = loader(
            dir.path(),
            LoaderConfig {
                prefetch,
                ..config(2)
            },
            DataPosition::default(),
        );
        take(&mut l, 1);
        // Give the producer time to fill the channel and block on it.
        std::thread::sleep(Duration::from_millis(50));
        let position = l.position();
        assert_ne!(position, DataPosition::default());
        drop(l);
        // Dropped before reading anything at all.
        drop(loader(
            dir.path(),
            LoaderConfig {
                prefetch,
                ..config(2)
            },
            DataPosition::default(),
        ));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
