//! One optimization step of the diffusion model on cached latents, and the
//! trainer state a checkpoint saves and restores exactly.

use std::collections::HashMap;

use anyhow::{bail, Result};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use ldm_diffusion::parameterization::noising;
use ldm_diffusion::weighting::min_snr_gamma;
use ldm_diffusion::{NoiseSchedule, Parameterization};

use crate::diffusion::condition::{cond_from_inner, encode_conditions, Conditions, TextSide};
use crate::diffusion::config::{DiffusionRunConfig, LossType};
use crate::diffusion::model::LatentDiffusion;
use crate::shared::checkpoint::LoadedCheckpoint;
use crate::shared::ema::Ema;
use crate::shared::noise::{mix, normal_tensor, uniform_index, uniform_unit, Stream};
use crate::shared::param_ids::stable_ids;
use crate::shared::weights;

/// Checkpoint kind of a diffusion model.
pub const KIND_DIFFUSION: &str = "diffusion";

/// Key prefix of the trained weights in `model.safetensors`/`ema.safetensors`.
pub const NO_PREFIX: &str = "";

type Adaptor<B> = OptimizerAdaptor<AdamW, LatentDiffusion<B>, B>;

/// Scalars of one step, by TensorBoard tag suffix (`train/<name>`).
pub type StepScalars = Vec<(String, f64)>;

/// What a completed optimizer step reports: its scalars and the (timestep,
/// loss) of every sample it saw, for the loss-by-timestep scalars.
pub type StepReport = (StepScalars, Vec<(usize, f64)>);

/// A micro-batch of clean latents (already scaled) and their conditions.
pub struct LatentBatch<B: Backend> {
    /// `[B, C, h, w]`, `scale_factor` applied.
    pub z0: Tensor<B, 4>,
    /// Class or caption of each sample (conditional models).
    pub conds: Option<Conditions>,
}

/// Everything that evolves while training the diffusion model.
pub struct DiffusionTrainer<B: AutodiffBackend> {
    /// The run configuration.
    pub cfg: DiffusionRunConfig,
    /// Device of all tensors.
    pub device: B::Device,
    /// UNet + conditioner.
    pub model: LatentDiffusion<B>,
    /// Their moving average (None when `ema.enabled = false`).
    pub ema: Option<Ema<B, LatentDiffusion<B>>>,
    opt: Adaptor<B>,
    accum: GradientsAccumulator<LatentDiffusion<B>>,
    /// The noise schedule.
    pub schedule: NoiseSchedule,
    /// Optimizer steps completed.
    pub step: u64,
    /// Micro-batches of the current step already accumulated.
    pub micro: usize,
    /// Classes of the training data (0 = unconditional).
    pub num_classes: usize,
    /// Tokenizer and frozen encoder of a text model.
    pub text: Option<TextSide<B::InnerBackend>>,
    /// (timestep, loss) of the current step's micro-batches so far.
    pending: Vec<(usize, f64)>,
}

fn adamw(cfg: &DiffusionRunConfig) -> AdamWConfig {
    let o = &cfg.optimizer;
    AdamWConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(o.weight_decay as f32)
}

fn record_bytes<B: AutodiffBackend, R: burn::record::Record<B>>(record: R) -> Result<Vec<u8>> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| anyhow::anyhow!("cannot serialize optimizer state: {e}"))
}

/// Sum of squared gradient entries over the model's parameters.
struct GradSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.total.push(g.powi_scalar(2).sum());
        }
    }
}

/// Global L2 norm of `grads` over `model`'s parameters.
pub fn grad_norm<B: AutodiffBackend, M: Module<B>>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = GradSquares::<B> {
        grads,
        total: Vec::new(),
    };
    model.visit(&mut v);
    if v.total.is_empty() {
        return 0.0;
    }
    let sum: f64 = Tensor::cat(v.total, 0).sum().into_scalar().elem::<f64>();
    sum.sqrt()
}

/// A `[B, 1, 1, 1]` tensor of per-sample coefficients.
fn per_sample<B: Backend>(values: &[f64], device: &B::Device) -> Tensor<B, 4> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [values.len(), 1, 1, 1]), device)
}

