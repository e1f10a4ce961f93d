//! A small TensorBoard event-file writer: scalars, PNG images and histograms.
//!
//! We write the files ourselves instead of using `tensorboard-rs` (old, pulls
//! protobuf 2.x and a second `image`, and swaps width/height of non-square
//! images). The format is small enough to own:
//!
//! * The file is a sequence of TFRecords: `u64` LE length, masked CRC32C of
//!   those 8 length bytes (`u32` LE), the payload, masked CRC32C of the
//!   payload (`u32` LE).
//! * Each payload is a serialized `tensorboard.Event` protobuf. The first one
//!   carries `file_version = "brain.Event:2"`; the others carry a `Summary`.
//!
//! Field numbers below were checked against the descriptors shipped in the
//! `tensorboard` Python package (`tensorboard/compat/proto/event_pb2.py`,
//! `summary_pb2.py`, `histogram_pb2.py`, tensorboard 2.20.0).
//!
//! `scripts/check_tensorboard.py` reads files written here back with the real
//! TensorBoard reader; the unit tests below only check our own framing.
//!
//! This module depends on nothing but `std` and `image` (for PNG encoding) so
//! it can be tested and reused apart from the training code.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// CRC32C (Castagnoli)
// ---------------------------------------------------------------------------

/// Reflected form of the Castagnoli polynomial 0x1EDC6F41.
const CRC32C_POLY_REFLECTED: u32 = 0x82F6_3B78;

/// Byte-at-a-time lookup table, built at compile time so there is no
/// initialisation order to worry about.
const CRC32C_TABLE: [u32; 256] = build_crc32c_table();

const fn build_crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C_POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// Plain CRC32C. Event files are small next to everything else a training
/// step does, so the simple table-driven loop is fast enough.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord stores a "masked" CRC: a CRC of data that itself contains CRCs
/// is weak, so the stored value is rotated and offset.
fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// Frames one payload as a TFRecord and appends it to `out`.
fn frame_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
}

// ---------------------------------------------------------------------------
// Minimal protobuf encoder
// ---------------------------------------------------------------------------

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builder for one protobuf message. Fields are always written, even when
/// they hold the proto3 default: `Summary.Value.simple_value` sits in a
/// `oneof`, and a scalar of 0.0 left out would read back as "no value".
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn key(&mut self, field: u32, wire: u32) {
        put_varint(&mut self.0, u64::from((field << 3) | wire));
    }

    /// int32/int64 fields. Negative numbers are not needed here; u64 keeps
    /// the caller from having to think about sign extension.
    fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, WIRE_VARINT);
        put_varint(&mut self.0, v);
        self
    }

    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, WIRE_FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, WIRE_FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// string, bytes and embedded messages share the length-delimited form.
    fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, WIRE_LEN);
        put_varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    fn message(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }

    /// `repeated double` is packed by default in proto3 and the histogram
    /// fields are declared that way, so we write one length-delimited blob.
    fn packed_doubles(&mut self, field: u32, vs: &[f64]) -> &mut Self {
        self.key(field, WIRE_LEN);
        put_varint(&mut self.0, (vs.len() * 8) as u64);
        for v in vs {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
}

// Field numbers (see the module doc for where they were checked).
mod field {
    pub const EVENT_WALL_TIME: u32 = 1; // double
    pub const EVENT_STEP: u32 = 2; // int64
    pub const EVENT_FILE_VERSION: u32 = 3; // string
    pub const EVENT_SUMMARY: u32 = 5; // Summary
    pub const SUMMARY_VALUE: u32 = 1; // repeated Summary.Value
    pub const VALUE_TAG: u32 = 1; // string
    pub const VALUE_SIMPLE_VALUE: u32 = 2; // float
    pub const VALUE_IMAGE: u32 = 4; // Summary.Image
    pub const VALUE_HISTO: u32 = 5; // HistogramProto
    pub const IMAGE_HEIGHT: u32 = 1; // int32
    pub const IMAGE_WIDTH: u32 = 2; // int32
    pub const IMAGE_COLORSPACE: u32 = 3; // int32
    pub const IMAGE_ENCODED: u32 = 4; // bytes
    pub const HISTO_MIN: u32 = 1; // double
    pub const HISTO_MAX: u32 = 2;
    pub const HISTO_NUM: u32 = 3;
    pub const HISTO_SUM: u32 = 4;
    pub const HISTO_SUM_SQUARES: u32 = 5;
    pub const HISTO_BUCKET_LIMIT: u32 = 6; // packed double
    pub const HISTO_BUCKET: u32 = 7; // packed double
}

/// Wraps one `Summary.Value` in `Summary` and `Event`.
fn summary_event(value: &Msg, step: u64, wall_time: f64) -> Msg {
    let mut summary = Msg::default();
    summary.message(field::SUMMARY_VALUE, value);
    let mut event = Msg::default();
    event
        .double(field::EVENT_WALL_TIME, wall_time)
        .uint(field::EVENT_STEP, step)
        .message(field::EVENT_SUMMARY, &summary);
    event
}

// ---------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------

/// Bucket limits of TensorFlow's default histogram: 0, ±1e-12 growing by a
/// factor 1.1 up to 1e20, and ±f64::MAX at the ends (1551 limits). Using the
/// same edges as TensorFlow makes our histograms line up with any other tool
/// writing to the same TensorBoard, and exponential edges keep resolution
/// for both tiny gradients and large activations without knowing the range.
/// The repeated multiplication (rather than `powi`) reproduces TensorFlow's
/// exact edge values.
fn default_bucket_limits() -> &'static [f64] {
    static LIMITS: OnceLock<Vec<f64>> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut pos = Vec::new();
        let mut v = 1.0e-12;
        while v < 1.0e20 {
            pos.push(v);
            v *= 1.1;
        }
        pos.push(f64::MAX);
        let mut limits: Vec<f64> = pos.iter().rev().map(|v| -v).collect();
        limits.push(0.0);
        limits.extend_from_slice(&pos);
        limits
    })
}

