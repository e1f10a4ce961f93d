//! Captioned images: both conventions, detection, caption draws, errors and
//! fingerprints.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{assert_one_line_naming, TempDir};
use image::{Rgb, RgbImage, Rgba, RgbaImage};
use ldm_data::{
    caption_for_epoch, is_captioned_dir, open_source, CaptionFormat, CaptionedImages, DataError,
    DataPosition, Fit, ImageFolder, ImageSource, LabelledImages, Loader, LoaderConfig, SourceKind,
    Transform,
};

/// A 4 × 3 PNG of one colour at `path` (folders created).
fn png(path: &Path, rgb: [u8; 3]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(4, 3, Rgb(rgb)).save(path).unwrap();
    path.to_path_buf()
}

/// Writes `text` to `path` (folders created).
fn write(path: &Path, text: impl AsRef<[u8]>) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// An image with its sidecar caption file.
fn captioned_png(path: &Path, rgb: [u8; 3], captions: &str) {
    png(path, rgb);
    write(&path.with_extension("txt"), captions);
}

/// Tux Paint's layout: `train/<category>/<name>.png` + `<name>.txt`.
fn tux_tree(root: &Path) {
    captioned_png(
        &root.join("train/animals/cat.png"),
        [200, 100, 0],
        "an orange cat\n",
    );
    captioned_png(
        &root.join("train/animals/dog.png"),
        [90, 60, 30],
        "a brown dog",
    );
    captioned_png(
        &root.join("train/vehicles/car.png"),
        [0, 0, 255],
        "a blue car\na small blue car\n",
    );
}

#[test]
fn sidecar_captions_one_and_several_lines() {
    let dir = TempDir::new("cap-sidecar");
    let root = dir.path();
    captioned_png(&root.join("a.png"), [1, 2, 3], "  a red square  \n");
    captioned_png(
        &root.join("sub/b.png"),
        [4, 5, 6],
        "\u{feff}first\n\n   \n  second  \r\nthird",
    );
    // A text file that belongs to no image changes nothing.
    write(&root.join("README.txt"), "about this set");

    let data = CaptionedImages::scan(root).unwrap();
    assert_eq!(data.format(), CaptionFormat::Sidecar);
    assert_eq!(data.len(), 2);
    assert!(!data.is_empty());
    assert_eq!(data.root(), root);
    assert_eq!(data.path(0), root.join("a.png"));
    assert_eq!(data.path(1), root.join("sub/b.png"));
    assert_eq!(data.captions(0), ["a red square"]);
    assert_eq!(data.captions(1), ["first", "second", "third"]);
    // Indices mean the same files as in an ImageFolder of the same root.
    assert_eq!(data.paths(), ImageFolder::scan(root).unwrap().paths());

    assert!(is_captioned_dir(root));
    let any = open_source(root, SourceKind::Auto, None).unwrap();
    assert_eq!(any.len(), 2);
    assert_eq!(any.captions(1), ["first", "second", "third"]);
    assert_eq!(any.name(1), root.join("sub/b.png"));
    assert!(any.class_names().is_empty());
    assert_eq!(any.class_of(0), None);
    assert_eq!(any.fingerprint(), data.fingerprint());
}

#[test]
fn metadata_jsonl_with_string_and_list_texts() {
    let dir = TempDir::new("cap-jsonl");
    let root = dir.path();
    png(&root.join("imgs/z.png"), [1, 1, 1]);
    captioned_png(&root.join("a.png"), [2, 2, 2], "the sidecar, ignored");
    // Present but not listed: not an item.
    png(&root.join("b.png"), [3, 3, 3]);
    write(
        &root.join("metadata.jsonl"),
        "{\"file_name\": \"imgs/z.png\", \"text\": [\"one\", \" two \"], \"score\": 5}\n\
         \n\
         {\"file_name\": \"a.png\", \"text\": \"  hello  \"}\n",
    );

    let data = CaptionedImages::scan(root).unwrap();
    assert_eq!(data.format(), CaptionFormat::MetadataJsonl);
    assert_eq!(data.len(), 2);
    // Sorted by path, not in listing order.
    assert_eq!(data.path(0), root.join("a.png"));
    assert_eq!(data.captions(0), ["hello"]);
    assert_eq!(data.path(1), root.join("imgs/z.png"));
    assert_eq!(data.captions(1), ["one", "two"]);

    assert!(is_captioned_dir(root));
    let any = open_source(root, SourceKind::Auto, None).unwrap();
    assert_eq!(any.len(), 2);
    assert_eq!(any.captions(0), ["hello"]);
}

