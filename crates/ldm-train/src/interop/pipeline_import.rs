//! `ldm-train import` of a whole text-to-image pipeline — a diffusers
//! folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) or
//! a CompVis / Stable Diffusion single file (`model.diffusion_model.*`,
//! `first_stage_model.*`, `cond_stage_model.transformer.*`, and the EMA
//! weights `model_ema.*` when present) — as a run directory that `sample`,
//! `export` and `diffusion --init-from` accept:
//!
//! ```text
//! OUT/config.toml                  the diffusion run config (data.root left empty)
//! OUT/checkpoints/step-00000000/   the diffusion checkpoint (UNet weights, EMA, copies)
//! OUT/autoencoder/                 the first stage as an autoencoder run directory
//! OUT/text_encoder/                the frozen CLIP encoder (config.json,
//!                                  model.safetensors) and its BPE merges
//! ```
//!
//! Every component is read and checked against its architecture before
//! anything is written: a missing, misshaped or unexpected tensor is named
//! in a one-line error. OUT must be new or empty; what is checked while
//! writing (the tokenizer against the encoder, the run config, the final
//! load of the checkpoint) removes OUT again when it fails, so a failed
//! import leaves nothing behind to mistake for a model.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::tensor::TensorData;
use ldm_models::conditioner::{ClipTextConfig, ClipTextModel};
use ldm_models::torch_weights::TorchWeights;
use ldm_models::{Autoencoder, UNet, UNetConfig};
use ldm_text::TokenizerKind;
use serde_json::Value;

use crate::diffusion::condition::{tokenizer_file_name, TextFiles};
use crate::diffusion::config::{
    ConditionKind, ConditioningConfig, ConditioningKey, DiffusionRunConfig, ParameterizationName,
    TextEncoderKind,
};
use crate::diffusion::load::load_diffusion;
use crate::diffusion::model::LatentDiffusion;
use crate::diffusion::train::first_stage;
use crate::diffusion::trainer::{KIND_DIFFUSION, NO_PREFIX};
use crate::interop::import::{
    self, diffusers_weights, first_stage_of, read_diffusers, read_json, Format, Imported,
    TensorFile,
};
use crate::interop::import_config::unet_config_from_diffusers;
use crate::interop::pipeline_config::{
    clip_config_from_shapes, clip_config_json, schedule_from_diffusers, unet_config_from_shapes,
    Heads, ScheduleSettings, Shapes,
};
use crate::interop::unet_key_map::{compvis_ema_name, UnetKeyMap, UnetNaming};
use crate::shared::assets;
use crate::shared::checkpoint::{self, CheckpointState, CheckpointWriter};
use crate::shared::config::{self, ConfigSource, RunConfig};
use crate::shared::run_dir::ensure_new_or_empty;
use crate::shared::weights::{self, NamedTensor};

/// Where a Stable Diffusion single file keeps the UNet.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// Where it keeps the CLIP text encoder (transformers' names after it).
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// OpenCLIP's text tower (Stable Diffusion 2.x single files).
const OPENCLIP_PREFIX: &str = "cond_stage_model.model.";
/// What tells a single file has a UNet.
pub const UNET_PROBE: &str = "model.diffusion_model.input_blocks.0.0.weight";

/// What shapes cannot tell about a single file, and the settings a
/// pipeline import takes (each `None` = Stable Diffusion's).
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// UNet attention heads (default: 8 heads for 1×1-conv projections,
    /// 64-wide heads for Linear ones).
    pub unet_heads: Option<Heads>,
    /// UNet GroupNorm groups (default 32).
    pub unet_norm_groups: Option<usize>,
    /// Autoencoder GroupNorm groups (default 32).
    pub norm_groups: Option<usize>,
    /// CLIP attention heads (default: 64-wide).
    pub text_heads: Option<usize>,
    /// What the UNet predicts (default ε; v for the 768-px SD 2.x models).
    pub parameterization: Option<ParameterizationName>,
    /// Latent scale (default: the file's `scale_factor`, else 0.18215).
    pub scale_factor: Option<f64>,
    /// Image side in pixels (default 512).
    pub image_size: Option<u32>,
    /// The CLIP BPE merges: a `bpe_simple_vocab_16e6.txt.gz`-style file or a
    /// transformers tokenizer folder (`vocab.json` + `merges.txt`); default:
    /// the pipeline's `tokenizer/`, else the copy `scripts/setup.sh` fetched.
    pub tokenizer: Option<PathBuf>,
}

