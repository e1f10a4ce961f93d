//! Checkpoint directories: written whole or not at all, found through `latest`.
//!
//! A checkpoint is a directory `step-00001000/` with every file of the run's
//! state and a `state.json` that lists each file's size and hash. It is
//! written under a temporary name, every file and the directory fsynced, then
//! renamed into place; `latest` is replaced by an atomic rename afterwards.
//! A crash at any moment therefore leaves `latest` naming a whole checkpoint.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Bumped when the layout or meaning of a checkpoint changes.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the pointer file inside `checkpoints/`.
pub const LATEST: &str = "latest";
const STATE: &str = "state.json";
const TMP_PREFIX: &str = ".tmp-";

/// Size and FNV-1a hash of one file, to detect truncation or corruption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// 64-bit FNV-1a of the content, hex.
    pub fnv1a: String,
}

impl FileDigest {
    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            bytes: data.len() as u64,
            fnv1a: format!("{h:016x}"),
        }
    }
}

/// `state.json`: everything besides tensors that a resume or a reader needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// What the checkpoint holds, e.g. `autoencoder-kl`.
    pub kind: String,
    /// Optimizer steps completed.
    pub step: u64,
    /// Data stream position after the last step.
    pub data_position: ldm_data::DataPosition,
    /// The run seed.
    pub seed: u64,
    /// Learning rate in use.
    pub lr: f64,
    /// Hash of the resolved config text.
    pub config_hash: String,
    /// Fingerprint of the training image list.
    pub dataset_fingerprint: String,
    /// Images that failed to decode so far.
    pub skipped_images: usize,
    /// Per-channel statistics of the latent over recent batches (mean, std):
    /// the KL sample, or the VQ pre-quantization latent.
    pub latent_stats: Option<LatentStats>,
    /// VQ: how often each code was chosen since the previous checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_usage: Option<Vec<u64>>,
    /// VQ with dead-code restarts: code counts since the last restart check
    /// (restored on resume so restarts happen exactly as without a break).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_window: Option<Vec<u64>>,
    /// Diffusion: the latent `scale_factor` in use (fixed or from `scale_by_std`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor: Option<f64>,
    /// Diffusion: EMA updates so far (the decay formula's n).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_updates: Option<u64>,
    /// Diffusion: fingerprint of the frozen autoencoder the latents come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoencoder_fingerprint: Option<String>,
    /// Class-conditional models: the class names, in label order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// Every other file of the checkpoint with its digest.
    pub files: BTreeMap<String, FileDigest>,
}

/// Latent mean/std per channel, so the diffusion stage can pick `scale_factor`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatentStats {
    /// Mean of each latent channel.
    pub mean: Vec<f64>,
    /// Standard deviation of each latent channel.
    pub std: Vec<f64>,
    /// Standard deviation over all channels (1/this is the `scale_by_std` factor).
    pub std_all: f64,
    /// Latent elements the statistics cover.
    pub count: u64,
}

/// A checkpoint read back and verified.
pub struct LoadedCheckpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// Its state.
    pub state: CheckpointState,
    /// The config text that built it.
    pub config_text: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl LoadedCheckpoint {
    /// Bytes of a checkpoint file, verified against its digest.
    pub fn file(&self, name: &str) -> Result<&[u8]> {
        self.files
            .get(name)
            .map(Vec::as_slice)
            .with_context(|| format!("checkpoint {}: has no file {name}", self.dir.display()))
    }
}

/// Writes checkpoints into one `checkpoints/` directory and prunes old ones.
pub struct CheckpointWriter {
    root: PathBuf,
    keep_last: usize,
    keep_every: u64,
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))
}

fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {} (disk full?)", path.display()))
}

/// Directory name of the checkpoint at `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