#[test]
fn auto_detection_prefers_captions_and_keeps_folders_and_class_folders() {
    let dir = TempDir::new("cap-detect");

    // Tux Paint's tree is shaped like a class folder but carries captions,
    // at its top and one level down.
    let tux = dir.path().join("tux");
    tux_tree(&tux);
    let scanned = CaptionedImages::scan(&tux).unwrap();
    for root in [tux.clone(), tux.join("train")] {
        assert!(is_captioned_dir(&root), "{}", root.display());
        let any = open_source(&root, SourceKind::Auto, None).unwrap();
        assert_eq!(any.len(), 3);
        assert!(any.class_names().is_empty(), "not a class folder");
        assert_eq!(any.captions(0), ["an orange cat"]);
        assert_eq!(any.captions(2), ["a blue car", "a small blue car"]);
    }
    let any = open_source(&tux, SourceKind::Captioned, None).unwrap();
    assert_eq!(any.fingerprint(), scanned.fingerprint());

    // A class folder whose text files caption no image stays a class folder.
    let classes = dir.path().join("classes");
    png(&classes.join("bird/b.png"), [1, 2, 3]);
    png(&classes.join("cat/c.png"), [4, 5, 6]);
    write(&classes.join("README.txt"), "two classes");
    write(&classes.join("bird/notes.txt"), "photographed in May");
    assert!(!is_captioned_dir(&classes));
    let any = open_source(&classes, SourceKind::Auto, None).unwrap();
    assert_eq!(any.class_names(), ["bird", "cat"]);
    assert!(any.captions(0).is_empty());

    // A plain image folder stays an ImageFolder, fingerprint and all.
    let flat = dir.path().join("flat");
    png(&flat.join("x.png"), [7, 7, 7]);
    png(&flat.join("sub/y.png"), [8, 8, 8]);
    assert!(!is_captioned_dir(&flat));
    let any = open_source(&flat, SourceKind::Auto, None).unwrap();
    assert!(any.class_names().is_empty());
    assert!(any.captions(0).is_empty());
    assert_eq!(
        any.fingerprint(),
        ImageFolder::scan(&flat).unwrap().fingerprint()
    );
    assert!(!is_captioned_dir(&dir.path().join("missing")));

    // Forced kinds.
    let folder = open_source(&tux, SourceKind::Folder, None).unwrap();
    assert!(folder.captions(0).is_empty(), "Folder ignores captions");
    let err = open_source(&flat, SourceKind::Captioned, None)
        .err()
        .unwrap();
    assert!(matches!(err, DataError::MissingCaptions { .. }), "{err}");
    for kind in [SourceKind::Auto, SourceKind::Captioned] {
        let err = open_source(&tux, kind, Some("train")).err().unwrap();
        assert!(matches!(err, DataError::Config(_)), "{err}");
        assert!(err.to_string().contains("captioned image folder"), "{err}");
    }
    let err = LabelledImages::open(&tux, SourceKind::Captioned, None).unwrap_err();
    assert!(matches!(err, DataError::Config(_)), "{err}");
    assert!(err.to_string().contains("open_source"), "{err}");
}

