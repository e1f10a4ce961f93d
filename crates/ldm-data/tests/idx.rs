//! IDX files (MNIST / Fashion-MNIST): reading, errors, the labelled dataset
//! over them, and the loader on top.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use common::{assert_one_line_naming, idx_pixels, write_idx_split, write_maybe_gz, TempDir};
use ldm_data::idx::{encode_idx, read_idx_labels};
use ldm_data::{
    u8_to_unit, DataError, DataPosition, Fit, IdxImages, ImageSource, LabelledImages, Loader,
    LoaderConfig, SourceKind, Transform,
};

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = TempDir::new("idx-roundtrip");
    let (rows, cols) = (3u32, 2u32);
    let pixels = idx_pixels(4, 3, 2);
    let labels = [2u8, 0, 1, 2];
    for gz in [false, true] {
        let sub = dir.path().join(if gz { "gz" } else { "plain" });
        fs::create_dir_all(&sub).unwrap();
        let (images_file, labels_file) =
            write_idx_split(&sub, "train", rows, cols, &pixels, &labels, gz);
        if gz {
            assert_eq!(&fs::read(&images_file).unwrap()[..2], &[0x1f, 0x8b]);
        }

        let images = IdxImages::read(&images_file).unwrap();
        assert_eq!(
            (images.len(), images.rows(), images.cols()),
            (4, rows, cols)
        );
        assert_eq!(images.path(), images_file);
        for i in 0..4 {
            assert_eq!(images.image(i), &pixels[i * 6..(i + 1) * 6]);
        }
        assert_eq!(read_idx_labels(&labels_file).unwrap(), labels);

        let data = LabelledImages::idx_dir(&sub, "train").unwrap();
        assert_eq!(data.kind(), SourceKind::Idx);
        assert_eq!(data.len(), 4);
        assert_eq!(data.labels(), &[2, 0, 1, 2]);
        assert_eq!(data.class_names(), ["0", "1", "2"]);
        assert_eq!(data.root(), images_file);
        assert!(data.path(1).is_none());
        let name = data.name(1).to_string_lossy().into_owned();
        assert_eq!(name, format!("{}#1", images_file.display()));
        // Gray replicated into RGB, row-major, width = cols.
        let rgb = data.load_rgb(1).unwrap();
        assert_eq!(rgb.dimensions(), (cols, rows));
        for y in 0..rows {
            for x in 0..cols {
                let v = pixels[6 + (y * cols + x) as usize];
                assert_eq!(rgb.get_pixel(x, y).0, [v, v, v]);
            }
        }
        let item = data.load_item(1).unwrap();
        assert_eq!(item.image, rgb);
        assert_eq!(item.label, 0);
        assert_eq!(item.fingerprint, data.item_fingerprint(1).unwrap());
    }
    // Plain and gzip hold the same content: the same content fingerprint.
    let plain = LabelledImages::idx_dir(&dir.path().join("plain"), "train").unwrap();
    let gz = LabelledImages::idx_dir(&dir.path().join("gz"), "train").unwrap();
    assert_eq!(plain.fingerprint(), gz.fingerprint());
    assert_eq!(plain.content_fingerprint().unwrap(), plain.fingerprint());
}

#[test]
fn truncated_wrong_magic_and_trailing_bytes_are_errors_naming_the_file() {
    let dir = TempDir::new("idx-errors");
    let good = encode_idx(&[3, 2, 2], &idx_pixels(3, 2, 2));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short-data", good[..good.len() - 1].to_vec(), "truncated"),
        ("short-header", good[..10].to_vec(), "truncated"),
        ("tiny", good[..2].to_vec(), "truncated"),
        (
            "labels-as-images",
            encode_idx(&[3], &[0, 1, 2]),
            "wrong magic 0x00000801",
        ),
        (
            "trailing",
            [good.clone(), vec![0]].concat(),
            "unexpected bytes",
        ),
        ("empty", Vec::new(), "truncated"),
    ];
    for gz in [false, true] {
        for (label, bytes, needle) in &cases {
            let path = dir
                .path()
                .join(format!("{label}{}", if gz { ".gz" } else { "" }));
            write_maybe_gz(&path, bytes, gz);
            let err = IdxImages::read(&path).expect_err(label);
            assert!(matches!(err, DataError::Idx { .. }), "{err}");
            assert_one_line_naming(&err, &path, needle);
        }
    }
    // A gzip stream cut in half is reported as such, not as a short file.
    let whole = dir.path().join("whole.gz");
    write_maybe_gz(&whole, &good, true);
    let bytes = fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.gz");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = IdxImages::read(&cut).unwrap_err();
    assert_one_line_naming(&err, &cut, "gzip");
    // Images magic where labels are expected.
    let images = dir.path().join("images");
    fs::write(&images, &good).unwrap();
    let err = read_idx_labels(&images).unwrap_err();
    assert_one_line_naming(&err, &images, "expected 0x00000801");
    // A missing file.
    let missing = dir.path().join("nope-images-idx3-ubyte");
    assert_one_line_naming(
        &IdxImages::read(&missing).unwrap_err(),
        &missing,
        "cannot open",
    );
}

