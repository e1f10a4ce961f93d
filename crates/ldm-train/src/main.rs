//! The `ldm-train` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use ldm_train::autoencoder::bench::{self, BenchArgs, BenchMode};
use ldm_train::autoencoder::eval::{self, EvalArgs};
use ldm_train::autoencoder::train::{self as train_autoencoder, TrainArgs};
use ldm_train::diffusion::bench::{
    self as diffusion_bench, DiffusionBenchArgs, DiffusionBenchMode,
};
use ldm_train::diffusion::config::ParameterizationName;
use ldm_train::diffusion::eval::{self as diffusion_eval, EvalDiffusionArgs};
use ldm_train::diffusion::retrieval::{self, RetrievalArgs};
use ldm_train::diffusion::sample::{self, SampleArgs};
use ldm_train::diffusion::sampler::{SampleSpec, SamplerKind, SpacingName};
use ldm_train::diffusion::train as diffusion_train;
use ldm_train::interop::export::{self, ExportArgs, Target};
use ldm_train::interop::import::{self, Format, ImportArgs};
use ldm_train::interop::pipeline_config::Heads;
use ldm_train::interop::pipeline_import::{self, PipelineOptions};
use ldm_train::shared::backend::{dispatch, DeviceArg, Job};
use ldm_train::shared::run_dir::RunArgs;
use ldm_train::shared::shipped;

/// Train latent-diffusion models with burn — the autoencoder, then the
/// diffusion model on its latents (CPU: Flex or LibTorch; CUDA) — resume
/// exactly, log to TensorBoard, sample and evaluate.
#[derive(Parser, Debug)]
#[command(name = "ldm-train", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a first-stage autoencoder (KL or VQ) from a TOML config.
    Autoencoder(TrainCli),
    /// Train a latent diffusion model (unconditional, class- or
    /// text-conditional) on the cached latents of a frozen autoencoder.
    Diffusion(TrainCli),
    /// Encode a diffusion config's dataset into its latent cache (the
    /// `diffusion` command does this itself when the cache is missing or stale).
    CacheLatents(RunOpts),
    /// Sample images from a diffusion checkpoint.
    Sample(SampleCli),
    /// Evaluate a trained model.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// List the configs shipped in the binary, or print one.
    Configs {
        /// Name of a shipped config to print (e.g. f8.toml).
        name: Option<String>,
    },
    /// Measure training-step speed and memory.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Import weights (a diffusers folder or a CompVis/SD file): a whole
    /// Stable Diffusion pipeline as a diffusion run directory that `sample`,
    /// `export` and `diffusion --init-from` accept, or an autoencoder alone
    /// as a step-0 checkpoint.
    Import(ImportCli),
    /// Export a checkpoint as a diffusers folder or a CompVis/SD-style
    /// safetensors file: an autoencoder, or a diffusion model with a CLIP
    /// text encoder as a whole pipeline.
    Export(ExportCli),
}

/// The `--device` option of every command that computes.
#[derive(Args, Debug)]
struct DeviceOpt {
    /// Backend and device: `cpu` (the fastest CPU backend of this build:
    /// libtorch when built with `--features tch`, else flex), `flex` (pure
    /// Rust), `libtorch`, `cuda` or `cuda:N` (`--features cuda`).
    #[arg(long = "device", value_name = "DEVICE", default_value = "cpu")]
    arg: DeviceArg,
}

