//! One optimization step of the autoencoder (G then D on the same batch), and
//! the trainer state that a checkpoint saves and restores exactly.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::module::{Module, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use ldm_models::discriminator::DiscriminatorConfig;
use ldm_models::{AutoencoderKl, Lpips, NLayerDiscriminator};

use crate::checkpoint::{CheckpointState, LatentStats, LoadedCheckpoint};
use crate::config::AutoencoderRunConfig;
use crate::gan_weight::{adaptive_weight, conv_weight_grad_norm};
use crate::latent_stats::LatentAccumulator;
use crate::loss::{adopt_weight, disc_loss, kl_mean, nll};
use crate::noise::{mix, normal_tensor, Stream};
use crate::param_ids::stable_ids;
use crate::weights;

/// Checkpoint kind of a KL autoencoder.
pub const KIND_KL: &str = "autoencoder-kl";

/// What the generator optimizer updates: the autoencoder and the output
/// log-variance (frozen unless `loss.learn_logvar`).
#[derive(Module, Debug)]
pub struct Generator<B: burn::tensor::backend::Backend> {
    /// The autoencoder.
    pub ae: AutoencoderKl<B>,
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
    pub latents: LatentAccumulator,
}

/// Default location of the converted LPIPS weights (written by `scripts/setup.sh`).
pub fn default_lpips_path() -> PathBuf {
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache").join("ldm-train")
        });
    cache.join("weights").join("lpips_vgg16.safetensors")
}

fn adam(cfg: &AutoencoderRunConfig) -> AdamConfig {
    let o = &cfg.optimizer;
    let wd = (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32));
    AdamConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(wd)
}

/// Loads the LPIPS network a config asks for; a clear error when missing.
pub fn load_lpips<B: burn::tensor::backend::Backend>(
    cfg: &AutoencoderRunConfig,
    device: &B::Device,
) -> Result<Option<Lpips<B>>> {
    if cfg.loss.perceptual_weight <= 0.0 {
        return Ok(None);
    }
    let path = if cfg.loss.lpips_weights.is_empty() {
        default_lpips_path()
    } else {
        PathBuf::from(&cfg.loss.lpips_weights)
    };
    if !path.is_file() {
        bail!(
            "LPIPS weights not found at {}: run `bash scripts/setup.sh` to fetch and convert them, \
             or set loss.perceptual_weight = 0",
            path.display()
        );
    }
    Ok(Some(Lpips::load(&path, device)?))
}

fn disc_config(cfg: &AutoencoderRunConfig) -> DiscriminatorConfig {
    DiscriminatorConfig {
        in_channels: cfg.loss.disc_in_channels,
        ndf: cfg.loss.disc_ndf,
        n_layers: cfg.loss.disc_num_layers,
        norm: cfg.loss.disc_norm,
    }
}

fn record_bytes<B: AutodiffBackend, R: burn::record::Record<B>>(record: R) -> Result<Vec<u8>> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(record, ())
        .map_err(|e| anyhow::anyhow!("cannot serialize optimizer state: {e}"))
}

fn scalar<B: AutodiffBackend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

