//! `ldm-train autoencoder`: the training loop around [`AeTrainer`] — data,
//! logging, validation, images, checkpoints and resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use ldm_data::{
    grid_rgb8, open_source, save_grid_png, DataPosition, Loader, LoaderConfig, SourceKind,
};

use crate::autoencoder::config::{load_run_config, AutoencoderRunConfig};
use crate::autoencoder::eval::{eval_loader, evaluate, load_autoencoder, Scorers};
use crate::autoencoder::trainer::{kind_of, AeTrainer, Generator};
use crate::shared::assets;
use crate::shared::checkpoint::{self, CheckpointState, CheckpointWriter};
use crate::shared::config;
use crate::shared::param_ids::stable_ids;
use crate::shared::progress;
use crate::shared::run_dir::{RunArgs, RunDir};
use crate::shared::tensorboard::EventWriter;

/// What the CLI passes to a training run.
#[derive(Clone, Debug)]
pub struct TrainArgs {
    /// Config, overrides, run directory and resume.
    pub run: RunArgs,
    /// `--init-from CKPT`: a fresh run whose autoencoder weights come from
    /// this checkpoint (e.g. an imported SD VAE); discriminator and
    /// optimizers start fresh.
    pub init_from: Option<PathBuf>,
}

fn hash_text(text: &str) -> String {
    crate::shared::checkpoint::FileDigest::of(text.as_bytes()).fnv1a
}

