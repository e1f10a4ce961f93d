//! Class folders, manifests, detection and fingerprints of labelled sources.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_one_line_naming, idx_pixels, write_idx_split, TempDir};
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use ldm_data::{
    open_source, Batch, DataError, DataPosition, Fit, ImageFolder, ImageSource, LabelledImages,
    Loader, LoaderConfig, SourceKind, Transform,
};

fn solid(path: &Path, rgb: [u8; 3]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(4, 3, Rgb(rgb)).save(path).unwrap();
    path.to_path_buf()
}

/// bird/{b1.png, nested/b2.png}, cat/{gray.png, c1.jpg}, dog/rgba.png.
fn three_classes(root: &Path) {
    solid(&root.join("bird/b1.png"), [10, 20, 30]);
    solid(&root.join("bird/nested/b2.png"), [40, 50, 60]);
    fs::create_dir_all(root.join("cat")).unwrap();
    GrayImage::from_pixel(5, 5, Luma([77]))
        .save(root.join("cat/gray.png"))
        .unwrap();
    RgbImage::from_pixel(6, 6, Rgb([200, 100, 0]))
        .save_with_format(root.join("cat/c1.jpg"), image::ImageFormat::Jpeg)
        .unwrap();
    fs::create_dir_all(root.join("dog")).unwrap();
    RgbaImage::from_fn(2, 1, |x, _| {
        if x == 0 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([9, 8, 7, 255])
        }
    })
    .save(root.join("dog/rgba.png"))
    .unwrap();
}

#[test]
fn class_folder_scan_sorts_classes_and_converts_gray_and_rgba() {
    let dir = TempDir::new("classes");
    let root = dir.path();
    three_classes(root);
    // Ignored: hidden folders and non-image files.
    solid(&root.join(".thumbnails/x.png"), [1, 1, 1]);
    fs::write(root.join("README.txt"), "about").unwrap();

    let data = LabelledImages::class_folder(root).unwrap();
    assert_eq!(data.kind(), SourceKind::ClassFolder);
    assert_eq!(data.class_names(), ["bird", "cat", "dog"]);
    assert_eq!(data.len(), 5);
    assert_eq!(data.labels(), &[0, 0, 1, 1, 2]);
    let names: Vec<PathBuf> = (0..5).map(|i| data.name(i)).collect();
    assert!(names[1].ends_with("bird/nested/b2.png"), "{names:?}");
    assert!(names[3].ends_with("cat/gray.png"), "{names:?}");
    assert_eq!(data.path(4), Some(&*root.join("dog/rgba.png")));
    // The same order an ImageFolder of the root lists the files in (which
    // does not skip hidden folders).
    let listed: Vec<PathBuf> = ImageFolder::scan(root)
        .unwrap()
        .paths()
        .iter()
        .filter(|p| !p.starts_with(root.join(".thumbnails")))
        .cloned()
        .collect();
    assert_eq!(names, listed);

    let gray = data.load_rgb(3).unwrap();
    assert_eq!(gray.dimensions(), (5, 5));
    assert!(gray.pixels().all(|p| p.0 == [77, 77, 77]));
    let rgba = data.load_rgb(4).unwrap();
    assert_eq!(
        rgba.get_pixel(0, 0).0,
        [255, 255, 255],
        "alpha 0 over white"
    );
    assert_eq!(rgba.get_pixel(1, 0).0, [9, 8, 7]);
    let item = data.load_item(4).unwrap();
    assert_eq!(item.image, rgba);
    assert_eq!(item.label, 2);
    assert_eq!(item.fingerprint, data.item_fingerprint(4).unwrap());

    // Auto-detection finds the class folder; open_source too.
    let auto = LabelledImages::open(root, SourceKind::Auto, None).unwrap();
    assert_eq!(auto.fingerprint(), data.fingerprint());
    let any = open_source(root, SourceKind::Auto, None).unwrap();
    assert_eq!(any.class_names(), ["bird", "cat", "dog"]);
    assert_eq!(any.class_of(2), Some(1));
    assert!(matches!(
        LabelledImages::open(root, SourceKind::Auto, Some("train")),
        Err(DataError::Config(_))
    ));
}