#[derive(Args, Debug)]
struct ImportCli {
    /// Source format: `diffusers` (folder with config.json and
    /// diffusion_pytorch_model.safetensors, or a pipeline folder with vae/) or
    /// `ldm` (a .safetensors file or a PyTorch .ckpt/.pt/.pth/.bin pickle;
    /// `first_stage_model.*` is taken, other keys are skipped and counted).
    #[arg(long, value_enum)]
    from: Format,
    /// The diffusers folder or the LDM file.
    path: PathBuf,
    /// Checkpoints directory to create; gets step-00000000/ and `latest`.
    #[arg(long)]
    out: PathBuf,
    /// Config (path or shipped name) whose [loss], [data], [train]… sections
    /// the checkpoint gets, [model] replaced (default: f8.toml for KL,
    /// vq-f8.toml for VQ).
    #[arg(long, value_name = "NAME")]
    base_config: Option<String>,
    /// `--from ldm` only: GroupNorm groups of the autoencoder (default 32, as
    /// the reference hard-codes; shapes cannot reveal it).
    #[arg(long, value_name = "N")]
    norm_groups: Option<usize>,
    /// What to import: `autoencoder` (the first stage alone) or `diffusion`
    /// (the whole text-to-image pipeline: UNet, first stage, CLIP text
    /// encoder, schedule; OUT becomes a run directory). Default: diffusion
    /// when the source has a UNet.
    #[arg(long, value_enum)]
    model: Option<ImportModel>,
    /// Pipelines from `--from ldm`: attention heads of the UNet (default 8
    /// with 1×1-conv projections as in SD 1.x; see --unet-head-channels).
    #[arg(long, value_name = "N", conflicts_with = "unet_head_channels")]
    unet_heads: Option<usize>,
    /// Pipelines from `--from ldm`: channels per UNet head (default 64 with
    /// Linear projections, as in SD 2.x).
    #[arg(long, value_name = "D")]
    unet_head_channels: Option<usize>,
    /// Pipelines from `--from ldm`: GroupNorm groups of the UNet (default 32).
    #[arg(long, value_name = "N")]
    unet_norm_groups: Option<usize>,
    /// Pipelines from `--from ldm`: attention heads of the CLIP text encoder
    /// (default: 64 channels each, as OpenAI's CLIP).
    #[arg(long, value_name = "N")]
    text_heads: Option<usize>,
    /// Pipelines: what the UNet predicts, `eps`, `v` or `x0` (default: the
    /// scheduler config's; ε for a single file).
    #[arg(long, value_name = "P", value_parser = parse_parameterization)]
    parameterization: Option<ParameterizationName>,
    /// Pipelines: latent scale factor (default: the VAE config's
    /// scaling_factor, or the single file's `scale_factor`, else 0.18215).
    #[arg(long, value_name = "F")]
    scale_factor: Option<f64>,
    /// Pipelines: image side in pixels the checkpoint samples at (default:
    /// the UNet's sample_size times the VAE's factor; 512 for a single file).
    #[arg(long, value_name = "PX")]
    image_size: Option<u32>,
    /// Pipelines: the CLIP tokenizer, a `bpe_simple_vocab_16e6.txt.gz`-style
    /// merges file or a transformers tokenizer folder (default: the
    /// pipeline's tokenizer/, or for a single file the copy
    /// `scripts/setup.sh` fetched).
    #[arg(long, value_name = "PATH")]
    tokenizer: Option<PathBuf>,
}

/// What `import` reads from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ImportModel {
    /// The first-stage autoencoder alone.
    Autoencoder,
    /// The whole pipeline as a diffusion checkpoint.
    Diffusion,
}

fn parse_parameterization(s: &str) -> Result<ParameterizationName, String> {
    match s {
        "eps" => Ok(ParameterizationName::Eps),
        "v" => Ok(ParameterizationName::V),
        "x0" => Ok(ParameterizationName::X0),
        _ => Err(format!("`{s}`: expected eps, v or x0")),
    }
}

