//! The typed TOML configuration of an autoencoder run.
//!
//! Keys follow the reference YAML names. Unknown keys are errors, and every
//! error names the file, the key path and what was expected.

use std::path::PathBuf;

use anyhow::{bail, Result};
use ldm_data::{Fit, Transform};
use ldm_models::discriminator::DiscNorm;
use ldm_models::AutoencoderConfig;
use serde::{Deserialize, Serialize};

use crate::shared::config::{self, CheckpointConfig, ConfigSource, RunConfig};

/// A whole autoencoder run configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderRunConfig {
    /// Network architecture.
    pub model: AutoencoderConfig,
    /// Loss weights and discriminator.
    pub loss: LossConfig,
    /// Training images and augmentation.
    pub data: DataConfig,
    /// Steps, batch, seed and learning rate.
    pub train: TrainConfig,
    /// Adam settings shared by the generator and discriminator optimizers.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Checkpoint cadence and retention.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// TensorBoard cadence and validation.
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// Which discriminator loss is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscLoss {
    /// 0.5·(mean relu(1 − D(x)) + mean relu(1 + D(x̂))).
    #[default]
    Hinge,
    /// 0.5·(mean softplus(−D(x)) + mean softplus(D(x̂))).
    Vanilla,
}

/// `[loss]`: the `LPIPSWithDiscriminator` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of LPIPS inside the reconstruction term (0 disables LPIPS entirely).
    #[serde(default = "one")]
    pub perceptual_weight: f64,
    /// LPIPS VGG16 safetensors; empty = the file `scripts/setup.sh` writes to the cache.
    #[serde(default)]
    pub lpips_weights: String,
    /// Weight of the KL term (KL models).
    #[serde(default = "kl_default")]
    pub kl_weight: f64,
    /// Weight of the codebook + commitment loss (VQ models).
    #[serde(default = "one")]
    pub codebook_weight: f64,
    /// Initial value of the output log-variance.
    #[serde(default)]
    pub logvar_init: f64,
    /// Learn the log-variance (sgm's `learn_logvar`; the reference keeps it at its init).
    #[serde(default)]
    pub learn_logvar: bool,
    /// Step from which the GAN terms switch on.
    #[serde(default = "disc_start_default")]
    pub disc_start: u64,
    /// Multiplier of the adaptive GAN weight.
    #[serde(default = "half")]
    pub disc_weight: f64,
    /// GAN factor once active (0 disables the discriminator entirely).
    #[serde(default = "one")]
    pub disc_factor: f64,
    /// Discriminator loss.
    #[serde(default)]
    pub disc_loss: DiscLoss,
    /// Discriminator input channels.
    #[serde(default = "three")]
    pub disc_in_channels: usize,
    /// Number of stride-2 discriminator layers.
    #[serde(default = "three")]
    pub disc_num_layers: usize,
    /// Discriminator base width.
    #[serde(default = "ndf_default")]
    pub disc_ndf: usize,
    /// Discriminator normalization: `batch` or `act` (ActNorm).
    #[serde(default)]
    pub disc_norm: DiscNorm,
}

/// `[data]`: where images come from and how they are cropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training images: a folder (searched recursively), a folder of class
    /// folders, an IDX dataset or a JSONL/CSV manifest.
    pub root: PathBuf,
    /// IDX datasets (Fashion-MNIST): the split of `root` (`train`, the default).
    #[serde(default)]
    pub split: Option<String>,
    /// Held-out images for validation during training (optional): a folder,
    /// an IDX dataset or a manifest.
    #[serde(default)]
    pub val_root: Option<PathBuf>,
    /// IDX datasets: the split of `val_root` (e.g. `t10k`).
    #[serde(default)]
    pub val_split: Option<String>,
    /// Crop size; the shorter side is resized to `resize` (default: this) first.
    pub size: u32,
    /// Shorter side before cropping (≥ `size`; default `size`). **Beyond**
    /// the reference: crops smaller than the image scale make cheaper steps
    /// (the tiny config trains on 32² crops of photos at 64², evaluates at 64²).
    #[serde(default)]
    pub resize: Option<u32>,
    /// Scale augmentation, **beyond** the reference: each training sample's
    /// shorter side is drawn log-uniformly from [`resize`, `resize_max`]
    /// (unset: always `resize`). Evaluation stays at `resize`.
    #[serde(default)]
    pub resize_max: Option<u32>,
    /// Random (else center) crops for training.
    #[serde(default = "yes")]
    pub random_crop: bool,
    /// Random horizontal flips for training.
    #[serde(default = "yes")]
    pub hflip: bool,
    /// Colour augmentation, **beyond** the reference: each training sample's
    /// R, G, B planes in a random one of the six orders (see the tiny photo
    /// config for why a small first stage wants it).
    #[serde(default)]
    pub channel_shuffle: bool,
    /// How an image reaches the square it is cropped from: `crop` (resize the
    /// shorter side, the default), `pad` (centre on a constant border, never
    /// enlarging: Fashion-MNIST 28² → 32²) or `resize` (stretch).
    #[serde(default)]
    pub fit: Fit,
    /// Gray level 0–255 of the `pad` border (0 = black = −1 in the sample).
    #[serde(default)]
    pub pad_value: u8,
    /// Decoding threads (0 = all cores).
    #[serde(default)]
    pub workers: usize,
    /// Batches decoded ahead of the trainer.
    #[serde(default = "prefetch_default")]
    pub prefetch: usize,
    /// MiB of decoded training images kept in memory at the largest scale a
    /// sample needs, so later epochs skip decoding and resizing them (speed
    /// only: the batches are the same bytes; 0 = off).
    #[serde(default = "cache_mb_default")]
    pub cache_mb: usize,
}

