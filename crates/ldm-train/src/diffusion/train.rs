//! `ldm-train diffusion`: the training loop around [`DiffusionTrainer`] —
//! the frozen autoencoder, the latent cache, batches of posterior samples,
//! logging, sample grids, checkpoints and exact resume.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use ldm_data::{
    caption_for_epoch, epoch_order, grid_rgb8, open_source, save_grid_png, DataPosition,
    ImageSource, SourceKind,
};
use ldm_models::{Autoencoder, DiagonalGaussian};

use crate::autoencoder::eval::load_autoencoder;
use crate::diffusion::cache::{default_dir, ensure_cache, CacheSpec, LatentSet};
use crate::diffusion::condition::{Conditions, TextFiles, TextSide};
use crate::diffusion::config::{load_run_config, ConditionKind, DiffusionRunConfig};
use crate::diffusion::load::{FIRST_STAGE_CONFIG, FIRST_STAGE_WEIGHTS};
use crate::diffusion::sample::{grid_ids, sample_images, Sampling};
use crate::diffusion::sampler::{SampleSpec, SamplerKind, SpacingName};
use crate::diffusion::trainer::{DiffusionTrainer, LatentBatch, KIND_DIFFUSION};
use crate::shared::checkpoint::{self, CheckpointState, CheckpointWriter};
use crate::shared::config;
use crate::shared::noise::{normal_tensor, uniform_unit, Stream};
use crate::shared::progress;
use crate::shared::run_dir::{RunArgs, RunDir};
use crate::shared::tensorboard::EventWriter;

