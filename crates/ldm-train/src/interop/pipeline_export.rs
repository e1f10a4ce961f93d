//! `ldm-train export` of a diffusion checkpoint whose text encoder is a
//! frozen CLIP (an imported or fine-tuned Stable Diffusion):
//!
//! * `--to diffusers`: a `StableDiffusionPipeline` folder (`model_index.json`,
//!   `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) with the
//!   weights samples are drawn with (the EMA when the run kept one), and a
//!   `DDIMScheduler` set up as our DDIM sampler;
//! * `--to ldm`: one CompVis / Stable Diffusion safetensors file:
//!   `model.diffusion_model.*` (the trained weights), `model_ema.*` (LitEma's
//!   names) when the run kept an EMA, `first_stage_model.*`,
//!   `cond_stage_model.transformer.*`, and `scale_factor`.
//!
//! Other conditionings have no Stable Diffusion counterpart and are refused
//! by name, as are schedules a single file cannot carry. Everything is
//! built before anything is written; each file goes through a temporary
//! name, the diffusers folder must be new or empty and gets its
//! `model_index.json` last.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use ldm_models::tensor_bytes::{f32_values, float_values};
use ldm_models::UNet;
use serde_json::json;

use crate::diffusion::condition::{
    tokenizer_file_name, FROZEN_ENCODER_CONFIG, FROZEN_ENCODER_WEIGHTS,
};
use crate::diffusion::config::{ConditionKind, TextEncoderKind};
use crate::diffusion::load::{load_diffusion, LoadedDiffusion};
use crate::diffusion::model::LatentDiffusion;
use crate::diffusion::trainer::NO_PREFIX;
use crate::interop::export::{diffusers_config, renamed, write_atomic, ExportArgs, Target};
use crate::interop::pipeline_config::{scheduler_config, unet_diffusers_config, ScheduleSettings};
use crate::interop::pipeline_import::{CLIP_PREFIX, UNET_PREFIX};
use crate::interop::unet_key_map::{compvis_ema_name, UnetKeyMap, UnetNaming};
use crate::shared::run_dir::ensure_new_or_empty;
use crate::shared::weights::{self, NamedTensor};

/// The EMA weights of `d`'s checkpoint, when the run kept them.
fn ema_of(d: &LoadedDiffusion<Flex>) -> Result<Option<LatentDiffusion<Flex>>> {
    if !d.cfg.ema.enabled {
        return Ok(None);
    }
    Ok(Some(weights::load_checkpoint_file(
        d.model.clone(),
        &d.ck,
        "ema.safetensors",
        NO_PREFIX,
    )?))
}

/// The frozen CLIP's tensors (transformers names under `text_model.`) as f32.
fn clip_tensors(d: &LoadedDiffusion<Flex>, prefix: &str) -> Result<Vec<NamedTensor>> {
    let file = format!("{}/{FROZEN_ENCODER_WEIGHTS}", d.ck.dir.display());
    let st = weights::parse(d.ck.file(FROZEN_ENCODER_WEIGHTS)?, &file)?;
    let mut out = Vec::new();
    for (k, view) in st.tensors() {
        if k.ends_with("position_ids") {
            continue;
        }
        let values = float_values(view.data(), view.dtype()).with_context(|| {
            format!(
                "{file}: `{k}` has dtype {:?}, not a float tensor",
                view.dtype()
            )
        })?;
        let name = if k.starts_with("text_model.") {
            k.clone()
        } else {
            format!("text_model.{k}")
        };
        out.push(NamedTensor {
            key: format!("{prefix}{name}"),
            shape: view.shape().to_vec(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    Ok(out)
}

/// Our UNet as `naming` stores it, keys prefixed.
fn unet_tensors(
    map: &UnetKeyMap,
    unet: &UNet<Flex>,
    naming: UnetNaming,
    prefix: &str,
) -> Result<Vec<NamedTensor>> {
    let mut out = map.to_foreign(weights::collect(unet, "")?, naming)?;
    for t in &mut out {
        t.key = format!("{prefix}{}", t.key);
    }
    Ok(out)
}

fn safetensors_meta(d: &LoadedDiffusion<Flex>) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("exported_from".to_string(), d.ck.dir.display().to_string()),
    ])
}

/// Writes `bytes` to `dir/name`.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(&dir.join(name), bytes)
}

