//! Scanning folders and decoding every kind of file found in real datasets.

mod common;

use std::fs;

use common::{write_broken, write_rgb_pngs, write_varied_formats, TempDir};
use ldm_data::{load_image_chw, DataError, Fit, ImageFolder, Transform};

#[test]
fn scan_is_recursive_sorted_and_case_insensitive() {
    let dir = TempDir::new("scan");
    write_rgb_pngs(dir.path(), 4);
    write_varied_formats(dir.path());
    fs::write(dir.path().join("readme.txt"), "not listed").unwrap();
    // A directory with an image extension is searched, not listed.
    fs::create_dir(dir.path().join("x.png")).unwrap();
    fs::write(dir.path().join("x.png").join("inner.PNG"), b"junk").unwrap();

    let folder = ImageFolder::scan(dir.path()).unwrap();
    let paths = folder.paths();
    assert_eq!(folder.len(), 4 + 5 + 1);
    assert!(!folder.is_empty());
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "sorted: {paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("sub/rgb00.png")));
    assert!(paths.iter().any(|p| p.ends_with("photo.JPG")));
    assert!(paths.iter().any(|p| p.ends_with("x.png/inner.PNG")));
    assert!(!paths.iter().any(|p| p.ends_with("x.png")));
}

#[test]
fn missing_and_empty_folders_are_errors_naming_the_path() {
    let dir = TempDir::new("missing");
    let missing = dir.path().join("nope");
    let err = ImageFolder::scan(&missing).unwrap_err();
    assert!(matches!(err, DataError::MissingRoot { .. }));
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );

    fs::write(dir.path().join("a.txt"), "x").unwrap();
    let err = ImageFolder::scan(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }));
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
}

#[test]
fn fingerprint_is_stable_and_tracks_the_file_list() {
    let dir = TempDir::new("fingerprint");
    write_rgb_pngs(dir.path(), 3);
    let first = ImageFolder::scan(dir.path()).unwrap().fingerprint();
    assert_eq!(first.len(), 16);
    assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(first, ImageFolder::scan(dir.path()).unwrap().fingerprint());
    write_rgb_pngs(dir.path(), 4);
    assert_ne!(first, ImageFolder::scan(dir.path()).unwrap().fingerprint());
}

#[test]
fn every_readable_format_gives_a_sample_in_range() {
    let dir = TempDir::new("formats");
    let t = Transform {
        size: 8,
        resize: None,
        resize_max: None,
        random_crop: true,
        hflip: true,
        channel_shuffle: false,
        fit: Fit::Crop,
        pad_value: 0,
    };
    for path in write_varied_formats(dir.path()) {
        let sample = load_image_chw(&path, &t, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sample.len(), 3 * 8 * 8, "{}", path.display());
        assert!(
            sample.iter().all(|v| (-1.0..=1.0).contains(v)),
            "{}",
            path.display()
        );
    }
}

#[test]
fn gray_rgba_and_16_bit_convert_as_documented() {
    let dir = TempDir::new("convert");
    let files = write_varied_formats(dir.path());
    let t = Transform::fixed(10, Fit::Crop, 0);
    let plane = 100;

    // Gray replicates into three equal channels.
    let gray = load_image_chw(&files[0], &t, 0).unwrap();
    assert_eq!(gray[..plane], gray[plane..2 * plane]);
    assert_eq!(gray[..plane], gray[2 * plane..]);

    // RGBA column 0 has alpha 0: composited over white.
    let rgba = load_image_chw(&files[1], &t, 0).unwrap();
    assert_eq!([rgba[0], rgba[plane], rgba[2 * plane]], [1.0, 1.0, 1.0]);

    // 16-bit blue channel is full scale.
    let deep = load_image_chw(&files[2], &t, 0).unwrap();
    assert!(deep[2 * plane..].iter().all(|&v| v == 1.0));
}

#[test]
fn broken_files_are_errors_naming_the_file_not_panics() {
    let dir = TempDir::new("broken");
    let t = Transform::fixed(8, Fit::Crop, 0);
    let mut broken = write_broken(dir.path());
    // A directory is not a file, even if a caller passes it directly.
    fs::create_dir(dir.path().join("dir.png")).unwrap();
    broken.push(dir.path().join("dir.png"));
    for path in broken {
        let err = load_image_chw(&path, &t, 0).expect_err(&path.display().to_string());
        assert!(matches!(err, DataError::Decode { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        assert!(!err.to_string().contains('\n'), "one-line message: {err}");
    }
}
