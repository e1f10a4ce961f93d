//! `ldm-train export`: one of our autoencoder checkpoints → a diffusers folder
//! (`AutoencoderKL` / `VQModel`) or a CompVis/SD-style single file
//! (`first_stage_model.*`), renamed through [`crate::interop::key_map`].
//!
//! diffusers' `scaling_factor` is written as 1/`std_all` of the checkpoint's
//! latent statistics when it has them (the `scale_by_std` rule of LDM),
//! otherwise as the SD default 0.18215 for KL and 1.0 for VQ (an unscaled
//! latent: no default is better without statistics).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use ldm_models::{AttnType, AutoencoderConfig, Regularizer};
use serde_json::{json, Value};

use crate::autoencoder::eval::load_autoencoder;
use crate::diffusion::trainer::KIND_DIFFUSION;
use crate::interop::key_map::{self, Direction, LDM_PREFIXES};
use crate::shared::checkpoint::{self, LatentStats};
use crate::shared::weights::{self, NamedTensor};

/// Target format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A diffusers folder: config.json + diffusion_pytorch_model.safetensors.
    Diffusers,
    /// One .safetensors file with `first_stage_model.` keys (CompVis / SD).
    Ldm,
}

/// What the CLI passes to an export.
#[derive(Clone, Debug)]
pub struct ExportArgs {
    /// Checkpoint directory, checkpoints/ directory or run directory.
    pub checkpoint: PathBuf,
    /// Target format.
    pub to: Target,
    /// Folder (diffusers) or file (ldm) to write.
    pub out: PathBuf,
}

/// diffusers' SD default, used for KL models without latent statistics.
pub const KL_DEFAULT_SCALING: f64 = 0.18215;

/// The `scaling_factor` written for a model (see the module docs).
pub fn scaling_factor(model: &AutoencoderConfig, stats: Option<&LatentStats>) -> f64 {
    match (stats, model.regularizer) {
        (Some(s), _) if s.std_all > 0.0 && s.std_all.is_finite() => 1.0 / s.std_all,
        (_, Regularizer::Kl) => KL_DEFAULT_SCALING,
        (_, Regularizer::Vq) => 1.0,
    }
}

/// Levels with attention blocks (the same in encoder and decoder).
fn attention_levels(m: &AutoencoderConfig) -> Vec<bool> {
    (0..m.ch_mult.len())
        .map(|i| {
            m.attn_type == AttnType::Vanilla && m.attn_resolutions.contains(&(m.resolution >> i))
        })
        .collect()
}

/// diffusers' block type of each level: `with` where `attn` says the level
/// has attention, `without` elsewhere; `up` lists the levels from the lowest
/// resolution, as diffusers' `up_blocks.k` is our level L−1−k.
pub(crate) fn block_types<'a>(
    attn: &[bool],
    with: &'a str,
    without: &'a str,
    up: bool,
) -> Vec<&'a str> {
    let name = |a: &bool| if *a { with } else { without };
    if up {
        attn.iter().rev().map(name).collect()
    } else {
        attn.iter().map(name).collect()
    }
}

/// The diffusers `config.json` of a model; refuses what diffusers cannot express.
pub fn diffusers_config(m: &AutoencoderConfig, scaling: f64) -> Result<Value> {
    if m.ch_mult.first() != Some(&1) {
        bail!(
            "model.ch_mult = {:?}: diffusers needs ch_mult[0] = 1 (its conv_in outputs \
             block_out_channels[0], and ldm's first level goes from ch to ch·ch_mult[0])",
            m.ch_mult
        );
    }
    let attn = attention_levels(m);
    let down = block_types(&attn, "AttnDownEncoderBlock2D", "DownEncoderBlock2D", false);
    let up = block_types(&attn, "AttnUpDecoderBlock2D", "UpDecoderBlock2D", true);
    let boc: Vec<usize> = m.ch_mult.iter().map(|k| k * m.ch).collect();
    let mut cfg = json!({
        "_diffusers_version": "0.42.1",
        "act_fn": "silu",
        "block_out_channels": boc,
        "down_block_types": down,
        "in_channels": m.in_channels,
        "latent_channels": m.z_channels,
        "layers_per_block": m.num_res_blocks,
        "mid_block_add_attention": m.attn_type == AttnType::Vanilla,
        "norm_num_groups": m.norm_groups,
        "out_channels": m.out_ch,
        "sample_size": m.resolution,
        "scaling_factor": scaling,
        "up_block_types": up,
    });
    let extra = match m.regularizer {
        Regularizer::Kl => {
            if m.embed_dim != m.z_channels {
                bail!(
                    "model.embed_dim = {} differs from z_channels = {}: diffusers' AutoencoderKL \
                     has one latent_channels for both",
                    m.embed_dim,
                    m.z_channels
                );
            }
            json!({
                "_class_name": "AutoencoderKL",
                "force_upcast": true,
                "latents_mean": null,
                "latents_std": null,
                "shift_factor": null,
                "use_quant_conv": true,
                "use_post_quant_conv": true,
            })
        }
        Regularizer::Vq => {
            if !m.legacy || m.beta != 0.25 {
                eprintln!(
                    "warning: diffusers' VQModel fixes beta = 0.25, legacy = true; this model's \
                     beta = {}, legacy = {} only matter for training and are not exported",
                    m.beta, m.legacy
                );
            }
            json!({
                "_class_name": "VQModel",
                "force_upcast": false,
                "lookup_from_codebook": false,
                "norm_type": "group",
                "num_vq_embeddings": m.n_embed,
                "vq_embed_dim": m.embed_dim,
            })
        }
    };
    if let (Value::Object(c), Value::Object(e)) = (&mut cfg, extra) {
        c.extend(e);
    }
    Ok(cfg)
}

