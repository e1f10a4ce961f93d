//! Where the converted LPIPS weights live and how a run loads them.

use std::path::PathBuf;

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use ldm_models::Lpips;

/// The cache folder of fetched assets: `$LDM_TRAIN_CACHE` or `~/.cache/ldm-train`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache").join("ldm-train")
        })
}

/// The file `scripts/setup.sh` writes.
pub fn default_path() -> PathBuf {
    cache_dir().join("weights").join("lpips_vgg16.safetensors")
}

/// Loads LPIPS from `configured` (`loss.lpips_weights`; empty = the default
/// path); a missing file is an error that says how to get it.
pub fn load<B: Backend>(configured: &str, device: &B::Device) -> Result<Lpips<B>> {
    let path = if configured.is_empty() {
        default_path()
    } else {
        PathBuf::from(configured)
    };
    if !path.is_file() {
        bail!(
            "LPIPS weights not found at {}: run `bash scripts/setup.sh` to fetch and convert them, \
             or set loss.perceptual_weight = 0",
            path.display()
        );
    }
    Ok(Lpips::load(&path, device)?)
}
