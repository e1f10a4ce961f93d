//! One optimization step of the autoencoder (G then D on the same batch), and
//! the trainer state that a checkpoint saves and restores exactly.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use ldm_models::discriminator::DiscriminatorConfig;
use ldm_models::quantizer::usage_stats;
use ldm_models::{Autoencoder, DiagonalGaussian, Lpips, NLayerDiscriminator, Regularizer};

use crate::autoencoder::config::AutoencoderRunConfig;
use crate::autoencoder::gan_weight::{adaptive_weight, conv_weight_grad_norm};
use crate::autoencoder::latent_stats::LatentAccumulator;
use crate::autoencoder::loss::{adopt_weight, disc_loss, nll, Reduction};
use crate::shared::assets;
use crate::shared::checkpoint::{CheckpointState, LoadedCheckpoint};
use crate::shared::noise::{mix, normal_tensor, Stream};
use crate::shared::param_ids::stable_ids;
use crate::shared::weights;

/// Checkpoint kind of a KL autoencoder.
pub const KIND_KL: &str = "autoencoder-kl";
/// Checkpoint kind of a VQ autoencoder.
pub const KIND_VQ: &str = "autoencoder-vq";
/// Every autoencoder checkpoint kind (what `eval autoencoder` accepts).
pub const AUTOENCODER_KINDS: [&str; 2] = [KIND_KL, KIND_VQ];

/// The checkpoint kind of a model config.
pub fn kind_of(model: &ldm_models::AutoencoderConfig) -> &'static str {
    match model.regularizer {
        Regularizer::Kl => KIND_KL,
        Regularizer::Vq => KIND_VQ,
    }
}

/// What the generator optimizer updates: the autoencoder and the output
/// log-variance (frozen unless `loss.learn_logvar`).
#[derive(Module, Debug)]
pub struct Generator<B: burn::tensor::backend::Backend> {
    /// The autoencoder.
    pub ae: Autoencoder<B>,
    /// Scalar log-variance of the Laplace-like NLL.
    pub logvar: Param<Tensor<B, 1>>,
}

type Adaptor<M, B> = OptimizerAdaptor<Adam, M, B>;

/// Scalars of one step, by TensorBoard tag suffix (`train/<name>`).
pub type StepScalars = Vec<(&'static str, f64)>;

/// Result of one step.
pub struct StepOutput<B: AutodiffBackend> {
    /// Logged values.
    pub scalars: StepScalars,
    /// The batch's reconstruction (for image logging).
    pub recon: Tensor<B::InnerBackend, 4>,
}

/// Everything that evolves during autoencoder training.
pub struct AeTrainer<B: AutodiffBackend> {
    /// The run configuration.
    pub cfg: AutoencoderRunConfig,
    /// Device of all tensors.
    pub device: B::Device,
    /// Autoencoder + log-variance.
    pub gen: Generator<B>,
    /// PatchGAN discriminator.
    pub disc: NLayerDiscriminator<B>,
    /// Frozen perceptual network (None when `perceptual_weight = 0`).
    pub lpips: Option<Lpips<B>>,
    opt_g: Adaptor<Generator<B>, B>,
    opt_d: Adaptor<NLayerDiscriminator<B>, B>,
    /// Steps completed.
    pub step: u64,
    /// Learning rate of both optimizers.
    pub lr: f64,
    /// Latent statistics since the last checkpoint.
    pub latents: LatentAccumulator<B::InnerBackend>,
    /// VQ: how often each code was chosen since the last checkpoint.
    pub code_usage: Vec<u64>,
    /// VQ: code counts since the last dead-code check.
    pub restart_window: Vec<u64>,
}

/// Adam with the config's betas and PyTorch's eps (burn's default eps differs).
fn adam(cfg: &AutoencoderRunConfig) -> AdamConfig {
    let o = &cfg.optimizer;
    let wd = (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32));
    AdamConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(wd)
}

fn disc_config(cfg: &AutoencoderRunConfig) -> DiscriminatorConfig {
    DiscriminatorConfig {
        in_channels: cfg.loss.disc_in_channels,
        ndf: cfg.loss.disc_ndf,
        n_layers: cfg.loss.disc_num_layers,
        norm: cfg.loss.disc_norm,
    }
}

/// Codebook size of a VQ config, 0 for KL (sizes the usage histograms).
fn ae_codes(cfg: &AutoencoderRunConfig) -> usize {
    match cfg.model.regularizer {
        Regularizer::Vq => cfg.model.n_embed.unwrap_or(0),
        Regularizer::Kl => 0,
    }
}