impl ImportCli {
    fn run(self) -> Result<()> {
        let pipeline = match self.model {
            Some(m) => m == ImportModel::Diffusion,
            None => pipeline_import::has_unet(self.from, &self.path)?,
        };
        if !pipeline {
            let pipeline_only = [
                ("--unet-heads", self.unet_heads.is_some()),
                ("--unet-head-channels", self.unet_head_channels.is_some()),
                ("--unet-norm-groups", self.unet_norm_groups.is_some()),
                ("--text-heads", self.text_heads.is_some()),
                ("--parameterization", self.parameterization.is_some()),
                ("--scale-factor", self.scale_factor.is_some()),
                ("--image-size", self.image_size.is_some()),
                ("--tokenizer", self.tokenizer.is_some()),
            ];
            if let Some((flag, _)) = pipeline_only.iter().find(|(_, set)| *set) {
                anyhow::bail!(
                    "{flag}: applies to pipeline imports, and {} is imported as an autoencoder \
                     (it has no UNet, or --model autoencoder was given)",
                    self.path.display()
                );
            }
            return import::run(&ImportArgs {
                from: self.from,
                path: self.path,
                out: self.out,
                base_config: self.base_config,
                norm_groups: self.norm_groups,
            })
            .map(|_| ());
        }
        let opts = PipelineOptions {
            unet_heads: self
                .unet_heads
                .map(Heads::Count)
                .or(self.unet_head_channels.map(Heads::Width)),
            unet_norm_groups: self.unet_norm_groups,
            norm_groups: self.norm_groups,
            text_heads: self.text_heads,
            parameterization: self.parameterization,
            scale_factor: self.scale_factor,
            image_size: self.image_size,
            tokenizer: self.tokenizer,
        };
        pipeline_import::run(
            self.from,
            &self.path,
            &self.out,
            self.base_config.as_deref(),
            &opts,
        )
        .map(|_| ())
    }
}

#[derive(Args, Debug)]
struct ExportCli {
    /// Checkpoint directory, checkpoints/ directory or run directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Target format. Autoencoders: `diffusers` (folder: config.json +
    /// diffusion_pytorch_model.safetensors; scaling_factor = 1/latent std of
    /// the checkpoint if recorded, else 0.18215 for KL, 1.0 for VQ) or `ldm`
    /// (one .safetensors with `first_stage_model.` keys). Diffusion models
    /// with a CLIP text encoder: `diffusers` (a StableDiffusionPipeline
    /// folder, EMA weights) or `ldm` (a Stable Diffusion single file,
    /// `model_ema.*` included).
    #[arg(long, value_enum)]
    to: Target,
    /// Output folder (diffusers) or file (ldm).
    #[arg(long)]
    out: PathBuf,
}

