//! Finding the images of a dataset on disk.

use std::collections::HashSet;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::hash::Fnv1a;
use crate::DataError;

/// Extensions (lower-case) the decoders of this crate understand.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// The image files below a folder, found once at start-up.
///
/// The list is sorted by path so that file index `i` means the same file on
/// every machine and every run: shuffles, resume positions and sample seeds
/// all refer to these indices. Files are only *listed* here; whether they
/// decode is discovered lazily by the [`crate::Loader`], because opening every
/// file up front would make start-up on a million-image dataset take minutes.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    paths: Vec<PathBuf>,
    fingerprint: String,
}

impl ImageFolder {
    /// Recursively scans `root` for `.png`, `.jpg`, `.jpeg` and `.webp` files
    /// (extension compared case-insensitively), sorted by path.
    ///
    /// Symbolic links are followed (datasets are often assembled from links),
    /// with each real directory visited once so a link cycle cannot loop.
    /// A directory whose name ends in `.png` is descended into, never listed.
    ///
    /// # Errors
    /// [`DataError::MissingRoot`] if `root` is not an existing directory,
    /// [`DataError::NoImages`] if nothing with an image extension is below it,
    /// [`DataError::Io`] if a folder or file's metadata cannot be read.
    pub fn scan(root: &Path) -> Result<Self, DataError> {
        Self::scan_filtered(root, |_| true)
    }

    /// [`ImageFolder::scan`] keeping only the files for which `keep` is true,
    /// e.g. to leave out a preview image written beside the dataset.
    ///
    /// # Errors
    /// As [`ImageFolder::scan`]; [`DataError::NoImages`] if nothing is kept.
    pub fn scan_filtered(root: &Path, keep: impl Fn(&Path) -> bool) -> Result<Self, DataError> {
        if !root.is_dir() {
            return Err(DataError::MissingRoot {
                root: root.to_path_buf(),
            });
        }
        let mut found = scan_files(root)?;
        found.retain(|(path, _)| keep(path));
        if found.is_empty() {
            return Err(DataError::NoImages {
                root: root.to_path_buf(),
            });
        }
        let fingerprint = fingerprint_of(root, &found);
        Ok(Self {
            root: root.to_path_buf(),
            paths: found.into_iter().map(|(path, _)| path).collect(),
            fingerprint,
        })
    }

    /// The folder this dataset was scanned from (used in error messages).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of candidate files (readable or not).
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Always `false` for a folder built by [`ImageFolder::scan`], which
    /// rejects empty datasets; provided for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The candidate files, sorted; index `i` here is file index `i` everywhere else.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// A 16-hex-digit fingerprint of the file list with each file's size and
    /// modification time, as seen by [`ImageFolder::scan`].
    ///
    /// Store it in a checkpoint: on resume, a different fingerprint means the
    /// dataset changed and the saved [`crate::DataPosition`] no longer points
    /// at the same images. Paths are taken relative to the root, so the same
    /// dataset mounted at another place keeps its fingerprint. The hash is
    /// FNV-1a, spelled out here rather than `std`'s hasher, whose output may
    /// change between Rust releases.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// Size and modification time (nanoseconds since the Unix epoch, 0 if the
/// platform cannot tell) of one listed file.
pub(crate) type FileStamp = (u64, u128);

/// The image files below `dir` (recursively, links followed, each real
/// directory once) with their stamps, sorted by path; possibly empty.
pub(crate) fn scan_files(dir: &Path) -> Result<Vec<(PathBuf, FileStamp)>, DataError> {
    let mut found = Vec::new();
    // Never breaks: the visitor wants every file.
    let _ = walk_images(dir, &mut |path, meta| {
        found.push((path, file_stamp(meta)));
        ControlFlow::Continue(())
    })?;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Visits the image files below `dir` with [`scan_files`]'s rules, in
/// directory-listing order (not sorted), until `visit` breaks; returns
/// whether it did. Detection (is there *any* such file?) must not pay for a
/// full listing of a million-image folder, which is why this can stop early.
pub(crate) fn walk_images(
    dir: &Path,
    visit: &mut impl FnMut(PathBuf, &fs::Metadata) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, DataError> {
    let mut visited = HashSet::new();
    walk(dir, &mut visited, visit)
}

/// The stamp of one file (metadata following links).
pub(crate) fn file_stamp(meta: &fs::Metadata) -> FileStamp {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    (meta.len(), mtime)
}

fn walk(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    visit: &mut impl FnMut(PathBuf, &fs::Metadata) -> ControlFlow<()>,
) -> Result<ControlFlow<()>, DataError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let real = fs::canonicalize(dir).map_err(io_err(dir))?;
    if !visited.insert(real) {
        return Ok(ControlFlow::Continue(()));
    }
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        // `fs::metadata` follows links; a dangling link is skipped rather than
        // failing the scan, since the loader would skip it anyway.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let flow = if meta.is_dir() {
            walk(&path, visited, &mut *visit)?
        } else if meta.is_file() && has_image_extension(&path) {
            visit(path, &meta)
        } else {
            ControlFlow::Continue(())
        };
        if flow.is_break() {
            return Ok(flow);
        }
    }
    Ok(ControlFlow::Continue(()))
}

pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn fingerprint_of(root: &Path, files: &[(PathBuf, FileStamp)]) -> String {
    let mut h = Fnv1a::new();
    for (path, stamp) in files {
        hash_file_identity(&mut h, root, path, *stamp);
    }
    h.hex()
}

/// Feeds what identifies a listed file without reading it: its path
/// relative to `base` (0-terminated), size and modification time. Shared by
/// every listing fingerprint so they all notice the same kinds of change.
pub(crate) fn hash_file_identity(h: &mut Fnv1a, base: &Path, path: &Path, stamp: FileStamp) {
    let (size, mtime) = stamp;
    h.write_str0(&relative_name(base, path))
        .write_u64(size)
        .write(&mtime.to_le_bytes());
}

/// `path` relative to `base`, components joined with `/`, so fingerprints
/// are the same on Windows and wherever the dataset is mounted.
pub(crate) fn relative_name(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a/B.PNG")));
        assert!(has_image_extension(Path::new("x.JpEg")));
        assert!(has_image_extension(Path::new("x.webp")));
        assert!(!has_image_extension(Path::new("x.gif")));
        assert!(!has_image_extension(Path::new("png")));
    }

    #[test]
    fn fingerprint_sees_size_and_name_changes() {
        let root = Path::new("/data");
        let files = vec![(PathBuf::from("/data/a.png"), (10, 5))];
        let base = fingerprint_of(root, &files);
        assert_eq!(base.len(), 16);
        let resized = vec![(PathBuf::from("/data/a.png"), (11, 5))];
        let renamed = vec![(PathBuf::from("/data/b.png"), (10, 5))];
        let moved_root = vec![(PathBuf::from("/other/a.png"), (10, 5))];
        assert_ne!(base, fingerprint_of(root, &resized));
        assert_ne!(base, fingerprint_of(root, &renamed));
        assert_eq!(base, fingerprint_of(Path::new("/other"), &moved_root));
    }
}
