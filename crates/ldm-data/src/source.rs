//! What a [`crate::Loader`] can read images from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use crate::captioned::is_captioned_dir;
use crate::decode::decode_rgb8;
use crate::labelled::{has_top_level_images, unlabelled_file_fingerprint};
use crate::{CaptionedImages, DataError, ImageFolder, LabelledImages, SourceKind};

/// A fixed, indexed list of images: what a [`crate::Loader`] streams from.
///
/// Implemented by [`ImageFolder`] (unlabelled files, what the autoencoder
/// has always used), [`LabelledImages`] (class folders, IDX files,
/// manifests) and [`CaptionedImages`] (images with text), and forwarded through `Box` and `Arc`, so a caller can share
/// one dataset between a loader and other code. Item `i` must mean the same
/// image for the lifetime of the source: orders, resume positions and sample
/// seeds all refer to these indices.
pub trait ImageSource: Send + Sync {
    /// Number of items, readable or not.
    fn len(&self) -> usize;

    /// Whether there are no items at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What names the whole dataset in errors: its folder, manifest or IDX
    /// images file.
    fn root(&self) -> &Path;

    /// What names item `index` in errors and in [`crate::Batch::paths`]: its
    /// file, or `<file>#<index>` for items inside one container file.
    fn name(&self, index: usize) -> PathBuf;

    /// Decodes item `index` to RGB8 (gray replicated, transparency over
    /// white; see [`crate::decode_rgb8`]).
    ///
    /// # Errors
    /// [`DataError::Decode`] naming the item if it cannot be decoded; the
    /// loader warns once and skips such items.
    fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError>;

    /// Class index of item `index`, or `None` for an unlabelled source.
    fn class_of(&self, index: usize) -> Option<usize> {
        let _ = index;
        None
    }

    /// The class names, indexed by class; empty for an unlabelled source.
    fn class_names(&self) -> &[String] {
        &[]
    }

    /// The captions of item `index` (trimmed, none empty; pick one per
    /// epoch with [`crate::caption_for_epoch`]), or none for a source
    /// without text. Every source answers, so a text-to-image stage can take
    /// any source and say clearly that it has no captions, instead of the
    /// caller having to know the concrete type.
    fn captions(&self, index: usize) -> &[String] {
        let _ = index;
        &[]
    }

    /// A content hash of item `index` (its bytes and label), the same on
    /// every run and machine: see [`LabelledImages::item_fingerprint`] for
    /// the exact definition. An [`ImageFolder`] and [`CaptionedImages`] hash
    /// each file's bytes with the label word `u64::MAX` ("no label"), and
    /// never the captions.
    ///
    /// # Errors
    /// [`DataError::Io`] naming the file if it cannot be read.
    fn item_fingerprint(&self, index: usize) -> Result<u64, DataError>;

    /// A 16-hex-digit identity of the dataset to store in checkpoints (see
    /// [`ImageFolder::fingerprint`], [`LabelledImages::fingerprint`] and
    /// [`CaptionedImages::fingerprint`]).
    fn fingerprint(&self) -> String;
}

impl ImageSource for ImageFolder {
    fn len(&self) -> usize {
        ImageFolder::len(self)
    }

    fn root(&self) -> &Path {
        ImageFolder::root(self)
    }

    fn name(&self, index: usize) -> PathBuf {
        self.paths()[index].clone()
    }

    fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
        decode_rgb8(&self.paths()[index])
    }

    fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
        unlabelled_file_fingerprint(&self.paths()[index])
    }

    fn fingerprint(&self) -> String {
        ImageFolder::fingerprint(self)
    }
}

impl ImageSource for LabelledImages {
    fn len(&self) -> usize {
        LabelledImages::len(self)
    }

    fn root(&self) -> &Path {
        LabelledImages::root(self)
    }

    fn name(&self, index: usize) -> PathBuf {
        LabelledImages::name(self, index)
    }

    fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
        LabelledImages::load_rgb(self, index)
    }

    fn class_of(&self, index: usize) -> Option<usize> {
        Some(self.label(index))
    }

    fn class_names(&self) -> &[String] {
        LabelledImages::class_names(self)
    }

    fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
        LabelledImages::item_fingerprint(self, index)
    }

    fn fingerprint(&self) -> String {
        LabelledImages::fingerprint(self)
    }
}