/// The frozen first stage, its fingerprint and its files for the checkpoint copy.
pub(crate) struct FirstStage<B: Backend> {
    /// The autoencoder.
    pub(crate) ae: Autoencoder<B>,
    /// `kind:digest of its weights`: what a diffusion checkpoint records of it.
    pub(crate) fingerprint: String,
    /// Its weights and config, as a diffusion checkpoint carries them.
    pub(crate) files: Vec<(&'static str, Vec<u8>)>,
    /// Its downsampling factor.
    pub(crate) factor: usize,
}

/// Loads `autoencoder.checkpoint` of `cfg` and checks its latent fits the UNet.
pub(crate) fn first_stage<B: Backend>(
    cfg: &DiffusionRunConfig,
    device: &B::Device,
) -> Result<FirstStage<B>> {
    let path = &cfg.autoencoder.checkpoint;
    let (ae, ae_cfg, ck) = load_autoencoder::<B>(path, device)
        .map_err(|e| anyhow::anyhow!("autoencoder.checkpoint: {e:#}"))?;
    let weights_digest = ck
        .state
        .files
        .get("model.safetensors")
        .map(|d| d.fnv1a.clone())
        .unwrap_or_default();
    let fingerprint = format!("{}:{weights_digest}", ck.state.kind);
    let files = vec![
        (FIRST_STAGE_WEIGHTS, ck.file("model.safetensors")?.to_vec()),
        (FIRST_STAGE_CONFIG, ck.config_text.clone().into_bytes()),
    ];
    let embed = ae_cfg.model.embed_dim;
    let unet_in = cfg.model.unet.in_channels;
    if unet_in != embed {
        bail!(
            "model.unet.in_channels: {unet_in}, but the autoencoder's latent has {embed} channels ({})",
            ck.dir.display()
        );
    }
    if cfg.model.unet.out_channels != embed {
        bail!("model.unet.out_channels: must equal the latent's {embed} channels");
    }
    Ok(FirstStage {
        factor: ae_cfg.model.downsampling(),
        ae,
        fingerprint,
        files,
    })
}

/// The dataset and its class names.
fn open_data(cfg: &DiffusionRunConfig) -> Result<(Box<dyn ImageSource>, Vec<String>)> {
    let source = open_source(&cfg.data.root, SourceKind::Auto, cfg.data.split.as_deref())
        .map_err(|e| anyhow::anyhow!("data.root: {e}"))?;
    let classes = source.class_names().to_vec();
    let root = cfg.data.root.display();
    match cfg.conditioning.kind {
        ConditionKind::Class if classes.is_empty() => bail!(
            "data.root: {root} has no class labels (class conditioning needs class folders, an IDX dataset or a manifest)"
        ),
        ConditionKind::Text if source.is_empty() || source.captions(0).is_empty() => bail!(
            "data.root: {root} has no captions (text conditioning needs a caption file `name.txt` beside each image, or a metadata.jsonl)"
        ),
        _ => {}
    }
    Ok((source, classes))
}

/// Every item's captions (empty lists for data without captions).
fn captions_of(source: &dyn ImageSource) -> Vec<Vec<String>> {
    (0..source.len())
        .map(|i| source.captions(i).to_vec())
        .collect()
}

fn item_prints(source: &dyn ImageSource) -> Result<Vec<String>> {
    let pb = progress::bar(source.len() as u64, 0, "images checked");
    let out = (0..source.len())
        .map(|i| {
            pb.inc(1);
            source
                .item_fingerprint(i)
                .map(|v| format!("{v:016x}"))
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect();
    pb.finish_and_clear();
    out
}

/// What a run trains on: the cached latents, the class names, every item's
/// captions, and the dataset's fingerprint.
struct TrainingData {
    set: LatentSet,
    classes: Vec<String>,
    captions: Vec<Vec<String>>,
    fingerprint: String,
}

/// Encodes (or validates) the latent cache of a run.
fn build_cache<B: Backend>(
    cfg: &DiffusionRunConfig,
    run_root: &Path,
    stage: &FirstStage<B>,
    device: &B::Device,
) -> Result<TrainingData> {
    let size = cfg.data.size as usize;
    if size == 0 || !size.is_multiple_of(stage.factor) {
        bail!(
            "data.size: {size} must be a positive multiple of the autoencoder's f = {}",
            stage.factor
        );
    }
    let side = size / stage.factor;
    let uf = cfg.model.unet.factor();
    if !side.is_multiple_of(uf) {
        bail!(
            "data.size: {size} gives {side}² latents, which the UNet (channel_mult of {} levels) cannot halve {} times",
            cfg.model.unet.channel_mult.len(),
            uf.trailing_zeros()
        );
    }
    let (source, classes) = open_data(cfg)?;
    let prints = item_prints(source.as_ref())?;
    let dir = cfg
        .data
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_dir(run_root));
    let spec = CacheSpec {
        dir: &dir,
        autoencoder: stage.fingerprint.clone(),
        transform: cfg.data.transform(),
        flip: cfg.data.hflip,
        encode_batch: cfg.data.encode_batch,
    };
    let set = ensure_cache(&stage.ae, source.as_ref(), &prints, &spec, device)?;
    Ok(TrainingData {
        set,
        classes,
        captions: captions_of(source.as_ref()),
        fingerprint: source.fingerprint(),
    })
}

/// `ldm-train cache-latents`: encodes the dataset of a diffusion config once.
pub fn cache_only<B: Backend>(args: RunArgs, device: B::Device) -> Result<()> {
    let (cfg, _) = load_run_config(&args.config, &args.overrides)?;
    let root = args.root();
    let stage = first_stage::<B>(&cfg, &device)?;
    let t0 = Instant::now();
    let TrainingData { set, classes, .. } = build_cache(&cfg, &root, &stage, &device)?;
    eprintln!(
        "latent cache: {} items of {:?} ({} classes) ready in {:.1} s",
        set.len(),
        set.shape,
        classes.len(),
        t0.elapsed().as_secs_f64()
    );
    // What the trainer pays per batch for its data: drawing from the cache
    // and the posterior sample, without the UNet.
    let batch = cfg.train.batch_size;
    let mut batches = LatentBatches::new(&set, batch, cfg.train.seed, DataPosition::default())?;
    let vq = stage.ae.quantize.is_some();
    let t1 = Instant::now();
    let rounds = 50;
    for key in 0..rounds {
        let (items, moments) = batches.next();
        let z = latents_of::<B>(
            moments,
            items.len(),
            set.shape,
            vq,
            cfg.train.seed,
            key,
            &device,
        );
        let _ = z.into_data();
    }
    let per_sec = (rounds as usize * batch) as f64 / t1.elapsed().as_secs_f64();
    eprintln!("reading: {per_sec:.0} latents/s in batches of {batch} (posterior sample included)");
    Ok(())
}

/// Draws micro-batches from the cached latents in a resumable order.
struct LatentBatches<'a> {
    set: &'a LatentSet,
    batch: usize,
    seed: u64,
    position: DataPosition,
    order: Vec<usize>,
}

impl<'a> LatentBatches<'a> {
    fn new(set: &'a LatentSet, batch: usize, seed: u64, position: DataPosition) -> Result<Self> {
        if set.len() < batch {
            bail!(
                "train.batch_size: {batch} is larger than the {} cached items",
                set.len()
            );
        }
        let order = epoch_order(set.len(), true, seed, position.epoch);
        Ok(Self {
            set,
            batch,
            seed,
            position,
            order,
        })
    }

