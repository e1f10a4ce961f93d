//! Where the assets of `scripts/setup.sh` live and how a run loads the
//! pretrained networks among them: LPIPS-VGG16 (the perceptual loss) and the
//! FID Inception-v3 (rFID). Both resolve a configured path the same way and
//! fail the same way, so a user who skipped setup is told what to run.

use std::path::PathBuf;

use anyhow::{bail, Result};

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

/// `$CACHE/weights/<file>`, where setup.sh writes converted weights.
pub fn weights_path(file: &str) -> PathBuf {
    cache_dir().join("weights").join(file)
}

/// `configured` (empty = `default`) when it is a file; otherwise an error
/// naming the path and pointing at setup.sh, plus `otherwise` (how to run
/// without the asset) when there is such a way.
pub fn locate(configured: &str, default: PathBuf, what: &str, otherwise: &str) -> Result<PathBuf> {
    let path = if configured.is_empty() {
        default
    } else {
        PathBuf::from(configured)
    };
    if !path.is_file() {
        bail!(
            "{what} not found at {}: run `bash scripts/setup.sh` to fetch and convert them{otherwise}",
            path.display()
        );
    }
    Ok(path)
}

/// LPIPS-VGG16 weights (`loss.lpips_weights`).
pub mod lpips {
    use std::path::PathBuf;

    use anyhow::Result;
    use burn::tensor::backend::Backend;
    use ldm_models::Lpips;

    /// The file `scripts/setup.sh` writes.
    pub fn default_path() -> PathBuf {
        super::weights_path("lpips_vgg16.safetensors")
    }

    /// Loads LPIPS from `configured` (`loss.lpips_weights`; empty = the default
    /// path); a missing file is an error that says how to get it.
    pub fn load<B: Backend>(configured: &str, device: &B::Device) -> Result<Lpips<B>> {
        let path = super::locate(
            configured,
            default_path(),
            "LPIPS weights",
            ", or set loss.perceptual_weight = 0",
        )?;
        Ok(Lpips::load(&path, device)?)
    }
}

/// FID Inception-v3 weights (for rFID).
pub mod inception {
    use std::path::PathBuf;

    use anyhow::Result;
    use burn::tensor::backend::Backend;
    use ldm_models::InceptionFid;

    /// The file `scripts/setup.sh` writes.
    pub fn default_path() -> PathBuf {
        super::weights_path("inception_fid.safetensors")
    }

    /// Loads the FID Inception from `configured` (empty = the default path);
    /// a missing file is an error that says how to get it.
    pub fn load<B: Backend>(configured: &str, device: &B::Device) -> Result<InceptionFid<B>> {
        let path = super::locate(configured, default_path(), "FID Inception weights", "")?;
        Ok(InceptionFid::load(&path, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_inception_weights_point_to_setup() {
        let err = inception::load::<burn::backend::Flex>(
            "/no/such/inception.safetensors",
            &Default::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("/no/such/inception.safetensors") && err.contains("scripts/setup.sh"),
            "{err}"
        );
    }
}
