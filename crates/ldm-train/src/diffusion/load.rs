//! A diffusion checkpoint rebuilt from itself alone: its config, its weights
//! (EMA by default), and the copies of the frozen autoencoder (and, for text
//! models, the tokenizer and any frozen text encoder) it carries, so
//! sampling works after the autoencoder's own run directory is gone.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use ldm_models::Autoencoder;

use crate::autoencoder::config::AutoencoderRunConfig;
use crate::diffusion::condition::{TextFiles, TextSide};
use crate::diffusion::config::{ConditionKind, DiffusionRunConfig};
use crate::diffusion::model::LatentDiffusion;
use crate::diffusion::trainer::{KIND_DIFFUSION, NO_PREFIX};
use crate::shared::checkpoint::{self, LoadedCheckpoint};
use crate::shared::config::{parse, ConfigSource};
use crate::shared::weights;

/// The frozen autoencoder's weights inside a diffusion checkpoint.
pub const FIRST_STAGE_WEIGHTS: &str = "first_stage.safetensors";
/// The frozen autoencoder's config inside a diffusion checkpoint.
pub const FIRST_STAGE_CONFIG: &str = "first_stage.toml";

/// What sampling and evaluation need from a diffusion checkpoint.
pub struct LoadedDiffusion<B: Backend> {
    /// The run config that trained it.
    pub cfg: DiffusionRunConfig,
    /// UNet + conditioner (EMA weights unless asked otherwise).
    pub model: LatentDiffusion<B>,
    /// The frozen first stage.
    pub ae: Autoencoder<B>,
    /// Its config.
    pub ae_cfg: AutoencoderRunConfig,
    /// Latents are divided by this before decoding.
    pub scale_factor: f64,
    /// Class names in label order (empty: not class-conditional).
    pub class_names: Vec<String>,
    /// Tokenizer and frozen encoder of a text model, from the checkpoint's copies.
    pub text: Option<TextSide<B>>,
    /// `[C, h, w]` of the latents the model was trained on.
    pub latent_shape: [usize; 3],
    /// The checkpoint itself.
    pub ck: LoadedCheckpoint,
}

fn source(ck: &LoadedCheckpoint, file: &str, text: String) -> ConfigSource {
    ConfigSource {
        name: format!("{}/{file}", ck.dir.display()),
        text,
    }
}

/// Loads the diffusion checkpoint at `path` (a checkpoint, `checkpoints/` or
/// a run directory); `ema` picks the averaged weights when the run kept them.
pub fn load_diffusion<B: Backend>(
    path: &Path,
    ema: bool,
    device: &B::Device,
) -> Result<LoadedDiffusion<B>> {
    let ck = checkpoint::load(path, &[KIND_DIFFUSION])?;
    let cfg: DiffusionRunConfig = parse(&source(&ck, "config.toml", ck.config_text.clone()), &[])?;
    let ae_text = String::from_utf8(ck.file(FIRST_STAGE_CONFIG)?.to_vec())
        .with_context(|| format!("{}/{FIRST_STAGE_CONFIG}: not UTF-8", ck.dir.display()))?;
    let ae_cfg: AutoencoderRunConfig = parse(&source(&ck, FIRST_STAGE_CONFIG, ae_text), &[])?;
    let ae = weights::load_checkpoint_file(
        Autoencoder::new(&ae_cfg.model, device),
        &ck,
        FIRST_STAGE_WEIGHTS,
        "",
    )?;
    let class_names = ck.state.class_names.clone().unwrap_or_default();
    let name = if ema && cfg.ema.enabled {
        "ema.safetensors"
    } else {
        "model.safetensors"
    };
    let text = match cfg.conditioning.kind {
        ConditionKind::Text => {
            let files = TextFiles::in_checkpoint(&ck.dir, &cfg.conditioning);
            Some(TextSide::open(&cfg.conditioning, &files, device)?)
        }
        _ => None,
    };
    let vocab = text.as_ref().map_or(0, |t| t.tokenizer.vocab_size());
    let model = LatentDiffusion::new(&cfg, class_names.len(), vocab, device);
    let model = weights::load_checkpoint_file(model, &ck, name, NO_PREFIX)?;
    let f = ae_cfg.model.downsampling();
    let side = cfg.data.size as usize / f;
    Ok(LoadedDiffusion {
        scale_factor: ck.state.scale_factor.unwrap_or(cfg.model.scale_factor),
        latent_shape: [cfg.model.unet.out_channels, side, side],
        cfg,
        model,
        ae,
        ae_cfg,
        class_names,
        text,
        ck,
    })
}