    /// Item indices, flips and the moments of the next batch.
    fn next(&mut self) -> (Vec<usize>, Vec<f32>) {
        if self.position.cursor as usize + self.batch > self.order.len() {
            // drop_last: every batch is full, so batches never straddle epochs.
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                cursor: 0,
            };
            self.order = epoch_order(self.set.len(), true, self.seed, self.position.epoch);
        }
        let start = self.position.cursor as usize;
        let mut values = Vec::new();
        let mut items = Vec::with_capacity(self.batch);
        for k in start..start + self.batch {
            let i = self.order[k];
            let key = self.position.epoch << 32 | k as u64;
            let flip = self.set.moments_flip.is_some()
                && uniform_unit(self.seed, Stream::LatentFlip, key, 0) < 0.5;
            values.extend_from_slice(self.set.item(i, flip));
            items.push(i);
        }
        self.position.cursor += self.batch as u64;
        (items, values)
    }
}

/// z from cached moments: a fresh posterior sample (KL) each time, or the
/// VQ pre-quantization latent, not yet scaled.
fn latents_of<B: Backend>(
    moments: Vec<f32>,
    n: usize,
    shape: [usize; 3],
    vq: bool,
    seed: u64,
    key: u64,
    device: &B::Device,
) -> Tensor<B, 4> {
    let m = Tensor::<B, 4>::from_data(
        TensorData::new(moments, [n, shape[0], shape[1], shape[2]]),
        device,
    );
    if vq {
        return m;
    }
    let post = DiagonalGaussian::from_moments(m);
    let noise = normal_tensor::<B, 4>(seed, Stream::LatentSample, key, post.mean.dims(), device);
    post.sample(noise)
}

/// The conditions of the training-time sample grids, one per row: the
/// first 10 classes, or `logging.sample_prompts` (default: the first four
/// distinct captions of the data); None when unconditional.
fn grid_conditions(
    model_classes: usize,
    cfg: &DiffusionRunConfig,
    captions: &[Vec<String>],
) -> Option<Conditions> {
    match cfg.conditioning.kind {
        ConditionKind::None => None,
        ConditionKind::Class => Some(Conditions::Classes((0..model_classes.min(10)).collect())),
        ConditionKind::Text => {
            let mut prompts = cfg.logging.sample_prompts.clone();
            if prompts.is_empty() {
                for c in captions.iter().filter_map(|c| c.first()) {
                    if prompts.len() == 4 {
                        break;
                    }
                    if !prompts.contains(c) {
                        prompts.push(c.clone());
                    }
                }
            }
            Some(Conditions::Prompts(prompts))
        }
    }
}

