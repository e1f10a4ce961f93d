//! Images with text captions, for text-to-image training.
//!
//! Users bring captions in one of two conventions, and both are read here
//! into the same [`CaptionedImages`]:
//!
//! * **sidecar files**: `photo.png` + `photo.txt` in the same folder, one
//!   caption per non-blank line (kohya-ss trainers, Tux Paint's saved
//!   drawings, most scraped sets);
//! * **`metadata.jsonl`** in the dataset folder, one
//!   `{"file_name": "a/photo.png", "text": "…"}` object per line, where
//!   `text` may also be a list of captions (the Hugging Face `imagefolder`
//!   convention).
//!
//! An image may carry several captions; [`caption_for_epoch`] draws one per
//! epoch, reproducibly, so a resumed run sees the captions an uninterrupted
//! one would have seen.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};

use image::RgbImage;
use serde_json::{Map, Value};

use crate::decode::decode_rgb8;
use crate::folder::{hash_file_identity, scan_files, walk_images, FileStamp};
use crate::hash::Fnv1a;
use crate::labelled::unlabelled_file_fingerprint;
use crate::manifest::{line_error, parse_jsonl_lines, read_text, stat_listed_file};
use crate::rng::{caption_seed, SplitMix64};
use crate::DataError;

/// The Hugging Face `imagefolder` caption file, looked for in the root only.
const METADATA_FILE: &str = "metadata.jsonl";

/// What a line of `metadata.jsonl` should look like, for error messages.
const METADATA_SHAPE: &str = "{\"file_name\": …, \"text\": …}";

/// Where a [`CaptionedImages`] found its captions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptionFormat {
    /// A `<stem>.txt` beside every image, one caption per non-blank line.
    Sidecar,
    /// `metadata.jsonl` in the dataset folder, listing the images.
    MetadataJsonl,
}

/// An indexed list of image files, each with one or more captions.
///
/// Built by [`CaptionedImages::scan`], which picks the convention: a
/// `metadata.jsonl` in the root wins (sidecar `.txt` files are then
/// ignored); otherwise every image below the root needs its sidecar.
/// Captions are trimmed and never empty; an image's captions keep the order
/// of its file (sidecar lines, JSON list).
///
/// Item order is fixed at construction and the same on every machine:
/// sorted by path, exactly as an [`crate::ImageFolder`] of the same files
/// lists them. Images are only listed here and decoded on demand, so a
/// broken one is skipped by the [`crate::Loader`] as for any other source;
/// caption files, being tiny and needed by every epoch, are read up front so
/// that a missing or empty one stops the run before training starts rather
/// than hours into it.
#[derive(Clone, Debug)]
pub struct CaptionedImages {
    root: PathBuf,
    format: CaptionFormat,
    paths: Vec<PathBuf>,
    captions: Vec<Vec<String>>,
    fingerprint: String,
}

/// One listed image before the dataset is assembled.
type Entry = (PathBuf, FileStamp, Vec<String>);