/// Contents of a `HistogramProto`, kept apart from the encoding so the
/// bucketing can be tested on its own.
#[derive(Debug, Clone, PartialEq)]
struct Histogram {
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
    /// Right edge of each bucket; bucket `i` holds values in
    /// `[bucket_limit[i-1], bucket_limit[i])`, the first one from `min`.
    bucket_limit: Vec<f64>,
    bucket: Vec<f64>,
}

impl Histogram {
    /// Non-finite values are skipped: they have no bucket TensorBoard could
    /// draw, and one NaN would turn min/max/sum into NaN.
    fn from_values(values: &[f32]) -> Self {
        let limits = default_bucket_limits();
        let mut counts = vec![0u64; limits.len()];
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut num, mut sum, mut sum_squares) = (0u64, 0.0f64, 0.0f64);
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let v = f64::from(v);
            // First limit strictly above v; the last limit is f64::MAX, which
            // is above every finite f32, so the index is always in range.
            let idx = limits.partition_point(|&l| l <= v);
            counts[idx] += 1;
            min = min.min(v);
            max = max.max(v);
            num += 1;
            sum += v;
            sum_squares += v * v;
        }
        if num == 0 {
            // Zero buckets is what TensorBoard itself turns an all-empty
            // histogram into; min/max 0 avoid writing infinities.
            return Histogram {
                min: 0.0,
                max: 0.0,
                num: 0.0,
                sum: 0.0,
                sum_squares: 0.0,
                bucket_limit: Vec::new(),
                bucket: Vec::new(),
            };
        }
        // Sparse encoding: drop the empty buckets before the first and after
        // the last non-empty one (readers take `min`/`max` as the outer
        // edges), and merge each inner run of empty buckets into a single
        // zero bucket so every edge stays exact. ~1551 mostly-empty buckets
        // per call would otherwise bloat the file.
        let first = counts.iter().position(|&c| c > 0).unwrap_or(0);
        let last = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
        let mut bucket_limit = Vec::new();
        let mut bucket = Vec::new();
        let mut i = first;
        while i <= last {
            if counts[i] == 0 {
                while counts[i + 1] == 0 {
                    i += 1;
                }
            }
            bucket_limit.push(limits[i]);
            bucket.push(counts[i] as f64);
            i += 1;
        }
        Histogram {
            min,
            max,
            num: num as f64,
            sum,
            sum_squares,
            bucket_limit,
            bucket,
        }
    }

    fn encode(&self) -> Msg {
        let mut m = Msg::default();
        m.double(field::HISTO_MIN, self.min)
            .double(field::HISTO_MAX, self.max)
            .double(field::HISTO_NUM, self.num)
            .double(field::HISTO_SUM, self.sum)
            .double(field::HISTO_SUM_SQUARES, self.sum_squares)
            .packed_doubles(field::HISTO_BUCKET_LIMIT, &self.bucket_limit)
            .packed_doubles(field::HISTO_BUCKET, &self.bucket);
        m
    }
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