/// Samples a grid with the current sampling weights: a row per condition
/// of [`grid_conditions`] (one row unconditional), `logging.sample_n`
/// columns, fixed seed.
pub fn sample_grid<B: Backend>(
    parts: &Sampling<'_, B>,
    rows: Option<&Conditions>,
    device: &B::Device,
) -> Result<(Vec<f32>, usize, usize, usize)> {
    let cfg = parts.cfg;
    let per = cfg.logging.sample_n;
    let conds = rows.map(|r| r.repeat_each(per));
    let ids = grid_ids(rows.map_or(1, Conditions::len), per);
    let spec = SampleSpec {
        sampler: SamplerKind::Ddim,
        steps: cfg.logging.sample_steps,
        eta: 0.0,
        guidance: if parts.model.is_conditional() {
            cfg.logging.sample_guidance
        } else {
            1.0
        },
        spacing: SpacingName::Uniform,
        negative_prompt: String::new(),
    };
    let (mut v, mut hw) = (Vec::new(), (0, 0));
    // One batch: the grid is small.
    sample_images(
        parts,
        &spec,
        conds.as_ref(),
        &ids,
        cfg.train.seed,
        ids.len(),
        device,
        |_, chw, size| {
            v.extend_from_slice(chw);
            hw = size;
            Ok(())
        },
    )?;
    Ok((v, ids.len(), hw.0, hw.1))
}

/// `--init-from`: checks that checkpoint `ck` fits the run (same UNet and
/// conditioner, same first stage, same classes) and moves its weights into
/// `trainer`.
/// Returns the scale factor its latents were trained with.
fn init_from_checkpoint<B: AutodiffBackend>(
    trainer: &mut DiffusionTrainer<B>,
    ck: &checkpoint::LoadedCheckpoint,
    config_name: &str,
    stage_fingerprint: &str,
    classes: &[String],
) -> Result<Option<f64>> {
    let ck_cfg: DiffusionRunConfig = config::of_checkpoint(ck)?;
    let cfg = &trainer.cfg;
    // What shapes the weights must agree: the UNet, how the condition
    // reaches it, and the conditioner (its files come from the checkpoint,
    // as on resume). The schedule, loss and its weighting may change: a
    // fine-tune may move to v-prediction or min-SNR weighting.
    let shape_of = |c: &DiffusionRunConfig| {
        let mut c = c.conditioning.clone();
        c.dropout = 0.0;
        c.tokenizer_file.clear();
        c.encoder_dir.clear();
        c.encoder = Some(c.text_encoder());
        c.tokenizer = Some(c.tokenizer_kind());
        c
    };
    let net_of = |c: &DiffusionRunConfig| (c.model.unet.clone(), c.model.conditioning_key);
    if net_of(&ck_cfg) != net_of(cfg) || shape_of(&ck_cfg) != shape_of(cfg) {
        let mut changed: Vec<String> = config::changed_keys(&ck_cfg.model.unet, &cfg.model.unet)?
            .into_iter()
            .map(|k| format!("model.unet.{k}"))
            .collect();
        if ck_cfg.model.conditioning_key != cfg.model.conditioning_key {
            changed.push("model.conditioning_key".into());
        }
        changed.extend(
            config::changed_keys(&shape_of(&ck_cfg), &shape_of(cfg))?
                .into_iter()
                .map(|k| format!("conditioning.{k}")),
        );
        bail!(
            "{config_name}: differs from --init-from checkpoint {} ({}); start from that \
             checkpoint's config.toml",
            ck.dir.display(),
            changed.join(", ")
        );
    }
    if ck.state.autoencoder_fingerprint.as_deref() != Some(stage_fingerprint) {
        bail!(
            "autoencoder.checkpoint: not the autoencoder --init-from checkpoint {} was trained on (its latents would differ)",
            ck.dir.display()
        );
    }
    if ck.state.class_names.clone().unwrap_or_default() != classes {
        bail!(
            "data.root: its classes differ from those of --init-from checkpoint {}",
            ck.dir.display()
        );
    }
    let from = trainer.init_from(ck, ck_cfg.ema.enabled)?;
    eprintln!(
        "weights from {}/{from} (step {}); optimizer and EMA start fresh",
        ck.dir.display(),
        ck.state.step
    );
    Ok(ck.state.scale_factor)
}

