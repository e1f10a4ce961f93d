//! `ldm-train bench diffusion`: the UNet's training step (forward, backward,
//! AdamW) and its sampling loop (DDIM with classifier-free guidance) on
//! synthetic latents and context, timed as `scripts/bench_torch.py` times the
//! same network in PyTorch.

use std::time::Instant;

use anyhow::{bail, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use ldm_diffusion::timesteps::sampling_timesteps;
use ldm_diffusion::{ddim, ClassifierFreeGuidance, Parameterization, Spacing};
use ldm_models::UNet;
use serde::Serialize;

use crate::autoencoder::bench::peak_rss_mib;
use crate::diffusion::config::load_run_config;
use crate::shared::noise::{mix, Stream};

/// What one timed iteration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffusionBenchMode {
    /// Forward, MSE, backward and an AdamW step on a batch.
    Train,
    /// A whole DDIM sampling run of a batch with guidance.
    Sample,
}

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct DiffusionBenchArgs {
    /// Diffusion config (path or shipped name); only `[model]` is used.
    pub config: String,
    /// Overrides.
    pub overrides: Vec<String>,
    /// Latents per batch.
    pub batch: usize,
    /// Latent side.
    pub size: usize,
    /// Context tokens (0: the config's own, one class token).
    pub context_len: usize,
    /// Timed iterations.
    pub steps: usize,
    /// Untimed warm-up iterations.
    pub warmup: usize,
    /// What to time.
    pub mode: DiffusionBenchMode,
    /// DDIM steps per sampling run.
    pub sample_steps: usize,
    /// Guidance scale of the sampling runs.
    pub guidance: f64,
    /// Name of the backend (reported).
    pub backend: &'static str,
}

/// One benchmark result (printed as JSON).
#[derive(Debug, Serialize)]
pub struct DiffusionBenchReport {
    /// Backend.
    pub backend: &'static str,
    /// Mode.
    pub mode: DiffusionBenchMode,
    /// Latents per batch.
    pub batch: usize,
    /// Latent side.
    pub size: usize,
    /// Context tokens.
    pub context_len: usize,
    /// Median seconds per iteration.
    pub median_s: f64,
    /// Fastest iteration.
    pub min_s: f64,
    /// Latents per second at the median.
    pub samples_per_sec: f64,
    /// Peak resident memory (MiB).
    pub peak_rss_mib: Option<f64>,
    /// UNet parameters.
    pub params: usize,
}

/// Runs the benchmark on backend `B`.
pub fn run<B: AutodiffBackend>(
    args: DiffusionBenchArgs,
    device: B::Device,
) -> Result<DiffusionBenchReport> {
    if args.steps == 0 || args.batch == 0 || args.size == 0 {
        bail!("--steps, --batch and --size: must be at least 1");
    }
    let (cfg, _) = load_run_config(&args.config, &args.overrides)?;
    let ucfg = &cfg.model.unet;
    B::seed(&device, mix(&[0, Stream::Init as u64]));
    let mut unet = UNet::<B>::new(ucfg, &device);
    unet.check_size(args.size, args.size)
        .map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    let params = unet.num_params();
    let len = if args.context_len == 0 {
        1
    } else {
        args.context_len
    };
    let context = ucfg.context_dim.map(|d| {
        Tensor::<B, 3>::random(
            [args.batch, len, d],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
    });
    let shape = [args.batch, ucfg.in_channels, args.size, args.size];
    let schedule = cfg.model.schedule();
    let mut opt = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(0.01)
        .init::<B, UNet<B>>();
    let mut times = Vec::with_capacity(args.steps);
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        match args.mode {
            DiffusionBenchMode::Train => {
                let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let noise = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                let t: Vec<f64> = (0..args.batch)
                    .map(|k| ((i * 7919 + k * 104_729) % 1000) as f64)
                    .collect();
                let loss = (unet.forward(x, &t, context.clone(), None) - noise)
                    .powi_scalar(2)
                    .mean();
                let grads = GradientsParams::from_grads(loss.backward(), &unet);
                unet = opt.step(1e-4, unet, grads);
                // Reading a value waits for the step on asynchronous backends.
                let _ = unet.out.len();
                let _: f32 = loss.into_scalar().elem::<f32>();
            }
            DiffusionBenchMode::Sample => {
                let model = unet.valid();
                let ctx = context.clone().map(|c| c.inner());
                let inner = |x: Tensor<B::InnerBackend, 4>, t: usize| {
                    let b = x.dims()[0];
                    let c = ctx.clone().map(|c| {
                        if b == 2 * args.batch {
                            Tensor::cat(vec![c.clone(), c], 0)
                        } else {
                            c
                        }
                    });
                    model.forward(x, &vec![t as f64; b], c, None)
                };
                let mut den = ClassifierFreeGuidance::new(inner, args.guidance);
                let ts = sampling_timesteps(Spacing::Uniform, schedule.len(), args.sample_steps);
                let x = Tensor::<B::InnerBackend, 4>::random(
                    shape,
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let z = ddim(
                    &schedule,
                    Parameterization::Eps,
                    &ts,
                    0.0,
                    x,
                    &mut den,
                    |_| unreachable!("η = 0 draws no noise"),
                );
                let _: f32 = z.sum().into_scalar().elem::<f32>();
            }
        }
        if i >= args.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(DiffusionBenchReport {
        backend: args.backend,
        mode: args.mode,
        batch: args.batch,
        size: args.size,
        context_len: if ucfg.context_dim.is_some() { len } else { 0 },
        median_s: median,
        min_s: times[0],
        samples_per_sec: args.batch as f64 / median,
        peak_rss_mib: peak_rss_mib(),
        params,
    })
}
