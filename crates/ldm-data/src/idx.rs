//! Reading IDX files, the format of MNIST and Fashion-MNIST.
//!
//! An IDX file is a 4-byte magic number `00 00 <type> <dims>`, then `dims`
//! big-endian `u32` sizes, then the values in row-major order. Only unsigned
//! bytes (type `0x08`) are read here: images are magic `0x00000803`
//! (`N × rows × cols`), labels `0x00000801` (`N`). Files may be stored plain
//! or gzip-compressed; gzip is recognised by its magic bytes `1f 8b`, not by
//! the file name.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;
use image::RgbImage;

use crate::DataError;

/// IDX magic of unsigned-byte images (`N × rows × cols`).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of unsigned-byte labels (`N`).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The images of one IDX file, decompressed into memory.
///
/// Cloning is cheap: the pixels are shared.
#[derive(Clone, Debug)]
pub struct IdxImages {
    path: PathBuf,
    count: usize,
    rows: u32,
    cols: u32,
    pixels: Arc<[u8]>,
}

impl IdxImages {
    /// Reads an images file (magic `0x00000803`), plain or gzip.
    ///
    /// # Errors
    /// [`DataError::Idx`] naming the file when it cannot be opened, is not
    /// gzip-decodable, has another magic, is truncated or has bytes after the
    /// last image.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let (dims, pixels) = read_u8_idx(path, IDX_IMAGES_MAGIC, "unsigned-byte images")?;
        let [count, rows, cols] = [dims[0], dims[1], dims[2]];
        if count > 0 && (rows == 0 || cols == 0) {
            return Err(idx_error(
                path,
                format!("images have no pixels ({rows}x{cols})"),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            count: count as usize,
            rows,
            cols,
            pixels: pixels.into(),
        })
    }

    /// The file the images were read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the file holds no image at all.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Image height in pixels.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Image width in pixels.
    pub fn cols(&self) -> u32 {
        self.cols
    }

    /// The `rows × cols` gray values of image `index`, row-major.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn image(&self, index: usize) -> &[u8] {
        assert!(index < self.count, "IDX image {index} of {}", self.count);
        let n = self.rows as usize * self.cols as usize;
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Image `index` as RGB, the gray value replicated to all three channels.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn to_rgb(&self, index: usize) -> RgbImage {
        let gray = self.image(index);
        let rgb: Vec<u8> = gray.iter().flat_map(|&v| [v, v, v]).collect();
        RgbImage::from_raw(self.cols, self.rows, rgb).expect("buffer sized from rows and cols")
    }
}

/// Reads a labels file (magic `0x00000801`), plain or gzip.
///
/// # Errors
/// As [`IdxImages::read`].
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let (_, labels) = read_u8_idx(path, IDX_LABELS_MAGIC, "unsigned-byte labels")?;
    Ok(labels)
}

/// Encodes an unsigned-byte IDX file (uncompressed) with the given
/// dimensions, e.g. `[n, rows, cols]` for images or `[n]` for labels.
/// Handy for writing test fixtures.
///
/// # Panics
/// If `data.len()` is not the product of `dims`, or there are more than 255
/// dimensions.
pub fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let expected: usize = dims.iter().map(|&d| d as usize).product();
    assert_eq!(
        data.len(),
        expected,
        "IDX data length vs dimensions {dims:?}"
    );
    let rank = u8::try_from(dims.len()).expect("at most 255 IDX dimensions");
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, 0x08, rank]);
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn idx_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        reason: reason.into().replace(['\n', '\r'], " "),
    }
}

/// Reads the whole u8 IDX file with magic `want`: its dimensions and values.
fn read_u8_idx(path: &Path, want: u32, what: &str) -> Result<(Vec<u32>, Vec<u8>), DataError> {
    let file = File::open(path).map_err(|e| idx_error(path, format!("cannot open: {e}")))?;
    let mut buffered = BufReader::with_capacity(1 << 16, file);
    let head = buffered
        .fill_buf()
        .map_err(|e| idx_error(path, format!("cannot read: {e}")))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let compressed = if gzip {
        " (after gzip decompression)"
    } else {
        ""
    };
    // A corrupt gzip stream surfaces as an I/O error from the decoder.
    let read_failed = |e: io::Error| {
        if gzip {
            idx_error(path, format!("truncated or corrupt gzip data: {e}"))
        } else {
            idx_error(path, format!("cannot read: {e}"))
        }
    };

    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(read_failed)?;
    if got < 4 {
        return Err(idx_error(
            path,
            format!("truncated: {got} bytes{compressed}, too short for an IDX header"),
        ));
    }
    let magic = u32::from_be_bytes(magic);
    if magic != want {
        return Err(idx_error(
            path,
            format!(
                "wrong magic 0x{magic:08x}{compressed}: expected 0x{want:08x} ({what}, {} dimension{})",
                want & 0xff,
                if want & 0xff == 1 { "" } else { "s" }
            ),
        ));
    }
    let rank = (want & 0xff) as usize;
    let mut sizes = vec![0u8; 4 * rank];
    let got = read_up_to(&mut reader, &mut sizes).map_err(read_failed)?;
    if got < sizes.len() {
        return Err(idx_error(
            path,
            format!(
                "truncated: the header ends after {} bytes{compressed}",
                4 + got
            ),
        ));
    }
    let dims: Vec<u32> = sizes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| idx_error(path, format!("dimensions {dims:?} are too large")))?;
    // `take` + `read_to_end` grows the buffer as data actually arrives, so a
    // forged header claiming terabytes cannot make us allocate them.
    let mut data = Vec::new();
    (&mut reader)
        .take(expected)
        .read_to_end(&mut data)
        .map_err(read_failed)?;
    if (data.len() as u64) < expected {
        let shape: Vec<String> = dims.iter().map(u32::to_string).collect();
        return Err(idx_error(
            path,
            format!(
                "truncated: header says {} ({expected} bytes of data) but only {} follow{compressed}",
                shape.join("x"),
                data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if read_up_to(&mut reader, &mut extra).map_err(read_failed)? > 0 {
        return Err(idx_error(
            path,
            format!("unexpected bytes after the {expected} bytes of data the header announces"),
        ));
    }
    Ok((dims, data))
}

/// Like `read_exact`, but reports how much was read instead of failing on a
/// short read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
