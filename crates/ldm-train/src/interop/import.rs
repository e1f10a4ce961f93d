//! `ldm-train import`: a diffusers `AutoencoderKL` / `VQModel` folder or a
//! CompVis / Stable Diffusion file → one of our checkpoint directories.
//!
//! Weights come from `.safetensors` or from PyTorch pickles (`.ckpt`, `.pt`,
//! `.pth`, `.bin`, read by burn-store's `pytorch` reader; a CompVis / SD
//! `.ckpt` keeps its weights under the top-level `state_dict`). Both kinds go
//! through the same loop (`TensorFile`), and every float dtype is converted
//! to f32 the same way.
//!
//! Every tensor is renamed through [`crate::interop::key_map`] and checked against the
//! model its architecture describes (the diffusers `config.json`, or the
//! tensor shapes of an LDM file): a missing, misshaped or unexpected tensor
//! stops the import with its name, so a partial load is never written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use burn_store::pytorch::{PytorchError, PytorchReader};
use burn_store::TensorSnapshot;
use ldm_models::tensor_bytes::float_values;
use ldm_models::{Autoencoder, AutoencoderConfig, Regularizer};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::autoencoder::config::AutoencoderRunConfig;
use crate::autoencoder::trainer::kind_of;
pub use crate::interop::import_config::{config_from_diffusers, config_from_ldm_shapes};
use crate::interop::key_map::{self, Direction};
use crate::shared::checkpoint::{self, CheckpointState, CheckpointWriter};
use crate::shared::config::{self, ConfigSource, RunConfig};
use crate::shared::weights;

/// Where the weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`).
    Diffusers,
    /// A CompVis latent-diffusion / Stable Diffusion file (`first_stage_model.*`):
    /// `.safetensors`, or a PyTorch `.ckpt` / `.pt` / `.pth` / `.bin` pickle.
    Ldm,
}

/// What the CLI passes to an import.
#[derive(Clone, Debug)]
pub struct ImportArgs {
    /// Source format.
    pub from: Format,
    /// The diffusers folder or the LDM file.
    pub path: PathBuf,
    /// Checkpoints directory to create (`step-00000000/` + `latest`).
    pub out: PathBuf,
    /// Config whose non-`[model]` sections the checkpoint gets (default
    /// `f8.toml` for KL, `vq-f8.toml` for VQ).
    pub base_config: Option<String>,
    /// LDM only: GroupNorm groups (the reference hard-codes 32, which the
    /// shapes cannot reveal).
    pub norm_groups: Option<usize>,
}

/// How many source tensors went where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Tensors loaded into the autoencoder.
    pub loaded: usize,
    /// LDM: keys outside the first-stage prefix (diffusion model, text encoder…).
    pub outside_prefix: usize,
    /// LDM: the checkpoint's training loss (`loss.*`), not part of the model.
    pub skipped_loss: usize,
    /// Tensors converted to f32, by source dtype.
    pub converted: BTreeMap<String, usize>,
}

/// How a source file names one of our keys (for errors about missing tensors).
#[derive(Clone, Debug)]
enum Naming {
    Diffusers { levels: usize },
    Ldm { prefix: &'static str },
}

impl Naming {
    fn source_key(&self, ours: &str) -> String {
        match self {
            Naming::Diffusers { levels } => {
                key_map::rename(ours, Direction::ToDiffusers, *levels).key
            }
            Naming::Ldm { prefix } => format!("{prefix}{ours}"),
        }
    }
}

/// A foreign file read into our names, not yet checked against the model.
pub struct Imported {
    /// The architecture derived from the source.
    pub model: AutoencoderConfig,
    /// Our key → (source key, f32 data).
    pub tensors: BTreeMap<String, (String, TensorData)>,
    /// Counts for the report.
    pub report: ImportReport,
    /// The source file, for messages.
    pub file: String,
    naming: Naming,
}

impl Imported {
    /// Builds the autoencoder and loads every tensor; fails naming each
    /// missing, misshaped or unexpected tensor by its source name.
    pub fn build<B: Backend>(&self, device: &B::Device) -> Result<Autoencoder<B>> {
        let model = Autoencoder::<B>::new(&self.model, device);
        let expected: BTreeMap<String, Vec<usize>> = weights::collect(&model, "")?
            .into_iter()
            .map(|t| (t.key, t.shape))
            .collect();
        let mut problems = Vec::new();
        for (ours, shape) in &expected {
            let src = self.naming.source_key(ours);
            match self.tensors.get(ours) {
                None => problems.push(format!("missing `{src}`")),
                Some((_, d)) if d.shape.to_vec() != *shape => problems.push(format!(
                    "`{src}` has shape {:?}, the model needs {shape:?}",
                    d.shape.to_vec()
                )),
                Some(_) => {}
            }
        }
        for (ours, (src, _)) in &self.tensors {
            if !expected.contains_key(ours) {
                problems.push(format!("unexpected `{src}` (no place in the model)"));
            }
        }
        if !problems.is_empty() {
            bail!(
                "{}: does not fit the {} model its {} describes: {}",
                self.file,
                kind_of(&self.model),
                match self.naming {
                    Naming::Diffusers { .. } => "config.json",
                    Naming::Ldm { .. } => "tensor shapes",
                },
                weights::list_some(&problems)
            );
        }
        let data = self
            .tensors
            .iter()
            .map(|(k, (_, d))| (k.clone(), d.clone()))
            .collect();
        weights::load_data(model, data, "", &self.file)
    }
}

/// safetensors' name of a burn float dtype (the pickle reader gives burn's),
/// so both containers convert through `tensor_bytes::float_values`.
fn float_dtype(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F64 => Dtype::F64,
        _ => return None,
    })
}