/// `ldm-train export` of a diffusion checkpoint.
pub fn run(args: &ExportArgs) -> Result<()> {
    let d = load_diffusion::<Flex>(&args.checkpoint, false, &Default::default())?;
    let c = &d.cfg.conditioning;
    if c.kind != ConditionKind::Text || c.text_encoder() != TextEncoderKind::Clip {
        bail!(
            "{}: conditioning.kind = {:?}{}: only text models with a frozen CLIP encoder (Stable Diffusion's \
             conditioner) export to diffusers or ldm pipelines",
            d.ck.dir.display(),
            c.kind,
            if c.kind == ConditionKind::Text {
                format!(", encoder = \"{}\"", c.text_encoder().name())
            } else {
                String::new()
            }
        );
    }
    let u = &d.cfg.model.unet;
    let map = UnetKeyMap::new(u, false).map_err(|e| anyhow::anyhow!("model.unet: {e}"))?;
    let ema = ema_of(&d)?;
    let first_stage = renamed(weights::collect(&d.ae, "")?, &d.ae_cfg.model, args.to)?;
    match args.to {
        Target::Diffusers => {
            let out = &args.out;
            let sampling = ema.as_ref().unwrap_or(&d.model);
            let unet = unet_tensors(
                &map,
                &sampling.model.diffusion_model,
                UnetNaming::Diffusers,
                "",
            )?;
            let json = |v: &serde_json::Value| -> Result<Vec<u8>> {
                Ok(serde_json::to_string_pretty(v)?.into_bytes())
            };
            // Everything is built before anything is written: a refusal
            // (a config diffusers cannot express) leaves no folder behind.
            let mut files: Vec<(&str, &str, Vec<u8>)> = vec![
                (
                    "unet",
                    "config.json",
                    json(&unet_diffusers_config(u, d.latent_shape[1])?)?,
                ),
                (
                    "unet",
                    "diffusion_pytorch_model.safetensors",
                    weights::to_safetensors(&unet, safetensors_meta(&d))?,
                ),
                (
                    "vae",
                    "config.json",
                    json(&diffusers_config(&d.ae_cfg.model, d.scale_factor)?)?,
                ),
                (
                    "vae",
                    "diffusion_pytorch_model.safetensors",
                    weights::to_safetensors(&first_stage, safetensors_meta(&d))?,
                ),
                (
                    "text_encoder",
                    "config.json",
                    d.ck.file(FROZEN_ENCODER_CONFIG)?.to_vec(),
                ),
                (
                    "text_encoder",
                    "model.safetensors",
                    d.ck.file(FROZEN_ENCODER_WEIGHTS)?.to_vec(),
                ),
                (
                    "scheduler",
                    "scheduler_config.json",
                    json(&scheduler_config(&d.cfg.model)?)?,
                ),
            ];
            let merges = tokenizer_file_name(ldm_text::TokenizerKind::Clip);
            let tok = ldm_text::clip_hf_folder_files(
                &d.ck.dir.join(merges),
                d.ck.file(merges)?,
                c.context_length,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            files.extend(
                tok.into_iter()
                    .map(|(name, text)| ("tokenizer", name, text.into_bytes())),
            );
            let index = json!({
                "_class_name": "StableDiffusionPipeline",
                "feature_extractor": [null, null],
                "image_encoder": [null, null],
                "requires_safety_checker": false,
                "safety_checker": [null, null],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            });
            // Old files of another export would mix with these.
            ensure_new_or_empty(out, "export a pipeline")?;
            for (sub, name, bytes) in &files {
                put(&out.join(sub), name, bytes)?;
            }
            // The index goes last: a folder without it is no pipeline.
            put(out, "model_index.json", &json(&index)?)?;
            eprintln!(
                "exported {} to {} (diffusers StableDiffusionPipeline, {} UNet weights, scaling_factor {})",
                d.ck.dir.display(),
                out.display(),
                if ema.is_some() { "EMA" } else { "trained" },
                d.scale_factor
            );
        }
        Target::Ldm => {
            // A single file says nothing of its schedule but `alphas_cumprod`,
            // and importers (ours, diffusers') assume Stable Diffusion's.
            let m = &d.cfg.model;
            if ScheduleSettings::of(m) != ScheduleSettings::stable_diffusion(m.parameterization) {
                bail!(
                    "model: the schedule ({:?} {}–{}, {} steps{}) is not Stable Diffusion's (scaled linear \
                     0.00085–0.012, 1000 steps), which is all a single file can carry; export --to diffusers",
                    m.beta_schedule,
                    m.linear_start,
                    m.linear_end,
                    m.timesteps,
                    if m.zero_terminal_snr { ", zero terminal SNR" } else { "" }
                );
            }
            let mut all = unet_tensors(
                &map,
                &d.model.model.diffusion_model,
                UnetNaming::CompVis,
                UNET_PREFIX,
            )?;
            if let Some(e) = &ema {
                let mut shadow =
                    unet_tensors(&map, &e.model.diffusion_model, UnetNaming::CompVis, "")?;
                for t in &mut shadow {
                    t.key = compvis_ema_name(&t.key);
                }
                all.extend(shadow);
            }
            all.extend(first_stage);
            all.extend(clip_tensors(&d, CLIP_PREFIX)?);
            let scale = (d.scale_factor as f32).to_le_bytes().to_vec();
            debug_assert_eq!(f32_values(&scale), vec![d.scale_factor as f32]);
            all.push(NamedTensor {
                key: "scale_factor".into(),
                shape: vec![],
                bytes: scale,
            });
            let ac: Vec<f32> = m
                .schedule()
                .alphas_cumprod
                .iter()
                .map(|&a| a as f32)
                .collect();
            all.push(NamedTensor {
                key: "alphas_cumprod".into(),
                shape: vec![ac.len()],
                bytes: ac.iter().flat_map(|v| v.to_le_bytes()).collect(),
            });
            if m.parameterization != crate::diffusion::config::ParameterizationName::Eps {
                eprintln!(
                    "note: the model predicts {:?}; a single file does not say so: import it with --parameterization",
                    m.parameterization
                );
            }
            if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            write_atomic(
                &args.out,
                &weights::to_safetensors(&all, safetensors_meta(&d))?,
            )?;
            eprintln!(
                "exported {} tensors of {} to {} (CompVis / Stable Diffusion single file{})",
                all.len(),
                d.ck.dir.display(),
                args.out.display(),
                if ema.is_some() {
                    ", with model_ema.*"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