impl CheckpointWriter {
    /// Opens (creating) `root` and removes temporaries left by a crash.
    pub fn new(root: &Path, keep_last: usize, keep_every: u64) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) {
                let _ = fs::remove_dir_all(entry.path());
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            keep_last: keep_last.max(1),
            keep_every,
        })
    }

    /// Writes one checkpoint atomically and points `latest` at it.
    pub fn write(
        &self,
        mut state: CheckpointState,
        config_text: &str,
        files: Vec<(&str, Vec<u8>)>,
    ) -> Result<PathBuf> {
        let name = step_dir_name(state.step);
        let tmp = self
            .root
            .join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        state.files.clear();
        let mut all = files;
        all.push(("config.toml", config_text.as_bytes().to_vec()));
        for (file, data) in &all {
            write_synced(&tmp.join(file), data)?;
            state.files.insert(file.to_string(), FileDigest::of(data));
        }
        state.format_version = FORMAT_VERSION;
        write_synced(&tmp.join(STATE), &serde_json::to_vec_pretty(&state)?)?;
        sync_dir(&tmp)?;
        let dest = self.root.join(&name);
        // A step written again (after a rewind) replaces the old one by renames
        // only, so the name never points at a half-deleted directory.
        let old = dest.exists().then(|| {
            self.root
                .join(format!("{TMP_PREFIX}old-{name}-{}", std::process::id()))
        });
        if let Some(old) = &old {
            fs::rename(&dest, old)?;
        }
        fs::rename(&tmp, &dest)
            .with_context(|| format!("cannot move checkpoint into {}", dest.display()))?;
        sync_dir(&self.root)?;
        if let Some(old) = old {
            let _ = fs::remove_dir_all(old);
        }
        let latest_tmp = self
            .root
            .join(format!("{TMP_PREFIX}latest-{}", std::process::id()));
        write_synced(&latest_tmp, format!("{name}\n").as_bytes())?;
        fs::rename(&latest_tmp, self.root.join(LATEST))?;
        sync_dir(&self.root)?;
        self.prune(state.step)?;
        Ok(dest)
    }

    fn steps(&self) -> Result<Vec<u64>> {
        let mut steps: Vec<u64> = fs::read_dir(&self.root)?
            .filter_map(|e| e.ok())
            .filter_map(|e| step_of(&e.file_name().to_string_lossy()))
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// Removes a checkpoint directory: renamed out of the `step-*` namespace
    /// first, so a crash midway leaves only a temporary to clean up.
    fn remove(&self, step: u64) {
        let name = step_dir_name(step);
        let doomed = self
            .root
            .join(format!("{TMP_PREFIX}rm-{name}-{}", std::process::id()));
        if fs::rename(self.root.join(&name), &doomed).is_ok() {
            let _ = fs::remove_dir_all(doomed);
        }
    }

    /// Makes `step` the newest checkpoint of this directory after a resume
    /// from it: `latest` points at it (or is removed when it lives elsewhere)
    /// and later checkpoints, which belong to the abandoned trajectory, go.
    pub fn rewind_to(&self, step: u64) -> Result<()> {
        let later: Vec<u64> = self.steps()?.into_iter().filter(|s| *s > step).collect();
        if later.is_empty() {
            return Ok(());
        }
        let name = step_dir_name(step);
        let latest = self.root.join(LATEST);
        if self.root.join(&name).is_dir() {
            let tmp = self
                .root
                .join(format!("{TMP_PREFIX}latest-{}", std::process::id()));
            write_synced(&tmp, format!("{name}\n").as_bytes())?;
            fs::rename(&tmp, &latest)?;
        } else {
            let _ = fs::remove_file(&latest);
        }
        sync_dir(&self.root)?;
        for s in later {
            self.remove(s);
        }
        Ok(())
    }

    /// Keeps the newest `keep_last` plus every `keep_every`-th; never the current.
    fn prune(&self, current: u64) -> Result<()> {
        let steps = self.steps()?;
        let keep_from = steps.len().saturating_sub(self.keep_last);
        for (i, step) in steps.iter().enumerate() {
            let milestone = self.keep_every > 0 && step % self.keep_every == 0;
            if i < keep_from && !milestone && *step != current {
                self.remove(*step);
            }
        }
        Ok(())
    }
}

/// Finds the checkpoint directory meant by `path`: a checkpoint itself, a
/// `checkpoints/` directory (follows `latest`), or a run directory.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    for root in [path.to_path_buf(), path.join("checkpoints")] {
        let latest = root.join(LATEST);
        if latest.is_file() {
            let name = fs::read_to_string(&latest)?;
            return Ok(root.join(name.trim()));
        }
    }
    if !path.exists() {
        bail!("checkpoint {}: no such file or directory", path.display());
    }
    bail!(
        "checkpoint {}: not a checkpoint (no {STATE}) and no checkpoints/{LATEST} inside",
        path.display()
    )
}

/// The kind of model (`state.json`'s `kind`) the checkpoint at `path` holds,
/// read without loading its files.
pub fn kind_at(path: &Path) -> Result<String> {
    let dir = resolve(path)?;
    let state_path = dir.join(STATE);
    let text = fs::read_to_string(&state_path)
        .with_context(|| format!("checkpoint {}: cannot read {STATE}", dir.display()))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("checkpoint {}: {STATE} is damaged ({e})", dir.display()))?;
    Ok(state.kind)
}