/// The options of every training command.
#[derive(Args, Debug)]
struct RunOpts {
    /// Config file, or the name of a shipped config (`ldm-train configs`).
    #[arg(long)]
    config: String,
    /// Override any config key, e.g. `--set train.max_steps=100` or
    /// `--set data.root="my/classes"` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    device: DeviceOpt,
    /// Continue from a checkpoint: the run directory's latest, or the given
    /// checkpoint / checkpoints directory / run directory.
    #[arg(long, num_args = 0..=1, value_name = "PATH")]
    resume: Option<Option<PathBuf>>,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

impl RunOpts {
    fn split(self) -> (DeviceArg, RunArgs) {
        let args = RunArgs {
            config: self.config,
            overrides: self.set,
            run_dir: self.run_dir,
            resume: self.resume,
        };
        (self.device.arg, args)
    }
}

#[derive(Args, Debug)]
struct TrainCli {
    #[command(flatten)]
    run: RunOpts,
    /// Start a fresh run from a checkpoint's weights (e.g. one made by
    /// `ldm-train import`); its [model] must equal the config's. Autoencoder:
    /// discriminator and optimizers start fresh. Diffusion: the weights are
    /// the checkpoint's EMA when it kept one; optimizer and EMA start fresh.
    #[arg(long, value_name = "CKPT", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
}

/// How `sample` and `eval diffusion` sample.
#[derive(Args, Debug)]
struct SamplingOpts {
    /// Sampler.
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: SamplerKind,
    /// Sampling steps (at most the model's timesteps).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM η (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Classifier-free guidance scale (1: the conditional prediction alone).
    #[arg(long, default_value_t = 1.0)]
    guidance: f64,
    /// Timestep spacing.
    #[arg(long, value_enum, default_value = "uniform")]
    spacing: SpacingName,
    /// Text models: the prompt guidance steers away from (default: the empty,
    /// unconditional prompt).
    #[arg(long, default_value = "")]
    negative_prompt: String,
}

impl SamplingOpts {
    fn spec(&self) -> SampleSpec {
        SampleSpec {
            sampler: self.sampler,
            steps: self.steps,
            eta: self.eta,
            guidance: self.guidance,
            spacing: self.spacing,
            negative_prompt: self.negative_prompt.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct SampleCli {
    /// Diffusion checkpoint, checkpoints/ directory or run directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Class to sample, by index or name (repeatable; default: every class).
    #[arg(long = "class", value_name = "CLASS")]
    classes: Vec<String>,
    /// Text models: a prompt to sample (repeatable; a row of the grid each).
    #[arg(long = "prompt", value_name = "TEXT")]
    prompts: Vec<String>,
    /// Samples per class or prompt (unconditional: in all).
    #[arg(long, default_value_t = 8)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingOpts,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Sample with the raw weights instead of the EMA.
    #[arg(long)]
    no_ema: bool,
    /// Samples per batch (bounds memory; the images do not depend on it).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[command(flatten)]
    device: DeviceOpt,
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// PSNR, SSIM, LPIPS and rFID of reconstructions over a folder (plus
    /// code usage for VQ), with the downsample baseline at the same f;
    /// writes eval.json and PNGs.
    Autoencoder(EvalCli),
    /// FID of a diffusion model's samples (or of a folder of samples)
    /// against held-out images, and the time it took.
    Diffusion(EvalDiffusionCli),
    /// Text models: sample N captions of the data and check whether each
    /// sample's nearest image (Inception features) carries its caption,
    /// against chance and against the empty prompt.
    Retrieval(EvalRetrievalCli),
}

/// What the evaluations that draw a set of samples share.
#[derive(Args, Debug)]
struct SampleSetOpts {
    #[command(flatten)]
    sampling: SamplingOpts,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Also write the samples as PNGs under this folder (a subfolder per
    /// class or caption).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceOpt,
}

#[derive(Args, Debug)]
struct EvalRetrievalCli {
    /// Text-conditioned diffusion checkpoint, checkpoints/ or run directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Captioned images to retrieve from (usually the training data).
    #[arg(long)]
    data: PathBuf,
    /// Captions to sample, spread over the sorted distinct captions (0 = all).
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Also count a hit among this many nearest images.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Score this folder instead of sampling: `captions.json` (a list of
    /// captions of --data) with `prompted/NNNN.png` and `empty/NNNN.png`,
    /// the layout `--out` writes (e.g. the PyTorch twin's samples).
    #[arg(long)]
    samples: Option<PathBuf>,
    #[command(flatten)]
    run: SampleSetOpts,
}

#[derive(Args, Debug)]
struct EvalDiffusionCli {
    /// Diffusion checkpoint, checkpoints/ directory or run directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Held-out real images: a folder, an IDX dataset or a manifest.
    #[arg(long)]
    data: PathBuf,
    /// IDX datasets: the split of --data (`train`, `t10k`).
    #[arg(long)]
    split: Option<String>,
    /// Samples in all (split evenly over the classes of a conditional model).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Score this folder of sample PNGs instead of sampling (e.g. another
    /// implementation's), preprocessed like the checkpoint's data;
    /// repeatable: one FID per folder, the real features computed once.
    #[arg(long)]
    samples: Vec<PathBuf>,
    /// Use at most this many real images (0 = all).
    #[arg(long, default_value_t = 0)]
    real_limit: usize,
    #[command(flatten)]
    run: SampleSetOpts,
}

#[derive(Args, Debug)]
struct EvalCli {
    /// Checkpoint directory, checkpoints/ directory or run directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Folder of held-out images.
    #[arg(long)]
    data: PathBuf,
    /// Output folder for eval.json and input|reconstruction PNGs (default: <checkpoint>/eval).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Center-crop size (default: the checkpoint's data.resize, else data.size:
    /// the image scale it trained at).
    #[arg(long)]
    size: Option<u32>,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Evaluate at most this many images (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Skip rFID (Inception features of inputs and reconstructions).
    #[arg(long)]
    no_fid: bool,
    /// IDX datasets (e.g. Fashion-MNIST): the split of --data (`train`, `t10k`).
    #[arg(long)]
    split: Option<String>,
    #[command(flatten)]
    device: DeviceOpt,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time the autoencoder training step on synthetic input.
    Autoencoder(BenchCli),
    /// Time the diffusion UNet's training step or sampling loop on synthetic latents.
    Diffusion(BenchDiffusionCli),
}

#[derive(Args, Debug)]
struct BenchDiffusionCli {
    /// Diffusion config file or shipped name (e.g. tiny/cin-fashion, bench/compass).
    #[arg(long)]
    config: String,
    /// Config overrides.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Latents per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Latent side.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Context tokens for cross-attention (0: one, like a class token).
    #[arg(long, default_value_t = 0)]
    context_len: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// What to time.
    #[arg(long, value_enum, default_value = "train")]
    mode: DiffusionBenchMode,
    /// DDIM steps of a sampling run.
    #[arg(long, default_value_t = 50)]
    sample_steps: usize,
    /// Guidance scale of a sampling run.
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    #[command(flatten)]
    device: DeviceOpt,
}

#[derive(Args, Debug)]
struct BenchCli {
    /// Config file or shipped name.
    #[arg(long)]
    config: String,
    /// Config overrides (e.g. `--set model.ch=64`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Square input size.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Timed iterations (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed warm-up iterations.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// What to time.
    #[arg(long, value_enum, default_value = "full")]
    mode: BenchMode,
    #[command(flatten)]
    device: DeviceOpt,
}

struct TrainJob(TrainArgs);
impl Job for TrainJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        train_autoencoder::run::<B>(self.0, device)
    }
}

/// `diffusion` (with `--init-from`, if given) or, without a run,
/// `cache-latents`.
enum DiffusionJob {
    Train(RunArgs, Option<PathBuf>),
    Cache(RunArgs),
}
impl Job for DiffusionJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        match self {
            DiffusionJob::Cache(args) => {
                diffusion_train::cache_only::<B::InnerBackend>(args, device)
            }
            DiffusionJob::Train(args, init) => {
                diffusion_train::run::<B>(args, init.as_deref(), device)
            }
        }
    }
}

struct SampleJob(SampleArgs);
impl Job for SampleJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        sample::run::<B::InnerBackend>(self.0, &device)
    }
}

struct EvalDiffusionJob(EvalDiffusionArgs);
impl Job for EvalDiffusionJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let rep = diffusion_eval::run::<B::InnerBackend>(self.0, &device)?;
        println!("{}", serde_json::to_string(&rep)?);
        Ok(())
    }
}