/// The tensors of one weights file, whichever container holds them.
pub(crate) enum TensorFile<'a> {
    /// A `.safetensors` file (borrows its bytes).
    Safetensors(SafeTensors<'a>),
    /// A PyTorch pickle; burn-store reads each tensor's data on demand.
    Pytorch(HashMap<String, TensorSnapshot>),
}

impl<'a> TensorFile<'a> {
    /// Opens `path` (named `file` in messages): a PyTorch pickle by its
    /// extension (`.ckpt`, `.pt`, `.pth`, `.bin`), else safetensors parsed
    /// from `bytes`, which the caller keeps alive.
    pub(crate) fn open(path: &Path, file: &str, bytes: &'a mut Vec<u8>) -> Result<Self> {
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("ckpt" | "pt" | "pth" | "bin")
        ) {
            *bytes = fs::read(path).with_context(|| format!("cannot read {file}"))?;
            let bytes: &'a Vec<u8> = bytes;
            return Ok(Self::Safetensors(weights::parse(bytes, file)?));
        }
        // A CompVis / Lightning `.ckpt` holds the weights under `state_dict`
        // (beside `global_step`, optimizer states…); a plain state dict
        // (`.pt`, diffusers' `.bin`) has them at the root.
        let read = match PytorchReader::with_top_level_key(path, "state_dict") {
            Err(PytorchError::KeyNotFound(_)) => PytorchReader::new(path),
            read => read,
        };
        match read {
            Ok(reader) => Ok(Self::Pytorch(reader.into_tensors())),
            Err(PytorchError::Io(e)) => bail!("cannot read {file}: {e}"),
            Err(e) => {
                let why: Vec<String> = e.to_string().split_whitespace().map(String::from).collect();
                bail!(
                    "{file}: burn-store's pytorch reader cannot read it (truncated or corrupt, \
                     or a pickle it does not support): {}",
                    why.join(" ")
                )
            }
        }
    }

    /// Every tensor name, sorted.
    pub(crate) fn names(&self) -> BTreeSet<String> {
        match self {
            Self::Safetensors(st) => st.names().into_iter().cloned().collect(),
            Self::Pytorch(t) => t.keys().cloned().collect(),
        }
    }

    /// The shape of tensor `key`, without reading its data.
    pub(crate) fn shape(&self, key: &str) -> Option<Vec<usize>> {
        match self {
            Self::Safetensors(st) => st.tensor(key).ok().map(|v| v.shape().to_vec()),
            Self::Pytorch(t) => t.get(key).map(|s| s.shape.to_vec()),
        }
    }

    /// Tensor `key` as f32 data, with its source dtype when it was converted
    /// (F16, BF16 and F64 are; any other dtype is an error).
    pub(crate) fn f32_data(&self, key: &str, file: &str) -> Result<(TensorData, Option<String>)> {
        let (values, shape, dtype) = match self {
            Self::Safetensors(st) => {
                let view = st
                    .tensor(key)
                    .with_context(|| format!("{file}: cannot read `{key}`"))?;
                let values = float_values(view.data(), view.dtype());
                (values, view.shape().to_vec(), format!("{:?}", view.dtype()))
            }
            Self::Pytorch(t) => {
                let data = t[key]
                    .to_data()
                    .map_err(|e| anyhow::anyhow!("{file}: cannot read `{key}`: {e}"))?;
                let values = float_dtype(data.dtype).and_then(|d| float_values(data.as_bytes(), d));
                (values, data.shape.to_vec(), format!("{:?}", data.dtype))
            }
        };
        let values = values.with_context(|| {
            format!("{file}: `{key}` has dtype {dtype}, expected a float tensor")
        })?;
        let converted = (dtype != "F32").then_some(dtype);
        Ok((TensorData::new(values, shape), converted))
    }
}