impl<B: AutodiffBackend> DiffusionTrainer<B> {
    /// A fresh trainer: weights from `train.seed`, step 0; `text` for a
    /// text model (its tokenizer sizes the text transformer).
    pub fn new(
        cfg: DiffusionRunConfig,
        num_classes: usize,
        text: Option<TextSide<B::InnerBackend>>,
        device: B::Device,
    ) -> Self {
        B::seed(&device, mix(&[cfg.train.seed, Stream::Init as u64]));
        let vocab = text.as_ref().map_or(0, |t| t.tokenizer.vocab_size());
        let model = stable_ids(
            LatentDiffusion::new(&cfg, num_classes, vocab, &device),
            "diffusion",
        );
        let ema = cfg.ema.enabled.then(|| Ema::new(&model, cfg.ema.decay));
        Self {
            schedule: cfg.model.schedule(),
            opt: adamw(&cfg).init(),
            accum: GradientsAccumulator::new(),
            ema,
            model,
            cfg,
            device,
            step: 0,
            micro: 0,
            num_classes,
            text,
            pending: Vec::new(),
        }
    }

    /// The learning rate of optimizer step `step` (warm-up included).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.cfg.train.learning_rate() * self.cfg.train.lr_factor(step)
    }

    /// Restores weights, EMA, optimizer state and step from a checkpoint.
    pub fn restore(&mut self, ck: &LoadedCheckpoint) -> Result<()> {
        let dir = ck.dir.display().to_string();
        let model =
            weights::load_checkpoint_file(self.model.clone(), ck, "model.safetensors", NO_PREFIX)?;
        self.model = stable_ids(model, "diffusion");
        if let Some(ema) = &mut self.ema {
            ema.shadow = weights::load_checkpoint_file(
                ema.shadow.clone(),
                ck,
                "ema.safetensors",
                NO_PREFIX,
            )?;
            ema.updates = ck.state.ema_updates.unwrap_or(0);
        }
        let rec = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let o = rec
            .load(ck.file("optimizer.mpk")?.to_vec(), &self.device)
            .map_err(|e| anyhow::anyhow!("{dir}/optimizer.mpk: {e}"))?;
        self.opt = self.opt.clone().load_record(o);
        self.step = ck.state.step;
        self.micro = 0;
        self.pending.clear();
        Ok(())
    }

    /// `--init-from`: a fresh run (step 0, new optimizer) starting from the
    /// weights of checkpoint `ck` — its EMA when `ema` (the run kept one: the
    /// weights its samples show; a Stable Diffusion release is EMA weights) —
    /// with the EMA restarted at them. Returns the file the weights came from.
    pub fn init_from(&mut self, ck: &LoadedCheckpoint, ema: bool) -> Result<&'static str> {
        let name = if ema {
            "ema.safetensors"
        } else {
            "model.safetensors"
        };
        let model = weights::load_checkpoint_file(self.model.clone(), ck, name, NO_PREFIX)?;
        self.model = stable_ids(model, "diffusion");
        self.ema = self
            .cfg
            .ema
            .enabled
            .then(|| Ema::new(&self.model, self.cfg.ema.decay));
        Ok(name)
    }

    /// The files of a checkpoint of the current state (between steps).
    pub fn checkpoint_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let meta = HashMap::from([("format".to_string(), "ldm-train".to_string())]);
        let mut files = vec![(
            "model.safetensors",
            weights::to_safetensors(&weights::collect(&self.model, NO_PREFIX)?, meta.clone())?,
        )];
        if let Some(ema) = &self.ema {
            files.push((
                "ema.safetensors",
                weights::to_safetensors(&weights::collect(&ema.shadow, NO_PREFIX)?, meta)?,
            ));
        }
        files.push(("optimizer.mpk", record_bytes::<B, _>(self.opt.to_record())?));
        Ok(files)
    }

    /// Micro-batches consumed so far: the counter every noise key uses.
    fn micro_index(&self) -> u64 {
        self.step * self.cfg.train.accumulate_grad_batches as u64 + self.micro as u64
    }

    /// One micro-batch: noise, predict, loss, backward, accumulate; the
    /// optimizer steps after `accumulate_grad_batches` of them, and the EMA
    /// follows every micro-batch. Returns the step's scalars (and the
    /// per-sample timesteps and losses, for loss-by-timestep logging) once an
    /// optimizer step completed, `None` in between.
    pub fn train_micro(
        &mut self,
        batch: LatentBatch<B>,
        want_grad_norm: bool,
    ) -> Result<Option<StepReport>> {
        let cfg = &self.cfg;
        let seed = cfg.train.seed;
        let k = self.micro_index();
        let dev = self.device.clone();
        B::seed(&dev, mix(&[seed, Stream::Backend as u64, k]));
        let [n, c, h, w] = batch.z0.dims();
        let big_t = self.schedule.len() as u64;
        let t: Vec<usize> = (0..n as u64)
            .map(|i| uniform_index(seed, Stream::Timestep, k, i, big_t) as usize)
            .collect();
        let abar: Vec<f64> = t.iter().map(|&t| self.schedule.alphas_cumprod[t]).collect();
        let mut eps = normal_tensor::<B, 4>(seed, Stream::DiffusionNoise, k, [n, c, h, w], &dev);
        if cfg.model.offset_noise > 0.0 {
            // A per-(sample, channel) shift lets the model change an image's
            // mean brightness, which plain ε nearly never asks of it.
            let off = normal_tensor::<B, 4>(
                seed,
                Stream::DiffusionNoise,
                k ^ (1 << 63),
                [n, c, 1, 1],
                &dev,
            );
            eps = eps + off * cfg.model.offset_noise;
        }
        let (ca, cb): (Vec<f64>, Vec<f64>) = abar.iter().map(|&a| noising(a)).unzip();
        let x_t = batch.z0.clone() * per_sample::<B>(&ca, &dev)
            + eps.clone() * per_sample::<B>(&cb, &dev);
        // Condition dropout: the null class, or the empty prompt, so the
        // same model learns the unconditional prediction guidance needs.
        let dropped = |i: usize| {
            uniform_unit(seed, Stream::CondDropout, k, i as u64) < cfg.conditioning.dropout
        };
        let conds = batch.conds.map(|c| match c {
            Conditions::Classes(l) => Conditions::Classes(
                l.iter()
                    .enumerate()
                    .map(|(i, &l)| {
                        if dropped(i) {
                            self.model.null_class()
                        } else {
                            l
                        }
                    })
                    .collect(),
            ),
            Conditions::Prompts(p) => Conditions::Prompts(
                p.into_iter()
                    .enumerate()
                    .map(|(i, p)| if dropped(i) { String::new() } else { p })
                    .collect(),
            ),
        });
        let cond = match &conds {
            Some(c) => Some(cond_from_inner::<B>(encode_conditions(
                c,
                self.text.as_ref(),
                &dev,
            )?)),
            None => None,
        };
        let tf: Vec<f64> = t.iter().map(|&t| t as f64).collect();
        let pred = self.model.forward(x_t, &tf, cond);
        let p: Parameterization = cfg.model.parameterization.into();
        let (tx, te): (Vec<f64>, Vec<f64>) = abar.iter().map(|&a| p.target(a)).unzip();
        let target = batch.z0 * per_sample::<B>(&tx, &dev) + eps * per_sample::<B>(&te, &dev);
        let diff = pred - target.detach();
        let per_elem = match cfg.model.loss_type {
            LossType::L2 => diff.powi_scalar(2),
            LossType::L1 => diff.abs(),
        };
        let per_sample_loss: Tensor<B, 1> =
            per_elem.reshape([n, c * h * w]).mean_dim(1).reshape([n]);
        let weights: Vec<f64> = match cfg.model.min_snr_gamma {
            Some(g) => t
                .iter()
                .map(|&t| min_snr_gamma(self.schedule.snr(t), g, p))
                .collect(),
            None => vec![1.0; n],
        };
        let wt = per_sample::<B>(&weights, &dev).reshape([n]);
        let accum = cfg.train.accumulate_grad_batches;
        let loss = (per_sample_loss.clone() * wt).mean() / accum as f64;
        let values: Vec<f64> = per_sample_loss
            .clone()
            .inner()
            .into_data()
            .iter::<f64>()
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            bail!(
                "non-finite loss at step {} (micro-batch {}); lower train.base_lr or check the latents — the last checkpoint is untouched",
                self.step + 1,
                self.micro
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.accum.accumulate(&self.model, grads);
        self.micro += 1;
        if let Some(ema) = &mut self.ema {
            // The reference updates the EMA after every training batch.
            ema.update(&self.model);
        }
        self.pending
            .extend(t.iter().copied().zip(values.iter().copied()));
        if self.micro < accum {
            return Ok(None);
        }
        let grads = self.accum.grads();
        let gnorm = want_grad_norm.then(|| grad_norm(&self.model, &grads));
        let lr = self.lr_at(self.step);
        self.model = self.opt.step(lr, self.model.clone(), grads);
        self.step += 1;
        self.micro = 0;
        let by_t = std::mem::take(&mut self.pending);
        let mean = by_t.iter().map(|(_, l)| l).sum::<f64>() / by_t.len() as f64;
        let mut scalars: StepScalars = vec![("loss".into(), mean), ("lr".into(), lr)];
        if let Some(g) = gnorm {
            scalars.push(("grad_norm".into(), g));
        }
        Ok(Some((scalars, by_t)))
    }

    /// The weights samples are drawn with: the EMA when kept, else the model.
    pub fn sampling_model(&self) -> LatentDiffusion<B::InnerBackend> {
        match &self.ema {
            Some(e) => e.shadow.clone(),
            None => self.model.valid(),
        }
    }
}