/// A pipeline read into our terms, checked, not yet written.
pub struct Pipeline {
    /// The UNet architecture.
    pub unet: UNetConfig,
    /// The UNet (the raw weights of a CompVis file).
    pub model: UNet<Flex>,
    /// The EMA UNet (a CompVis file's `model_ema.*`); None: the same as `model`.
    pub ema: Option<UNet<Flex>>,
    /// The first stage.
    pub first_stage: Imported,
    /// The first stage, built.
    pub ae: Autoencoder<Flex>,
    /// The text encoder's transformers `config.json`.
    pub text_config: String,
    /// Its `model.safetensors` (transformers names).
    pub text_weights: Vec<u8>,
    /// Its width and positions.
    pub text_shape: ClipTextConfig,
    /// The gzipped CLIP merges list.
    pub merges_gz: Vec<u8>,
    /// The training schedule.
    pub schedule: ScheduleSettings,
    /// Latents are multiplied by this before diffusion.
    pub scale_factor: f64,
    /// The source, for messages and metadata.
    pub source: String,
    /// Keys of a single file that are no part of the model (the schedule's
    /// buffers, LitEma's counters, a training loss's…), for the report.
    pub skipped: Vec<String>,
}

/// Records in `unet` the latent side of `image_size`-pixel images under a
/// first stage of factor `f` (what `sample` and the config's `data.size`
/// follow).
fn set_image_size(unet: &mut UNetConfig, image_size: usize, f: usize) -> Result<()> {
    if image_size == 0 || !image_size.is_multiple_of(f) {
        bail!("--image-size {image_size}: not a positive multiple of the first stage's f = {f}");
    }
    unet.image_size = Some(image_size / f);
    Ok(())
}