// ---------------------------------------------------------------- diffusers

/// A JSON file and its name for messages.
pub(crate) fn read_json(path: &Path) -> Result<(Value, String)> {
    let file = path.display().to_string();
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
    let json =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{file}: not valid JSON ({e})"))?;
    Ok((json, file))
}

/// The weights file of a diffusers model folder:
/// `diffusion_pytorch_model.safetensors`, else its `.fp16` variant, else the
/// PyTorch pickle `diffusion_pytorch_model.bin`.
pub(crate) fn diffusers_weights(dir: &Path) -> Result<PathBuf> {
    let found = [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
    ]
    .iter()
    .map(|f| dir.join(f))
    .find(|p| p.is_file());
    found.with_context(|| {
        format!(
            "{}: no diffusion_pytorch_model.safetensors (nor .fp16.safetensors, nor .bin)",
            dir.display()
        )
    })
}

/// Reads a diffusers autoencoder folder (or a pipeline folder with `vae/`);
/// the weights are `diffusion_pytorch_model.safetensors`, else its `.fp16`
/// variant, else the PyTorch pickle `diffusion_pytorch_model.bin`.
pub fn read_diffusers(dir: &Path) -> Result<Imported> {
    let dir = if !dir.join("config.json").is_file() && dir.join("vae/config.json").is_file() {
        dir.join("vae")
    } else {
        dir.to_path_buf()
    };
    if !dir.is_dir() {
        bail!(
            "{}: not a folder (a diffusers model is a folder with config.json and \
             diffusion_pytorch_model.safetensors)",
            dir.display()
        );
    }
    let (json, cfg_file) = read_json(&dir.join("config.json"))?;
    let model = config_from_diffusers(&json, &cfg_file)?;
    let weights_path = diffusers_weights(&dir)?;
    let file = weights_path.display().to_string();
    let mut bytes = Vec::new();
    let source = TensorFile::open(&weights_path, &file, &mut bytes)?;
    let levels = model.ch_mult.len();
    let mut imported = Imported {
        model,
        tensors: BTreeMap::new(),
        report: ImportReport::default(),
        file: file.clone(),
        naming: Naming::Diffusers { levels },
    };
    for key in source.names() {
        let r = key_map::rename(&key, Direction::FromDiffusers, levels);
        let (mut data, converted) = source.f32_data(&key, &file)?;
        if r.linear_weight {
            // Linear [C_out, C_in] → 1×1 conv [C_out, C_in, 1, 1].
            match data.shape.to_vec()[..] {
                [o, i] => data = TensorData::new(data.to_vec::<f32>().expect("f32"), [o, i, 1, 1]),
                [_, _, 1, 1] => {} // older diffusers saved the conv form
                ref s => bail!("{file}: `{key}` has shape {s:?}, expected a [C, C] linear weight"),
            }
        }
        imported
            .report
            .add(&mut imported.tensors, r.key, key, data, converted);
    }
    Ok(imported)
}

impl ImportReport {
    /// Counts one loaded tensor and stores it as `ours`.
    fn add(
        &mut self,
        tensors: &mut BTreeMap<String, (String, TensorData)>,
        ours: String,
        source: String,
        data: TensorData,
        converted: Option<String>,
    ) {
        if let Some(dt) = converted {
            *self.converted.entry(dt).or_default() += 1;
        }
        self.loaded += 1;
        tensors.insert(ours, (source, data));
    }
}

// ---------------------------------------------------------------- ldm

/// Reads the first stage of an LDM / SD single file (`.safetensors`, or a
/// PyTorch `.ckpt` / `.pt` / `.pth` / `.bin` pickle).
pub fn read_ldm(path: &Path, norm_groups: Option<usize>) -> Result<Imported> {
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    let source = TensorFile::open(path, &file, &mut bytes)?;
    first_stage_of(&source, &file, norm_groups)
}

/// The first stage inside an opened LDM / SD file (named `file` in messages).
pub(crate) fn first_stage_of(
    source: &TensorFile,
    file: &str,
    norm_groups: Option<usize>,
) -> Result<Imported> {
    let file = file.to_string();
    let names = source.names();
    let prefix = key_map::ldm_prefix(|k| names.contains(k)).with_context(|| {
        format!("{file}: no first-stage autoencoder in it (no `first_stage_model.encoder.conv_in.weight`)")
    })?;
    let mut report = ImportReport::default();
    let mut tensors = BTreeMap::new();
    for key in &names {
        let Some(ours) = key.strip_prefix(prefix) else {
            report.outside_prefix += 1;
            continue;
        };
        if key_map::ldm_skipped(ours) {
            report.skipped_loss += 1;
            continue;
        }
        let (data, converted) = source.f32_data(key, &file)?;
        report.add(&mut tensors, ours.to_string(), key.clone(), data, converted);
    }
    let model = config_from_ldm_shapes(&tensors, prefix, &file, norm_groups)?;
    Ok(Imported {
        model,
        tensors,
        report,
        file,
        naming: Naming::Ldm { prefix },
    })
}