impl CaptionedImages {
    /// Reads the captioned dataset in folder `root`, detecting its
    /// convention.
    ///
    /// * With `root/metadata.jsonl`: each non-blank line is a JSON object
    ///   with `file_name` (relative to `root`, `/`-separated, staying inside
    ///   `root`) and `text` (a caption, or a list of captions); other keys
    ///   are ignored. Only the listed files are items, and each must exist.
    /// * Otherwise: every image below `root` (found as
    ///   [`crate::ImageFolder::scan`] finds them) must have a `<stem>.txt` in
    ///   its folder (`a/b.png` → `a/b.txt`); each non-blank line of it is one
    ///   caption. One line per file is the kohya-ss convention; more lines
    ///   give the image more captions to draw from.
    ///
    /// # Errors
    /// All name the offending file:
    /// [`DataError::MissingRoot`] if `root` is not a folder;
    /// [`DataError::NoImages`] for a sidecar folder without images;
    /// [`DataError::MissingCaptions`] if some images have no caption file
    /// (with the count and the first one);
    /// [`DataError::Dataset`] for a caption file with no non-blank line, a
    /// caption file or `metadata.jsonl` that is not UTF-8, and a
    /// `metadata.jsonl` that lists nothing;
    /// [`DataError::Manifest`] with the line number for a `metadata.jsonl`
    /// line that is not a JSON object, lacks a string `file_name`, has a
    /// missing, empty or non-string `text`, names a file twice, outside
    /// `root` or that does not exist;
    /// [`DataError::Io`] if a folder or file cannot be read.
    pub fn scan(root: &Path) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::MissingRoot {
                root: root.to_path_buf(),
            });
        }
        let metadata = root.join(METADATA_FILE);
        if metadata.is_file() {
            Self::from_metadata(root, &metadata)
        } else {
            Self::from_sidecars(root)
        }
    }

    fn from_sidecars(root: &Path) -> Result<Self, DataError> {
        let images = scan_files(root)?;
        if images.is_empty() {
            return Err(DataError::NoImages {
                root: root.to_path_buf(),
            });
        }
        let sidecars: Vec<PathBuf> = images.iter().map(|(path, _)| sidecar_of(path)).collect();
        // Counted before any caption is read: one message that says how big
        // the gap is beats failing on the first of a thousand missing files.
        let lacking: Vec<usize> = (0..images.len())
            .filter(|&i| !sidecars[i].is_file())
            .collect();
        if let Some(&first) = lacking.first() {
            return Err(DataError::MissingCaptions {
                root: root.to_path_buf(),
                missing: lacking.len(),
                total: images.len(),
                first: images[first].0.clone(),
                expected: sidecars[first].clone(),
            });
        }
        let mut entries = Vec::with_capacity(images.len());
        for ((path, stamp), txt) in images.into_iter().zip(&sidecars) {
            entries.push((path, stamp, read_sidecar(txt)?));
        }
        Ok(Self::from_entries(root, CaptionFormat::Sidecar, entries))
    }

    fn from_metadata(root: &Path, file: &Path) -> Result<Self, DataError> {
        let text = read_text(file)?;
        let bad = |line: usize, reason: String| line_error(file, line, reason);
        let rows = parse_jsonl_lines::<Map<String, Value>>(&text, METADATA_SHAPE)
            .map_err(|(line, reason)| bad(line, reason))?;
        if rows.is_empty() {
            return Err(DataError::Dataset {
                path: file.to_path_buf(),
                reason: format!("lists no images (expected one {METADATA_SHAPE} object per line)"),
            });
        }
        let mut first_line: HashMap<String, usize> = HashMap::with_capacity(rows.len());
        let mut entries = Vec::with_capacity(rows.len());
        for (line, row) in rows {
            let name = file_name_of(&row).map_err(|reason| bad(line, reason))?;
            let captions = captions_of(&row).map_err(|reason| bad(line, reason))?;
            if let Some(&first) = first_line.get(&name) {
                return Err(bad(
                    line,
                    format!("file_name \"{name}\" is listed again (first on line {first})"),
                ));
            }
            let path = name.split('/').fold(root.to_path_buf(), |p, c| p.join(c));
            let stamp = stat_listed_file(&path).map_err(|reason| bad(line, reason))?;
            first_line.insert(name, line);
            entries.push((path, stamp, captions));
        }
        // The listing order of a JSONL file is an accident of whatever wrote
        // it; path order makes the same dataset index alike in both
        // conventions.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self::from_entries(
            root,
            CaptionFormat::MetadataJsonl,
            entries,
        ))
    }

    fn from_entries(root: &Path, format: CaptionFormat, entries: Vec<Entry>) -> Self {
        let mut h = Fnv1a::new();
        h.write_str0("ldm-data captioned v1")
            .write_u64(entries.len() as u64);
        for (path, stamp, captions) in &entries {
            hash_file_identity(&mut h, root, path, *stamp);
            h.write_u64(captions.len() as u64);
            for caption in captions {
                // Length-prefixed: a JSON caption may contain a 0 byte.
                h.write_u64(caption.len() as u64).write(caption.as_bytes());
            }
        }
        let (paths, captions) = entries
            .into_iter()
            .map(|(path, _, captions)| (path, captions))
            .unzip();
        Self {
            root: root.to_path_buf(),
            format,
            paths,
            captions,
            fingerprint: h.hex(),
        }
    }

    /// The dataset folder (names the dataset in errors).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Which convention the captions were read from.
    pub fn format(&self) -> CaptionFormat {
        self.format
    }

    /// Number of images (readable or not).
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Always `false` ([`CaptionedImages::scan`] rejects empty datasets);
    /// provided for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The image file of item `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn path(&self, index: usize) -> &Path {
        &self.paths[index]
    }

    /// Every image file, in item order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The captions of item `index`: at least one, trimmed, none empty.
    /// Use [`caption_for_epoch`] to pick the one to train on.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn captions(&self, index: usize) -> &[String] {
        &self.captions[index]
    }

    /// Decodes item `index` to RGB8 as [`crate::decode_rgb8`] does:
    /// transparency composited over white, exactly as the autoencoder stage
    /// sees the same file in an [`crate::ImageFolder`], so latents match.
    ///
    /// # Errors
    /// [`DataError::Decode`] naming the file.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
        decode_rgb8(&self.paths[index])
    }

    /// A 16-hex-digit identity of the dataset for checkpoints: 64-bit
    /// FNV-1a over every item's path relative to the root, size and
    /// modification time (as [`crate::ImageFolder::fingerprint`] does) and
    /// its captions. Editing a caption therefore changes it — a resumed
    /// text-to-image run should know its text changed — without reading a
    /// single image.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The content hash of item `index`'s image file, identical to what an
    /// [`crate::ImageFolder`] reports for the same file (see
    /// [`crate::ImageSource::item_fingerprint`]). Captions are left out on
    /// purpose: latent caches are keyed on this value, and a latent stays
    /// valid when only the text describing its image changes.
    ///
    /// # Errors
    /// [`DataError::Io`] naming the file if it cannot be read.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
        unlabelled_file_fingerprint(&self.paths[index])
    }
}

