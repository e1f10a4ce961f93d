//! The `ldm-train` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand};
use ldm_train::backend::{dispatch, DeviceArg, Job};
use ldm_train::bench::{self, BenchArgs, BenchMode};
use ldm_train::eval::{eval_loader, evaluate, load_autoencoder};
use ldm_train::train_autoencoder::{self, TrainArgs};
use ldm_train::{lpips_weights, shipped};

/// Train latent-diffusion autoencoders with burn (CPU or CUDA), resume exactly,
/// log to TensorBoard, evaluate reconstructions.
#[derive(Parser, Debug)]
#[command(name = "ldm-train", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a first-stage autoencoder (KL) from a TOML config.
    Autoencoder(TrainCli),
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
}

#[derive(Args, Debug)]
struct TrainCli {
    /// Config file, or the name of a shipped config (`ldm-train configs`).
    #[arg(long)]
    config: String,
    /// Override any config key, e.g. `--set train.max_steps=100` (repeatable; values are TOML).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
    /// Continue from a checkpoint: the run directory's latest, or the given
    /// checkpoint / checkpoints directory / run directory.
    #[arg(long, num_args = 0..=1, value_name = "PATH")]
    resume: Option<Option<PathBuf>>,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// PSNR, SSIM and LPIPS of reconstructions over a folder, with the
    /// downsample baseline at the same f; writes eval.json and PNGs.
    Autoencoder(EvalCli),
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
    /// Center-crop size (default: the checkpoint's data.size).
    #[arg(long)]
    size: Option<u32>,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Evaluate at most this many images (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time the autoencoder training step on synthetic input.
    Autoencoder(BenchCli),
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
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceArg,
}

struct TrainJob(TrainArgs);
impl Job for TrainJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        train_autoencoder::run::<B>(self.0, device)
    }
}

struct EvalJob(EvalCli);
impl Job for EvalJob {
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let (ae, cfg, ck) = load_autoencoder::<B::InnerBackend>(&a.checkpoint, &device)?;
        // LPIPS is reported whenever its weights exist, whatever the training loss used.
        let lpips = lpips_weights::load::<B::InnerBackend>(&cfg.loss.lpips_weights, &device)
            .map_err(|e| eprintln!("warning: {e:#}; LPIPS will not be reported"))
            .ok();
        let out = a.out.unwrap_or_else(|| ck.dir.join("eval"));
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let size = a.size.unwrap_or(cfg.data.size);
        let f = cfg.model.downsampling();
        if size == 0 || !(size as usize).is_multiple_of(f) {
            anyhow::bail!("--size {size}: must be a positive multiple of the model's f = {f}");
        }
        let loader = eval_loader(&a.data, size, a.batch_size)?;
        let rep = evaluate(&ae, lpips.as_ref(), f, loader, a.limit, Some(&out), &device)?;
        let json = out.join("eval.json");
        std::fs::write(&json, serde_json::to_string_pretty(&rep)?)
            .with_context(|| format!("cannot write {}", json.display()))?;
        println!(
            "{} images at {size}² (f = {f}): PSNR {:.2} dB, SSIM {:.4}, LPIPS {}, L1 {:.4}",
            rep.images,
            rep.mean.psnr,
            rep.mean.ssim,
            rep.mean
                .lpips
                .map(|l| format!("{l:.4}"))
                .unwrap_or_else(|| "n/a".into()),
            rep.mean.l1
        );
        println!(
            "baseline (avg-pool ×{f} + bilinear): PSNR {:.2} dB, SSIM {:.4}",
            rep.mean.baseline_psnr, rep.mean.baseline_ssim
        );
        println!("wrote {} and reconstructions", json.display());
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
        };
        let rep = bench::run::<B>(args, device)?;
        println!("{}", serde_json::to_string(&rep)?);
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Autoencoder(t) => dispatch(
            t.device,
            TrainJob(TrainArgs {
                config: t.config,
                overrides: t.set,
                run_dir: t.run_dir,
                resume: t.resume,
            }),
        ),
        Command::Eval(EvalCommand::Autoencoder(e)) => dispatch(e.device, EvalJob(e)),
        Command::Bench(BenchCommand::Autoencoder(b)) => dispatch(b.device, BenchJob(b)),
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