/// Appends TensorBoard events to one new event file in a log directory.
///
/// Events are buffered; call [`EventWriter::flush`] at points where a
/// TensorBoard watching the directory should see progress (e.g. every log
/// interval). Dropping the writer flushes what is buffered, ignoring errors.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
    /// Reused framing buffer so each event is one `write_all` and no
    /// allocation in steady state.
    scratch: Vec<u8>,
}

impl EventWriter {
    /// Creates `dir` if needed and opens a new
    /// `events.out.tfevents.<unix_secs>.<hostname>.<pid>.ldm-train` file,
    /// writing the file_version event ("brain.Event:2").
    ///
    /// The file is created exclusively: if that name already exists (a
    /// second writer in the same second and process), `.1`, `.2`, … is
    /// appended rather than truncating someone else's events.
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!(
            "events.out.tfevents.{secs}.{}.{}.ldm-train",
            hostname(),
            std::process::id()
        );
        let mut attempt = 0u32;
        let (file, path) = loop {
            let name = if attempt == 0 {
                base.clone()
            } else {
                format!("{base}.{attempt}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1
                }
                Err(e) => return Err(e),
            }
        };
        let mut writer = EventWriter {
            out: BufWriter::new(file),
            path,
            scratch: Vec::new(),
        };
        let mut event = Msg::default();
        event
            .double(field::EVENT_WALL_TIME, wall_time())
            .uint(field::EVENT_STEP, 0)
            .bytes(field::EVENT_FILE_VERSION, b"brain.Event:2");
        writer.write_event(&event)?;
        // Flush right away so the file is recognisable as soon as it exists.
        writer.flush()?;
        Ok(writer)
    }

    /// Path of the event file being written, e.g. to tell the user where
    /// to point TensorBoard.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs one scalar (`Summary.Value.simple_value`). NaN and ±inf are
    /// written as they are: TensorBoard reads them, and a diverging loss is
    /// exactly what the user needs to see.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: u64) -> io::Result<()> {
        let mut v = Msg::default();
        v.bytes(field::VALUE_TAG, tag.as_bytes())
            .float(field::VALUE_SIMPLE_VALUE, value);
        self.write_event(&summary_event(&v, step, wall_time()))
    }

    /// Logs one RGB image. `rgb` is row-major, 3 bytes per pixel,
    /// `width * height * 3` long; it is encoded as PNG into a
    /// `Summary.Image` (height, width, colorspace 3, encoded_image_string).
    ///
    /// Fails with `InvalidInput` if the buffer length does not match, or a
    /// dimension is zero or above `i32::MAX` (the proto fields are int32).
    pub fn add_image_rgb(
        &mut self,
        tag: &str,
        rgb: &[u8],
        width: u32,
        height: u32,
        step: u64,
    ) -> io::Result<()> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
            return Err(invalid(format!("image {tag:?}: bad size {width}x{height}")));
        }
        let expected = width as u64 * height as u64 * 3;
        if rgb.len() as u64 != expected {
            return Err(invalid(format!(
                "image {tag:?}: {width}x{height} RGB needs {expected} bytes, got {}",
                rgb.len()
            )));
        }
        let png = encode_png_rgb(rgb, width, height)?;
        let mut image = Msg::default();
        image
            .uint(field::IMAGE_HEIGHT, u64::from(height))
            .uint(field::IMAGE_WIDTH, u64::from(width))
            .uint(field::IMAGE_COLORSPACE, 3)
            .bytes(field::IMAGE_ENCODED, &png);
        let mut v = Msg::default();
        v.bytes(field::VALUE_TAG, tag.as_bytes())
            .message(field::VALUE_IMAGE, &image);
        self.write_event(&summary_event(&v, step, wall_time()))
    }

    /// Logs a histogram (`HistogramProto`: min, max, num, sum, sum_squares,
    /// bucket_limit, bucket) of `values`.
    ///
    /// Buckets use TensorFlow's default exponential edges (0, ±1e-12·1.1^k up
    /// to ±1e20, ±f64::MAX), so any range is covered without configuration.
    /// Only the span from the first to the last non-empty bucket is written,
    /// with inner runs of empty buckets merged, which keeps an event small.
    /// NaN and ±inf are left out of every statistic; with no finite value
    /// the histogram has `num = 0` and no buckets.
    pub fn add_histogram(&mut self, tag: &str, values: &[f32], step: u64) -> io::Result<()> {
        let histo = Histogram::from_values(values).encode();
        let mut v = Msg::default();
        v.bytes(field::VALUE_TAG, tag.as_bytes())
            .message(field::VALUE_HISTO, &histo);
        self.write_event(&summary_event(&v, step, wall_time()))
    }

    /// Flushes buffered records to the OS so a reader (TensorBoard) sees
    /// them. No fsync: that only matters for a machine crash, and syncing
    /// every log interval would stall training on slow disks.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_event(&mut self, event: &Msg) -> io::Result<()> {
        self.scratch.clear();
        frame_record(&event.0, &mut self.scratch);
        // One write_all per record: a reader polling the file may see a
        // truncated tail, which TensorBoard tolerates, but never interleaved
        // partial records from us.
        self.out.write_all(&self.scratch)
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Host name for the file name, read without extra dependencies. Anything
/// that could break the file name (path separators, spaces) is replaced,
/// since the name comes from outside our control.
fn hostname() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}