/// Whether `root` is a folder of captioned images: it has a
/// `metadata.jsonl`, or at least one image below it has a `<stem>.txt`
/// beside it.
///
/// This is how [`crate::open_source`] tells a captioned tree such as Tux
/// Paint's `<category>/<name>.png` + `<name>.txt` from a class folder of the
/// same shape; it is checked before any other detection. The walk stops at
/// the first captioned image, so a captioned folder is recognised at once;
/// a folder without captions costs one directory walk. It does not check
/// that *every* image has a caption: [`CaptionedImages::scan`] reports
/// those that do not.
pub fn is_captioned_dir(root: &Path) -> bool {
    if !root.is_dir() {
        return false;
    }
    if root.join(METADATA_FILE).is_file() {
        return true;
    }
    let found = walk_images(root, &mut |image, _| {
        if sidecar_of(&image).is_file() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    // An unreadable folder is not evidence of captions; the scan of whatever
    // kind is chosen reports it properly.
    found.is_ok_and(|flow| flow.is_break())
}

/// The caption to train item `index` on in epoch `epoch`, drawn uniformly
/// from `captions`; `None` only if `captions` is empty.
///
/// The same `(seed, epoch, index)` gives the same caption on every machine,
/// run and worker count (a counter-based SplitMix64 draw, see
/// [`crate::sample_seed`]), so a resumed run trains on exactly the captions
/// an uninterrupted one would have. Different epochs, items and seeds give
/// (pseudo-)independent draws, so over many epochs every caption of an item
/// is used. The draw is keyed on the item index, not its shuffled position,
/// and a single caption is returned without drawing.
pub fn caption_for_epoch(captions: &[String], seed: u64, epoch: u64, index: usize) -> Option<&str> {
    let pick = match captions.len() {
        0 => return None,
        1 => 0,
        n => SplitMix64::new(caption_seed(seed, epoch, index as u64)).below(n as u64) as usize,
    };
    Some(&captions[pick])
}

/// The sidecar caption file of an image: same folder, same stem, `.txt`.
fn sidecar_of(image: &Path) -> PathBuf {
    image.with_extension("txt")
}

/// The captions of a sidecar file: its non-blank lines, trimmed.
fn read_sidecar(txt: &Path) -> Result<Vec<String>, DataError> {
    let text = read_text(txt)?;
    let captions: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if captions.is_empty() {
        return Err(DataError::Dataset {
            path: txt.to_path_buf(),
            reason: "empty caption file: no line holds text (write one caption per line)".into(),
        });
    }
    Ok(captions)
}

/// The `file_name` of a `metadata.jsonl` object, normalised to
/// `/`-separated components without `.` or empty parts, so that two
/// spellings of one file are caught as a duplicate.
fn file_name_of(row: &Map<String, Value>) -> Result<String, String> {
    let raw = match row.get("file_name") {
        Some(Value::String(name)) => name,
        Some(other) => return Err(format!("file_name must be a string, not {}", shown(other))),
        None => return Err(format!("no \"file_name\" key (expected {METADATA_SHAPE})")),
    };
    let escapes = || {
        format!(
            "file_name \"{raw}\" leaves the dataset folder; give a path relative to \
             the folder holding {METADATA_FILE}, without .."
        )
    };
    if raw.starts_with('/') || Path::new(raw).has_root() {
        return Err(escapes());
    }
    let mut parts = Vec::new();
    for part in raw.split('/').filter(|p| !p.is_empty() && *p != ".") {
        // Component parsing also catches `..` and drive prefixes spelled
        // with the platform's own separator.
        let plain = Path::new(part)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !plain {
            return Err(escapes());
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(format!("file_name \"{raw}\" names no file"));
    }
    Ok(parts.join("/"))
}

/// The captions of a `metadata.jsonl` object's `text`: a string, or a list
/// of strings.
fn captions_of(row: &Map<String, Value>) -> Result<Vec<String>, String> {
    match row.get("text") {
        None => Err("no \"text\" key (the caption: a string, or a list of strings)".into()),
        Some(Value::String(text)) if text.trim().is_empty() => Err("text is empty".into()),
        Some(Value::String(text)) => Ok(vec![text.trim().to_string()]),
        Some(Value::Array(list)) if list.is_empty() => Err("text is an empty list".into()),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(k, value)| match value {
                Value::String(text) if text.trim().is_empty() => Err(format!("text[{k}] is empty")),
                Value::String(text) => Ok(text.trim().to_string()),
                other => Err(format!("text[{k}] must be a string, not {}", shown(other))),
            })
            .collect(),
        Some(other) => Err(format!(
            "text must be a string or a list of strings, not {}",
            shown(other)
        )),
    }
}

/// A JSON value as written, cut short so one bad value cannot flood the log.
fn shown(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let cut: String = text.chars().take(MAX_CHARS).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn file_names_are_normalised_and_kept_inside_the_root() {
        let name = |json: &str| file_name_of(&row(json));
        assert_eq!(name(r#"{"file_name": "./a//b.png"}"#).unwrap(), "a/b.png");
        assert_eq!(name(r#"{"file_name": "x.png"}"#).unwrap(), "x.png");
        for escaping in ["../x.png", "a/../../x.png", "/etc/x.png"] {
            let err = name(&format!(r#"{{"file_name": "{escaping}"}}"#)).unwrap_err();
            assert!(
                err.contains("leaves the dataset folder"),
                "{escaping}: {err}"
            );
        }
        assert!(name(r#"{"file_name": "./"}"#)
            .unwrap_err()
            .contains("names no file"));
        assert!(name(r#"{"file_name": 3}"#)
            .unwrap_err()
            .contains("must be a string"));
        assert!(name(r#"{"text": "x"}"#)
            .unwrap_err()
            .contains("no \"file_name\""));
    }

    #[test]
    fn text_is_a_string_or_a_list_of_non_empty_strings() {
        let caps = |json: &str| captions_of(&row(json));
        assert_eq!(caps(r#"{"text": "  a cat "}"#).unwrap(), ["a cat"]);
        assert_eq!(caps(r#"{"text": ["a", " b"]}"#).unwrap(), ["a", "b"]);
        assert!(caps(r#"{"text": " "}"#).unwrap_err().contains("empty"));
        assert!(caps(r#"{"text": []}"#).unwrap_err().contains("empty list"));
        assert!(caps(r#"{"text": ["a", ""]}"#)
            .unwrap_err()
            .contains("text[1]"));
        assert!(caps(r#"{"text": ["a", 2]}"#)
            .unwrap_err()
            .contains("text[1]"));
        assert!(caps(r#"{"text": 7}"#).unwrap_err().contains("not 7"));
        assert!(caps(r#"{}"#).unwrap_err().contains("no \"text\""));
    }

    #[test]
    fn long_json_values_are_cut_short() {
        let long = Value::String("x".repeat(500));
        assert!(shown(&long).chars().count() <= 61);
        assert_eq!(shown(&Value::Bool(true)), "true");
    }
}