/// Reads a source in `format`.
pub fn read(format: Format, path: &Path, norm_groups: Option<usize>) -> Result<Imported> {
    match (format, norm_groups) {
        (Format::Diffusers, Some(_)) => {
            bail!(
                "--norm-groups applies to --from ldm (diffusers' config.json has norm_num_groups)"
            )
        }
        (Format::Diffusers, None) => read_diffusers(path),
        (Format::Ldm, g) => read_ldm(path, g),
    }
}

/// The whole run config of an import: `base` (or the default for the
/// regularizer) with `[model]` replaced.
pub fn run_config(model: &AutoencoderConfig, base: Option<&str>) -> Result<AutoencoderRunConfig> {
    let name = base.unwrap_or(match model.regularizer {
        Regularizer::Kl => "f8.toml",
        Regularizer::Vq => "vq-f8.toml",
    });
    let src: ConfigSource = config::read_source(name)?;
    let mut cfg: AutoencoderRunConfig = config::parse(&src, &[])?;
    cfg.model = model.clone();
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{} with the imported [model]: {e}", src.name))?;
    Ok(cfg)
}

/// Writes `ae` as a step-0 checkpoint (model.safetensors, config.toml,
/// state.json) into the checkpoints directory `out`, atomically; `source`
/// is recorded in the weights' metadata. Returns the checkpoint directory.
pub fn write_checkpoint<B: Backend>(
    ae: &Autoencoder<B>,
    cfg: &AutoencoderRunConfig,
    out: &Path,
    source: &str,
) -> Result<PathBuf> {
    if out.join(checkpoint::LATEST).exists() {
        bail!(
            "{} already holds a checkpoint; import into a new directory",
            out.display()
        );
    }
    let text = toml::to_string(cfg).context("cannot serialize the config")?;
    let meta = std::collections::HashMap::from([
        ("format".to_string(), "ldm-train".to_string()),
        ("imported_from".to_string(), source.to_string()),
    ]);
    let model = weights::to_safetensors(&weights::collect(ae, "")?, meta)?;
    let state = CheckpointState {
        format_version: checkpoint::FORMAT_VERSION,
        kind: kind_of(&cfg.model).into(),
        step: 0,
        data_position: Default::default(),
        seed: cfg.train.seed,
        lr: 0.0,
        config_hash: checkpoint::FileDigest::of(text.as_bytes()).fnv1a,
        dataset_fingerprint: String::new(),
        skipped_images: 0,
        latent_stats: None,
        code_usage: None,
        restart_window: None,
        ..Default::default()
    };
    CheckpointWriter::new(out, 1, 0)?.write(state, &text, vec![("model.safetensors", model)])
}

/// `ldm-train import`: reads, checks, and writes a step-0 checkpoint into
/// `out` (a checkpoints directory: `step-00000000/` and `latest`). Returns
/// the checkpoint directory.
pub fn run(args: &ImportArgs) -> Result<PathBuf> {
    if args.out.join(checkpoint::LATEST).exists() {
        bail!(
            "{} already holds a checkpoint; import into a new directory",
            args.out.display()
        );
    }
    let imported = read(args.from, &args.path, args.norm_groups)?;
    let ae = imported.build::<Flex>(&Default::default())?;
    let cfg = run_config(&imported.model, args.base_config.as_deref())?;
    let dir = write_checkpoint(&ae, &cfg, &args.out, &imported.file)?;
    let r = &imported.report;
    let converted: Vec<String> = r
        .converted
        .iter()
        .map(|(d, n)| format!("{n} from {d}"))
        .collect();
    eprintln!(
        "imported {} tensors from {} ({} model, ch {} ch_mult {:?}, {} res blocks, attn {:?}, z {}, \
         embed_dim {}); skipped {} keys outside the first stage and {} loss keys{}",
        r.loaded,
        imported.file,
        kind_of(&cfg.model),
        cfg.model.ch,
        cfg.model.ch_mult,
        cfg.model.num_res_blocks,
        cfg.model.attn_resolutions,
        cfg.model.z_channels,
        cfg.model.embed_dim,
        r.outside_prefix,
        r.skipped_loss,
        if converted.is_empty() {
            String::new()
        } else {
            format!("; converted to f32: {}", converted.join(", "))
        }
    );
    eprintln!("checkpoint: {}", dir.display());
    Ok(dir)
}