#[test]
fn rgba_png_is_composited_over_white() {
    let dir = TempDir::new("cap-rgba");
    let root = dir.path();
    RgbaImage::from_fn(3, 1, |x, _| match x {
        0 => Rgba([0, 0, 0, 0]),
        1 => Rgba([10, 20, 30, 255]),
        _ => Rgba([0, 0, 0, 128]),
    })
    .save(root.join("sticker.png"))
    .unwrap();
    write(&root.join("sticker.txt"), "a sticker");

    let data = CaptionedImages::scan(root).unwrap();
    let via_source: &dyn ImageSource = &data;
    for image in [data.load_rgb(0).unwrap(), via_source.load_rgb(0).unwrap()] {
        assert_eq!(image.dimensions(), (3, 1));
        assert_eq!(image.get_pixel(0, 0).0, [255, 255, 255], "alpha 0");
        assert_eq!(image.get_pixel(1, 0).0, [10, 20, 30], "opaque");
        assert_eq!(image.get_pixel(2, 0).0, [127, 127, 127], "half");
    }
}

#[test]
fn caption_for_epoch_is_deterministic_and_uses_every_caption() {
    let captions: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let draws = |seed: u64, index: usize| {
        (0..50)
            .map(|epoch| caption_for_epoch(&captions, seed, epoch, index).unwrap())
            .collect::<Vec<_>>()
    };
    let reference = draws(7, 4);
    assert_eq!(reference, draws(7, 4), "same inputs, same captions");
    // Pinned: the same on every machine and build (SplitMix64, Lemire draw).
    assert_eq!(
        reference[..12],
        ["a", "a", "c", "b", "c", "a", "c", "b", "a", "b", "a", "c"]
    );
    let used: HashSet<&str> = reference.iter().copied().collect();
    assert_eq!(used.len(), 3, "every caption is drawn: {reference:?}");
    let changes = reference.windows(2).filter(|w| w[0] != w[1]).count();
    // Independent draws change 2/3 of the time (≈ 33 of 49).
    assert!(changes >= 20, "{changes} changes in {reference:?}");
    assert_ne!(reference, draws(8, 4), "the seed matters");
    assert_ne!(reference, draws(7, 5), "the item matters");

    let one = vec!["only".to_string()];
    assert!((0..20).all(|e| caption_for_epoch(&one, 3, e, 9) == Some("only")));
    assert_eq!(caption_for_epoch(&[], 3, 0, 0), None);
}

#[test]
fn sidecar_errors_name_the_file() {
    let dir = TempDir::new("cap-sidecar-bad");

    let not_utf8 = dir.path().join("utf8");
    png(&not_utf8.join("a.png"), [1, 1, 1]);
    let txt = write(&not_utf8.join("a.txt"), [b'a', 0xff, 0xfe, b'\n']);
    let err = CaptionedImages::scan(&not_utf8).unwrap_err();
    assert_one_line_naming(&err, &txt, "not valid UTF-8");

    let empty = dir.path().join("empty");
    captioned_png(&empty.join("a.png"), [1, 1, 1], "fine");
    png(&empty.join("b.png"), [2, 2, 2]);
    let txt = write(&empty.join("b.txt"), "  \n\r\n\t\n");
    let err = CaptionedImages::scan(&empty).unwrap_err();
    assert_one_line_naming(&err, &txt, "empty caption file");

    let partial = dir.path().join("partial");
    captioned_png(&partial.join("a.png"), [1, 1, 1], "has one");
    let first = png(&partial.join("b.png"), [2, 2, 2]);
    png(&partial.join("c/d.png"), [3, 3, 3]);
    let err = CaptionedImages::scan(&partial).unwrap_err();
    assert!(matches!(err, DataError::MissingCaptions { .. }), "{err}");
    assert_one_line_naming(&err, &first, "2 of 3 images under");
    assert_one_line_naming(&err, &partial, "no caption file");
    assert_one_line_naming(&err, &partial.join("b.txt"), "(expected ");
    // Still captioned by detection, so Auto reports the gap instead of
    // silently training without text.
    let err = open_source(&partial, SourceKind::Auto, None).err().unwrap();
    assert!(matches!(err, DataError::MissingCaptions { .. }), "{err}");

    let missing = dir.path().join("missing");
    assert!(matches!(
        CaptionedImages::scan(&missing),
        Err(DataError::MissingRoot { .. })
    ));
    let no_images = dir.path().join("no-images");
    write(&no_images.join("x.txt"), "a caption of nothing");
    assert!(matches!(
        CaptionedImages::scan(&no_images),
        Err(DataError::NoImages { .. })
    ));
}