/// Trains a diffusion model on backend `B` as the args say; `init_from`
/// starts a fresh run from a checkpoint's weights.
pub fn run<B: AutodiffBackend>(
    args: RunArgs,
    init_from: Option<&Path>,
    device: B::Device,
) -> Result<()> {
    if args.resume.is_some() && init_from.is_some() {
        bail!("--init-from starts a fresh run; it cannot be combined with --resume");
    }
    let (cfg, src) = load_run_config(&args.config, &args.overrides)?;
    let resolved = toml::to_string(&cfg).context("cannot serialize the resolved config")?;
    let root = args.root();
    let run = RunDir::create(&root)?;
    let stage = first_stage::<B::InnerBackend>(&cfg, &device)?;
    let TrainingData {
        set,
        classes,
        captions,
        fingerprint: data_fp,
    } = build_cache(&cfg, &root, &stage, &device)?;
    let vq = stage.ae.quantize.is_some();
    let n_classes = match cfg.conditioning.kind {
        ConditionKind::Class => classes.len(),
        _ => 0,
    };
    let is_text = cfg.conditioning.kind == ConditionKind::Text;
    // A resume reads the tokenizer (and frozen encoder) the checkpoint
    // carries, so the tokens mean what they meant when it was trained.
    let resume_dir = match &args.resume {
        Some(path) => Some(checkpoint::resolve(
            &path.clone().unwrap_or_else(|| run.checkpoints()),
        )?),
        None => None,
    };
    let init = match init_from {
        Some(path) => Some(checkpoint::load(path, &[KIND_DIFFUSION])?),
        None => None,
    };
    // So does `--init-from`: the weights were trained on its tokens.
    let carried = resume_dir
        .clone()
        .or(init.as_ref().map(|ck| ck.dir.clone()));
    let text_files = match (is_text, &carried) {
        (false, _) => None,
        (true, None) => Some(TextFiles::configured(&cfg.conditioning)?),
        (true, Some(dir)) => Some(TextFiles::in_checkpoint(dir, &cfg.conditioning)),
    };
    let text = match &text_files {
        Some(f) => Some(TextSide::<B::InnerBackend>::open(
            &cfg.conditioning,
            f,
            &device,
        )?),
        None => None,
    };
    if let (Some(t), Some(ctx)) = (&text, cfg.model.unet.context_dim) {
        if let Some(w) = t.frozen_width().filter(|&w| w != ctx) {
            bail!("model.unet.context_dim: {ctx}, but the frozen text encoder's hidden states are {w} wide");
        }
    }
    let text_copies = match &text_files {
        Some(f) => f.checkpoint_copies(&cfg.conditioning)?,
        None => Vec::new(),
    };
    let grid_rows = grid_conditions(n_classes, &cfg, &captions);
    let mut trainer = DiffusionTrainer::<B>::new(cfg.clone(), n_classes, text, device.clone());
    let mut scale_factor = cfg.model.scale_factor;
    let mut position = DataPosition::default();
    // scale_by_std measures the first batch of a run from scratch only.
    let fresh = args.resume.is_none() && init_from.is_none();
    match &resume_dir {
        Some(path) => {
            let ck = checkpoint::load(path, &[KIND_DIFFUSION])?;
            let ck_cfg: DiffusionRunConfig = config::of_checkpoint(&ck)?;
            if ck_cfg.model != cfg.model || ck_cfg.conditioning != cfg.conditioning {
                bail!(
                    "{}: [model]/[conditioning] differ from checkpoint {} — a resume must keep the model",
                    src.name,
                    ck.dir.display()
                );
            }
            if ck.state.autoencoder_fingerprint.as_deref() != Some(stage.fingerprint.as_str()) {
                bail!(
                    "autoencoder.checkpoint: not the autoencoder checkpoint {} was trained on (its latents would differ)",
                    ck.dir.display()
                );
            }
            if ck.state.class_names.clone().unwrap_or_default()
                != classes[..n_classes.min(classes.len())]
            {
                bail!(
                    "data.root: its classes differ from those of checkpoint {}",
                    ck.dir.display()
                );
            }
            let harmless = [
                "train.max_steps",
                "checkpoint.",
                "logging.",
                "data.cache_dir",
                "data.encode_batch",
            ];
            config::warn_changed(&ck_cfg, &cfg, &harmless)?;
            trainer.restore(&ck)?;
            scale_factor = ck.state.scale_factor.unwrap_or(scale_factor);
            position = ck.state.data_position;
            run.truncate_metrics_after(trainer.step)?;
            eprintln!("resumed from {} at step {}", ck.dir.display(), trainer.step);
        }
        None => {
            run.ensure_fresh()?;
            run.truncate_metrics_after(0)?;
            if let Some(ck) = &init {
                let named = &classes[..n_classes.min(classes.len())];
                if let Some(s) =
                    init_from_checkpoint(&mut trainer, ck, &src.name, &stage.fingerprint, named)?
                {
                    scale_factor = s;
                }
            }
        }
    }
    run.write_config(&resolved)?;
    let writer = CheckpointWriter::new(
        &run.checkpoints(),
        cfg.checkpoint.keep_last,
        cfg.checkpoint.keep_every,
    )?;
    if args.resume.is_some() {
        writer.rewind_to(trainer.step)?;
    }
    let mut tb = EventWriter::create(&run.tensorboard())?;
    let mut batches = LatentBatches::new(&set, cfg.train.batch_size, cfg.train.seed, position)?;
    let max = cfg.train.max_steps;
    let accum = cfg.train.accumulate_grad_batches;
    eprintln!(
        "training {} → {} ({} latents {:?}, {} classes, lr {:.3e}, {} steps)",
        src.name,
        root.display(),
        set.len(),
        set.shape,
        n_classes,
        cfg.train.learning_rate(),
        max
    );
    let latent_shape = [cfg.model.unet.out_channels, set.shape[1], set.shape[2]];
    let pb = progress::bar(max, trainer.step, "steps");
    while trainer.step < max {
        let t0 = Instant::now();
        let step_next = trainer.step + 1;
        let logging = step_next.is_multiple_of(cfg.logging.every) || step_next == max;
        let mut out = None;
        let mut data_time = 0.0;
        for _ in 0..accum {
            let key = trainer.step * accum as u64 + trainer.micro as u64;
            let td = Instant::now();
            let (items, moments) = batches.next();
            data_time += td.elapsed().as_secs_f64();
            let n = items.len();
            let z = latents_of::<B::InnerBackend>(
                moments,
                n,
                set.shape,
                vq,
                cfg.train.seed,
                key,
                &device,
            );
            if fresh && key == 0 && cfg.model.scale_by_std {
                let flat: Tensor<B::InnerBackend, 1> = z.clone().flatten(0, 3);
                let var: f64 = flat.var(0).into_scalar().elem::<f64>();
                scale_factor = 1.0 / var.sqrt();
                progress::note(
                    &pb,
                    format!(
                        "scale_by_std: scale_factor = {scale_factor:.6} (1/std of the first batch)"
                    ),
                );
            }
            let conds = match cfg.conditioning.kind {
                ConditionKind::None => None,
                ConditionKind::Class => Some(Conditions::Classes(
                    items.iter().map(|&i| set.labels[i]).collect(),
                )),
                // One of an image's captions per epoch, the same on every
                // run and resume.
                ConditionKind::Text => Some(Conditions::Prompts(
                    items
                        .iter()
                        .map(|&i| {
                            caption_for_epoch(
                                &captions[i],
                                cfg.train.seed,
                                batches.position.epoch,
                                i,
                            )
                            .unwrap_or_default()
                            .to_string()
                        })
                        .collect(),
                )),
            };
            let batch = LatentBatch {
                z0: Tensor::from_inner(z * scale_factor),
                conds,
            };
            out = trainer.train_micro(batch, logging)?;
        }
        let (scalars, by_t) =
            out.context("an optimizer step completes after accumulate_grad_batches micro-batches")?;
        let dt = t0.elapsed().as_secs_f64();
        position = batches.position;
        let step = trainer.step;
        let loss = scalars.first().map(|s| s.1).unwrap_or(f64::NAN);
        pb.set_message(format!("loss {loss:.4}"));
        pb.inc(1);
        if logging {
            let mut all: Vec<(String, f64)> = scalars;
            all.push(("scale_factor".into(), scale_factor));
            if let Some(e) = &trainer.ema {
                all.push((
                    "ema_decay".into(),
                    crate::shared::ema::ema_decay(e.cap, e.updates),
                ));
            }
            let nb = cfg.logging.loss_buckets.max(1);
            let t_max = trainer.schedule.len();
            let mut sums = vec![(0.0, 0usize); nb];
            for (t, l) in &by_t {
                let b = (t * nb / t_max).min(nb - 1);
                sums[b].0 += l;
                sums[b].1 += 1;
            }
            for (b, (s, c)) in sums.iter().enumerate() {
                if *c > 0 {
                    all.push((format!("loss_t{:03}", b * t_max / nb), s / *c as f64));
                }
            }
            for (k, v) in &all {
                tb.add_scalar(&format!("train/{k}"), *v as f32, step)?;
            }
            let samples = (cfg.train.batch_size * accum) as f64;
            tb.add_scalar("perf/samples_per_sec", (samples / dt) as f32, step)?;
            tb.add_scalar("perf/step_time", dt as f32, step)?;
            // Reading the cache is host work beside the step: its share
            // shows whether the data keeps the trainer fed.
            tb.add_scalar("perf/data_time", data_time as f32, step)?;
            run.append_metrics(step, &all)?;
        }
        if cfg.logging.sample_every > 0
            && (step.is_multiple_of(cfg.logging.sample_every) || step == max)
        {
            let model = trainer.sampling_model();
            let parts = Sampling {
                model: &model,
                text: trainer.text.as_ref(),
                ae: &stage.ae,
                cfg: &cfg,
                scale_factor,
                latent_shape,
            };
            let (tiles, n, h, w) = sample_grid(&parts, grid_rows.as_ref(), &device)?;
            let cols = cfg.logging.sample_n;
            let (rgb, gw, gh) = grid_rgb8(&tiles, n, h, w, cols);
            tb.add_image_rgb("samples/ema", &rgb, gw, gh, step)?;
            save_grid_png(
                &run.samples().join(format!("samples-{step:08}.png")),
                &tiles,
                n,
                h,
                w,
                cols,
            )?;
        }
        if step.is_multiple_of(cfg.checkpoint.every) || step == max {
            tb.flush()?;
            let state = CheckpointState {
                format_version: checkpoint::FORMAT_VERSION,
                kind: KIND_DIFFUSION.into(),
                step,
                data_position: position,
                seed: cfg.train.seed,
                lr: trainer.lr_at(step),
                config_hash: checkpoint::FileDigest::of(resolved.as_bytes()).fnv1a,
                dataset_fingerprint: data_fp.clone(),
                scale_factor: Some(scale_factor),
                ema_updates: trainer.ema.as_ref().map(|e| e.updates),
                autoencoder_fingerprint: Some(stage.fingerprint.clone()),
                class_names: (n_classes > 0).then(|| classes.clone()),
                ..Default::default()
            };
            let mut files = trainer.checkpoint_files()?;
            files.extend(stage.files.iter().map(|(k, v)| (*k, v.clone())));
            files.extend(text_copies.iter().map(|(k, v)| (*k, v.clone())));
            writer.write(state, &resolved, files)?;
        }
    }
    pb.finish_and_clear();
    tb.flush()?;
    eprintln!(
        "done: {} steps, checkpoints in {}",
        trainer.step,
        run.checkpoints().display()
    );
    Ok(())
}