#[test]
fn class_folder_layout_errors_name_the_folder() {
    let dir = TempDir::new("classes-bad");
    let root = dir.path();
    three_classes(root);
    fs::create_dir_all(root.join("empty")).unwrap();
    let err = LabelledImages::class_folder(root).unwrap_err();
    assert_one_line_naming(&err, &root.join("empty"), "class \"empty\" has no");
    fs::remove_dir(root.join("empty")).unwrap();

    let stray = solid(&root.join("stray.png"), [0, 0, 0]);
    let err = LabelledImages::class_folder(root).unwrap_err();
    assert_one_line_naming(&err, &stray, "belong to no class");
    // Auto refuses it as labelled data, but open_source takes it as an
    // unlabelled ImageFolder.
    let err = LabelledImages::open(root, SourceKind::Auto, None).unwrap_err();
    assert_one_line_naming(&err, root, "not a class folder");
    let any = open_source(root, SourceKind::Auto, None).unwrap();
    assert_eq!(any.len(), 6);
    assert!(any.class_names().is_empty());
    assert_eq!(any.class_of(0), None);

    let missing = root.join("nope");
    assert!(matches!(
        LabelledImages::class_folder(&missing),
        Err(DataError::MissingRoot { .. })
    ));
    let err = LabelledImages::open(&missing, SourceKind::Auto, None).unwrap_err();
    assert_one_line_naming(&err, &missing, "does not exist");
    let flat = TempDir::new("classes-none");
    let err = LabelledImages::class_folder(flat.path()).unwrap_err();
    assert_one_line_naming(&err, flat.path(), "no class subfolders");
}

fn key(batch: &Batch) -> (Vec<u32>, Vec<PathBuf>, Vec<usize>, DataPosition) {
    let bits = batch.images.iter().map(|v| v.to_bits()).collect();
    (bits, batch.paths.clone(), batch.indices.clone(), batch.next)
}