fn record_bytes<B: AutodiffBackend, R: burn::record::Record<B>>(record: R) -> Result<Vec<u8>> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| anyhow::anyhow!("cannot serialize optimizer state: {e}"))
}

impl<B: AutodiffBackend> AeTrainer<B> {
    /// A fresh trainer: weights from `train.seed`, step 0.
    pub fn new(cfg: AutoencoderRunConfig, device: B::Device) -> Result<Self> {
        B::seed(&device, mix(&[cfg.train.seed, Stream::Init as u64]));
        let ae = Autoencoder::new(&cfg.model, &device);
        let logvar =
            Param::from_tensor(Tensor::from_floats([cfg.loss.logvar_init as f32], &device))
                .set_require_grad(cfg.loss.learn_logvar);
        let gen = stable_ids(Generator { ae, logvar }, "generator");
        let disc = stable_ids(
            NLayerDiscriminator::new(&disc_config(&cfg), &device),
            "discriminator",
        );
        let lpips = if cfg.loss.perceptual_weight > 0.0 {
            Some(assets::lpips::load(&cfg.loss.lpips_weights, &device)?)
        } else {
            None
        };
        let adam = adam(&cfg);
        let codes = ae_codes(&cfg);
        Ok(Self {
            lr: cfg.learning_rate(1),
            opt_g: adam.init(),
            opt_d: adam.init(),
            cfg,
            device,
            gen,
            disc,
            lpips,
            step: 0,
            latents: LatentAccumulator::default(),
            code_usage: vec![0; codes],
            restart_window: vec![0; codes],
        })
    }

    /// Restores weights, optimizer states and step from a checkpoint.
    pub fn restore(&mut self, ck: &LoadedCheckpoint) -> Result<()> {
        let dir = ck.dir.display().to_string();
        let model = ck.file("model.safetensors")?;
        let st = weights::parse(model, &format!("{dir}/model.safetensors"))?;
        let ae = self.gen.ae.clone();
        let ae = weights::load(ae, &st, "", &format!("{dir}/model.safetensors"))?;
        let loss_bytes = ck.file("loss.safetensors")?;
        let lst = weights::parse(loss_bytes, &format!("{dir}/loss.safetensors"))?;
        let disc = weights::load(
            self.disc.clone(),
            &lst,
            "discriminator.",
            &format!("{dir}/loss.safetensors"),
        )?;
        let lv = lst
            .tensor("logvar")
            .with_context(|| format!("{dir}/loss.safetensors: missing key `logvar`"))?;
        let lv = match (lv.dtype(), lv.data().get(..4)) {
            (safetensors::Dtype::F32, Some(b)) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            _ => bail!("{dir}/loss.safetensors: `logvar` is not an F32 scalar"),
        };
        let logvar = Param::from_data(TensorData::new(vec![lv], [1]), &self.device)
            .set_require_grad(self.cfg.loss.learn_logvar);
        self.gen = stable_ids(Generator { ae, logvar }, "generator");
        self.disc = stable_ids(disc, "discriminator");
        let rec = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let og = rec
            .load(ck.file("optimizer_g.mpk")?.to_vec(), &self.device)
            .map_err(|e| anyhow::anyhow!("{dir}/optimizer_g.mpk: {e}"))?;
        let od = rec
            .load(ck.file("optimizer_d.mpk")?.to_vec(), &self.device)
            .map_err(|e| anyhow::anyhow!("{dir}/optimizer_d.mpk: {e}"))?;
        self.opt_g = self.opt_g.clone().load_record(og);
        self.opt_d = self.opt_d.clone().load_record(od);
        self.step = ck.state.step;
        let codes = ae_codes(&self.cfg);
        self.restart_window = match &ck.state.restart_window {
            Some(w) if w.len() == codes => w.clone(),
            Some(w) => bail!(
                "{dir}/state.json: restart_window has {} entries for {codes} codes",
                w.len()
            ),
            None => vec![0; codes],
        };
        Ok(())
    }