#[test]
fn count_mismatch_between_images_and_labels_names_both_files() {
    let dir = TempDir::new("idx-mismatch");
    let (images, _) = write_idx_split(
        dir.path(),
        "train",
        2,
        2,
        &idx_pixels(3, 2, 2),
        &[0, 1, 0],
        false,
    );
    let labels = dir.path().join("train-labels-idx1-ubyte");
    fs::write(&labels, encode_idx(&[2], &[0, 1])).unwrap();
    let err = LabelledImages::idx_dir(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::Idx { .. }), "{err}");
    assert_one_line_naming(&err, &images, "3 images");
    assert_one_line_naming(&err, &labels, "2 labels");
}

#[test]
fn classes_txt_splits_and_detection() {
    let dir = TempDir::new("idx-classes");
    let root = dir.path();
    write_idx_split(
        root,
        "train",
        2,
        2,
        &idx_pixels(4, 2, 2),
        &[0, 2, 1, 2],
        true,
    );
    write_idx_split(root, "t10k", 2, 2, &idx_pixels(2, 2, 2), &[1, 1], true);

    // Without classes.txt, names are the numbers.
    let test = LabelledImages::idx_dir(root, "test").unwrap();
    assert_eq!(test.len(), 2);
    assert_eq!(test.class_names(), ["0", "1"]);

    // classes.txt names every class, also those absent from a split.
    fs::write(
        root.join("classes.txt"),
        "T-shirt/top\nTrouser\nAnkle boot\n",
    )
    .unwrap();
    let test = LabelledImages::open(root, SourceKind::Auto, Some("test")).unwrap();
    assert_eq!(test.class_names(), ["T-shirt/top", "Trouser", "Ankle boot"]);
    assert_eq!(test.num_classes(), 3);
    assert!(test.root().ends_with("t10k-images-idx3-ubyte.gz"));
    let train = LabelledImages::open(root, SourceKind::Auto, None).unwrap();
    assert_eq!(train.len(), 4);
    assert_eq!(train.labels(), &[0, 2, 1, 2]);
    assert_eq!(train.class_names()[train.label(1)], "Ankle boot");
    // The images file itself also works, and picks up the same classes.
    let file = root.join("train-images-idx3-ubyte.gz");
    let direct = LabelledImages::open(&file, SourceKind::Auto, None).unwrap();
    assert_eq!(direct.fingerprint(), train.fingerprint());
    assert!(matches!(
        LabelledImages::open(&file, SourceKind::Idx, Some("train")),
        Err(DataError::Config(_))
    ));

    // Too few names for the labels.
    fs::write(root.join("classes.txt"), "a\nb\n").unwrap();
    let err = LabelledImages::idx_dir(root, "train").unwrap_err();
    assert_one_line_naming(&err, &root.join("classes.txt"), "names 2 classes");
    fs::write(root.join("classes.txt"), "a\n\nc\n").unwrap();
    let err = LabelledImages::idx_dir(root, "train").unwrap_err();
    assert_one_line_naming(&err, &root.join("classes.txt"), "line 2 is empty");
    fs::remove_file(root.join("classes.txt")).unwrap();

    // An unknown split lists the ones present.
    let err = LabelledImages::idx_dir(root, "val").unwrap_err();
    assert_one_line_naming(&err, root, "splits here: t10k, train");
    // Plain and gzip side by side are ambiguous.
    write_idx_split(
        root,
        "train",
        2,
        2,
        &idx_pixels(4, 2, 2),
        &[0, 2, 1, 2],
        false,
    );
    let err = LabelledImages::idx_dir(root, "train").unwrap_err();
    assert_one_line_naming(&err, root, "both train-images-idx3-ubyte and");
}

fn config(batch_size: usize, transform: Transform) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers: 2,
        seed: 7,
        shuffle: false,
        drop_last: false,
        repeat: false,
        transform,
        prefetch: 1,
        cache_mb: 0,
    }
}

fn plain_transform(size: u32) -> Transform {
    Transform::fixed(size, Fit::Crop, 0)
}

