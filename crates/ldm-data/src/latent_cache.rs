//! The on-disk latent cache: a dataset encoded once by the frozen
//! autoencoder, as shards of consecutive items plus a manifest that says
//! which autoencoder, which preprocessing and which exact images (by item
//! fingerprint) each shard holds.
//!
//! Backend-free on purpose: the trainer encodes (it has the network), this
//! module only decides what is still valid and reads/writes the files.
//! Shards are safetensors files (`moments` `[n, C, h, w]` f32: the KL
//! posterior's mean and log-variance stacked on channels as the reference's
//! `moments`, or the VQ pre-quantization latent; `moments_flip` for the
//! mirrored images; `labels` `[n]` u32), so a Python script can read them too.
//! Every write goes to a temporary name first, so a shard is whole or absent,
//! and a shard whose bytes do not match the manifest's digest is reported
//! and re-encoded rather than trusted.

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::hash::Fnv1a;
use crate::DataError;

/// Layout version of [`CacheManifest`]; a different one is rebuilt.
pub const CACHE_VERSION: u32 = 1;

/// Name of the manifest inside the cache directory.
pub const MANIFEST: &str = "manifest.json";

/// One shard as the manifest records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the cache directory.
    pub file: String,
    /// Index of its first item.
    pub start: usize,
    /// Fingerprint (16 hex digits) of each item it holds, in order.
    pub items: Vec<String>,
    /// Size of the file.
    pub bytes: u64,
    /// FNV-1a of the file's bytes.
    pub digest: String,
}

/// What a cache holds and was made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// Fingerprint of the autoencoder that encoded it.
    pub autoencoder: String,
    /// Fingerprint of the preprocessing (size, fit, flip, …).
    pub preprocessing: String,
    /// `[C, h, w]` of one item's `moments`.
    pub shape: [usize; 3],
    /// Whether shards also hold `moments_flip`.
    pub flip: bool,
    /// Items per shard (the last may hold fewer).
    pub shard_size: usize,
    /// The shards, by start index.
    pub shards: Vec<ShardEntry>,
}

/// The contents of one shard.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardData {
    /// `n · C · h · w` values.
    pub moments: Vec<f32>,
    /// Same for the mirrored images, when cached.
    pub moments_flip: Option<Vec<f32>>,
    /// Class of each item (0 for unlabelled data).
    pub labels: Vec<u32>,
}

/// 16 hex digits of a 64-bit fingerprint.
pub fn hex(v: u64) -> String {
    format!("{v:016x}")
}

fn digest(bytes: &[u8]) -> String {
    hex(Fnv1a::new().write(bytes).finish())
}