/// The gzipped merges of `path`: a merges file as is, or a transformers
/// tokenizer folder converted.
fn merges_from(path: &Path) -> Result<Vec<u8>> {
    if path.is_dir() {
        return ldm_text::clip_merges_from_hf_folder(path).map_err(|e| anyhow::anyhow!("{e}"));
    }
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The CLIP encoder of `config` and `weights` (named `file`), loaded once
/// so every missing, misshaped or unexpected key is named now.
fn check_clip(config: &ClipTextConfig, weights: &[u8], file: &str) -> Result<()> {
    let w = TorchWeights::parse(weights, file).map_err(|e| anyhow::anyhow!("{e}"))?;
    ClipTextModel::<Flex>::from_weights(config, &w, &Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Builds the UNet of `cfg` from `tensors` named by `naming`.
fn build_unet(
    cfg: &UNetConfig,
    linear_projection: bool,
    tensors: Vec<(String, TensorData)>,
    naming: UnetNaming,
    file: &str,
) -> Result<UNet<Flex>> {
    let map =
        UnetKeyMap::new(cfg, linear_projection).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    map.load(UNet::new(cfg, &Default::default()), tensors, naming, file)
}

/// Every tensor of a weights file as f32 (diffusers' UNet, a text encoder).
fn all_tensors(path: &Path) -> Result<(Vec<(String, TensorData)>, String)> {
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    let source = TensorFile::open(path, &file, &mut bytes)?;
    let tensors = source
        .names()
        .into_iter()
        .map(|k| Ok((k.clone(), source.f32_data(&k, &file)?.0)))
        .collect::<Result<_>>()?;
    Ok((tensors, file))
}

/// Reads a diffusers pipeline folder.
pub fn read_diffusers_pipeline(dir: &Path, opts: &PipelineOptions) -> Result<Pipeline> {
    let sub = |name: &str| dir.join(name);
    if !sub("unet").is_dir() {
        bail!(
            "{}: no unet/ folder: not a diffusers pipeline with a UNet (an autoencoder alone imports with --model autoencoder)",
            dir.display()
        );
    }
    if opts.unet_heads.is_some()
        || opts.unet_norm_groups.is_some()
        || opts.norm_groups.is_some()
        || opts.text_heads.is_some()
    {
        bail!("--unet-heads, --unet-head-channels, --unet-norm-groups, --norm-groups and --text-heads apply to --from ldm (diffusers' configs say them)");
    }
    let (ucfg, ufile) = read_json(&sub("unet/config.json"))?;
    let d = unet_config_from_diffusers(&ucfg, &ufile)?;
    let (tensors, file) = all_tensors(&diffusers_weights(&sub("unet"))?)?;
    let model = build_unet(
        &d.unet,
        d.linear_projection,
        tensors,
        UnetNaming::Diffusers,
        &file,
    )?;
    let first_stage = read_diffusers(&sub("vae"))?;
    let ae = first_stage.build::<Flex>(&Default::default())?;
    // The text encoder must be one we implement.
    let text_dir = sub("text_encoder");
    if !text_dir.join("config.json").is_file() {
        bail!(
            "{}: no text_encoder/config.json; only text-to-image pipelines with a CLIP text encoder import as diffusion checkpoints",
            dir.display()
        );
    }
    let text_config_path = text_dir.join("config.json");
    let text_shape =
        ClipTextConfig::from_json(&text_config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let weights_path = ["model.safetensors", "model.fp16.safetensors"]
        .iter()
        .map(|f| text_dir.join(f))
        .find(|p| p.is_file())
        .with_context(|| format!("{}: no model.safetensors", text_dir.display()))?;
    let text_weights = fs::read(&weights_path)
        .with_context(|| format!("cannot read {}", weights_path.display()))?;
    check_clip(
        &text_shape,
        &text_weights,
        &weights_path.display().to_string(),
    )?;
    let text_config = fs::read_to_string(&text_config_path)
        .with_context(|| format!("cannot read {}", text_config_path.display()))?;
    let merges_gz = merges_from(opts.tokenizer.as_deref().unwrap_or(&sub("tokenizer")))?;
    let (scfg, sfile) = read_json(&sub("scheduler/scheduler_config.json"))?;
    let mut schedule = schedule_from_diffusers(&scfg, &sfile)?;
    if let Some(p) = opts.parameterization {
        schedule.parameterization = p;
    }
    let (vcfg, _) = read_json(&sub("vae/config.json"))?;
    let scale_factor = opts
        .scale_factor
        .or_else(|| vcfg.get("scaling_factor").and_then(Value::as_f64))
        .unwrap_or(crate::interop::export::KL_DEFAULT_SCALING);
    let mut unet = d.unet;
    let f = first_stage.model.downsampling();
    let default = unet.image_size.unwrap_or(64) * f;
    set_image_size(
        &mut unet,
        opts.image_size.map_or(default, |s| s as usize),
        f,
    )?;
    Ok(Pipeline {
        unet,
        model,
        ema: None,
        first_stage,
        ae,
        text_config,
        text_weights,
        text_shape,
        merges_gz,
        schedule,
        scale_factor,
        source: dir.display().to_string(),
        skipped: Vec::new(),
    })
}

/// Reads a CompVis / Stable Diffusion single file.
pub fn read_ldm_pipeline(path: &Path, opts: &PipelineOptions) -> Result<Pipeline> {
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    let source = TensorFile::open(path, &file, &mut bytes)?;
    let names = source.names();
    if !names.contains(UNET_PROBE) {
        bail!("{file}: no UNet in it (no `{UNET_PROBE}`)");
    }
    // Buffers that are not weights: CLIP's integer position ids.
    let under = |prefix: &str| -> Vec<(String, String)> {
        names
            .iter()
            .filter(|k| !k.ends_with("position_ids"))
            .filter_map(|k| Some((k.clone(), k.strip_prefix(prefix)?.to_string())))
            .collect()
    };
    let shapes_under = |prefix: &str| -> Shapes {
        under(prefix)
            .into_iter()
            .filter_map(|(k, rest)| Some((rest, source.shape(&k)?)))
            .collect()
    };
    let tensors_under = |prefix: &str| -> Result<Vec<(String, TensorData)>> {
        under(prefix)
            .into_iter()
            .map(|(k, rest)| Ok((rest, source.f32_data(&k, &file)?.0)))
            .collect()
    };
    let (mut unet, linear) = unet_config_from_shapes(
        &shapes_under(UNET_PREFIX),
        UNET_PREFIX,
        &file,
        opts.unet_heads,
        opts.unet_norm_groups
            .unwrap_or(ldm_models::unet::resblock::UNET_NORM_GROUPS),
    )?;
    let first_stage = first_stage_of(&source, &file, opts.norm_groups)?;
    let f = first_stage.model.downsampling();
    set_image_size(&mut unet, opts.image_size.map_or(512, |s| s as usize), f)?;
    let model = build_unet(
        &unet,
        linear,
        tensors_under(UNET_PREFIX)?,
        UnetNaming::CompVis,
        &file,
    )?;
    // LitEma's buffers: the same names without dots, plus two counters.
    let ema_keys: Vec<&String> = names
        .iter()
        .filter(|k| {
            k.starts_with("model_ema.") && !k.ends_with(".num_updates") && !k.ends_with(".decay")
        })
        .collect();
    let ema = if ema_keys.is_empty() {
        None
    } else {
        let map = UnetKeyMap::new(&unet, linear).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let by_ema_name: HashMap<String, String> = weights::collect(&model, "")?
            .into_iter()
            .filter_map(|t| map.foreign_name(&t.key, UnetNaming::CompVis))
            .map(|m| (compvis_ema_name(&m.key), m.key))
            .collect();
        let tensors = ema_keys
            .iter()
            .map(|k| {
                let name = by_ema_name.get(*k).cloned().unwrap_or_else(|| (*k).clone());
                Ok((name, source.f32_data(k, &file)?.0))
            })
            .collect::<Result<Vec<_>>>()?;
        Some(build_unet(
            &unet,
            linear,
            tensors,
            UnetNaming::CompVis,
            &format!("{file} (model_ema.*)"),
        )?)
    };
    let ae = first_stage.build::<Flex>(&Default::default())?;
    if names.iter().any(|k| k.starts_with(OPENCLIP_PREFIX)) {
        bail!(
            "{file}: its text encoder is OpenCLIP's (`{OPENCLIP_PREFIX}*`, Stable Diffusion 2.x), which is not implemented; \
             import the diffusers form of the pipeline, whose text_encoder/ is a transformers CLIPTextModel"
        );
    }
    if !names.iter().any(|k| k.starts_with(CLIP_PREFIX)) {
        bail!(
            "{file}: no CLIP text encoder (`{CLIP_PREFIX}*`); only text-to-image pipelines with one import as diffusion checkpoints"
        );
    }
    let text_shape = clip_config_from_shapes(
        &shapes_under(CLIP_PREFIX),
        CLIP_PREFIX,
        &file,
        opts.text_heads,
    )?;
    let text: Vec<NamedTensor> = tensors_under(CLIP_PREFIX)?
        .into_iter()
        .map(|(key, d)| NamedTensor {
            key,
            shape: d.shape.to_vec(),
            bytes: d.as_bytes().to_vec(),
        })
        .collect();
    let text_weights = weights::to_safetensors(&text, HashMap::new())?;
    check_clip(
        &text_shape,
        &text_weights,
        &format!("{file} ({CLIP_PREFIX}*)"),
    )?;
    let tokenizer = opts.tokenizer.clone().unwrap_or_else(|| {
        assets::cache_dir()
            .join("text")
            .join("clip")
            .join(tokenizer_file_name(TokenizerKind::Clip))
    });
    let merges_gz = merges_from(&tokenizer)
        .with_context(|| "the CLIP tokenizer (run scripts/setup.sh, or pass --tokenizer)")?;
    let schedule = ScheduleSettings::stable_diffusion(
        opts.parameterization.unwrap_or(ParameterizationName::Eps),
    );
    check_alphas(&source, &names, &schedule, &file)?;
    let parts = [UNET_PREFIX, "model_ema.", "first_stage_model.", CLIP_PREFIX];
    let skipped: Vec<String> = names
        .iter()
        .filter(|k| *k != "scale_factor" && !parts.iter().any(|p| k.starts_with(p)))
        .chain(names.iter().filter(|k| {
            k.ends_with("position_ids") || k.ends_with(".num_updates") || k.ends_with("_ema.decay")
        }))
        .cloned()
        .collect();
    let stored = if names.contains("scale_factor") {
        let v: Vec<f32> = source
            .f32_data("scale_factor", &file)?
            .0
            .to_vec()
            .unwrap_or_default();
        // The f32 buffer's shortest decimal: 0.18215 comes back as written.
        v.first().and_then(|x| x.to_string().parse::<f64>().ok())
    } else {
        None
    };
    let scale_factor = opts
        .scale_factor
        .or(stored)
        .unwrap_or(crate::interop::export::KL_DEFAULT_SCALING);
    Ok(Pipeline {
        unet,
        model,
        ema,
        first_stage,
        ae,
        text_config: serde_json::to_string_pretty(&clip_config_json(&text_shape))?,
        text_weights,
        text_shape,
        merges_gz,
        schedule,
        scale_factor,
        source: file,
        skipped,
    })
}

/// A CompVis checkpoint stores its schedule's ᾱ (`alphas_cumprod`): when
/// present it must be the schedule we assume (single files say nothing else
/// about it).
fn check_alphas(
    source: &TensorFile,
    names: &std::collections::BTreeSet<String>,
    schedule: &ScheduleSettings,
    file: &str,
) -> Result<()> {
    if !names.contains("alphas_cumprod") {
        return Ok(());
    }
    let (data, dtype) = source.f32_data("alphas_cumprod", file)?;
    let theirs: Vec<f32> = data.to_vec().unwrap_or_default();
    // Half-precision files round ᾱ (≤ 1) to 2⁻¹¹ (f16) or 2⁻⁸ (bf16).
    let tol = match dtype.as_deref() {
        Some("F16") => 2f64.powi(-11),
        Some("BF16") => 2f64.powi(-8),
        _ => 1e-5,
    };
    let ours = schedule.noise_schedule().alphas_cumprod;
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    // NaN counts as a mismatch.
    if theirs.len() != ours.len() || worst.is_nan() || worst > tol {
        bail!(
            "{file}: `alphas_cumprod` ({} steps) is not Stable Diffusion's schedule (β 0.00085–0.012, scaled linear, \
             1000 steps; largest difference {worst:.1e}); this file's schedule is not supported",
            theirs.len()
        );
    }
    Ok(())
}

/// The run config of an imported pipeline: `base` (default `txt2img.toml`)
/// for training settings, the rest from the pipeline; the text files and
/// the first stage are the ones written under `out`.
fn run_config(p: &Pipeline, base: Option<&str>, out: &Path) -> Result<DiffusionRunConfig> {
    let name = base.unwrap_or("txt2img.toml");
    let src: ConfigSource = config::read_source(name)?;
    let mut cfg: DiffusionRunConfig = config::parse(&src, &[])?;
    let m = &mut cfg.model;
    p.schedule.apply(m);
    m.conditioning_key = ConditioningKey::Crossattn;
    m.scale_factor = p.scale_factor;
    m.scale_by_std = false;
    m.unet = p.unet.clone();
    cfg.autoencoder.checkpoint = out.join("autoencoder");
    let text = out.join("text_encoder");
    cfg.conditioning = ConditioningConfig {
        kind: ConditionKind::Text,
        dropout: cfg.conditioning.dropout,
        encoder: Some(TextEncoderKind::Clip),
        tokenizer: Some(TokenizerKind::Clip),
        // tokenizer_file stays empty: the merges written beside the encoder.
        context_length: p.text_shape.max_position_embeddings,
        encoder_dir: text.display().to_string(),
        ..ConditioningConfig::default()
    };
    // The EMA file holds a single file's `model_ema`: samples use it.
    cfg.ema.enabled = true;
    cfg.data.root = PathBuf::new();
    let side = p
        .unet
        .image_size
        .context("the pipeline's UNet has no image_size (the readers set it)")?;
    cfg.data.size = (side * p.first_stage.model.downsampling()) as u32;
    cfg.data.cache_dir = None;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{} with the imported model: {e}", src.name))?;
    Ok(cfg)
}

/// Writes `p` into the new run directory `out` (see the module docs).
/// Returns the diffusion checkpoint's directory.
pub fn write(p: &Pipeline, base: Option<&str>, out: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    let cfg = run_config(p, base, &out)?;
    // The first stage, as an autoencoder run directory.
    let ae_cfg = import::run_config(&p.first_stage.model, None)?;
    import::write_checkpoint(
        &p.ae,
        &ae_cfg,
        &out.join("autoencoder").join("checkpoints"),
        &p.source,
    )?;
    // The frozen text encoder and its tokenizer.
    let text = out.join("text_encoder");
    fs::create_dir_all(&text).with_context(|| format!("cannot create {}", text.display()))?;
    for (name, bytes) in [
        ("config.json", p.text_config.as_bytes()),
        ("model.safetensors", &p.text_weights[..]),
        (tokenizer_file_name(TokenizerKind::Clip), &p.merges_gz[..]),
    ] {
        let path = text.join(name);
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The diffusion checkpoint, last: its `latest` says the import is whole.
    let device = Default::default();
    let stage = first_stage::<Flex>(&cfg, &device)?;
    let files = TextFiles::configured(&cfg.conditioning)?;
    let text_copies = files.checkpoint_copies(&cfg.conditioning)?;
    let mut model = LatentDiffusion::<Flex>::new(&cfg, 0, 0, &device);
    model.model.diffusion_model = p.model.clone();
    let mut ema = model.clone();
    ema.model.diffusion_model = p.ema.clone().unwrap_or_else(|| p.model.clone());
    let meta = HashMap::from([
        ("format".to_string(), "ldm-train".to_string()),
        ("imported_from".to_string(), p.source.clone()),
    ]);
    let mut ck_files = vec![
        (
            "model.safetensors",
            weights::to_safetensors(&weights::collect(&model, NO_PREFIX)?, meta.clone())?,
        ),
        (
            "ema.safetensors",
            weights::to_safetensors(&weights::collect(&ema, NO_PREFIX)?, meta)?,
        ),
    ];
    ck_files.extend(stage.files);
    ck_files.extend(text_copies);
    let text_cfg = toml::to_string(&cfg).context("cannot serialize the config")?;
    fs::write(out.join("config.toml"), &text_cfg)
        .with_context(|| format!("cannot write {}", out.join("config.toml").display()))?;
    let state = CheckpointState {
        format_version: checkpoint::FORMAT_VERSION,
        kind: KIND_DIFFUSION.into(),
        step: 0,
        seed: cfg.train.seed,
        config_hash: checkpoint::FileDigest::of(text_cfg.as_bytes()).fnv1a,
        scale_factor: Some(p.scale_factor),
        ema_updates: Some(0),
        autoencoder_fingerprint: Some(stage.fingerprint),
        ..Default::default()
    };
    let dir =
        CheckpointWriter::new(&out.join("checkpoints"), 1, 0)?.write(state, &text_cfg, ck_files)?;
    // What `sample` will do: load it back whole.
    load_diffusion::<Flex>(&dir, true, &device)
        .with_context(|| format!("the imported checkpoint {} does not load", dir.display()))?;
    Ok(dir)
}

/// Whether `path` (in `format`) holds a whole pipeline (a UNet) rather than
/// an autoencoder alone.
pub fn has_unet(format: Format, path: &Path) -> Result<bool> {
    Ok(match format {
        Format::Diffusers => path.join("unet").is_dir(),
        Format::Ldm => match safetensors_header(path) {
            Some(header) => header.contains_key(UNET_PROBE),
            // A pickle (read lazily), or a file the import will name as bad.
            None => {
                let file = path.display().to_string();
                let mut bytes = Vec::new();
                TensorFile::open(path, &file, &mut bytes)?
                    .names()
                    .contains(UNET_PROBE)
            }
        },
    })
}

/// The JSON header of a `.safetensors` file (its tensor names), read
/// without the gigabytes after it; None when `path` is not one.
fn safetensors_header(path: &Path) -> Option<serde_json::Map<String, Value>> {
    use std::io::Read;
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return None;
    }
    let mut f = fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    // safetensors caps its header at 100 MB.
    if len > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).ok()?;
    serde_json::from_slice(&header).ok()
}

/// Reads, checks and writes a pipeline import; `out` must be new or empty.
pub fn run(
    format: Format,
    path: &Path,
    out: &Path,
    base: Option<&str>,
    opts: &PipelineOptions,
) -> Result<PathBuf> {
    ensure_new_or_empty(out, "import a pipeline")?;
    let p = match format {
        Format::Diffusers => read_diffusers_pipeline(path, opts)?,
        Format::Ldm => read_ldm_pipeline(path, opts)?,
    };
    // OUT was new or empty: a failed write removes it, leaving nothing half.
    let dir = write(&p, base, out).inspect_err(|_| {
        let _ = fs::remove_dir_all(out);
    })?;
    let u = &p.unet;
    eprintln!(
        "imported the pipeline {}: UNet ch {} ch_mult {:?}, {} res blocks, attention at {:?}, context {}; \
         {}EMA; CLIP text encoder {} wide, {} layers; first stage f = {}; schedule {:?} {}–{} ({} steps, {:?}); \
         scale_factor {}",
        p.source,
        u.model_channels,
        u.channel_mult,
        u.num_res_blocks,
        u.attention_resolutions,
        u.context_dim.unwrap_or(0),
        if p.ema.is_some() { "" } else { "no separate " },
        p.text_shape.hidden_size,
        p.text_shape.num_hidden_layers,
        p.first_stage.model.downsampling(),
        p.schedule.beta_schedule,
        p.schedule.linear_start,
        p.schedule.linear_end,
        p.schedule.timesteps,
        p.schedule.parameterization,
        p.scale_factor
    );
    if !p.skipped.is_empty() {
        eprintln!(
            "skipped {} keys that are no part of the model: {}",
            p.skipped.len(),
            weights::list_some(&p.skipped)
        );
    }
    eprintln!("checkpoint: {}", dir.display());
    Ok(dir)
}