/// `[train]`: the optimization schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Images per step.
    pub batch_size: usize,
    /// Stop after this many steps.
    pub max_steps: u64,
    /// Seed of weights, data order, augmentation and posterior noise.
    #[serde(default)]
    pub seed: u64,
    /// Base learning rate.
    pub base_lr: f64,
    /// Reference rule lr = n_gpus · batch_size · base_lr; off = use base_lr as is.
    #[serde(default = "yes")]
    pub scale_lr: bool,
    /// VQ, **beyond** the reference: every this many steps, codes that no
    /// encoder output chose since the last check are re-seeded from the
    /// current batch's encoder outputs (0 = never).
    #[serde(default)]
    pub restart_dead_codes_every: u64,
}

/// `[optimizer]`: Adam for both G and D (PyTorch's eps; burn's default differs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// First-moment decay (reference: 0.5).
    #[serde(default = "beta1_default")]
    pub beta1: f64,
    /// Second-moment decay (reference: 0.9).
    #[serde(default = "beta2_default")]
    pub beta2: f64,
    /// Denominator epsilon (PyTorch default 1e-8).
    #[serde(default = "eps_default")]
    pub eps: f64,
    /// L2 weight decay (0 in the reference).
    #[serde(default)]
    pub weight_decay: f64,
}

/// `[logging]`: TensorBoard cadence and in-training validation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Scalars every this many steps.
    #[serde(default = "log_every_default")]
    pub every: u64,
    /// Input | reconstruction grids every this many steps (0 = never).
    #[serde(default = "image_every_default")]
    pub image_every: u64,
    /// Validation PSNR / L1 / LPIPS on `data.val_root` every this many steps (0 = never).
    #[serde(default)]
    pub val_every: u64,
    /// Images of the validation set used during training (0 = all).
    #[serde(default = "val_images_default")]
    pub val_images: usize,
    /// Also compute rFID on those images at each validation (needs the
    /// Inception weights from `scripts/setup.sh`; logged as `val/rfid`).
    #[serde(default)]
    pub val_fid: bool,
}

fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn three() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn kl_default() -> f64 {
    1e-6
}
fn disc_start_default() -> u64 {
    50001
}
fn ndf_default() -> usize {
    64
}
fn prefetch_default() -> usize {
    4
}
fn cache_mb_default() -> usize {
    1024
}
fn beta1_default() -> f64 {
    0.5
}
fn beta2_default() -> f64 {
    0.9
}
fn eps_default() -> f64 {
    1e-8
}
fn log_every_default() -> u64 {
    10
}
fn image_every_default() -> u64 {
    500
}
fn val_images_default() -> usize {
    16
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            beta1: beta1_default(),
            beta2: beta2_default(),
            eps: eps_default(),
            weight_decay: 0.0,
        }
    }
}
impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            every: log_every_default(),
            image_every: image_every_default(),
            val_every: 0,
            val_images: val_images_default(),
            val_fid: false,
        }
    }
}

impl DataConfig {
    /// Evaluation crop: whole images at the training scale (`resize`, else `size`).
    pub fn eval_size(&self) -> u32 {
        self.resize.unwrap_or(self.size).max(self.size)
    }

    /// The training transform (random crops and flips as configured).
    pub fn train_transform(&self) -> Transform {
        Transform {
            size: self.size,
            resize: self.resize,
            resize_max: self.resize_max,
            random_crop: self.random_crop,
            hflip: self.hflip,
            channel_shuffle: self.channel_shuffle,
            fit: self.fit,
            pad_value: self.pad_value,
        }
    }

