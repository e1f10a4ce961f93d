//! The run directory: resolved config, checkpoints, TensorBoard, samples and
//! a JSON-lines log of every scalar for scripts and resume checks.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Paths inside `runs/<name>/`.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// The run directory itself.
    pub root: PathBuf,
}

/// Fails unless `dir` is absent or an empty directory: `what` (e.g. "import
/// a pipeline") would otherwise mix its files with others'.
pub fn ensure_new_or_empty(dir: &Path, what: &str) -> Result<()> {
    if dir.exists()
        && fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{}: exists and is not empty; {what} into a new directory",
            dir.display()
        );
    }
    Ok(())
}

impl RunDir {
    /// Creates the directory tree.
    pub fn create(root: &Path) -> Result<Self> {
        for sub in ["checkpoints", "tensorboard", "samples"] {
            fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create {}", root.join(sub).display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// Refuses to start a fresh run over one that has checkpoints: that
    /// would mix two trajectories in one directory.
    pub fn ensure_fresh(&self) -> Result<()> {
        if self
            .checkpoints()
            .join(crate::shared::checkpoint::LATEST)
            .exists()
        {
            anyhow::bail!(
                "{} already holds checkpoints: continue it with --resume, or pick another --run-dir",
                self.root.display()
            );
        }
        Ok(())
    }
    /// `tensorboard/`.
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tensorboard")
    }
    /// `samples/`.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    /// `metrics.jsonl`: one JSON object per logged step.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// Writes the resolved config.
    pub fn write_config(&self, text: &str) -> Result<()> {
        let p = self.root.join("config.toml");
        fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    }

    /// Drops metric lines after `step` (left by a run that died after its last checkpoint).
    pub fn truncate_metrics_after(&self, step: u64) -> Result<()> {
        let p = self.metrics();
        let Ok(text) = fs::read_to_string(&p) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        // Through a temporary, so a crash here cannot lose the lines we keep.
        let tmp = self.root.join(".metrics.jsonl.tmp");
        fs::write(&tmp, kept)
            .and_then(|_| fs::rename(&tmp, &p))
            .with_context(|| format!("cannot rewrite {}", p.display()))
    }

    /// Appends one metrics line.
    pub fn append_metrics(&self, step: u64, values: &[(String, f64)]) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        for (k, v) in values {
            let num = serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            obj.insert(k.clone(), num);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.metrics())
            .with_context(|| format!("cannot open {}", self.metrics().display()))?;
        writeln!(f, "{}", serde_json::Value::Object(obj))?;
        Ok(())
    }
}

/// What the CLI passes to a training run of either stage.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// `--config` (path or shipped name).
    pub config: String,
    /// `--set key=value` overrides.
    pub overrides: Vec<String>,
    /// `--run-dir` (default `runs/<config name>`).
    pub run_dir: Option<PathBuf>,
    /// `--resume [PATH]`: `Some(None)` = latest of the run directory.
    pub resume: Option<Option<PathBuf>>,
}

impl RunArgs {
    /// The run directory: `--run-dir`, else [`default_run_dir`].
    pub fn root(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| default_run_dir(&self.config))
    }
}

/// The default run directory of a config: `runs/<config file stem>`.
pub fn default_run_dir(config: &str) -> PathBuf {
    let stem = Path::new(config)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(stem)
}
