//! Labelled image datasets: class folders, IDX pairs (Fashion-MNIST) and
//! JSONL/CSV manifests behind one type.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::RgbImage;

use crate::decode::{decode_rgb8, decode_rgb8_bytes};
use crate::folder::{has_image_extension, relative_name, scan_files, FileStamp};
use crate::hash::Fnv1a;
use crate::idx::{read_idx_labels, IdxImages};
use crate::manifest::{read_manifest, read_text};
use crate::DataError;

/// Which kind of dataset a path holds; `Auto` detects it.
///
/// Serialized in snake case (`"auto"`, `"folder"`, `"class_folder"`,
/// `"idx"`, `"manifest"`, `"captioned"`), so it can sit in a TOML config as
/// is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Detect from the path: a `.jsonl`/`.csv` file is a manifest; an
    /// `*-images-idx3-ubyte[.gz]` file, or a folder holding one, is IDX; a
    /// folder with image files directly inside is an unlabelled
    /// [`crate::ImageFolder`]; any other folder is a class folder. Only
    /// [`crate::open_source`] accepts unlabelled folders, and it checks for
    /// captions first: a folder with a `metadata.jsonl`, or with any image
    /// that has a `<stem>.txt` beside it, is [`SourceKind::Captioned`] (see
    /// [`crate::is_captioned_dir`]).
    #[default]
    Auto,
    /// Unlabelled images anywhere below a folder ([`crate::ImageFolder`]).
    Folder,
    /// `root/<class>/**/*.{png,jpg,jpeg,webp}`, one subfolder per class.
    ClassFolder,
    /// An IDX images file and its labels file (MNIST / Fashion-MNIST).
    Idx,
    /// A JSONL or CSV list of `file`, `label` pairs.
    Manifest,
    /// Images with text captions, for text-to-image training: a
    /// `<stem>.txt` beside every image, or a `metadata.jsonl` of
    /// `file_name`/`text` objects ([`crate::CaptionedImages`]). Captions are
    /// not class labels, so only [`crate::open_source`] opens it.
    Captioned,
}

impl SourceKind {
    /// The name used in configs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Auto => "auto",
            SourceKind::Folder => "folder",
            SourceKind::ClassFolder => "class_folder",
            SourceKind::Idx => "idx",
            SourceKind::Manifest => "manifest",
            SourceKind::Captioned => "captioned",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = DataError;

    /// Parses the config names; `-` is accepted for `_` (`class-folder`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            SourceKind::Auto,
            SourceKind::Folder,
            SourceKind::ClassFolder,
            SourceKind::Idx,
            SourceKind::Manifest,
            SourceKind::Captioned,
        ];
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        all.into_iter()
            .find(|k| k.as_str() == wanted)
            .ok_or_else(|| {
                DataError::Config(format!(
                    "unknown dataset kind \"{s}\" (expected auto, folder, class_folder, idx, manifest or captioned)"
                ))
            })
    }
}

/// One item read in full: what a latent cache stores per image.
#[derive(Clone, Debug)]
pub struct Item {
    /// The decoded image (see [`LabelledImages::load_rgb`]).
    pub image: RgbImage,
    /// Its class index.
    pub label: usize,
    /// [`LabelledImages::item_fingerprint`] of the item.
    pub fingerprint: u64,
}

#[derive(Clone, Debug)]
enum Items {
    /// Image files.
    Files {
        paths: Vec<PathBuf>,
    },
    Idx(IdxImages),
}

/// A dataset of images with one class label each.
///
/// Three layouts are understood, each with its own constructor and all
/// reachable through [`LabelledImages::open`]:
///
/// * a **class folder** ([`LabelledImages::class_folder`]),
/// * an **IDX pair** such as Fashion-MNIST ([`LabelledImages::idx_dir`],
///   [`LabelledImages::idx`]),
/// * a **manifest** of `file`/`label` pairs ([`LabelledImages::manifest`]).
///
/// Item order is fixed at construction and identical on every machine.
/// Files are only listed (and checked to exist, for manifests); they are
/// decoded on demand, and an undecodable one is skipped by the
/// [`crate::Loader`] exactly as for an [`crate::ImageFolder`]. IDX images are
/// held in memory (47 MB for Fashion-MNIST's training split). Cloning an IDX
/// dataset is cheap (the pixels are shared); wrap any dataset in an `Arc` to
/// share it with a loader.
#[derive(Clone, Debug)]
pub struct LabelledImages {
    kind: SourceKind,
    root: PathBuf,
    class_names: Vec<String>,
    labels: Vec<usize>,
    items: Items,
    fingerprint: String,
}