    /// The evaluation transform: whole images at [`DataConfig::eval_size`],
    /// centred, never flipped, fitted as in training.
    pub fn eval_transform(&self) -> Transform {
        Transform::fixed(self.eval_size(), self.fit, self.pad_value)
    }
}

impl AutoencoderRunConfig {
    /// The learning rate after the reference scaling rule (one process, no accumulation).
    pub fn learning_rate(&self, n_devices: usize) -> f64 {
        if self.train.scale_lr {
            n_devices as f64 * self.train.batch_size as f64 * self.train.base_lr
        } else {
            self.train.base_lr
        }
    }
}

impl RunConfig for AutoencoderRunConfig {
    fn validate(&self) -> Result<()> {
        if let Err((key, why)) = self.model.validate() {
            bail!("{key}: {why}");
        }
        // Images are decoded to RGB, and LPIPS and the discriminator see them.
        for (key, v) in [
            ("model.in_channels", self.model.in_channels),
            ("model.out_ch", self.model.out_ch),
            ("loss.disc_in_channels", self.loss.disc_in_channels),
        ] {
            if v != 3 {
                bail!("{key}: {v}, but training images are RGB (3 channels)");
            }
        }
        let size = self.data.size as usize;
        if let Some(r) = self.data.resize.filter(|&r| r < self.data.size) {
            bail!("data.resize: {r} is smaller than the crop data.size = {size}");
        }
        if !size.is_multiple_of(self.model.downsampling()) {
            bail!(
                "data.size: {size} is not divisible by the downsampling factor {}",
                self.model.downsampling()
            );
        }
        if let Some(m) = self.data.resize_max.filter(|&m| m < self.data.eval_size()) {
            bail!(
                "data.resize_max: {m} is smaller than data.resize = {}",
                self.data.eval_size()
            );
        }
        if let Some(r) = self.data.resize {
            if !(r as usize).is_multiple_of(self.model.downsampling()) {
                bail!(
                    "data.resize: {r} is not divisible by the downsampling factor {} \
                     (evaluation crops whole images at this size)",
                    self.model.downsampling()
                );
            }
        }
        let l = &self.loss;
        if l.disc_num_layers == 0 || l.disc_ndf == 0 {
            bail!("loss.disc_num_layers / loss.disc_ndf: must be at least 1");
        }
        // Each stride-2 conv halves (floor), the two stride-1 4×4 convs take 1 each.
        let logits = (size >> l.disc_num_layers.min(30)) as i64 - 2;
        if logits < 1 {
            bail!(
                "loss.disc_num_layers: {} layers leave no patch logits at data.size {size}",
                l.disc_num_layers
            );
        }
        let non_negative = [
            ("loss.perceptual_weight", l.perceptual_weight),
            ("loss.kl_weight", l.kl_weight),
            ("loss.disc_weight", l.disc_weight),
            ("loss.disc_factor", l.disc_factor),
            ("optimizer.weight_decay", self.optimizer.weight_decay),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{key}: {v} must be a finite number ≥ 0");
            }
        }
        let vq = self.model.regularizer == ldm_models::Regularizer::Vq;
        if vq && l.learn_logvar {
            bail!("loss.learn_logvar: the VQ loss has no log-variance (it is a plain mean)");
        }
        if !vq && self.train.restart_dead_codes_every > 0 {
            bail!("train.restart_dead_codes_every: applies to regularizer = \"vq\" only");
        }
        if !(l.codebook_weight.is_finite() && l.codebook_weight >= 0.0) {
            bail!(
                "loss.codebook_weight: {} must be a finite number ≥ 0",
                l.codebook_weight
            );
        }
        if !l.logvar_init.is_finite() {
            bail!("loss.logvar_init: must be finite");
        }
        let o = &self.optimizer;
        for (key, v) in [("optimizer.beta1", o.beta1), ("optimizer.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{key}: {v} is not in [0, 1)");
            }
        }
        for (key, v) in [
            ("optimizer.eps", o.eps),
            ("train.base_lr", self.train.base_lr),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{key}: {v} must be a finite number > 0");
            }
        }
        if self.train.batch_size == 0 {
            bail!("train.batch_size: must be at least 1");
        }
        if self.checkpoint.every == 0 || self.checkpoint.keep_last == 0 {
            bail!("checkpoint.every / checkpoint.keep_last: must be at least 1");
        }
        if self.logging.every == 0 {
            bail!("logging.every: must be at least 1");
        }
        Ok(())
    }
}