/// Our tensors renamed for `target` (the EMA codebook statistics dropped).
pub fn renamed(
    tensors: Vec<NamedTensor>,
    m: &AutoencoderConfig,
    target: Target,
) -> Result<Vec<NamedTensor>> {
    let levels = m.ch_mult.len();
    let mut out = Vec::with_capacity(tensors.len());
    for mut t in tensors.into_iter().filter(|t| !key_map::ours_only(&t.key)) {
        match target {
            Target::Ldm => t.key = format!("{}{}", LDM_PREFIXES[0], t.key),
            Target::Diffusers => {
                let r = key_map::rename(&t.key, Direction::ToDiffusers, levels);
                if r.linear_weight {
                    match t.shape[..] {
                        [o, i, 1, 1] => t.shape = vec![o, i],
                        ref s => bail!("`{}` has shape {s:?}, expected a 1×1 conv", t.key),
                    }
                }
                t.key = r.key;
            }
        }
        out.push(t);
    }
    Ok(out)
}

/// Writes `data` to `path` through a temporary file and a rename, so a crash
/// never leaves a half-written file under the final name.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{name}-{}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// `ldm-train export`: writes the checkpoint's model in `args.to` format —
/// an autoencoder, or a whole diffusion pipeline
/// ([`crate::interop::pipeline_export`]).
pub fn run(args: &ExportArgs) -> Result<()> {
    if checkpoint::kind_at(&args.checkpoint)? == KIND_DIFFUSION {
        return crate::interop::pipeline_export::run(args);
    }
    let (ae, cfg, ck) = load_autoencoder::<Flex>(&args.checkpoint, &Default::default())?;
    let m = &cfg.model;
    let tensors = renamed(weights::collect(&ae, "")?, m, args.to)?;
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("exported_from".to_string(), ck.dir.display().to_string()),
    ]);
    match args.to {
        Target::Diffusers => {
            let scaling = scaling_factor(m, ck.state.latent_stats.as_ref());
            let config = diffusers_config(m, scaling)?;
            fs::create_dir_all(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?;
            write_atomic(
                &args.out.join("diffusion_pytorch_model.safetensors"),
                &weights::to_safetensors(&tensors, meta)?,
            )?;
            write_atomic(
                &args.out.join("config.json"),
                serde_json::to_string_pretty(&config)?.as_bytes(),
            )?;
            eprintln!(
                "exported {} tensors to {} (diffusers {}, scaling_factor {scaling:.6})",
                tensors.len(),
                args.out.display(),
                config["_class_name"].as_str().unwrap_or("")
            );
        }
        Target::Ldm => {
            if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            write_atomic(&args.out, &weights::to_safetensors(&tensors, meta)?)?;
            eprintln!(
                "exported {} tensors to {} (keys {}*)",
                tensors.len(),
                args.out.display(),
                LDM_PREFIXES[0]
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kl() -> AutoencoderConfig {
        AutoencoderConfig {
            ch_mult: vec![1, 2, 2],
            attn_resolutions: vec![8],
            ..AutoencoderConfig::small(32)
        }
    }

    #[test]
    fn config_lists_attention_levels_in_both_orders() {
        let c = diffusers_config(
            &AutoencoderConfig {
                embed_dim: 4,
                ..kl()
            },
            0.5,
        )
        .unwrap();
        assert_eq!(c["_class_name"], "AutoencoderKL");
        assert_eq!(c["block_out_channels"], json!([32, 64, 64]));
        // Level 2 (res 8) has attention: last down block, first up block.
        assert_eq!(c["down_block_types"][2], "AttnDownEncoderBlock2D");
        assert_eq!(c["up_block_types"][0], "AttnUpDecoderBlock2D");
        assert_eq!(c["up_block_types"][2], "UpDecoderBlock2D");
        assert_eq!(c["scaling_factor"], 0.5);
    }

    #[test]
    fn inexpressible_configs_are_refused() {
        let bad = AutoencoderConfig {
            ch_mult: vec![2, 2],
            embed_dim: 4,
            ..kl()
        };
        let e = diffusers_config(&bad, 1.0).unwrap_err().to_string();
        assert!(e.contains("ch_mult[0] = 1"), "{e}");
        let e = diffusers_config(
            &AutoencoderConfig {
                embed_dim: 3,
                ..kl()
            },
            1.0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("embed_dim"), "{e}");
    }

    #[test]
    fn scaling_factor_from_latent_std() {
        let stats = LatentStats {
            mean: vec![],
            std: vec![],
            std_all: 4.0,
            count: 1,
        };
        assert_eq!(scaling_factor(&kl(), Some(&stats)), 0.25);
        assert_eq!(scaling_factor(&kl(), None), KL_DEFAULT_SCALING);
        let vq = AutoencoderConfig {
            regularizer: Regularizer::Vq,
            n_embed: Some(8),
            ..kl()
        };
        assert_eq!(scaling_factor(&vq, None), 1.0);
    }
}