#[test]
fn a_class_folder_loads_the_same_batches_as_an_image_folder_of_it() {
    let dir = TempDir::new("classes-vs-folder");
    three_classes(dir.path());
    let cfg = LoaderConfig {
        batch_size: 2,
        workers: 2,
        seed: 99,
        shuffle: true,
        drop_last: false,
        repeat: true,
        transform: Transform {
            size: 3,
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
    };
    let take = |mut l: Loader| {
        (0..7)
            .map(|_| l.next_batch().unwrap().unwrap())
            .collect::<Vec<_>>()
    };
    let folder = take(
        Loader::new(
            ImageFolder::scan(dir.path()).unwrap(),
            cfg.clone(),
            DataPosition::default(),
        )
        .unwrap(),
    );
    let classes = take(
        Loader::new(
            LabelledImages::class_folder(dir.path()).unwrap(),
            cfg,
            DataPosition::default(),
        )
        .unwrap(),
    );
    assert_eq!(
        folder.iter().map(key).collect::<Vec<_>>(),
        classes.iter().map(key).collect::<Vec<_>>()
    );
    assert!(folder.iter().all(|b| b.labels.is_none()));
    let labels: Vec<usize> = classes
        .iter()
        .flat_map(|b| b.labels.clone().unwrap())
        .collect();
    let expected: Vec<usize> = classes
        .iter()
        .flat_map(|b| b.indices.iter().map(|&i| [0, 0, 1, 1, 2][i]))
        .collect();
    assert_eq!(labels, expected);
}

fn write_images(root: &Path) {
    solid(&root.join("img/a.png"), [1, 2, 3]);
    solid(&root.join("img/b.png"), [4, 5, 6]);
    solid(&root.join("img/x, y.png"), [7, 8, 9]);
}

#[test]
fn jsonl_manifest_with_names_and_with_integers() {
    let dir = TempDir::new("jsonl");
    let root = dir.path();
    write_images(root);
    let names = root.join("names.jsonl");
    fs::write(
        &names,
        "{\"file\": \"img/b.png\", \"label\": \"zebra\", \"caption\": \"ignored\"}\n\
         \n\
         {\"file\": \"img/a.png\", \"label\": \"ant\"}\n\
         {\"file\": \"img/x, y.png\", \"label\": \"zebra\"}\n",
    )
    .unwrap();
    let data = LabelledImages::open(&names, SourceKind::Auto, None).unwrap();
    assert_eq!(data.kind(), SourceKind::Manifest);
    assert_eq!(data.root(), names);
    assert_eq!(data.class_names(), ["ant", "zebra"]);
    assert_eq!(data.labels(), &[1, 0, 1]);
    assert_eq!(data.name(0), root.join("img/b.png"));
    assert_eq!(data.load_rgb(1).unwrap().get_pixel(0, 0).0, [1, 2, 3]);

    let ints = root.join("ints.jsonl");
    let abs = root.join("img/a.png");
    fs::write(
        &ints,
        format!(
            "{{\"file\": \"img/b.png\", \"label\": 3}}\n{{\"file\": {:?}, \"label\": 0}}\n",
            abs.to_str().unwrap()
        ),
    )
    .unwrap();
    let data = LabelledImages::manifest(&ints).unwrap();
    assert_eq!(data.class_names(), ["0", "1", "2", "3"]);
    assert_eq!(data.labels(), &[3, 0]);
    assert_eq!(data.name(1), abs);

    for (text, line, needle) in [
        ("{\"file\": \"img/a.png\", \"label\": 1}\n{\"file\": \"img/b.png\", \"label\": \"b\"}\n", 2, "use one kind"),
        ("{\"file\": \"img/a.png\", \"label\": -1}\n", 1, "neither a class name"),
        ("{\"file\": \"img/a.png\", \"label\": 1.5}\n", 1, "neither a class name"),
        ("{\"file\": \"img/a.png\"}\n", 1, "label"),
        ("not json\n", 1, "JSON object"),
        ("{\"file\": \"img/a.png\", \"label\": 1}\n{\"file\": \"img/gone.png\", \"label\": 1}\n", 2, "gone.png does not exist"),
    ] {
        let bad = root.join("bad.jsonl");
        fs::write(&bad, text).unwrap();
        let err = LabelledImages::manifest(&bad).unwrap_err();
        assert!(matches!(err, DataError::Manifest { line: l, .. } if l == line), "{err}");
        assert_one_line_naming(&err, &bad, needle);
        assert!(err.to_string().contains(&format!("bad.jsonl:{line}:")), "{err}");
    }
    let empty = root.join("empty.jsonl");
    fs::write(&empty, "\n\n").unwrap();
    let err = LabelledImages::manifest(&empty).unwrap_err();
    assert_one_line_naming(&err, &empty, "lists no images");
}

#[test]
fn csv_manifest_with_names_integers_quotes_and_errors() {
    let dir = TempDir::new("csv");
    let root = dir.path();
    write_images(root);
    let names = root.join("list.csv");
    fs::write(
        &names,
        "\u{feff}file,label,note\r\nimg/a.png,cat,x\r\n\"img/x, y.png\",dog,\"a, b\"\r\nimg/b.png,10,y\r\n",
    )
    .unwrap();
    let data = LabelledImages::open(&names, SourceKind::Manifest, None).unwrap();
    // "10" is a name here because not every label is an integer.
    assert_eq!(data.class_names(), ["10", "cat", "dog"]);
    assert_eq!(data.labels(), &[1, 2, 0]);
    assert_eq!(data.name(1), root.join("img/x, y.png"));

    let ints = root.join("ints.csv");
    fs::write(&ints, "label,file\n2,img/a.png\n0,img/b.png\n2,img/b.png\n").unwrap();
    let data = LabelledImages::manifest(&ints).unwrap();
    assert_eq!(data.class_names(), ["0", "1", "2"]);
    assert_eq!(data.labels(), &[2, 0, 2]);
    assert_eq!(data.len(), 3, "a file may be listed twice");

    for (text, line, needle) in [
        (
            "path,class\na.png,1\n",
            1,
            "must name a \"file\" and a \"label\"",
        ),
        (
            "file,label\nimg/a.png\n",
            2,
            "1 fields, but the header has 2",
        ),
        (
            "file,label\nimg/a.png,1\nimg/missing.png,2\n",
            3,
            "missing.png does not exist",
        ),
        ("file,label\nimg/a.png,\n", 2, "empty label"),
        ("file,label\n\"img/a.png,1\n", 2, "unterminated"),
    ] {
        let bad = root.join("bad.csv");
        fs::write(&bad, text).unwrap();
        let err = LabelledImages::manifest(&bad).unwrap_err();
        assert!(
            matches!(err, DataError::Manifest { line: l, .. } if l == line),
            "{err}"
        );
        assert_one_line_naming(&err, &bad, needle);
    }
    let other = root.join("list.txt");
    fs::write(&other, "file,label\n").unwrap();
    assert!(matches!(
        LabelledImages::manifest(&other),
        Err(DataError::Dataset { .. })
    ));
    assert!(matches!(
        LabelledImages::open(&other, SourceKind::Auto, None),
        Err(DataError::Dataset { .. })
    ));
}

fn item_fingerprints(data: &LabelledImages) -> Vec<u64> {
    (0..data.len())
        .map(|i| data.item_fingerprint(i).unwrap())
        .collect()
}

#[test]
fn fingerprints_follow_image_bytes_and_labels_only() {
    let dir = TempDir::new("fingerprint");
    let root = dir.path().join("a");
    three_classes(&root);
    let before = LabelledImages::class_folder(&root).unwrap();
    let items = item_fingerprints(&before);
    let content = before.content_fingerprint().unwrap();
    assert_eq!(content.len(), 16);
    assert_eq!(items.len(), 5);
    // Stable: a rescan gives the same values.
    let again = LabelledImages::class_folder(&root).unwrap();
    assert_eq!(again.fingerprint(), before.fingerprint());
    assert_eq!(item_fingerprints(&again), items);
    assert_eq!(again.content_fingerprint().unwrap(), content);

    // A copy elsewhere (other paths, new modification times) keeps the
    // content identity.
    let copy = dir.path().join("b");
    for i in 0..before.len() {
        let src = before.path(i).unwrap();
        let dst = copy.join(src.strip_prefix(&root).unwrap());
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(src, dst).unwrap();
    }
    let copied = LabelledImages::class_folder(&copy).unwrap();
    assert_eq!(item_fingerprints(&copied), items);
    assert_eq!(copied.content_fingerprint().unwrap(), content);

    // Changing one image's bytes changes exactly its fingerprint.
    solid(&copy.join("bird/nested/b2.png"), [41, 50, 60]);
    let changed = LabelledImages::class_folder(&copy).unwrap();
    let changed_items = item_fingerprints(&changed);
    for i in 0..5 {
        assert_eq!(changed_items[i] != items[i], i == 1, "item {i}");
    }
    assert_ne!(changed.content_fingerprint().unwrap(), content);

    // Through the trait: the same for a labelled source; an ImageFolder of
    // the same files hashes "no label" instead, so its prints differ.
    let as_source: &dyn ImageSource = &before;
    assert_eq!(as_source.item_fingerprint(3).unwrap(), items[3]);
    let folder = ImageFolder::scan(&root).unwrap();
    let folder_prints: Vec<u64> = (0..folder.len())
        .map(|i| ImageSource::item_fingerprint(&folder, i).unwrap())
        .collect();
    assert_eq!(folder_prints.len(), 5);
    assert!(folder_prints.iter().zip(&items).all(|(a, b)| a != b));
    assert_eq!(
        ImageSource::item_fingerprint(&ImageFolder::scan(&root).unwrap(), 0).unwrap(),
        folder_prints[0]
    );

    // The label is part of an item's fingerprint.
    let manifest = dir.path().join("m.jsonl");
    fs::write(&manifest, "{\"file\": \"a/bird/b1.png\", \"label\": 0}\n").unwrap();
    let zero = LabelledImages::manifest(&manifest).unwrap();
    fs::write(&manifest, "{\"file\": \"a/bird/b1.png\", \"label\": 1}\n").unwrap();
    let one = LabelledImages::manifest(&manifest).unwrap();
    assert_eq!(zero.item_fingerprint(0).unwrap(), items[0]);
    assert_ne!(one.item_fingerprint(0).unwrap(), items[0]);
    assert_ne!(one.fingerprint(), zero.fingerprint());

    // IDX: one changed pixel changes that item and the dataset, nothing else.
    let idx = dir.path().join("idx");
    fs::create_dir_all(&idx).unwrap();
    let mut pixels = idx_pixels(3, 2, 2);
    write_idx_split(&idx, "train", 2, 2, &pixels, &[0, 1, 0], true);
    let first = LabelledImages::idx_dir(&idx, "train").unwrap();
    pixels[2 * 4 + 3] ^= 1;
    write_idx_split(&idx, "train", 2, 2, &pixels, &[0, 1, 0], true);
    let second = LabelledImages::idx_dir(&idx, "train").unwrap();
    assert_ne!(first.fingerprint(), second.fingerprint());
    let (a, b) = (item_fingerprints(&first), item_fingerprints(&second));
    assert_eq!((a[0], a[1]), (b[0], b[1]));
    assert_ne!(a[2], b[2]);
}

#[test]
fn source_kind_parses_and_serializes_as_in_configs() {
    assert_eq!(
        "class-folder".parse::<SourceKind>().unwrap(),
        SourceKind::ClassFolder
    );
    assert_eq!("IDX".parse::<SourceKind>().unwrap(), SourceKind::Idx);
    assert!("zip".parse::<SourceKind>().is_err());
    assert_eq!(SourceKind::default(), SourceKind::Auto);
    #[derive(serde::Deserialize)]
    struct Cfg {
        kind: SourceKind,
        fit: Fit,
    }
    let cfg: Cfg = serde_json::from_str(r#"{"kind": "manifest", "fit": "pad"}"#).unwrap();
    assert_eq!((cfg.kind, cfg.fit), (SourceKind::Manifest, Fit::Pad));
    assert!(matches!(
        LabelledImages::open(Path::new("."), SourceKind::Folder, None),
        Err(DataError::Config(_))
    ));
}