/// Loads, overrides and validates a run config (see [`config::load`]).
pub fn load_run_config(
    arg: &str,
    overrides: &[String],
) -> Result<(AutoencoderRunConfig, ConfigSource)> {
    config::load(arg, overrides)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::config::changed_keys;
    use crate::shared::shipped;

    #[test]
    fn every_shipped_config_builds_its_model_and_runs_it() {
        use burn::backend::Flex;
        use burn::tensor::{Distribution, Tensor};
        let dev = Default::default();
        for (name, text) in shipped::ALL {
            if shipped::is_diffusion(text) {
                continue;
            }
            let (cfg, _) = load_run_config(name, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let ae = ldm_models::Autoencoder::<Flex>::new(&cfg.model, &dev);
            // The smallest input the factor allows, non-square.
            let f = cfg.model.downsampling();
            let x =
                Tensor::<Flex, 4>::random([1, 3, f, 2 * f], Distribution::Uniform(-1.0, 1.0), &dev);
            let latent = ae.encode(x.clone()).mode();
            assert_eq!(latent.dims(), [1, cfg.model.embed_dim, 1, 2], "{name}");
            let y = ae.decode(latent);
            assert_eq!(y.dims(), [1, 3, f, 2 * f], "{name}");
            let finite: f32 = y.abs().sum().into_scalar();
            assert!(finite.is_finite(), "{name}: non-finite output");
            let vq = cfg.model.regularizer == ldm_models::Regularizer::Vq;
            assert_eq!(ae.quantize.is_some(), vq, "{name}");
            if cfg.model.attn_type == ldm_models::AttnType::None {
                assert!(ae.encoder.mid.attn_1.is_none() && ae.decoder.mid.attn_1.is_none());
            }
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_run_config("tiny/kl-f4.toml", &["model.chanels=4".into()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("model") && msg.contains("chanels"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err =
            load_run_config("tiny/kl-f4.toml", &["train.batch_size=\"four\"".into()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("train.batch_size"), "{msg}");
    }

    #[test]
    fn overrides_parse_toml_values() {
        let (cfg, _) = load_run_config(
            "f8.toml",
            &[
                "train.base_lr=1e-4".into(),
                "model.ch_mult=[1, 2, 2, 4]".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.train.base_lr, 1e-4);
        assert_eq!(cfg.model.ch_mult, vec![1, 2, 2, 4]);
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("model.ch=20", "model.ch"),
            ("model.norm_groups=0", "model.norm_groups"),
            ("model.in_channels=1", "model.in_channels"),
            ("loss.disc_num_layers=5", "loss.disc_num_layers"),
            ("logging.every=0", "logging.every"),
            ("optimizer.beta1=1.5", "optimizer.beta1"),
            ("train.base_lr=nan", "train.base_lr"),
            ("loss.disc_weight=-1", "loss.disc_weight"),
            ("model.n_embed=16", "model.n_embed"),
            (
                "train.restart_dead_codes_every=5",
                "train.restart_dead_codes_every",
            ),
        ];
        for (set, key) in cases {
            let err = load_run_config("tiny/kl-f4.toml", &[set.to_string()]).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(key), "{set}: {msg}");
        }
    }

    #[test]
    fn vq_semantic_errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("model.n_embed=1", "model.n_embed"),
            ("loss.learn_logvar=true", "loss.learn_logvar"),
            (
                "model.posterior_logvar_init=-6.0",
                "model.posterior_logvar_init",
            ),
            ("model.ema_decay=1.0", "model.ema_decay"),
            ("loss.codebook_weight=-1", "loss.codebook_weight"),
        ];
        for (set, key) in cases {
            let err = load_run_config("tiny/vq-f4.toml", &[set.to_string()]).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(key), "{set}: {msg}");
        }
    }

    #[test]
    fn changed_keys_lists_dotted_paths() {
        let (a, _) = load_run_config("tiny/kl-f4.toml", &[]).unwrap();
        let (b, _) = load_run_config(
            "tiny/kl-f4.toml",
            &["train.max_steps=9".into(), "data.hflip=false".into()],
        )
        .unwrap();
        assert_eq!(
            changed_keys(&a, &b).unwrap(),
            vec!["data.hflip", "train.max_steps"]
        );
    }

    #[test]
    fn lr_scaling_rule() {
        let (mut cfg, _) = load_run_config("f8.toml", &[]).unwrap();
        cfg.train.batch_size = 12;
        assert!((cfg.learning_rate(2) - 2.0 * 12.0 * 4.5e-6).abs() < 1e-12);
        cfg.train.scale_lr = false;
        assert_eq!(cfg.learning_rate(2), 4.5e-6);
    }
}