impl<B: AutodiffBackend> AeTrainer<B> {
    /// A fresh trainer: weights from `train.seed`, step 0.
    pub fn new(cfg: AutoencoderRunConfig, device: B::Device) -> Result<Self> {
        B::seed(&device, mix(&[cfg.train.seed, Stream::Init as u64]));
        let ae = AutoencoderKl::new(&cfg.model, &device);
        let logvar =
            Param::from_tensor(Tensor::from_floats([cfg.loss.logvar_init as f32], &device))
                .set_require_grad(cfg.loss.learn_logvar);
        let gen = stable_ids(Generator { ae, logvar }, "generator");
        let disc = stable_ids(
            NLayerDiscriminator::new(&disc_config(&cfg), &device),
            "discriminator",
        );
        let lpips = load_lpips(&cfg, &device)?;
        let adam = adam(&cfg);
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
        let lv = f32::from_le_bytes(lv.data()[..4].try_into().context("logvar is empty")?);
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
            kind: KIND_KL.into(),
            step: self.step,
            seed: self.cfg.train.seed,
            lr: self.lr,
            latent_stats: self.latents.stats(),
            ..base
        }
    }

    /// One G step and (once the GAN is active) one D step on `x` in [−1, 1].
    pub fn train_step(&mut self, x: Tensor<B, 4>) -> Result<StepOutput<B>> {
        let cfg = &self.cfg;
        let seed = cfg.train.seed;
        let step = self.step;
        B::seed(&self.device, mix(&[seed, Stream::Backend as u64, step]));
        let disc_factor = adopt_weight(cfg.loss.disc_factor, step, cfg.loss.disc_start);
        let gan = disc_factor > 0.0;

        // Generator forward, once.
        let post = self.gen.ae.encode(x.clone());
        let noise = normal_tensor::<B, 4>(
            seed,
            Stream::Posterior,
            step,
            post.mean.dims(),
            &self.device,
        );
        let z = post.sample(noise);
        self.latents.add(&z.clone().inner());
        let feats = self.gen.ae.decode_features(z);
        let recon = self.gen.ae.decoder.conv_out.forward(feats.clone());

        // NLL on a detached leaf: its gradient w.r.t. the reconstruction.
        let r1 = recon.clone().detach().require_grad();
        let lp = self.lpips.as_ref().map(|l| (l, cfg.loss.perceptual_weight));
        let terms = nll(x.clone(), r1.clone(), lp, self.gen.logvar.val());
        let nll_value = terms.nll.clone();
        let nll_grads = terms.nll.backward();
        let g_nll = r1
            .grad(&nll_grads)
            .context("reconstruction has no NLL gradient")?;
        let logvar_grad = self.gen.logvar.val().grad(&nll_grads);

        let mut scalars: StepScalars = Vec::with_capacity(16);
        let (g_total, d_weight, g_loss) = if gan {
            let r2 = recon.clone().detach().require_grad();
            let g_loss = -self.disc.forward(r2.clone()).mean();
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
            let total = g_nll.clone() + g_g * (d_weight * disc_factor);
            (total, d_weight, scalar(g_loss))
        } else {
            (g_nll, 0.0, 0.0)
        };
        let kl = kl_mean(post.kl());
        let kl_value = kl.clone();
        let surrogate =
            (recon.clone() * Tensor::from_inner(g_total)).sum() + kl * cfg.loss.kl_weight;
        let mut gp = GradientsParams::from_grads(surrogate.backward(), &self.gen);
        if let (true, Some(g)) = (cfg.loss.learn_logvar, logvar_grad) {
            gp.register(self.gen.logvar.id, g);
        }
        let nll_v = scalar(nll_value);
        let kl_v = scalar(kl_value);
        let total = nll_v + cfg.loss.kl_weight * kl_v + d_weight * disc_factor * g_loss;
        if !total.is_finite() {
            bail!(
                "non-finite loss at step {} (nll {nll_v}, kl {kl_v}, g_loss {g_loss}); \
                 lower train.base_lr or check the data — no checkpoint was written for this step",
                step + 1
            );
        }
        self.gen = self.opt_g.step(self.lr, self.gen.clone(), gp);

        // Discriminator on the same batch and the same reconstruction.
        let (d_loss, real_mean, fake_mean) = if gan {
            let real = self.disc.forward(x.detach());
            let fake = self.disc.forward(recon.clone().detach());
            let real_mean = scalar(real.clone().mean());
            let fake_mean = scalar(fake.clone().mean());
            let d_loss = disc_loss(cfg.loss.disc_loss, real, fake) * disc_factor;
            let d_value = d_loss.clone();
            let gp = GradientsParams::from_grads(d_loss.backward(), &self.disc);
            self.disc = self.opt_d.step(self.lr, self.disc.clone(), gp);
            (scalar(d_value), real_mean, fake_mean)
        } else {
            (0.0, 0.0, 0.0)
        };
        self.step += 1;

        scalars.extend([
            ("loss", total),
            ("nll_loss", nll_v),
            ("rec_loss", scalar(terms.l1)),
            ("p_loss", scalar(terms.lpips)),
            ("kl_loss", kl_v),
            ("g_loss", g_loss),
            ("d_weight", d_weight),
            ("disc_factor", disc_factor),
            ("disc_loss", d_loss),
            ("logits_real", real_mean),
            ("logits_fake", fake_mean),
            ("logvar", scalar(self.gen.logvar.val())),
            ("lr", self.lr),
        ]);
        Ok(StepOutput {
            scalars,
            recon: recon.inner(),
        })
    }

    /// Seeds ActNorm layers from the first real batch (fresh runs only).
    pub fn initialize_discriminator(&mut self, x: Tensor<B, 4>) {
        let disc = std::mem::replace(
            &mut self.disc,
            NLayerDiscriminator::new(&disc_config(&self.cfg), &self.device),
        );
        let mut disc = disc;
        disc.initialize_actnorm(x);
        self.disc = stable_ids(disc, "discriminator");
    }

    /// Latent statistics for the checkpoint.
    pub fn latent_stats(&self) -> Option<LatentStats> {
        self.latents.stats()
    }
}
