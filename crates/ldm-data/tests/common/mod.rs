//! Tiny on-disk datasets for the integration tests, built fresh per test so
//! tests can run in parallel without sharing files.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::{GrayImage, ImageBuffer, Rgb, RgbImage, Rgba, RgbaImage};
use ldm_data::{DataError, SplitMix64};

/// Asserts the crate's promise about errors: one line that names `path`
/// and says what is wrong (`needle`).
pub fn assert_one_line_naming(err: &DataError, path: &Path, needle: &str) {
    let message = err.to_string();
    assert!(
        message.contains(&*path.to_string_lossy()),
        "names {}: {message}",
        path.display()
    );
    assert!(message.contains(needle), "mentions {needle:?}: {message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

/// A temporary folder removed on drop (no `tempfile` dependency needed for this).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ldm-data-test-{}-{label}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic noise so every fixture image differs from the others.
fn noise(seed: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = SplitMix64::new(seed);
    RgbImage::from_fn(width, height, |_, _| {
        let v = rng.next_u64();
        Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
}

/// Writes `count` readable RGB PNGs of assorted sizes (some non-square, some
/// in a subfolder) and returns their paths.
pub fn write_rgb_pngs(dir: &Path, count: usize) -> Vec<PathBuf> {
    fs::create_dir_all(dir.join("sub")).unwrap();
    (0..count)
        .map(|i| {
            let (w, h) = [(12, 12), (16, 10), (9, 14), (20, 20)][i % 4];
            let folder = if i % 3 == 0 {
                dir.join("sub")
            } else {
                dir.to_path_buf()
            };
            let path = folder.join(format!("rgb{i:02}.png"));
            noise(i as u64, w, h).save(&path).unwrap();
            path
        })
        .collect()
}

/// One file of every readable kind the decoder must handle.
pub fn write_varied_formats(dir: &Path) -> Vec<PathBuf> {
    let gray = dir.join("gray.png");
    GrayImage::from_fn(10, 10, |x, y| image::Luma([(x * 20 + y) as u8]))
        .save(&gray)
        .unwrap();
    let rgba = dir.join("rgba.png");
    RgbaImage::from_fn(10, 12, |x, _| Rgba([200, 10, 10, (x * 25) as u8]))
        .save(&rgba)
        .unwrap();
    let deep = dir.join("deep16.png");
    ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(11, 10, |x, y| {
        Rgb([x as u16 * 6000, y as u16 * 6000, 65535])
    })
    .save(&deep)
    .unwrap();
    let jpeg = dir.join("photo.JPG");
    noise(99, 24, 16)
        .save_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let webp = dir.join("lossless.webp");
    noise(98, 10, 10).save(&webp).unwrap();
    vec![gray, rgba, deep, jpeg, webp]
}

/// Files with image extensions that must be skipped, never panicked on.
pub fn write_broken(dir: &Path) -> Vec<PathBuf> {
    let corrupt = dir.join("corrupt.jpg");
    let mut rng = SplitMix64::new(5);
    let bytes: Vec<u8> = (0..2000).map(|_| rng.next_u64() as u8).collect();
    fs::write(&corrupt, bytes).unwrap();

    let truncated = dir.join("truncated.png");
    let mut encoded = std::io::Cursor::new(Vec::new());
    noise(7, 32, 32)
        .write_to(&mut encoded, image::ImageFormat::Png)
        .unwrap();
    let encoded = encoded.into_inner();
    fs::write(&truncated, &encoded[..encoded.len() / 2]).unwrap();

    let empty = dir.join("zero.png");
    fs::write(&empty, b"").unwrap();

    let text = dir.join("notes.png");
    fs::write(&text, b"this is not an image\n").unwrap();
    vec![corrupt, truncated, empty, text]
}

/// Writes `bytes` to `path`, gzip-compressed when `gz`.
pub fn write_maybe_gz(path: &Path, bytes: &[u8], gz: bool) {
    if gz {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        fs::write(path, enc.finish().unwrap()).unwrap();
    } else {
        fs::write(path, bytes).unwrap();
    }
}

/// Deterministic gray pixels of `count` images of `rows × cols`: image `i`,
/// pixel `p` has value `(i * 37 + p * 11) % 256`.
pub fn idx_pixels(count: usize, rows: usize, cols: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| (0..rows * cols).map(move |p| ((i * 37 + p * 11) % 256) as u8))
        .collect()
}

/// Writes `<split>-images-idx3-ubyte[.gz]` and `<split>-labels-idx1-ubyte[.gz]`
/// into `dir` (Fashion-MNIST layout) and returns their paths.
pub fn write_idx_split(
    dir: &Path,
    split: &str,
    rows: u32,
    cols: u32,
    pixels: &[u8],
    labels: &[u8],
    gz: bool,
) -> (PathBuf, PathBuf) {
    let ext = if gz { ".gz" } else { "" };
    let images = dir.join(format!("{split}-images-idx3-ubyte{ext}"));
    let label_file = dir.join(format!("{split}-labels-idx1-ubyte{ext}"));
    let n = labels.len() as u32;
    write_maybe_gz(
        &images,
        &ldm_data::idx::encode_idx(&[n, rows, cols], pixels),
        gz,
    );
    write_maybe_gz(&label_file, &ldm_data::idx::encode_idx(&[n], labels), gz);
    (images, label_file)
}