impl ImageSource for CaptionedImages {
    fn len(&self) -> usize {
        CaptionedImages::len(self)
    }

    fn root(&self) -> &Path {
        CaptionedImages::root(self)
    }

    fn name(&self, index: usize) -> PathBuf {
        self.path(index).to_path_buf()
    }

    fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
        CaptionedImages::load_rgb(self, index)
    }

    fn captions(&self, index: usize) -> &[String] {
        CaptionedImages::captions(self, index)
    }

    fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
        CaptionedImages::item_fingerprint(self, index)
    }

    fn fingerprint(&self) -> String {
        CaptionedImages::fingerprint(self)
    }
}

macro_rules! forward_image_source {
    ($($wrapper:ident),*) => {$(
        impl<T: ImageSource + ?Sized> ImageSource for $wrapper<T> {
            fn len(&self) -> usize {
                (**self).len()
            }
            fn is_empty(&self) -> bool {
                (**self).is_empty()
            }
            fn root(&self) -> &Path {
                (**self).root()
            }
            fn name(&self, index: usize) -> PathBuf {
                (**self).name(index)
            }
            fn load_rgb(&self, index: usize) -> Result<RgbImage, DataError> {
                (**self).load_rgb(index)
            }
            fn class_of(&self, index: usize) -> Option<usize> {
                (**self).class_of(index)
            }
            fn class_names(&self) -> &[String] {
                (**self).class_names()
            }
            fn captions(&self, index: usize) -> &[String] {
                (**self).captions(index)
            }
            fn item_fingerprint(&self, index: usize) -> Result<u64, DataError> {
                (**self).item_fingerprint(index)
            }
            fn fingerprint(&self) -> String {
                (**self).fingerprint()
            }
        }
    )*};
}
forward_image_source!(Box, Arc);

/// Opens any image source found at `path`: captioned, labelled or plain.
///
/// With [`SourceKind::Auto`], in this order:
/// 1. a folder with captions ([`crate::is_captioned_dir`]: a
///    `metadata.jsonl`, or any image with a `<stem>.txt` beside it) is
///    [`CaptionedImages`] — checked first because a captioned tree is often
///    shaped like a class folder (Tux Paint's `<category>/<name>.png`);
/// 2. a folder that has image files directly inside it is an unlabelled
///    [`ImageFolder`] (scanned recursively, exactly as before labelled
///    sources existed);
/// 3. everything else is handed to [`LabelledImages::open`] (IDX folder or
///    file, JSONL/CSV manifest, class folder).
///
/// [`SourceKind::Folder`] forces an [`ImageFolder`] (captions, if any, are
/// ignored), [`SourceKind::Captioned`] forces [`CaptionedImages`]. `split`
/// only applies to IDX datasets (see [`LabelledImages::open`]).
///
/// # Errors
/// [`DataError::Config`] for a `split` given with a folder or captioned
/// dataset, and whatever [`ImageFolder::scan`], [`CaptionedImages::scan`]
/// or [`LabelledImages::open`] report.
pub fn open_source(
    path: &Path,
    kind: SourceKind,
    split: Option<&str>,
) -> Result<Box<dyn ImageSource>, DataError> {
    let kind = match kind {
        SourceKind::Auto if is_captioned_dir(path) => SourceKind::Captioned,
        SourceKind::Auto if has_top_level_images(path) => SourceKind::Folder,
        other => other,
    };
    let what = match kind {
        SourceKind::Folder => "image folder",
        SourceKind::Captioned => "captioned image folder",
        _ => return Ok(Box::new(LabelledImages::open(path, kind, split)?)),
    };
    if let Some(split) = split {
        return Err(DataError::Config(format!(
            "split \"{split}\" only applies to IDX datasets, not to the {what} {}",
            path.display()
        )));
    }
    let source: Box<dyn ImageSource> = match kind {
        SourceKind::Captioned => Box::new(CaptionedImages::scan(path)?),
        _ => Box::new(ImageFolder::scan(path)?),
    };
    Ok(source)
}