    /// The files of a checkpoint of the current state.
    pub fn checkpoint_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let meta = HashMap::from([("format".to_string(), "ldm-train".to_string())]);
        let model = weights::to_safetensors(&weights::collect(&self.gen.ae, "")?, meta.clone())?;
        // BatchNorm running statistics sit in per-thread buffers until synced,
        // and only `into_record` syncs them; visiting alone would save stale ones.
        let _ = self.disc.clone().into_record();
        let mut loss = weights::collect(&self.disc, "discriminator.")?;
        let lv: Vec<f32> = self
            .gen
            .logvar
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        loss.push(weights::NamedTensor {
            key: "logvar".into(),
            shape: vec![1],
            bytes: lv.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        let loss = weights::to_safetensors(&loss, meta)?;
        Ok(vec![
            ("model.safetensors", model),
            ("loss.safetensors", loss),
            (
                "optimizer_g.mpk",
                record_bytes::<B, _>(self.opt_g.to_record())?,
            ),
            (
                "optimizer_d.mpk",
                record_bytes::<B, _>(self.opt_d.to_record())?,
            ),
        ])
    }

    /// `state.json` fields the trainer owns (the caller adds data position etc.).
    pub fn checkpoint_state(&self, base: CheckpointState) -> CheckpointState {
        CheckpointState {
            kind: kind_of(&self.cfg.model).into(),
            step: self.step,
            seed: self.cfg.train.seed,
            lr: self.lr,
            latent_stats: self.latents.stats(),
            code_usage: (!self.code_usage.is_empty()).then(|| self.code_usage.clone()),
            restart_window: (self.cfg.train.restart_dead_codes_every > 0)
                .then(|| self.restart_window.clone()),
            ..base
        }
    }

    /// One G step and (once the GAN is active) one D step on `x` in [−1, 1].
    ///
    /// Logged values stay on the device until one read at the end, so a GPU
    /// is not stalled mid-step; a non-finite loss is reported then, and the
    /// caller stops before the step can reach a checkpoint.
    pub fn train_step(&mut self, x: Tensor<B, 4>) -> Result<StepOutput<B>> {
        let cfg = self.cfg.clone();
        let seed = cfg.train.seed;
        let step = self.step;
        let dev = self.device.clone();
        B::seed(&dev, mix(&[seed, Stream::Backend as u64, step]));
        let disc_factor = adopt_weight(cfg.loss.disc_factor, step, cfg.loss.disc_start);
        let gan = disc_factor > 0.0;
        let zero = || Tensor::<B::InnerBackend, 1>::zeros([1], &dev);

        // Generator forward, once: z is the KL sample or the VQ codes.
        let h = self.gen.ae.moments(x.clone());
        let (z, reg, codes) = match &self.gen.ae.quantize {
            None => {
                let post = DiagonalGaussian::from_moments(h);
                let noise =
                    normal_tensor::<B, 4>(seed, Stream::Posterior, step, post.mean.dims(), &dev);
                let z = post.sample(noise);
                self.latents.add(z.clone().inner());
                (z, post.kl().mean() * cfg.loss.kl_weight, None)
            }
            Some(q) => {
                self.latents.add(h.clone().inner());
                let out = q.forward(h);
                let codes = (out.indices, out.z_rows);
                (out.z_q, out.loss * cfg.loss.codebook_weight, Some(codes))
            }
        };
        let reg_value = reg.clone().inner();
        let feats = self.gen.ae.decode_features(z);
        let recon = self.gen.ae.decoder.conv_out.forward(feats.clone());

        // NLL on a detached leaf: its gradient w.r.t. the reconstruction.
        let r1 = recon.clone().detach().require_grad();
        let lp = self.lpips.as_ref().map(|l| (l, cfg.loss.perceptual_weight));
        let reduction = match codes {
            Some(_) => Reduction::Mean,
            None => Reduction::SumPerImage,
        };
        let terms = nll(x.clone(), r1.clone(), lp, self.gen.logvar.val(), reduction);
        let nll_value = terms.nll.clone().inner();
        let nll_grads = terms.nll.backward();
        let g_nll = r1
            .grad(&nll_grads)
            .context("reconstruction has no NLL gradient")?;
        let logvar_grad = self.gen.logvar.val().grad(&nll_grads);

        // The GAN term's gradient, scaled by the adaptive weight.
        let (g_total, d_weight, g_loss) = if gan {
            let r2 = recon.clone().detach().require_grad();
            let g_loss = -self.disc.forward(r2.clone()).mean();
            let g_value = g_loss.clone().inner();
            let g_grads = g_loss.backward();
            let g_g = r2
                .grad(&g_grads)
                .context("reconstruction has no GAN gradient")?;
            let w = self.gen.ae.decoder.conv_out.weight.val();
            let d_weight = adaptive_weight(
                conv_weight_grad_norm(&feats, &w, &g_nll),
                conv_weight_grad_norm(&feats, &w, &g_g),
                cfg.loss.disc_weight,
            );
            let scale = d_weight.clone() * disc_factor;
            let total = g_nll + g_g * scale.reshape([1, 1, 1, 1]);
            (total, d_weight, g_value)
        } else {
            (g_nll, zero(), zero())
        };
        let surrogate = (recon.clone() * Tensor::from_inner(g_total)).sum() + reg;
        let mut gp = GradientsParams::from_grads(surrogate.backward(), &self.gen);
        if let (true, Some(g)) = (cfg.loss.learn_logvar, logvar_grad) {
            gp.register(self.gen.logvar.id, g);
        }
        self.gen = self.opt_g.step(self.lr, self.gen.clone(), gp);
        let vq_scalars = match codes {
            Some((indices, rows)) => self.update_codebook(indices, rows)?,
            None => Vec::new(),
        };

        // Discriminator on the same batch and the same reconstruction.
        let (d_loss, real_mean, fake_mean) = if gan {
            let real = self.disc.forward(x.detach());
            let fake = self.disc.forward(recon.clone().detach());
            let real_mean = real.clone().mean().inner();
            let fake_mean = fake.clone().mean().inner();
            let d_loss = disc_loss(cfg.loss.disc_loss, real, fake) * disc_factor;
            let d_value = d_loss.clone().inner();
            let gp = GradientsParams::from_grads(d_loss.backward(), &self.disc);
            self.disc = self.opt_d.step(self.lr, self.disc.clone(), gp);
            (d_value, real_mean, fake_mean)
        } else {
            (zero(), zero(), zero())
        };
        self.step += 1;

        let reg_name = match self.gen.ae.quantize {
            Some(_) => "codebook_loss",
            None => "kl_loss",
        };
        let names = [
            "nll_loss",
            "rec_loss",
            "p_loss",
            reg_name,
            "g_loss",
            "d_weight",
            "disc_loss",
            "logits_real",
            "logits_fake",
            "logvar",
        ];
        let values = Tensor::cat(
            vec![
                nll_value,
                terms.l1.inner(),
                terms.lpips.inner(),
                reg_value,
                g_loss,
                d_weight,
                d_loss,
                real_mean,
                fake_mean,
                self.gen.logvar.val().inner(),
            ],
            0,
        );
        let values: Vec<f64> = values.into_data().iter::<f64>().collect();
        let get = |k: &str| values[names.iter().position(|n| *n == k).expect("known name")];
        // reg_value already carries its weight (kl_weight or codebook_weight).
        let total = get("nll_loss") + get(reg_name) + get("d_weight") * disc_factor * get("g_loss");
        if !total.is_finite() {
            bail!(
                "non-finite loss at step {} (nll {}, {reg_name} {}, g_loss {}); lower \
                 train.base_lr or check the data — the last checkpoint is untouched",
                step + 1,
                get("nll_loss"),
                get(reg_name),
                get("g_loss")
            );
        }
        let mut scalars: StepScalars = vec![("loss", total)];
        scalars.extend(names.iter().copied().zip(values.iter().copied()));
        scalars.extend([("disc_factor", disc_factor), ("lr", self.lr)]);
        scalars.extend(vq_scalars);
        Ok(StepOutput {
            scalars,
            recon: recon.inner(),
        })
    }

    /// VQ bookkeeping after the generator step: usage histograms, the EMA
    /// codebook update, and dead-code restarts. Returns the step's perplexity
    /// and the fraction of codes the batch used.
    fn update_codebook(
        &mut self,
        indices: Tensor<B, 1, burn::tensor::Int>,
        rows: Tensor<B, 2>,
    ) -> Result<StepScalars> {
        let Some(mut q) = self.gen.ae.quantize.take() else {
            bail!("codebook update on a model without a quantizer");
        };
        let idx: Vec<i64> = indices.clone().into_data().iter::<i64>().collect();
        let mut batch = vec![0u64; self.code_usage.len()];
        for &i in &idx {
            batch[i as usize] += 1;
        }
        for acc in [&mut self.code_usage, &mut self.restart_window] {
            acc.iter_mut().zip(&batch).for_each(|(a, b)| *a += b);
        }
        let (perplexity, used) = usage_stats(&batch);
        q = q.ema_update(rows.clone(), indices);
        let every = self.cfg.train.restart_dead_codes_every;
        let mut restarted = 0;
        if every > 0 && (self.step + 1).is_multiple_of(every) {
            let dead: Vec<i64> = (0..self.restart_window.len() as i64)
                .filter(|&i| self.restart_window[i as usize] == 0)
                .collect();
            restarted = dead.len();
            if restarted > 0 {
                q = restart_codes(q, &dead, rows, self.cfg.train.seed, self.step, &self.device);
            }
            self.restart_window.iter_mut().for_each(|c| *c = 0);
        }
        self.gen.ae.quantize = Some(q);
        self.gen = stable_ids(self.gen.clone(), "generator");
        let mut out: StepScalars = vec![("perplexity", perplexity), ("code_usage", used)];
        if every > 0 {
            out.push(("codes_restarted", restarted as f64));
        }
        Ok(out)
    }

    /// Seeds ActNorm layers from the first real batch (fresh runs only; a
    /// no-op with BatchNorm). The reference seeds them on its first D forward.
    pub fn initialize_discriminator(&mut self, x: Tensor<B, 4>) {
        self.disc.initialize_actnorm(x);
        self.disc = stable_ids(self.disc.clone(), "discriminator");
    }
}

/// Re-seeds the codes `dead` from randomly chosen encoder outputs `rows`
/// (with a little noise, so codes seeded from one vector do not coincide).
/// The choice comes from the counter RNG, so a resumed run repeats it.
fn restart_codes<B: AutodiffBackend>(
    q: ldm_models::VectorQuantizer<B>,
    dead: &[i64],
    rows: Tensor<B, 2>,
    seed: u64,
    step: u64,
    device: &B::Device,
) -> ldm_models::VectorQuantizer<B> {
    let [m, d] = rows.dims();
    let mut state = mix(&[seed, Stream::CodeRestart as u64, step]);
    let pick: Vec<i64> = dead
        .iter()
        .map(|_| (crate::shared::noise::splitmix64(&mut state) % m as u64) as i64)
        .collect();
    let n = dead.len();
    let pick = Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(pick, [n]), device);
    let chosen = rows.select(0, pick);
    let spread = chosen.clone().powi_scalar(2).mean().sqrt().reshape([1, 1]) * 0.01;
    let noise = normal_tensor::<B, 2>(seed, Stream::CodeRestart, step, [n, d], device);
    let dead =
        Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(dead.to_vec(), [n]), device);
    q.restart(dead, chosen + noise * spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoencoder::config::load_run_config;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, ElementConversion};

    type B = Autodiff<Flex>;

    fn scalar(t: Tensor<B, 1>) -> f64 {
        t.into_scalar().elem::<f64>()
    }

    fn trainer(extra: &[&str]) -> AeTrainer<B> {
        let mut o: Vec<String> = [
            "loss.perceptual_weight=0",
            "data.size=16",
            "model.resolution=16",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        o.extend(extra.iter().map(|s| s.to_string()));
        let (cfg, _) = load_run_config("tiny/kl-f4.toml", &o).unwrap();
        AeTrainer::new(cfg, Default::default()).unwrap()
    }

    fn logvar_after_steps(learn: bool) -> f64 {
        let mut t = trainer(&[if learn {
            "loss.learn_logvar=true"
        } else {
            "loss.learn_logvar=false"
        }]);
        let x = Tensor::<B, 4>::random(
            [2, 3, 16, 16],
            Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        );
        for _ in 0..3 {
            t.train_step(x.clone()).unwrap();
        }
        scalar(t.gen.logvar.val())
    }

    #[test]
    fn logvar_moves_only_when_learned() {
        assert_eq!(logvar_after_steps(false), 0.0);
        // |x − x̂| ≈ 0.5 ≪ 1 per element, so the NLL pulls logvar down.
        assert!(logvar_after_steps(true) < 0.0);
    }

    #[test]
    fn gan_terms_switch_on_at_disc_start() {
        let mut t = trainer(&["loss.disc_start=1"]);
        let x = Tensor::<B, 4>::random(
            [2, 3, 16, 16],
            Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        );
        let get = |s: &StepScalars, k: &str| s.iter().find(|(n, _)| *n == k).unwrap().1;
        let before = t.train_step(x.clone()).unwrap().scalars;
        assert_eq!(get(&before, "disc_factor"), 0.0);
        assert_eq!(get(&before, "disc_loss"), 0.0);
        let after = t.train_step(x).unwrap().scalars;
        assert_eq!(get(&after, "disc_factor"), 1.0);
        assert!(get(&after, "d_weight") > 0.0 && get(&after, "disc_loss") > 0.0);
    }

    #[test]
    fn missing_lpips_weights_point_to_setup() {
        let o = vec!["loss.lpips_weights=\"/no/such/lpips.safetensors\"".to_string()];
        let (cfg, _) = load_run_config("tiny/kl-f4.toml", &o).unwrap();
        let err = AeTrainer::<B>::new(cfg, Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/no/such/lpips.safetensors") && err.contains("scripts/setup.sh"),
            "{err}"
        );
    }
}