/// At most this many classes from integer labels (or a `classes.txt`), so a
/// stray huge number cannot allocate millions of names.
pub(crate) const MAX_CLASSES: usize = 1 << 20;

impl LabelledImages {
    /// Opens the labelled dataset at `path`, of the given kind or detected
    /// (see [`SourceKind::Auto`]).
    ///
    /// `split` selects the IDX split of a folder (`"train"`, `"t10k"` or its
    /// alias `"test"`; default `"train"`) and must be `None` for every other
    /// kind and for an IDX images file given directly.
    ///
    /// # Errors
    /// [`DataError::Dataset`] when the kind cannot be detected or `path` does
    /// not exist, [`DataError::Config`] for a `split` that does not apply or
    /// for [`SourceKind::Folder`] and [`SourceKind::Captioned`] (which have
    /// no class labels; see [`crate::open_source`]), and whatever the constructor of the kind
    /// reports.
    pub fn open(path: &Path, kind: SourceKind, split: Option<&str>) -> Result<Self, DataError> {
        let kind = match kind {
            SourceKind::Auto => detect(path)?,
            SourceKind::Folder => {
                return Err(DataError::Config(format!(
                    "dataset kind \"folder\" ({}) has no labels; use a class folder, IDX files or a manifest",
                    path.display()
                )))
            }
            SourceKind::Captioned => {
                return Err(DataError::Config(format!(
                    "dataset kind \"captioned\" ({}) has captions, not class labels; \
                     open it with open_source (CaptionedImages)",
                    path.display()
                )))
            }
            other => other,
        };
        let idx_dir = kind == SourceKind::Idx && path.is_dir();
        if let (Some(split), false) = (split, idx_dir) {
            return Err(DataError::Config(format!(
                "split \"{split}\" only applies to a folder of IDX files, not to the {kind} dataset {}",
                path.display()
            )));
        }
        match kind {
            SourceKind::ClassFolder => Self::class_folder(path),
            SourceKind::Manifest => Self::manifest(path),
            SourceKind::Idx if idx_dir => Self::idx_dir(path, split.unwrap_or("train")),
            SourceKind::Idx => Self::idx_images_file(path),
            SourceKind::Auto | SourceKind::Folder | SourceKind::Captioned => {
                unreachable!("resolved above")
            }
        }
    }