#[test]
fn metadata_jsonl_errors_name_the_file_and_line() {
    let dir = TempDir::new("cap-jsonl-bad");
    let root = &dir.path().join("set");
    png(&root.join("a.png"), [1, 1, 1]);
    png(&root.join("sub/b.png"), [2, 2, 2]);
    // Exists, but outside the dataset folder.
    png(&dir.path().join("outside.png"), [3, 3, 3]);
    let metadata = root.join("metadata.jsonl");
    let good = r#"{"file_name": "a.png", "text": "fine"}"#;
    let cases = [
        (
            "not json",
            "not a {\"file_name\": …, \"text\": …} JSON object",
        ),
        ("[1, 2]", "JSON object"),
        (r#"{"text": "x"}"#, "no \"file_name\" key"),
        (
            r#"{"file_name": 5, "text": "x"}"#,
            "file_name must be a string",
        ),
        (r#"{"file_name": "sub/b.png"}"#, "no \"text\" key"),
        (
            r#"{"file_name": "sub/b.png", "text": "  "}"#,
            "text is empty",
        ),
        (
            r#"{"file_name": "sub/b.png", "text": 3}"#,
            "text must be a string or a list of strings, not 3",
        ),
        (
            r#"{"file_name": "sub/b.png", "text": ["ok", null]}"#,
            "text[1] must be a string",
        ),
        (
            r#"{"file_name": "sub/b.png", "text": []}"#,
            "text is an empty list",
        ),
        (
            r#"{"file_name": "sub/nope.png", "text": "x"}"#,
            "does not exist",
        ),
        (
            r#"{"file_name": "./a.png", "text": "again"}"#,
            "file_name \"a.png\" is listed again (first on line 1)",
        ),
        (
            r#"{"file_name": "../outside.png", "text": "x"}"#,
            "leaves the dataset folder",
        ),
        (
            r#"{"file_name": "/etc/hostname", "text": "x"}"#,
            "leaves the dataset folder",
        ),
    ];
    for (bad, needle) in cases {
        // The bad line is line 3: after a good line and a blank one.
        write(&metadata, format!("{good}\n\n{bad}\n"));
        let err = CaptionedImages::scan(root).unwrap_err();
        assert!(
            matches!(err, DataError::Manifest { line: 3, .. }),
            "{bad}: {err}"
        );
        assert_one_line_naming(&err, &metadata, needle);
        assert!(err.to_string().contains("metadata.jsonl:3:"), "{err}");
    }
    // The missing file is named in full.
    write(
        &metadata,
        r#"{"file_name": "sub/nope.png", "text": "x"}"#.to_string() + "\n",
    );
    let err = CaptionedImages::scan(root).unwrap_err();
    assert_one_line_naming(&err, &root.join("sub/nope.png"), "metadata.jsonl:1:");

    write(&metadata, "\n  \n");
    let err = CaptionedImages::scan(root).unwrap_err();
    assert_one_line_naming(&err, &metadata, "lists no images");

    write(&metadata, [0xffu8, b'{', b'\n']);
    let err = CaptionedImages::scan(root).unwrap_err();
    assert_one_line_naming(&err, &metadata, "not valid UTF-8");
}

#[test]
fn fingerprints_cover_captions_but_item_fingerprints_do_not() {
    let dir = TempDir::new("cap-fingerprint");
    let root = dir.path().join("set");
    captioned_png(&root.join("a.png"), [1, 2, 3], "a dark pixel field");
    captioned_png(&root.join("b/c.png"), [9, 9, 9], "gray\ngrey");
    let items = |data: &CaptionedImages| -> Vec<u64> {
        (0..data.len())
            .map(|i| data.item_fingerprint(i).unwrap())
            .collect()
    };

    let before = CaptionedImages::scan(&root).unwrap();
    assert_eq!(before.fingerprint().len(), 16);
    assert!(before.fingerprint().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        CaptionedImages::scan(&root).unwrap().fingerprint(),
        before.fingerprint()
    );
    assert_ne!(items(&before)[0], items(&before)[1]);
    // The same item fingerprints as an ImageFolder of the same files, so a
    // latent cache built from either serves both.
    let folder = ImageFolder::scan(&root).unwrap();
    let folder_items: Vec<u64> = (0..folder.len())
        .map(|i| ImageSource::item_fingerprint(&folder, i).unwrap())
        .collect();
    assert_eq!(items(&before), folder_items);

    write(&root.join("b/c.txt"), "gray\nsilver");
    let edited = CaptionedImages::scan(&root).unwrap();
    assert_ne!(edited.fingerprint(), before.fingerprint(), "caption edit");
    let edited_items = items(&edited);
    assert_eq!(edited_items, items(&before), "images unchanged");

    // Same files and captions elsewhere: paths are relative to the root.
    let moved = dir.path().join("moved");
    fs::rename(&root, &moved).unwrap();
    assert_eq!(
        CaptionedImages::scan(&moved).unwrap().fingerprint(),
        edited.fingerprint()
    );

    // Changing the image changes its item fingerprint.
    png(&moved.join("a.png"), [250, 2, 3]);
    let repainted = CaptionedImages::scan(&moved).unwrap();
    assert_ne!(items(&repainted)[0], edited_items[0]);
    assert_eq!(items(&repainted)[1], edited_items[1]);

    // The same holds for metadata.jsonl captions.
    let metadata = moved.join("metadata.jsonl");
    write(&metadata, r#"{"file_name": "a.png", "text": "red"}"#);
    let red = CaptionedImages::scan(&moved).unwrap();
    write(&metadata, r#"{"file_name": "a.png", "text": "crimson"}"#);
    let crimson = CaptionedImages::scan(&moved).unwrap();
    assert_ne!(red.fingerprint(), crimson.fingerprint());
    assert_eq!(items(&red), items(&crimson));
    assert_eq!(items(&red)[0], items(&repainted)[0]);
}

#[test]
fn the_loader_streams_captioned_images_and_captions_follow_indices() {
    let dir = TempDir::new("cap-loader");
    let root = dir.path();
    tux_tree(root);
    let data = Arc::new(CaptionedImages::scan(root).unwrap());
    let cfg = LoaderConfig {
        batch_size: 3,
        workers: 0,
        seed: 11,
        shuffle: true,
        drop_last: true,
        repeat: false,
        transform: Transform::fixed(2, Fit::Crop, 0),
        prefetch: 2,
        cache_mb: 0,
    };
    let mut loader = Loader::new(Arc::clone(&data), cfg, DataPosition::default()).unwrap();
    let batch = loader.next_batch().unwrap().expect("one full batch");
    assert_eq!(batch.shape(), [3, 3, 2, 2]);
    assert!(batch.labels.is_none());
    for (slot, &index) in batch.indices.iter().enumerate() {
        assert_eq!(batch.paths[slot], data.path(index));
        let caption = caption_for_epoch(data.captions(index), 11, 0, index).unwrap();
        let expected = fs::read_to_string(data.path(index).with_extension("txt")).unwrap();
        assert!(expected.lines().any(|l| l == caption), "{caption}");
    }
}

#[test]
fn source_kind_captioned_parses_and_serializes_as_in_configs() {
    assert_eq!(
        " Captioned ".parse::<SourceKind>().unwrap(),
        SourceKind::Captioned
    );
    assert_eq!(SourceKind::Captioned.to_string(), "captioned");
    let err = "captions".parse::<SourceKind>().unwrap_err();
    assert!(err.to_string().contains("manifest or captioned"), "{err}");
    let kind: SourceKind = serde_json::from_str("\"captioned\"").unwrap();
    assert_eq!(kind, SourceKind::Captioned);
    assert_eq!(
        serde_json::to_string(&SourceKind::Captioned).unwrap(),
        "\"captioned\""
    );
}
