//! Loading a TOML config, for either stage: `--config` as a path or a shipped
//! name, `--set key.path=value` overrides, typed parsing whose errors name the
//! file and the key path, and the sections every run has (`[checkpoint]`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::shared::shipped;

/// `[checkpoint]`: when to write and which to keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (and always at the end).
    #[serde(default = "ckpt_every_default")]
    pub every: u64,
    /// Keep the newest K checkpoints.
    #[serde(default = "keep_last_default")]
    pub keep_last: usize,
    /// Also keep every checkpoint whose step is a multiple of this (0 = none).
    #[serde(default)]
    pub keep_every: u64,
}

fn ckpt_every_default() -> u64 {
    1000
}
fn keep_last_default() -> usize {
    3
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: ckpt_every_default(),
            keep_last: keep_last_default(),
            keep_every: 0,
        }
    }
}

/// Where a config came from, for error messages.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Display name: a path or `shipped:NAME`.
    pub name: String,
    /// The TOML text.
    pub text: String,
}

/// Reads `--config`: an existing path, or else the name of a shipped config
/// (`f8.toml`, `f8`, `tiny/kl-f4.toml`) embedded in the binary.
pub fn read_source(arg: &str) -> Result<ConfigSource> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        return Ok(ConfigSource {
            name: path.display().to_string(),
            text,
        });
    }
    match shipped::find(arg) {
        Some((name, text)) => Ok(ConfigSource {
            name: format!("shipped:{name}"),
            text: text.to_string(),
        }),
        None => {
            bail!("config {arg}: no such file, and not a shipped config (see `ldm-train configs`)")
        }
    }
}

/// Applies `key.path=value` overrides to a TOML document. The value is parsed
/// as TOML (`1e-4`, `[1, 2, 4]`, `true`, `"text"`), falling back to a bare string.
pub fn apply_overrides(doc: &mut toml::Table, overrides: &[String]) -> Result<()> {
    for item in overrides {
        let (key, raw) = item
            .split_once('=')
            .with_context(|| format!("--set {item}: expected key.path=value"))?;
        let key = key.trim();
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").expect("parsed key"),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let parts: Vec<&str> = key.split('.').collect();
        let (last, parents) = parts.split_last().expect("split yields one part");
        let mut table = &mut *doc;
        for p in parents {
            let entry = table
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            table = entry
                .as_table_mut()
                .with_context(|| format!("--set {key}: `{p}` is not a section"))?;
        }
        table.insert(last.to_string(), value);
    }
    Ok(())
}

/// Parses a typed config from TOML text with overrides; errors name the source and key path.
pub fn parse<T: serde::de::DeserializeOwned>(
    src: &ConfigSource,
    overrides: &[String],
) -> Result<T> {
    let mut doc: toml::Table = toml::from_str(&src.text)
        .map_err(|e| anyhow::anyhow!("{}: invalid TOML: {}", src.name, one_line(&e.to_string())))?;
    apply_overrides(&mut doc, overrides)?;
    let de = toml::Value::Table(doc);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = one_line(&e.inner().to_string());
        anyhow::anyhow!("{}: key `{path}`: {inner}", src.name)
    })
}

/// Dotted keys whose values differ between two configs (for resume warnings).
pub fn changed_keys<T: Serialize>(old: &T, new: &T) -> Result<Vec<String>> {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(ta), toml::Value::Table(tb)) => {
                let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match (ta.get(k), tb.get(k)) {
                        (Some(x), Some(y)) => walk(&key, x, y, out),
                        _ => out.push(key),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let a = toml::Value::try_from(old)?;
    let b = toml::Value::try_from(new)?;
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A run config of either stage: parsed from TOML, then checked as a whole.
pub trait RunConfig: serde::de::DeserializeOwned + Serialize {
    /// Checks what serde cannot; errors name the key.
    fn validate(&self) -> Result<()>;
}

/// Loads `--config` (a path or a shipped name), applies the `--set`
/// overrides and validates; errors name the source and key.
pub fn load<T: RunConfig>(arg: &str, overrides: &[String]) -> Result<(T, ConfigSource)> {
    let src = read_source(arg)?;
    let cfg: T = parse(&src, overrides)?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", src.name))?;
    Ok((cfg, src))
}

/// The config a checkpoint was written with (errors name its `config.toml`).
pub fn of_checkpoint<T: serde::de::DeserializeOwned>(
    ck: &crate::shared::checkpoint::LoadedCheckpoint,
) -> Result<T> {
    let src = ConfigSource {
        name: format!("{}/config.toml", ck.dir.display()),
        text: ck.config_text.clone(),
    };
    parse(&src, &[])
}

/// Warns when a resume changes settings that make the run differ from an
/// uninterrupted one (keys starting with one of `harmless` do not).
pub fn warn_changed<T: Serialize>(old: &T, new: &T, harmless: &[&str]) -> Result<()> {
    let changed: Vec<String> = changed_keys(old, new)?
        .into_iter()
        .filter(|k| !harmless.iter().any(|h| k.starts_with(h)))
        .collect();
    if !changed.is_empty() {
        eprintln!(
            "warning: resuming with changed settings ({}); the run will not repeat an \
             uninterrupted one exactly",
            changed.join(", ")
        );
    }
    Ok(())
}