    /// A folder whose first-level subfolders are the classes:
    /// `root/<class>/**/*.{png,jpg,jpeg,webp}`.
    ///
    /// Class names are the subfolder names sorted (by their bytes), and a
    /// class's index is its position in that order. Images are found
    /// recursively below each class folder, with [`crate::ImageFolder`]'s
    /// rules (extensions case-insensitive, links followed), and items are
    /// ordered by class, then path — the same order an `ImageFolder` of
    /// `root` would list them in. Hidden subfolders (`.name`) are ignored.
    ///
    /// # Errors
    /// [`DataError::MissingRoot`] if `root` is not a folder;
    /// [`DataError::Dataset`] if image files lie directly in `root` (they
    /// would belong to no class), if there is no class subfolder, if a
    /// class subfolder holds no image or has a non-UTF-8 name;
    /// [`DataError::Io`] if a folder cannot be listed.
    pub fn class_folder(root: &Path) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::MissingRoot {
                root: root.to_path_buf(),
            });
        }
        let io_err = |source| DataError::Io {
            path: root.to_path_buf(),
            source,
        };
        let mut classes: Vec<(OsString, PathBuf)> = Vec::new();
        let mut stray = Vec::new();
        for entry in fs::read_dir(root).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue; // dangling link: nothing to read, as in ImageFolder
            };
            let name = entry.file_name();
            if meta.is_dir() {
                if !name.to_string_lossy().starts_with('.') {
                    classes.push((name, path));
                }
            } else if meta.is_file() && has_image_extension(&path) {
                stray.push(path);
            }
        }
        if let Some(first) = stray.iter().min() {
            return Err(DataError::Dataset {
                path: root.to_path_buf(),
                reason: format!(
                    "{} image file(s) directly in the class folder belong to no class (e.g. {}); \
                     move them into a subfolder named after their class",
                    stray.len(),
                    first.display()
                ),
            });
        }
        if classes.is_empty() {
            return Err(DataError::Dataset {
                path: root.to_path_buf(),
                reason: "no class subfolders (expected root/<class>/<image files>)".into(),
            });
        }
        classes.sort();
        let mut class_names = Vec::with_capacity(classes.len());
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        let mut stamps = Vec::new();
        for (label, (name, dir)) in classes.into_iter().enumerate() {
            let name = name.into_string().map_err(|_| DataError::Dataset {
                path: dir.clone(),
                reason: "class folder name is not valid UTF-8".into(),
            })?;
            let files = scan_files(&dir)?;
            if files.is_empty() {
                return Err(DataError::Dataset {
                    path: dir,
                    reason: format!(
                        "class \"{name}\" has no .png/.jpg/.jpeg/.webp files \
                         (remove the folder or add images)"
                    ),
                });
            }
            for (path, stamp) in files {
                paths.push(path);
                labels.push(label);
                stamps.push(stamp);
            }
            class_names.push(name);
        }
        Ok(Self::from_files(
            SourceKind::ClassFolder,
            root.to_path_buf(),
            root.to_path_buf(),
            paths,
            stamps,
            labels,
            class_names,
        ))
    }

    /// The IDX split `split` of folder `dir`, laid out as Fashion-MNIST:
    /// `<split>-images-idx3-ubyte[.gz]`, `<split>-labels-idx1-ubyte[.gz]` and
    /// optionally `classes.txt` (one class name per line, in index order).
    /// `"test"` means `"t10k"` unless `test-…` files exist.
    ///
    /// # Errors
    /// [`DataError::Dataset`] if the split's files are missing (the message
    /// lists the splits present) or present both plain and gzipped; and
    /// everything [`LabelledImages::idx`] reports.
    pub fn idx_dir(dir: &Path, split: &str) -> Result<Self, DataError> {
        if !dir.is_dir() {
            return Err(DataError::MissingRoot {
                root: dir.to_path_buf(),
            });
        }
        let split = if split == "test" && find_variant(dir, "test-images-idx3-ubyte")?.is_none() {
            "t10k"
        } else {
            split
        };
        let stem = format!("{split}-images-idx3-ubyte");
        let Some(images) = find_variant(dir, &stem)? else {
            let splits = idx_splits(dir);
            return Err(DataError::Dataset {
                path: dir.to_path_buf(),
                reason: format!(
                    "no {stem} or {stem}.gz for split \"{split}\" (splits here: {})",
                    if splits.is_empty() {
                        "none".to_string()
                    } else {
                        splits.join(", ")
                    }
                ),
            });
        };
        let labels_stem = format!("{split}-labels-idx1-ubyte");
        let labels = find_variant(dir, &labels_stem)?.ok_or_else(|| DataError::Dataset {
            path: dir.to_path_buf(),
            reason: format!("{} has no {labels_stem}[.gz] beside it", images.display()),
        })?;
        let classes = dir.join("classes.txt");
        Self::idx(&images, &labels, classes.is_file().then_some(&*classes))
    }

    /// An IDX images file (`*-images-idx3-ubyte[.gz]`) with the labels file
    /// and optional `classes.txt` beside it.
    fn idx_images_file(images: &Path) -> Result<Self, DataError> {
        let name = images
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        let Some(prefix) = stem.strip_suffix("-images-idx3-ubyte") else {
            return Err(DataError::Dataset {
                path: images.to_path_buf(),
                reason: "an IDX images file must be named <split>-images-idx3-ubyte[.gz] \
                         (or give the folder holding it)"
                    .into(),
            });
        };
        let dir = images.parent().unwrap_or(Path::new("."));
        let labels_stem = format!("{prefix}-labels-idx1-ubyte");
        let labels = find_variant(dir, &labels_stem)?.ok_or_else(|| DataError::Dataset {
            path: images.to_path_buf(),
            reason: format!("no {labels_stem}[.gz] beside it"),
        })?;
        let classes = dir.join("classes.txt");
        Self::idx(images, &labels, classes.is_file().then_some(&*classes))
    }

    /// An IDX images file, its labels file (each plain or gzip) and an
    /// optional class-name file.
    ///
    /// Without `classes`, classes are named `"0"`, `"1"`, … up to the
    /// largest label. With it, line `k` (trailing whitespace trimmed) names
    /// class `k`; it must name at least every class that occurs, without
    /// empty lines or duplicates.
    ///
    /// # Errors
    /// [`DataError::Idx`] for an unreadable, truncated or wrong-magic file
    /// and when the two files hold different numbers of items;
    /// [`DataError::Dataset`] for an empty images file or an unusable
    /// `classes` file.
    pub fn idx(images: &Path, labels: &Path, classes: Option<&Path>) -> Result<Self, DataError> {
        let images = IdxImages::read(images)?;
        let raw_labels = read_idx_labels(labels)?;
        if raw_labels.len() != images.len() {
            return Err(DataError::Idx {
                path: images.path().to_path_buf(),
                reason: format!(
                    "count mismatch: {} images but {} holds {} labels",
                    images.len(),
                    labels.display(),
                    raw_labels.len()
                ),
            });
        }
        if images.is_empty() {
            return Err(DataError::Dataset {
                path: images.path().to_path_buf(),
                reason: "holds no images".into(),
            });
        }
        let label_values: Vec<usize> = raw_labels.iter().map(|&l| usize::from(l)).collect();
        let max_label = label_values.iter().copied().max().unwrap_or(0);
        let class_names = match classes {
            Some(path) => read_class_names(path, max_label, labels)?,
            None => numeric_names(max_label),
        };
        let mut out = Self {
            kind: SourceKind::Idx,
            root: images.path().to_path_buf(),
            class_names,
            labels: label_values,
            items: Items::Idx(images),
            fingerprint: String::new(),
        };
        // In memory anyway: the identity can be content-based and cheap.
        out.fingerprint = out.content_fingerprint_with(|i| Ok(out.idx_item_fingerprint(i)))?;
        Ok(out)
    }

    /// A manifest: JSONL (`.jsonl`) with one `{"file": …, "label": …}`
    /// object per line, or CSV (`.csv`) with a header row naming a `file`
    /// and a `label` column (other keys and columns are ignored).
    ///
    /// Relative file paths are taken relative to the manifest's folder.
    /// Labels are either all class names — the class table is then the
    /// sorted unique names — or all non-negative integers, which name
    /// classes `"0"` … `"max"`. (In CSV a label is an integer when every
    /// label is all digits.) Blank lines are skipped; every listed file must
    /// exist.
    ///
    /// # Errors
    /// [`DataError::Manifest`] naming the line for bad syntax, a missing
    /// field, a bad or mixed-type label or a file that does not exist;
    /// [`DataError::Dataset`] for an unknown extension or a manifest with no
    /// entries; [`DataError::Io`] if it cannot be read.
    pub fn manifest(path: &Path) -> Result<Self, DataError> {
        let parsed = read_manifest(path)?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        Ok(Self::from_files(
            SourceKind::Manifest,
            path.to_path_buf(),
            base,
            parsed.paths,
            parsed.stamps,
            parsed.labels,
            parsed.class_names,
        ))
    }

    fn from_files(
        kind: SourceKind,
        root: PathBuf,
        base: PathBuf,
        paths: Vec<PathBuf>,
        stamps: Vec<FileStamp>,
        labels: Vec<usize>,
        class_names: Vec<String>,
    ) -> Self {
        let mut h = Fnv1a::new();
        h.write_str0("ldm-data listing v1")
            .write_str0(kind.as_str())
            .write_u64(class_names.len() as u64);
        for name in &class_names {
            h.write_str0(name);
        }
        for ((path, (size, mtime)), &label) in paths.iter().zip(&stamps).zip(&labels) {
            h.write_str0(&relative_name(&base, path))
                .write_u64(label as u64)
                .write_u64(*size)
                .write(&mtime.to_le_bytes());
        }
        Self {
            kind,
            root,
            class_names,
            labels,
            items: Items::Files { paths },
            fingerprint: h.hex(),
        }
    }

    /// The kind this dataset was read as (never `Auto`, `Folder` or
    /// `Captioned`).
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// What names the dataset in errors: the class folder, the manifest
    /// file, or the IDX images file.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of items (readable or not).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always `false` (every constructor rejects empty datasets); provided
    /// for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Class names; class index `k` is `class_names()[k]`.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Number of classes (`class_names().len()`), which may exceed the
    /// largest label when `classes.txt` names classes absent from a split.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Class index of item `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn label(&self, index: usize) -> usize {
        self.labels[index]
    }

    /// Class index of every item, in item order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The item's file, or for IDX items `<images file>#<index>` (e.g.
    /// `…/train-images-idx3-ubyte.gz#1234`); used in errors and as
    /// [`crate::Batch::paths`].
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn name(&self, index: usize) -> PathBuf {
        match &self.items {
            Items::Files { paths } => paths[index].clone(),
            Items::Idx(images) => {
                assert!(index < images.len(), "IDX item {index} of {}", images.len());
                let mut name = images.path().as_os_str().to_owned();
                name.push(format!("#{index}"));
                PathBuf::from(name)
            }
        }
    }

    /// The image file of item `index`; `None` for IDX items.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn path(&self, index: usize) -> Option<&Path> {
        match &self.items {
            Items::Files { paths } => Some(&paths[index]),
            Items::Idx(_) => None,
        }
    }

    /// Decodes item `index` to RGB8: files as [`crate::decode_rgb8`] does
    /// (gray replicated, transparency composited over white, EXIF
    /// orientation applied); IDX gray bytes replicated to three channels.
    ///
    /// # Errors
    /// [`DataError::Decode`] naming the file if it cannot be decoded (IDX
    /// items always decode).
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
        match &self.items {
            Items::Files { paths } => decode_rgb8(&paths[index]),
            Items::Idx(images) => Ok(images.to_rgb(index)),
        }
    }

    /// Image, label and fingerprint of item `index`, reading a file only
    /// once. The image is identical to [`LabelledImages::load_rgb`]'s and
    /// the fingerprint to [`LabelledImages::item_fingerprint`]'s.
    ///
    /// # Errors
    /// [`DataError::Decode`] naming the file if it cannot be read or decoded.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn load_item(&self, index: usize) -> Result<Item, DataError> {
        let label = self.labels[index];
        match &self.items {
            Items::Files { paths } => {
                let path = &paths[index];
                let bytes = fs::read(path).map_err(|e| DataError::Decode {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Ok(Item {
                    fingerprint: file_item_fingerprint(label as u64, &bytes),
                    image: decode_rgb8_bytes(&bytes, path)?,
                    label,
                })
            }
            Items::Idx(images) => Ok(Item {
                image: images.to_rgb(index),
                label,
                fingerprint: self.idx_item_fingerprint(index),
            }),
        }
    }

    /// A content hash of item `index` — its bytes and its label — that is
    /// the same on every run and machine, whatever the item is called.
    ///
    /// The hash is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime
    /// `0x100000001b3`) over, in order:
    /// * the ASCII tag `ldm-data item v1` and a 0 byte,
    /// * the label as a little-endian `u64`,
    /// * for a file: the tag `file` and a 0 byte, then the file's bytes
    ///   exactly as stored (encoded PNG/JPEG/WebP, not decoded pixels);
    /// * for an IDX item: the tag `idx-u8` and a 0 byte, the height and the
    ///   width as little-endian `u32`, then the `height × width` gray bytes.
    ///
    /// Changing an image's bytes or its label changes its fingerprint;
    /// renaming, moving or reordering items does not. (Items of an unlabelled
    /// [`crate::ImageFolder`] hash the label word `u64::MAX`, see
    /// [`crate::ImageSource::item_fingerprint`].)
    ///
    /// # Errors
    /// [`DataError::Io`] naming the file if it cannot be read.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
        match &self.items {
            Items::Files { paths } => {
                let path = &paths[index];
                let bytes = fs::read(path).map_err(|source| DataError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok(file_item_fingerprint(self.labels[index] as u64, &bytes))
            }
            Items::Idx(_) => Ok(self.idx_item_fingerprint(index)),
        }
    }

    fn idx_item_fingerprint(&self, index: usize) -> u64 {
        let Items::Idx(images) = &self.items else {
            unreachable!("only called for IDX datasets")
        };
        let mut h = item_hasher(self.labels[index] as u64);
        h.write_str0("idx-u8")
            .write(&images.rows().to_le_bytes())
            .write(&images.cols().to_le_bytes())
            .write(images.image(index));
        h.finish()
    }

    /// A cheap 16-hex-digit identity of the dataset, computed at
    /// construction; store it in checkpoints and latent caches.
    ///
    /// * IDX: content-based, equal to [`LabelledImages::content_fingerprint`]
    ///   (the pixels are in memory anyway), so it is the same on every machine.
    /// * Class folders and manifests: like [`crate::ImageFolder::fingerprint`],
    ///   a hash (64-bit FNV-1a) of the kind, the class names and, per item,
    ///   its path relative to the class folder (manifest folder), label, size
    ///   and modification time. Any change to the list, a label or a file is
    ///   seen without reading the files; copying the dataset elsewhere (new
    ///   modification times) changes it. Use
    ///   [`LabelledImages::content_fingerprint`] for an identity that
    ///   survives copies.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// A content-based 16-hex-digit identity: 64-bit FNV-1a over the ASCII
    /// tag `ldm-data dataset v1` and a 0 byte, the number of classes (`u64`
    /// little-endian), each class name followed by a 0 byte, the number of
    /// items, then every [`LabelledImages::item_fingerprint`] in item order
    /// (`u64` little-endian). The same images with the same labels and class
    /// names in the same order give the same value on any machine, whatever
    /// their paths.
    ///
    /// Reads every file of a class folder or manifest (IDX: returns the
    /// value computed at construction).
    ///
    /// # Errors
    /// [`DataError::Io`] naming a file that cannot be read.
    pub fn content_fingerprint(&self) -> Result<String, DataError> {
        match &self.items {
            Items::Idx(_) => Ok(self.fingerprint.clone()),
            Items::Files { .. } => self.content_fingerprint_with(|i| self.item_fingerprint(i)),
        }
    }

    fn content_fingerprint_with(
        &self,
        item: impl Fn(usize) -> Result<u64, DataError>,
    ) -> Result<String, DataError> {
        let mut h = Fnv1a::new();
        h.write_str0("ldm-data dataset v1")
            .write_u64(self.class_names.len() as u64);
        for name in &self.class_names {
            h.write_str0(name);
        }
        h.write_u64(self.len() as u64);
        for i in 0..self.len() {
            h.write_u64(item(i)?);
        }
        Ok(h.hex())
    }
}