fn encode_png_rgb(rgb: &[u8], width: u32, height: u32) -> io::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| io::Error::other(format!("PNG encoding failed: {e}")))?;
    Ok(png)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Test-only protobuf reader: enough to check what we wrote.
    #[derive(Debug, Clone, PartialEq)]
    enum Wire {
        Varint(u64),
        Fixed64([u8; 8]),
        Len(Vec<u8>),
        Fixed32([u8; 4]),
    }

    impl Wire {
        fn f64(&self) -> f64 {
            match self {
                Wire::Fixed64(b) => f64::from_le_bytes(*b),
                other => panic!("not fixed64: {other:?}"),
            }
        }
        fn f32(&self) -> f32 {
            match self {
                Wire::Fixed32(b) => f32::from_le_bytes(*b),
                other => panic!("not fixed32: {other:?}"),
            }
        }
        fn uint(&self) -> u64 {
            match self {
                Wire::Varint(v) => *v,
                other => panic!("not varint: {other:?}"),
            }
        }
        fn bytes(&self) -> &[u8] {
            match self {
                Wire::Len(b) => b,
                other => panic!("not length-delimited: {other:?}"),
            }
        }
        fn doubles(&self) -> Vec<f64> {
            let b = self.bytes();
            assert_eq!(b.len() % 8, 0);
            b.chunks(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
    }

    fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
            assert!(shift < 64, "varint too long");
        }
    }

    fn parse(buf: &[u8]) -> Vec<(u32, Wire)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos);
            let field = (key >> 3) as u32;
            let w = match (key & 7) as u32 {
                WIRE_VARINT => Wire::Varint(read_varint(buf, &mut pos)),
                WIRE_FIXED64 => {
                    pos += 8;
                    Wire::Fixed64(buf[pos - 8..pos].try_into().unwrap())
                }
                WIRE_LEN => {
                    let n = read_varint(buf, &mut pos) as usize;
                    pos += n;
                    Wire::Len(buf[pos - n..pos].to_vec())
                }
                WIRE_FIXED32 => {
                    pos += 4;
                    Wire::Fixed32(buf[pos - 4..pos].try_into().unwrap())
                }
                t => panic!("unexpected wire type {t}"),
            };
            out.push((field, w));
        }
        assert_eq!(pos, buf.len(), "message overran its buffer");
        out
    }

    fn get(fields: &[(u32, Wire)], n: u32) -> &Wire {
        let mut it = fields.iter().filter(|(f, _)| *f == n);
        let w = &it.next().unwrap_or_else(|| panic!("field {n} missing")).1;
        assert!(it.next().is_none(), "field {n} repeated");
        w
    }

    /// Splits a TFRecord stream, checking both CRCs of every record.
    fn try_unframe(mut data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut records = Vec::new();
        while !data.is_empty() {
            if data.len() < 12 {
                return Err("truncated header".into());
            }
            let len_bytes: [u8; 8] = data[..8].try_into().unwrap();
            let len_crc = u32::from_le_bytes(data[8..12].try_into().unwrap());
            if len_crc != masked_crc32c(&len_bytes) {
                return Err("length CRC mismatch".into());
            }
            let n = u64::from_le_bytes(len_bytes) as usize;
            if data.len() < 12 + n + 4 {
                return Err("truncated record".into());
            }
            let payload = &data[12..12 + n];
            let crc = u32::from_le_bytes(data[12 + n..16 + n].try_into().unwrap());
            if crc != masked_crc32c(payload) {
                return Err("data CRC mismatch".into());
            }
            records.push(payload.to_vec());
            data = &data[16 + n..];
        }
        Ok(records)
    }

    fn unframe(data: &[u8]) -> Vec<Vec<u8>> {
        try_unframe(data).unwrap()
    }

    /// A fresh directory per test; tests run in parallel in one process.
    fn temp_dir(name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let d =
            std::env::temp_dir().join(format!("ldm-tb-test-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Returns the (tag, value fields) of the single Summary.Value in an event.
    fn summary_value(event: &[(u32, Wire)]) -> (String, Vec<(u32, Wire)>) {
        let summary = parse(get(event, field::EVENT_SUMMARY).bytes());
        let value = parse(get(&summary, field::SUMMARY_VALUE).bytes());
        let tag = String::from_utf8(get(&value, field::VALUE_TAG).bytes().to_vec()).unwrap();
        (tag, value)
    }

    #[test]
    fn crc32c_known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        // The other RFC 3720 (iSCSI) vectors.
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    // The spelled-out shifts are the TFRecord definition, kept as an
    // independent check of `rotate_right`.
    #[allow(clippy::manual_rotate)]
    fn masked_crc_matches_definition() {
        let crc = crc32c(b"123456789");
        let expected = ((crc >> 15) | (crc << 17)).wrapping_add(0xA282_EAD8);
        assert_eq!(masked_crc32c(b"123456789"), expected);
        // Exercises the wrapping add: masking 0 must not overflow-panic.
        assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
    }

    #[test]
    fn varint_encoding() {
        let enc = |v: u64| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7F]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xAC, 0x02]);
        assert_eq!(enc(16_383), [0xFF, 0x7F]);
        assert_eq!(enc(16_384), [0x80, 0x80, 0x01]);
        let max = enc(u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(max[9], 0x01);
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let b = enc(v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos), v);
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn protobuf_field_encoding() {
        let mut m = Msg::default();
        m.uint(2, 150)
            .bytes(1, b"testing")
            .float(2, 1.5)
            .double(1, -2.0);
        // Field 2 varint 150 is the protobuf docs' example: 08 96 01 for
        // field 1, so 10 96 01 for field 2.
        assert_eq!(&m.0[..3], &[0x10, 0x96, 0x01]);
        assert_eq!(&m.0[3..5], &[0x0A, 0x07]);
        assert_eq!(&m.0[5..12], b"testing");
        assert_eq!(m.0[12], 0x15); // field 2, fixed32
        assert_eq!(m.0[17], 0x09); // field 1, fixed64
        let fields = parse(&m.0);
        assert_eq!(fields[2].1.f32(), 1.5);
        assert_eq!(fields[3].1.f64(), -2.0);

        let mut p = Msg::default();
        p.packed_doubles(6, &[1.0, 2.5]);
        assert_eq!(&p.0[..2], &[0x32, 16]);
        assert_eq!(parse(&p.0)[0].1.doubles(), vec![1.0, 2.5]);
    }

    #[test]
    fn record_round_trip() {
        let payloads: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"hello".to_vec(),
            (0..=255u8).cycle().take(70_000).collect(),
        ];
        let mut stream = Vec::new();
        for p in &payloads {
            frame_record(p, &mut stream);
        }
        assert_eq!(unframe(&stream), payloads);

        // A flipped payload bit must be caught by the data CRC.
        let mut corrupt = Vec::new();
        frame_record(b"hello", &mut corrupt);
        let mut bad_data = corrupt.clone();
        bad_data[13] ^= 1;
        assert_eq!(try_unframe(&bad_data).unwrap_err(), "data CRC mismatch");
        // So must a flipped length bit, by the length CRC.
        let mut bad_len = corrupt.clone();
        bad_len[0] ^= 1;
        assert_eq!(try_unframe(&bad_len).unwrap_err(), "length CRC mismatch");
        assert_eq!(
            try_unframe(&corrupt[..corrupt.len() - 1]).unwrap_err(),
            "truncated record"
        );
    }

    #[test]
    fn file_version_first_and_scalars_round_trip() {
        let dir = temp_dir("scalars");
        let mut w = EventWriter::create(&dir).unwrap();
        let name = w.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(
            name.ends_with(&format!(".{}.ldm-train", std::process::id())),
            "{name}"
        );
        let values = [
            0.0f32,
            1.25,
            -3.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            7.0,
        ];
        for (step, v) in values.iter().enumerate() {
            w.add_scalar("train/loss", *v, step as u64 * 10).unwrap();
        }
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        drop(w);

        let records = unframe(&fs::read(&path).unwrap());
        assert_eq!(records.len(), 1 + values.len());
        let first = parse(&records[0]);
        assert_eq!(
            get(&first, field::EVENT_FILE_VERSION).bytes(),
            b"brain.Event:2"
        );
        assert!(get(&first, field::EVENT_WALL_TIME).f64() > 1.0e9);

        for (i, rec) in records[1..].iter().enumerate() {
            let ev = parse(rec);
            assert_eq!(get(&ev, field::EVENT_STEP).uint(), i as u64 * 10);
            assert!(get(&ev, field::EVENT_WALL_TIME).f64() > 1.0e9);
            let (tag, value) = summary_value(&ev);
            assert_eq!(tag, "train/loss");
            // Bit-exact, which also covers NaN; 0.0 must be present too.
            let got = get(&value, field::VALUE_SIMPLE_VALUE).f32();
            assert_eq!(got.to_bits(), values[i].to_bits());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_writers_same_dir_get_distinct_files() {
        let dir = temp_dir("distinct");
        let a = EventWriter::create(&dir).unwrap();
        let b = EventWriter::create(&dir).unwrap();
        assert_ne!(a.path(), b.path());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_square_image_keeps_width_and_height() {
        let dir = temp_dir("image");
        let (w_px, h_px) = (96u32, 40u32);
        let mut rgb = Vec::new();
        for y in 0..h_px {
            for x in 0..w_px {
                rgb.extend_from_slice(&[(x * 2) as u8, (y * 6) as u8, 128]);
            }
        }
        let mut w = EventWriter::create(&dir).unwrap();
        w.add_image_rgb("samples/recon", &rgb, w_px, h_px, 5)
            .unwrap();
        // Wrong length and zero size are rejected, not written.
        let err = w
            .add_image_rgb("bad", &rgb[1..], w_px, h_px, 5)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(w.add_image_rgb("bad", &[], 0, 0, 5).is_err());
        w.flush().unwrap();

        let records = unframe(&fs::read(w.path()).unwrap());
        assert_eq!(records.len(), 2);
        let ev = parse(&records[1]);
        assert_eq!(get(&ev, field::EVENT_STEP).uint(), 5);
        let (tag, value) = summary_value(&ev);
        assert_eq!(tag, "samples/recon");
        let img = parse(get(&value, field::VALUE_IMAGE).bytes());
        assert_eq!(get(&img, field::IMAGE_HEIGHT).uint(), 40);
        assert_eq!(get(&img, field::IMAGE_WIDTH).uint(), 96);
        assert_eq!(get(&img, field::IMAGE_COLORSPACE).uint(), 3);
        let png = get(&img, field::IMAGE_ENCODED).bytes();
        let decoded = image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(decoded.dimensions(), (96, 40));
        assert_eq!(decoded.as_raw(), &rgb);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_bucket_limits_shape() {
        let l = default_bucket_limits();
        assert_eq!(l.len(), 1551);
        assert_eq!(l[0], -f64::MAX);
        assert_eq!(*l.last().unwrap(), f64::MAX);
        assert_eq!(l[775], 0.0);
        assert_eq!(l[776], 1.0e-12);
        assert!(l.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_statistics_and_buckets() {
        let values = [1.0f32, 1.0, 2.0, -3.0, 0.0, f32::NAN, f32::INFINITY, 1000.0];
        let h = Histogram::from_values(&values);
        assert_eq!(h.num, 6.0);
        assert_eq!(h.min, -3.0);
        assert_eq!(h.max, 1000.0);
        assert_eq!(h.sum, 1001.0);
        assert_eq!(h.sum_squares, 1.0 + 1.0 + 4.0 + 9.0 + 1.0e6);
        assert_eq!(h.bucket.iter().sum::<f64>(), 6.0);
        assert_eq!(h.bucket.len(), h.bucket_limit.len());
        assert!(h.bucket_limit.windows(2).all(|w| w[0] < w[1]));
        // Outer buckets are non-empty; empty runs inside are merged, so no
        // two zero buckets are adjacent.
        assert!(h.bucket[0] > 0.0 && *h.bucket.last().unwrap() > 0.0);
        assert!(h.bucket.windows(2).all(|w| w[0] > 0.0 || w[1] > 0.0));
        // Each value lies below its bucket's limit and at or above the
        // previous limit.
        let limits = default_bucket_limits();
        for v in [1.0f64, 2.0, -3.0, 0.0, 1000.0] {
            let k = h.bucket_limit.iter().position(|&l| l > v).unwrap();
            assert!(h.bucket[k] > 0.0, "value {v}");
            let full = limits.partition_point(|&l| l <= v);
            assert_eq!(h.bucket_limit[k], limits[full]);
        }
        let two = h.bucket_limit.iter().position(|&l| l > 1.0).unwrap();
        assert_eq!(h.bucket[two], 2.0);

        let empty = Histogram::from_values(&[f32::NAN]);
        assert_eq!(empty.num, 0.0);
        assert!(empty.bucket.is_empty() && empty.bucket_limit.is_empty());
        assert_eq!(Histogram::from_values(&[]), empty);

        let zeros = Histogram::from_values(&[0.0; 4]);
        assert_eq!(zeros.bucket, vec![4.0]);
        assert_eq!(zeros.bucket_limit, vec![1.0e-12]);
    }

    #[test]
    fn histogram_event_round_trip() {
        let dir = temp_dir("histo");
        let mut w = EventWriter::create(&dir).unwrap();
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 100.0).collect();
        w.add_histogram("weights/conv", &values, 3).unwrap();
        w.add_histogram("weights/empty", &[], 4).unwrap();
        w.flush().unwrap();
        let records = unframe(&fs::read(w.path()).unwrap());
        assert_eq!(records.len(), 3);
        let ev = parse(&records[1]);
        let (tag, value) = summary_value(&ev);
        assert_eq!(tag, "weights/conv");
        let h = parse(get(&value, field::VALUE_HISTO).bytes());
        assert_eq!(get(&h, field::HISTO_MIN).f64(), -5.0);
        assert_eq!(get(&h, field::HISTO_MAX).f64(), 4.99f32 as f64);
        assert_eq!(get(&h, field::HISTO_NUM).f64(), 1000.0);
        let limits = get(&h, field::HISTO_BUCKET_LIMIT).doubles();
        let counts = get(&h, field::HISTO_BUCKET).doubles();
        assert_eq!(limits.len(), counts.len());
        assert_eq!(counts.iter().sum::<f64>(), 1000.0);
        let (_, value) = summary_value(&parse(&records[2]));
        let h = parse(get(&value, field::VALUE_HISTO).bytes());
        assert!(get(&h, field::HISTO_BUCKET).doubles().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