#[test]
fn loader_over_an_idx_source_gives_the_expected_batches() {
    let dir = TempDir::new("idx-loader");
    let pixels = idx_pixels(5, 4, 4);
    let labels = [3u8, 1, 4, 1, 5];
    write_idx_split(dir.path(), "train", 4, 4, &pixels, &labels, true);
    let data = Arc::new(LabelledImages::idx_dir(dir.path(), "train").unwrap());
    let mut loader = Loader::new(
        Arc::clone(&data),
        config(3, plain_transform(4)),
        DataPosition::default(),
    )
    .unwrap();
    let first = loader.next_batch().unwrap().unwrap();
    let second = loader.next_batch().unwrap().unwrap();
    assert!(loader.next_batch().unwrap().is_none());
    assert_eq!(first.shape(), [3, 3, 4, 4]);
    assert_eq!(second.shape(), [2, 3, 4, 4]);
    assert_eq!(first.indices, [0, 1, 2]);
    assert_eq!(second.indices, [3, 4]);
    assert_eq!(first.labels.as_deref(), Some(&[3, 1, 4][..]));
    assert_eq!(second.labels.as_deref(), Some(&[1, 5][..]));
    assert_eq!(first.paths[2], data.name(2));
    for (batch, offset) in [(&first, 0), (&second, 3)] {
        for i in 0..batch.n {
            let gray = &pixels[(offset + i) * 16..(offset + i + 1) * 16];
            let sample = batch.sample(i);
            for c in 0..3 {
                let plane: Vec<f32> = gray.iter().map(|&v| u8_to_unit(v)).collect();
                assert_eq!(&sample[c * 16..(c + 1) * 16], &plane[..]);
            }
        }
    }
    assert_eq!(loader.skipped(), 0);
    // The source is still usable beside the loader, and through the trait.
    let source: &dyn ImageSource = &*data;
    assert_eq!(source.class_of(4), Some(5));
    assert_eq!(source.class_names().len(), 6);
}

#[test]
fn loader_pads_28_to_32_and_is_deterministic() {
    let dir = TempDir::new("idx-pad");
    let pixels: Vec<u8> = (0..3 * 28 * 28).map(|p| 100 + (p % 100) as u8).collect();
    write_idx_split(dir.path(), "train", 28, 28, &pixels, &[0, 1, 2], false);
    let data = LabelledImages::idx_dir(dir.path(), "train").unwrap();
    let transform = Transform {
        fit: Fit::Pad,
        ..plain_transform(32)
    };
    let run = || {
        let cfg = LoaderConfig {
            shuffle: true,
            repeat: true,
            ..config(2, transform.clone())
        };
        let mut l = Loader::new(data.clone(), cfg, DataPosition::default()).unwrap();
        (0..4)
            .map(|_| l.next_batch().unwrap().unwrap())
            .map(|b| (b.images, b.indices, b.labels))
            .collect::<Vec<_>>()
    };
    let batches = run();
    assert_eq!(batches, run());
    let (images, indices, labels) = &batches[0];
    assert_eq!(labels.as_ref().unwrap(), &indices.to_vec());
    let sample = &images[..3 * 32 * 32];
    let at = |c: usize, x: usize, y: usize| sample[c * 1024 + y * 32 + x];
    assert_eq!(at(0, 0, 0), -1.0);
    assert_eq!(at(2, 31, 31), -1.0);
    assert_eq!(at(1, 1, 16), -1.0);
    let original = pixels[indices[0] * 784 + 5 * 28 + 7];
    assert_eq!(at(1, 7 + 2, 5 + 2), u8_to_unit(original));
}

/// Where setup.sh puts Fashion-MNIST.
fn fashion_mnist_dir() -> PathBuf {
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ldm-train")
        });
    cache.join("fashion-mnist")
}

#[test]
fn real_fashion_mnist_train_split_if_present() {
    let dir = fashion_mnist_dir();
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!(
            "note: skipping: {} has no Fashion-MNIST (run scripts/setup.sh)",
            dir.display()
        );
        return;
    }
    let data = LabelledImages::open(&dir, SourceKind::Auto, Some("train")).unwrap();
    assert_eq!(data.len(), 60_000);
    assert_eq!(
        data.class_names(),
        [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot"
        ]
    );
    // The first label, read straight from the file: byte 8 after the header.
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(fs::File::open(dir.join("train-labels-idx1-ubyte.gz")).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw.len(), 8 + 60_000);
    assert_eq!(data.label(0), usize::from(raw[8]));
    assert_eq!(data.label(59_999), usize::from(raw[8 + 59_999]));
    let image = data.load_rgb(0).unwrap();
    assert_eq!(image.dimensions(), (28, 28));
    let test = LabelledImages::open(&dir, SourceKind::Auto, Some("test")).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.num_classes(), 10);
    assert_ne!(test.fingerprint(), data.fingerprint());
}