/// The label word hashed for items of unlabelled sources.
pub(crate) const NO_LABEL: u64 = u64::MAX;

fn item_hasher(label: u64) -> Fnv1a {
    let mut h = Fnv1a::new();
    h.write_str0("ldm-data item v1").write_u64(label);
    h
}

/// The item fingerprint of a file's `bytes` with label word `label`
/// ([`NO_LABEL`] for unlabelled sources).
pub(crate) fn file_item_fingerprint(label: u64, bytes: &[u8]) -> u64 {
    let mut h = item_hasher(label);
    h.write_str0("file").write(bytes);
    h.finish()
}

/// The item fingerprint of the file at `path` in an unlabelled source
/// (image folder, captioned images). Captions are deliberately left out:
/// latent caches are keyed on this, and stay valid when only captions change.
pub(crate) fn unlabelled_file_fingerprint(path: &Path) -> Result<u64, DataError> {
    let bytes = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(file_item_fingerprint(NO_LABEL, &bytes))
}

/// Names `"0"` … `"max"`.
pub(crate) fn numeric_names(max_label: usize) -> Vec<String> {
    (0..=max_label).map(|k| k.to_string()).collect()
}

/// Reads a `classes.txt`: one name per line, index order.
fn read_class_names(
    path: &Path,
    max_label: usize,
    labels_file: &Path,
) -> Result<Vec<String>, DataError> {
    let bad = |reason: String| DataError::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let text = read_text(path)?;
    let mut names: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
    while names.last().is_some_and(String::is_empty) {
        names.pop();
    }
    if let Some(k) = names.iter().position(String::is_empty) {
        return Err(bad(format!(
            "line {} is empty (one class name per line)",
            k + 1
        )));
    }
    if names.len() > MAX_CLASSES {
        return Err(bad(format!(
            "names {} classes, more than {MAX_CLASSES}",
            names.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(bad(format!("class name \"{dup}\" appears twice")));
    }
    if names.len() <= max_label {
        return Err(bad(format!(
            "names {} classes but {} uses label {max_label}",
            names.len(),
            labels_file.display()
        )));
    }
    Ok(names)
}

/// `dir/stem` or `dir/stem.gz`, whichever exists; both is ambiguous.
fn find_variant(dir: &Path, stem: &str) -> Result<Option<PathBuf>, DataError> {
    let plain = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    match (plain.is_file(), gz.is_file()) {
        (true, true) => Err(DataError::Dataset {
            path: dir.to_path_buf(),
            reason: format!("both {stem} and {stem}.gz exist; remove one so the choice is clear"),
        }),
        (true, false) => Ok(Some(plain)),
        (false, true) => Ok(Some(gz)),
        (false, false) => Ok(None),
    }
}

/// The split prefixes of the IDX images files in `dir`, sorted.
fn idx_splits(dir: &Path) -> Vec<String> {
    let mut splits: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| idx_images_prefix(&e.file_name().to_string_lossy()).map(str::to_string))
        .collect();
    splits.sort();
    splits.dedup();
    splits
}

fn idx_images_prefix(name: &str) -> Option<&str> {
    name.strip_suffix(".gz")
        .unwrap_or(name)
        .strip_suffix("-images-idx3-ubyte")
}

/// Whether `dir` is a folder with an image file directly inside it.
pub(crate) fn has_top_level_images(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        has_image_extension(&path) && fs::metadata(&path).is_ok_and(|m| m.is_file())
    })
}

/// The kind [`SourceKind::Auto`] picks for a labelled dataset at `path`.
fn detect(path: &Path) -> Result<SourceKind, DataError> {
    let bad = |reason: &str| DataError::Dataset {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if path.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if idx_images_prefix(&name).is_some() {
            return Ok(SourceKind::Idx);
        }
        if matches!(ext.as_deref(), Some("jsonl" | "csv")) {
            return Ok(SourceKind::Manifest);
        }
        return Err(bad(
            "not a dataset: expected a folder, a .jsonl/.csv manifest or an \
             <split>-images-idx3-ubyte[.gz] file",
        ));
    }
    if !path.is_dir() {
        return Err(bad("does not exist"));
    }
    if !idx_splits(path).is_empty() {
        return Ok(SourceKind::Idx);
    }
    if has_top_level_images(path) {
        return Err(bad(
            "has image files directly inside, so it is not a class folder \
             (root/<class>/<images>); use kind \"folder\" for unlabelled images",
        ));
    }
    Ok(SourceKind::ClassFolder)
}