/// Trains an autoencoder on backend `B` as the args say.
pub fn run<B: AutodiffBackend>(args: TrainArgs, device: B::Device) -> Result<()> {
    let (cfg, src) = load_run_config(&args.run.config, &args.run.overrides)?;
    let resolved = toml::to_string(&cfg).context("cannot serialize the resolved config")?;
    let root = args.run.root();
    let run = RunDir::create(&root)?;
    let folder = open_source(&cfg.data.root, SourceKind::Auto, cfg.data.split.as_deref())
        .map_err(|e| anyhow::anyhow!("data.root: {e}"))?;
    let fingerprint = folder.fingerprint();
    let n_images = folder.len();
    let mut trainer = AeTrainer::<B>::new(cfg.clone(), device.clone())?;
    let mut position = DataPosition::default();
    let mut skipped_before = 0;
    match &args.run.resume {
        Some(_) if args.init_from.is_some() => {
            bail!("--init-from starts a fresh run; it cannot be combined with --resume")
        }
        Some(path) => {
            let path = path.clone().unwrap_or_else(|| run.checkpoints());
            let ck = checkpoint::load(&path, &[kind_of(&cfg.model)])?;
            let ck_cfg: AutoencoderRunConfig = config::of_checkpoint(&ck)?;
            if ck_cfg.model != cfg.model {
                bail!(
                    "{}: [model] differs from checkpoint {} — a resume must keep the architecture",
                    src.name,
                    ck.dir.display()
                );
            }
            // Cadence, budget and loader threads do not change the trajectory.
            let harmless = [
                "train.max_steps",
                "checkpoint.",
                "logging.",
                "data.workers",
                "data.prefetch",
                "data.cache_mb",
                "data.val_root",
            ];
            config::warn_changed(&ck_cfg, &cfg, &harmless)?;
            if ck.state.dataset_fingerprint != fingerprint {
                eprintln!(
                    "warning: {} changed since checkpoint {} (the data order will differ)",
                    cfg.data.root.display(),
                    ck.dir.display()
                );
            }
            trainer.restore(&ck)?;
            position = ck.state.data_position;
            skipped_before = ck.state.skipped_images;
            run.truncate_metrics_after(trainer.step)?;
            eprintln!("resumed from {} at step {}", ck.dir.display(), trainer.step);
        }
        None => {
            run.ensure_fresh()?;
            if let Some(init) = &args.init_from {
                init_autoencoder(&mut trainer, init, &src.name)?;
            }
            // Lines left by an earlier attempt that never checkpointed.
            run.truncate_metrics_after(0)?;
        }
    }
    run.write_config(&resolved)?;
    let loader_cfg = LoaderConfig {
        batch_size: cfg.train.batch_size,
        workers: cfg.data.workers,
        seed: cfg.train.seed,
        shuffle: true,
        drop_last: true,
        repeat: true,
        transform: cfg.data.train_transform(),
        prefetch: cfg.data.prefetch,
        cache_mb: cfg.data.cache_mb,
    };
    let mut loader = Loader::new(folder, loader_cfg, position)?;
    let writer = CheckpointWriter::new(
        &run.checkpoints(),
        cfg.checkpoint.keep_last,
        cfg.checkpoint.keep_every,
    )?;
    if args.run.resume.is_some() {
        // Checkpoints after the resumed one belong to the abandoned trajectory.
        writer.rewind_to(trainer.step)?;
    }
    let mut tb = EventWriter::create(&run.tensorboard())?;
    // rFID during validation needs the Inception network; load it once.
    let inception = match (
        &cfg.data.val_root,
        cfg.logging.val_every,
        cfg.logging.val_fid,
    ) {
        (Some(_), 1.., true) => Some(assets::inception::load::<B::InnerBackend>("", &device)?),
        _ => None,
    };
    let max = cfg.train.max_steps;
    eprintln!(
        "training {} → {} ({} images, lr {:.3e}, {} steps)",
        src.name,
        root.display(),
        n_images,
        trainer.lr,
        max
    );
    let pb = progress::bar(max, trainer.step, "steps");
    let fresh = trainer.step == 0;
    let mut last_ckpt = None;
    while trainer.step < max {
        let batch = loader.next_batch()?.context("training data ended")?;
        let [n, c, h, w] = batch.shape();
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(batch.images.clone(), [n, c, h, w]), &device);
        if fresh && trainer.step == 0 {
            trainer.initialize_discriminator(x.clone());
        }
        let t0 = Instant::now();
        let out = trainer.train_step(x)?;
        let dt = t0.elapsed().as_secs_f64();
        position = batch.next;
        let step = trainer.step;
        let loss = out.scalars.first().map(|s| s.1).unwrap_or(f64::NAN);
        pb.set_message(format!("loss {loss:.4}"));
        pb.inc(1);
        if step % cfg.logging.every == 0 || step == max {
            let scalars: Vec<(String, f64)> = out
                .scalars
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            for (k, v) in &scalars {
                tb.add_scalar(&format!("train/{k}"), *v as f32, step)?;
            }
            tb.add_scalar("perf/images_per_sec", (n as f64 / dt) as f32, step)?;
            tb.add_scalar("perf/step_time", dt as f32, step)?;
            run.append_metrics(step, &scalars)?;
        }
        if cfg.logging.image_every > 0 && (step % cfg.logging.image_every == 0 || step == max) {
            let k = n.min(4);
            let per = c * h * w;
            let mut tiles = batch.images[..k * per].to_vec();
            let recon: Vec<f32> = out
                .recon
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            tiles.extend_from_slice(&recon[..k * per]);
            let (rgb, gw, gh) = grid_rgb8(&tiles, 2 * k, h, w, k);
            tb.add_image_rgb("train/reconstructions", &rgb, gw, gh, step)?;
            save_grid_png(
                &run.samples().join(format!("recon-{step:08}.png")),
                &tiles,
                2 * k,
                h,
                w,
                k,
            )?;
        }
        if let (Some(val_root), true) = (&cfg.data.val_root, cfg.logging.val_every > 0) {
            if step % cfg.logging.val_every == 0 || step == max {
                let loader = eval_loader(
                    val_root,
                    cfg.data.val_split.as_deref(),
                    cfg.data.eval_transform(),
                    cfg.train.batch_size,
                )?;
                let ae = trainer.gen.ae.valid();
                let lpips = trainer.lpips.as_ref().map(|l| l.valid());
                let f = cfg.model.downsampling();
                let scorers = Scorers {
                    lpips: lpips.as_ref(),
                    inception: inception.as_ref(),
                };
                let rep = evaluate(
                    &ae,
                    scorers,
                    f,
                    loader,
                    cfg.logging.val_images,
                    None,
                    &device,
                )?;
                tb.add_scalar("val/psnr", rep.mean.psnr as f32, step)?;
                tb.add_scalar("val/ssim", rep.mean.ssim as f32, step)?;
                tb.add_scalar("val/rec_loss", rep.mean.l1 as f32, step)?;
                tb.add_scalar("val/baseline_psnr", rep.mean.baseline_psnr as f32, step)?;
                tb.add_scalar("val/psnr_y", rep.mean.psnr_y as f32, step)?;
                tb.add_scalar("val/baseline_psnr_y", rep.mean.baseline_psnr_y as f32, step)?;
                if let Some(l) = rep.mean.lpips {
                    tb.add_scalar("val/lpips", l as f32, step)?;
                }
                if let Some(v) = rep.rfid {
                    tb.add_scalar("val/rfid", v as f32, step)?;
                }
                if let Some(c) = &rep.codes {
                    tb.add_scalar("val/codes_used", c.used as f32, step)?;
                    tb.add_scalar("val/perplexity", c.perplexity as f32, step)?;
                }
                progress::note(
                    &pb,
                    format!(
                        "step {step}: val PSNR {:.2} dB (baseline {:.2}; luma {:.2} vs {:.2}), SSIM {:.3}",
                        rep.mean.psnr,
                        rep.mean.baseline_psnr,
                        rep.mean.psnr_y,
                        rep.mean.baseline_psnr_y,
                        rep.mean.ssim
                    ),
                );
            }
        }
        if step % cfg.checkpoint.every == 0 || step == max {
            tb.flush()?;
            let base = CheckpointState {
                format_version: checkpoint::FORMAT_VERSION,
                kind: kind_of(&cfg.model).into(),
                step,
                data_position: position,
                seed: cfg.train.seed,
                lr: trainer.lr,
                config_hash: hash_text(&resolved),
                dataset_fingerprint: fingerprint.clone(),
                skipped_images: skipped_before + loader.skipped(),
                latent_stats: None,
                code_usage: None,
                restart_window: None,
                ..Default::default()
            };
            let state = trainer.checkpoint_state(base);
            let dir = writer.write(state, &resolved, trainer.checkpoint_files()?)?;
            trainer.latents.reset();
            trainer.code_usage.iter_mut().for_each(|c| *c = 0);
            last_ckpt = Some(dir);
        }
    }
    pb.finish_and_clear();
    tb.flush()?;
    let skipped = skipped_before + loader.skipped();
    if skipped > 0 {
        eprintln!("{skipped} unreadable image(s) were skipped (see warnings above)");
    }
    match last_ckpt {
        Some(dir) => eprintln!("done: step {} — checkpoint {}", trainer.step, dir.display()),
        None => eprintln!("nothing to do: already at step {} of {max}", trainer.step),
    }
    Ok(())
}

/// `--init-from`: replaces the fresh autoencoder's weights with a
/// checkpoint's. Its `[model]` must equal the run's, since the weights only
/// fit the architecture they were trained (or imported) for.
fn init_autoencoder<B: AutodiffBackend>(
    trainer: &mut AeTrainer<B>,
    path: &Path,
    config_name: &str,
) -> Result<()> {
    let (ae, ck_cfg, ck) = load_autoencoder::<B>(path, &trainer.device)?;
    if ck_cfg.model != trainer.cfg.model {
        let changed: Vec<String> = config::changed_keys(&ck_cfg.model, &trainer.cfg.model)?
            .into_iter()
            .map(|k| format!("model.{k}"))
            .collect();
        bail!(
            "{config_name}: [model] differs from --init-from checkpoint {} ({}); use that \
             checkpoint's [model] (its config.toml)",
            ck.dir.display(),
            changed.join(", ")
        );
    }
    // Fresh stable parameter ids, as after a restore: optimizer state keys on them.
    let logvar = trainer.gen.logvar.clone();
    trainer.gen = stable_ids(Generator { ae, logvar }, "generator");
    eprintln!(
        "autoencoder weights from {} (step {})",
        ck.dir.display(),
        ck.state.step
    );
    Ok(())
}