/// Reads and verifies a checkpoint; a kind not in `expect_kinds` is an error.
pub fn load(path: &Path, expect_kinds: &[&str]) -> Result<LoadedCheckpoint> {
    let dir = resolve(path)?;
    let show = dir.display().to_string();
    let state_path = dir.join(STATE);
    let text = fs::read_to_string(&state_path)
        .with_context(|| format!("checkpoint {show}: cannot read {STATE}"))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("checkpoint {show}: {STATE} is damaged ({e})"))?;
    if state.format_version != FORMAT_VERSION {
        bail!(
            "checkpoint {show}: format version {} (this build reads {FORMAT_VERSION})",
            state.format_version
        );
    }
    if !expect_kinds.contains(&state.kind.as_str()) {
        bail!(
            "checkpoint {show}: holds a `{}` model, expected `{}`",
            state.kind,
            expect_kinds.join("` or `")
        );
    }
    let mut files = BTreeMap::new();
    for (name, digest) in &state.files {
        let data = fs::read(dir.join(name))
            .with_context(|| format!("checkpoint {show}: missing file {name}"))?;
        let got = FileDigest::of(&data);
        if got.bytes != digest.bytes {
            bail!(
                "checkpoint {show}: {name} is truncated or padded ({} bytes, expected {})",
                got.bytes,
                digest.bytes
            );
        }
        if got != *digest {
            bail!("checkpoint {show}: {name} is corrupt (hash mismatch)");
        }
        files.insert(name.clone(), data);
    }
    let config_text = String::from_utf8(files.get("config.toml").cloned().unwrap_or_default())
        .with_context(|| format!("checkpoint {show}: config.toml is not UTF-8"))?;
    Ok(LoadedCheckpoint {
        dir,
        state,
        config_text,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> CheckpointState {
        CheckpointState {
            format_version: 0,
            kind: "autoencoder-kl".into(),
            step,
            data_position: Default::default(),
            seed: 1,
            lr: 1e-4,
            config_hash: String::new(),
            dataset_fingerprint: String::new(),
            skipped_images: 0,
            latent_stats: None,
            code_usage: None,
            restart_window: None,
            ..Default::default()
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ldm-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_load_prune() {
        let root = tempdir("wlp");
        let w = CheckpointWriter::new(&root, 2, 4).unwrap();
        for step in 1..=6 {
            w.write(
                state(step),
                "x = 1",
                vec![("model.safetensors", vec![step as u8; 10])],
            )
            .unwrap();
        }
        let left: Vec<_> = (1..=6)
            .filter(|s| root.join(step_dir_name(*s)).exists())
            .collect();
        assert_eq!(left, vec![4, 5, 6]);
        let ck = load(&root, &["autoencoder-kl"]).unwrap();
        assert_eq!(ck.state.step, 6);
        assert_eq!(ck.file("model.safetensors").unwrap(), &[6u8; 10]);
        assert_eq!(ck.config_text, "x = 1");
        // Truncation and wrong kind are clear one-line errors.
        let f = ck.dir.join("model.safetensors");
        fs::write(&f, [6u8; 4]).unwrap();
        let msg = load(&root, &["autoencoder-kl"]).err().unwrap().to_string();
        assert!(
            msg.contains("truncated") && msg.contains("model.safetensors"),
            "{msg}"
        );
        let msg = load(&root.join(step_dir_name(5)), &["diffusion"])
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("expected `diffusion`"), "{msg}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn rewind_drops_later_checkpoints() {
        let root = tempdir("rewind");
        let w = CheckpointWriter::new(&root, 5, 0).unwrap();
        for step in 1..=4 {
            w.write(state(step), "", vec![("m", vec![step as u8])])
                .unwrap();
        }
        w.rewind_to(2).unwrap();
        assert_eq!(load(&root, &["autoencoder-kl"]).unwrap().state.step, 2);
        assert!(!root.join(step_dir_name(3)).exists() && !root.join(step_dir_name(4)).exists());
        // Writing step 3 again works and becomes latest.
        w.write(state(3), "", vec![("m", vec![9])]).unwrap();
        assert_eq!(
            load(&root, &["autoencoder-kl"]).unwrap().file("m").unwrap(),
            &[9]
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let root = tempdir("tmp");
        fs::create_dir_all(root.join(".tmp-step-00000009-1")).unwrap();
        CheckpointWriter::new(&root, 1, 0).unwrap();
        assert!(!root.join(".tmp-step-00000009-1").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