fn io(path: &Path, e: std::io::Error) -> DataError {
    DataError::Config(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes shard `index` of the cache in `dir` and returns its manifest entry.
pub fn write_shard(
    dir: &Path,
    index: usize,
    start: usize,
    items: Vec<String>,
    shape: [usize; 3],
    data: &ShardData,
) -> Result<ShardEntry, DataError> {
    let n = data.labels.len();
    let dims = vec![n, shape[0], shape[1], shape[2]];
    let m = f32_bytes(&data.moments);
    let mf = data.moments_flip.as_deref().map(f32_bytes);
    let l: Vec<u8> = data.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bad = |e: safetensors::SafeTensorError| DataError::Config(format!("latent shard: {e}"));
    let mut views = vec![
        (
            "moments".to_string(),
            TensorView::new(Dtype::F32, dims.clone(), &m).map_err(bad)?,
        ),
        (
            "labels".to_string(),
            TensorView::new(Dtype::U32, vec![n], &l).map_err(bad)?,
        ),
    ];
    if let Some(mf) = &mf {
        views.push((
            "moments_flip".to_string(),
            TensorView::new(Dtype::F32, dims, mf).map_err(bad)?,
        ));
    }
    let bytes = safetensors::serialize(views, &None).map_err(bad)?;
    let file = format!("shard-{index:05}.safetensors");
    write_atomic(&dir.join(&file), &bytes)?;
    Ok(ShardEntry {
        file,
        start,
        items,
        bytes: bytes.len() as u64,
        digest: digest(&bytes),
    })
}

/// Why a shard on disk cannot be used, naming its file.
#[derive(Debug)]
pub struct BadShard(pub String);

/// Reads a shard, checking its size and digest against `entry` and its
/// tensors against `shape`.
pub fn read_shard(
    dir: &Path,
    entry: &ShardEntry,
    shape: [usize; 3],
    flip: bool,
) -> Result<ShardData, BadShard> {
    let path = dir.join(&entry.file);
    let show = path.display();
    let bytes = fs::read(&path).map_err(|e| BadShard(format!("{show}: {e}")))?;
    if bytes.len() as u64 != entry.bytes {
        return Err(BadShard(format!(
            "{show}: truncated or padded ({} bytes, the manifest says {})",
            bytes.len(),
            entry.bytes
        )));
    }
    if digest(&bytes) != entry.digest {
        return Err(BadShard(format!(
            "{show}: contents do not match the manifest's digest"
        )));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| BadShard(format!("{show}: {e}")))?;
    let n = entry.items.len();
    let want = vec![n, shape[0], shape[1], shape[2]];
    let floats = |name: &str| -> Result<Vec<f32>, BadShard> {
        let t = st
            .tensor(name)
            .map_err(|_| BadShard(format!("{show}: no tensor `{name}`")))?;
        if t.dtype() != Dtype::F32 || t.shape() != want.as_slice() {
            return Err(BadShard(format!("{show}: `{name}` is not f32 {want:?}")));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let moments = floats("moments")?;
    let moments_flip = if flip {
        Some(floats("moments_flip")?)
    } else {
        None
    };
    let l = st
        .tensor("labels")
        .map_err(|_| BadShard(format!("{show}: no tensor `labels`")))?;
    if l.dtype() != Dtype::U32 || l.shape() != [n] {
        return Err(BadShard(format!("{show}: `labels` is not u32 [{n}]")));
    }
    let labels = l
        .data()
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(ShardData {
        moments,
        moments_flip,
        labels,
    })
}

/// The manifest in `dir`, if there is a readable one of this version.
/// A damaged manifest counts as none (everything is re-encoded) and the
/// returned note says so.
pub fn read_manifest(dir: &Path) -> (Option<CacheManifest>, Option<String>) {
    let path = dir.join(MANIFEST);
    let Ok(text) = fs::read_to_string(&path) else {
        return (None, None);
    };
    match serde_json::from_str::<CacheManifest>(&text) {
        Ok(m) if m.version == CACHE_VERSION => (Some(m), None),
        Ok(m) => (
            None,
            Some(format!(
                "{}: cache version {} (this build writes {CACHE_VERSION})",
                path.display(),
                m.version
            )),
        ),
        Err(e) => (None, Some(format!("{}: damaged ({e})", path.display()))),
    }
}

/// Writes the manifest of `dir` atomically.
pub fn write_manifest(dir: &Path, m: &CacheManifest) -> Result<(), DataError> {
    let text = serde_json::to_vec_pretty(m).map_err(|e| DataError::Config(e.to_string()))?;
    write_atomic(&dir.join(MANIFEST), &text)
}

/// Shard files in `dir` that `m` does not name (left by an older layout).
pub fn stray_shards(dir: &Path, m: &CacheManifest) -> Vec<PathBuf> {
    let known: std::collections::HashSet<&str> = m.shards.iter().map(|s| s.file.as_str()).collect();
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|f| f.starts_with("shard-") && !known.contains(f.as_str()))
        .map(|f| dir.join(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ldm-cache-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn shard_round_trip_and_damage_is_named() {
        let dir = tmp("rt");
        let data = ShardData {
            moments: (0..2 * 2 * 3).map(|i| i as f32 * 0.5).collect(),
            moments_flip: Some(vec![1.0; 12]),
            labels: vec![3, 7],
        };
        let e = write_shard(&dir, 0, 0, vec![hex(1), hex(2)], [2, 3, 1], &data).unwrap();
        assert_eq!(read_shard(&dir, &e, [2, 3, 1], true).unwrap(), data);
        let path = dir.join(&e.file);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let msg = read_shard(&dir, &e, [2, 3, 1], true).unwrap_err().0;
        assert!(
            msg.contains("shard-00000") && msg.contains("truncated"),
            "{msg}"
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(read_shard(&dir, &e, [2, 3, 1], true)
            .unwrap_err()
            .0
            .contains("digest"));
    }

    #[test]
    fn manifest_round_trip_and_damaged_manifest_is_a_note() {
        let dir = tmp("man");
        assert_eq!(read_manifest(&dir), (None, None));
        let m = CacheManifest {
            version: CACHE_VERSION,
            autoencoder: "a".into(),
            preprocessing: "p".into(),
            shape: [8, 8, 8],
            flip: false,
            shard_size: 4,
            shards: vec![],
        };
        write_manifest(&dir, &m).unwrap();
        assert_eq!(read_manifest(&dir).0, Some(m));
        fs::write(dir.join(MANIFEST), "{").unwrap();
        let (none, note) = read_manifest(&dir);
        assert!(none.is_none() && note.unwrap().contains("damaged"));
    }
}