struct RetrievalJob(RetrievalArgs);
impl Job for RetrievalJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let rep = retrieval::run::<B::InnerBackend>(self.0, &device)?;
        println!("{}", serde_json::to_string(&rep)?);
        Ok(())
    }
}

struct EvalJob(EvalCli);
impl Job for EvalJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let args = EvalArgs {
            checkpoint: a.checkpoint,
            data: a.data,
            out: a.out,
            size: a.size,
            batch_size: a.batch_size,
            limit: a.limit,
            fid: !a.no_fid,
            split: a.split,
        };
        eval::run::<B::InnerBackend>(args, &device)
    }
}

struct BenchDiffusionJob(BenchDiffusionCli);
impl Job for BenchDiffusionJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let args = DiffusionBenchArgs {
            config: a.config,
            overrides: a.set,
            batch: a.batch,
            size: a.size,
            context_len: a.context_len,
            steps: a.steps,
            warmup: a.warmup,
            mode: a.mode,
            sample_steps: a.sample_steps,
            guidance: a.guidance,
            backend: a.device.arg.backend_name(),
        };
        let rep = diffusion_bench::run::<B>(args, device)?;
        println!("{}", serde_json::to_string(&rep)?);
        Ok(())
    }
}

struct BenchJob(BenchCli);
impl Job for BenchJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        if a.steps == 0 || a.batch == 0 {
            anyhow::bail!("--steps and --batch must be at least 1");
        }
        let args = BenchArgs {
            config: a.config,
            overrides: a.set,
            batch: a.batch,
            size: a.size,
            steps: a.steps,
            warmup: a.warmup,
            mode: a.mode,
            backend: a.device.arg.backend_name(),
        };
        let rep = bench::run::<B>(args, device)?;
        println!("{}", serde_json::to_string(&rep)?);
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Autoencoder(t) => {
            let (dev, run) = t.run.split();
            let init_from = t.init_from;
            dispatch(dev, TrainJob(TrainArgs { run, init_from }))
        }
        Command::Diffusion(t) => {
            let (dev, args) = t.run.split();
            dispatch(dev, DiffusionJob::Train(args, t.init_from))
        }
        Command::CacheLatents(d) => {
            let (dev, args) = d.split();
            dispatch(dev, DiffusionJob::Cache(args))
        }
        Command::Sample(s) => {
            let args = SampleArgs {
                checkpoint: s.checkpoint,
                classes: s.classes,
                prompts: s.prompts,
                n: s.n,
                spec: s.sampling.spec(),
                seed: s.seed,
                out: s.out,
                no_ema: s.no_ema,
                batch: s.batch_size,
            };
            dispatch(s.device.arg, SampleJob(args))
        }
        Command::Eval(EvalCommand::Diffusion(e)) => {
            let args = EvalDiffusionArgs {
                checkpoint: e.checkpoint,
                data: e.data,
                split: e.split,
                n: e.n,
                samples: e.samples,
                real_limit: e.real_limit,
                spec: e.run.sampling.spec(),
                seed: e.run.seed,
                batch: e.run.batch_size,
                out: e.run.out,
            };
            dispatch(e.run.device.arg, EvalDiffusionJob(args))
        }
        Command::Eval(EvalCommand::Retrieval(e)) => {
            let args = RetrievalArgs {
                checkpoint: e.checkpoint,
                data: e.data,
                n: e.n,
                top_k: e.top_k,
                spec: e.run.sampling.spec(),
                seed: e.run.seed,
                batch: e.run.batch_size,
                out: e.run.out,
                samples: e.samples,
            };
            dispatch(e.run.device.arg, RetrievalJob(args))
        }
        Command::Eval(EvalCommand::Autoencoder(e)) => dispatch(e.device.arg, EvalJob(e)),
        Command::Bench(BenchCommand::Autoencoder(b)) => dispatch(b.device.arg, BenchJob(b)),
        Command::Bench(BenchCommand::Diffusion(b)) => dispatch(b.device.arg, BenchDiffusionJob(b)),
        Command::Import(i) => i.run(),
        Command::Export(e) => export::run(&ExportArgs {
            checkpoint: e.checkpoint,
            to: e.to,
            out: e.out,
        }),
        Command::Configs { name } => match name {
            None => {
                for (n, _) in shipped::ALL {
                    println!("{n}");
                }
                Ok(())
            }
            Some(n) => match shipped::find(&n) {
                Some((_, text)) => {
                    print!("{text}");
                    Ok(())
                }
                None => Err(anyhow::anyhow!(
                    "no shipped config named {n} (see `ldm-train configs`)"
                )),
            },
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
