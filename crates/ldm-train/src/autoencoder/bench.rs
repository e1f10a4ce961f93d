//! `ldm-train bench autoencoder`: step time, images/s and peak memory of the
//! training step on synthetic input, so speed can be tracked and compared
//! with the PyTorch reference at the same shapes.

use std::time::Instant;

use anyhow::Result;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use crate::autoencoder::config::load_run_config;
use crate::autoencoder::trainer::AeTrainer;

/// Which work one timed iteration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// The configured loss (L1 + LPIPS + KL, GAN from step 0).
    Full,
    /// L1 + KL only (no LPIPS, no discriminator): like-for-like with a plain VAE step.
    L1kl,
    /// Encoder forward only, no gradients.
    Encode,
}

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// Config path or shipped name.
    pub config: String,
    /// Overrides.
    pub overrides: Vec<String>,
    /// Batch size.
    pub batch: usize,
    /// Square input size.
    pub size: usize,
    /// Timed iterations.
    pub steps: usize,
    /// Untimed warm-up iterations.
    pub warmup: usize,
    /// What to time.
    pub mode: BenchMode,
    /// Name of the backend it runs on (reported, not chosen, here).
    pub backend: &'static str,
}

/// Result line of a benchmark (also printed as JSON).
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Backend (flex, libtorch, cuda).
    pub backend: &'static str,
    /// Mode.
    pub mode: BenchMode,
    /// Batch × size.
    pub batch: usize,
    /// Input size.
    pub size: usize,
    /// Median seconds per iteration.
    pub median_s: f64,
    /// Fastest iteration.
    pub min_s: f64,
    /// Images per second at the median.
    pub images_per_sec: f64,
    /// Peak resident memory of the process (MiB), from /proc.
    pub peak_rss_mib: Option<f64>,
    /// Trainable parameters of the autoencoder.
    pub params: usize,
}

/// Peak RSS (VmHWM) in MiB on Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark on backend `B`.
pub fn run<B: AutodiffBackend>(args: BenchArgs, device: B::Device) -> Result<BenchReport> {
    let mut overrides = args.overrides.clone();
    overrides.push(format!("train.batch_size={}", args.batch));
    overrides.push(format!("data.size={}", args.size));
    overrides.push(format!("model.resolution={}", args.size));
    match args.mode {
        BenchMode::Full => overrides.push("loss.disc_start=0".into()),
        BenchMode::L1kl | BenchMode::Encode => {
            overrides.push("loss.perceptual_weight=0".into());
            overrides.push("loss.disc_factor=0".into());
        }
    }
    let (cfg, _) = load_run_config(&args.config, &overrides)?;
    let mut trainer = AeTrainer::<B>::new(cfg, device.clone())?;
    let params = trainer.gen.ae.num_params();
    let x = Tensor::<B, 4>::random(
        [args.batch, 3, args.size, args.size],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let mut times = Vec::with_capacity(args.steps);
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        match args.mode {
            BenchMode::Encode => {
                let ae = trainer.gen.ae.valid();
                let m = ae.encode(x.clone().inner()).mode();
                let _ = m.into_data();
            }
            _ => {
                trainer.train_step(x.clone())?;
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        if i >= args.warmup {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchReport {
        backend: args.backend,
        mode: args.mode,
        batch: args.batch,
        size: args.size,
        median_s: median,
        min_s: times[0],
        images_per_sec: args.batch as f64 / median,
        peak_rss_mib: peak_rss_mib(),
        params,
    })
}
