//! Helpers shared by the end-to-end tests: run the real binary on the
//! fetched photos with a tiny config.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The fetched photos (`bash scripts/setup.sh`).
pub fn photos(split: &str) -> PathBuf {
    let p = repo().join("datasets/photos").join(split);
    assert!(
        p.is_dir(),
        "{} is missing: run `bash scripts/setup.sh` first",
        p.display()
    );
    p
}

/// A fresh temporary directory for one test.
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ldm-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Overrides that make the tiny config fast enough for a test.
pub fn tiny_overrides() -> Vec<String> {
    vec![
        format!("data.root=\"{}\"", photos("train").display()),
        format!("data.val_root=\"{}\"", photos("val").display()),
        "data.size=32".into(),
        "model.resolution=32".into(),
        "train.batch_size=2".into(),
        "logging.every=1".into(),
        "logging.image_every=2".into(),
        "logging.val_every=0".into(),
    ]
}

/// Runs `ldm-train` with `args`.
pub fn ldm(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldm-train"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("ldm-train runs")
}

/// `ldm-train autoencoder --config tiny/kl-f4.toml` with overrides into `run_dir`.
pub fn train(run_dir: &Path, extra: &[&str], resume: bool) -> Output {
    train_config("tiny/kl-f4.toml", run_dir, extra, resume)
}

/// `ldm-train autoencoder --config CONFIG` with the tiny overrides and `extra`.
pub fn train_config(config: &str, run_dir: &Path, extra: &[&str], resume: bool) -> Output {
    let mut args = vec![
        "autoencoder".to_string(),
        "--config".into(),
        config.into(),
        "--run-dir".into(),
        run_dir.display().to_string(),
    ];
    for o in tiny_overrides()
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
    {
        args.push("--set".into());
        args.push(o);
    }
    if resume {
        args.push("--resume".into());
    }
    ldm(&args)
}

/// `ldm-train eval autoencoder` of `checkpoint` on the held-out photos, plus `extra` args.
pub fn eval(checkpoint: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "eval".into(),
        "autoencoder".into(),
        "--checkpoint".into(),
        checkpoint.display().to_string(),
        "--data".into(),
        photos("val").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    ldm(&args)
}

/// Asserts success, printing stderr otherwise.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "ldm-train failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts a clean failure: non-zero exit, an `error:` line containing every
/// one of `needles`, and no panic.
pub fn clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success:\n{err}"
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no `error:` line in:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "error line lacks `{n}`: {line}");
    }
}

/// The metric lines of a run with step > `after`, as JSON text.
pub fn metrics_after(run: &Path, after: u64) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["step"].as_u64().unwrap() > after
        })
        .map(str::to_string)
        .collect()
}
