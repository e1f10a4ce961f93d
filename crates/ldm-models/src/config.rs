//! Architecture hyper-parameters of the autoencoder, named as in the
//! reference `ddconfig` so a YAML line translates to a TOML line.

use serde::{Deserialize, Serialize};

use crate::quantizer::QuantizerConfig;

/// How the latent is regularized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Regularizer {
    /// Diagonal-Gaussian posterior with a KL penalty (`AutoencoderKL`).
    #[default]
    Kl,
    /// Vector-quantized latent with a codebook (`VQModel`).
    Vq,
}

/// Which attention blocks the encoder and decoder have (ldm's `attn_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AttnType {
    /// Single-head self-attention in the middle and at `attn_resolutions`.
    #[default]
    Vanilla,
    /// No attention anywhere, not even in the middle (ldm's vq-f4-noattn).
    None,
}

/// The `[model]` section of an autoencoder config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Latent regularization (`kl` or `vq`).
    #[serde(default)]
    pub regularizer: Regularizer,
    /// Image channels in.
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "three")]
    pub out_ch: usize,
    /// Base channel width.
    pub ch: usize,
    /// Width multiplier per level; f = 2^(len − 1).
    pub ch_mult: Vec<usize>,
    /// Residual blocks per encoder level (decoder levels get one more).
    pub num_res_blocks: usize,
    /// Feature-map sizes (at `resolution` input) that get self-attention.
    #[serde(default)]
    pub attn_resolutions: Vec<usize>,
    /// `vanilla` (default) or `none`: no attention at all.
    #[serde(default)]
    pub attn_type: AttnType,
    /// Training resolution; fixes where `attn_resolutions` apply.
    pub resolution: usize,
    /// Channels of the encoder output / decoder input.
    pub z_channels: usize,
    /// Channels of the latent the diffusion stage sees.
    pub embed_dim: usize,
    /// Dropout inside residual blocks.
    #[serde(default)]
    pub dropout: f64,
    /// GroupNorm groups (32 in the reference). Narrow networks want fewer:
    /// with one channel per group the norm removes each channel's image mean,
    /// and `norm_out` can no longer pass an image's overall colour to the
    /// output. The reference keeps 4 channels per group at its narrowest.
    #[serde(default = "thirty_two")]
    pub norm_groups: usize,
    /// Initial bias of the posterior log-variance channels of `quant_conv`
    /// (**beyond** the reference, which starts at PyTorch's default ≈ 0). A
    /// negative value (e.g. −6) starts training with little sampling noise,
    /// so a short CPU run learns from an informative latent at once; the KL
    /// term and training move it freely afterwards. Unset = reference init.
    #[serde(default)]
    pub posterior_logvar_init: Option<f64>,
    /// VQ: codebook size (required with `regularizer = "vq"`).
    #[serde(default)]
    pub n_embed: Option<usize>,
    /// VQ: weight β of the second codebook-loss term (reference 0.25).
    #[serde(default = "quarter")]
    pub beta: f64,
    /// VQ: the reference placement of β (taming `legacy=True`: β weighs the
    /// term that moves the codes); `false` puts β on the commitment term as
    /// in the VQ-VAE paper.
    #[serde(default = "yes")]
    pub legacy: bool,
    /// VQ, **beyond** the reference: update codes as an exponential moving
    /// average of their assigned encoder outputs with this decay (e.g. 0.99)
    /// instead of by gradient. Unset = gradient-learned codebook.
    #[serde(default)]
    pub ema_decay: Option<f64>,
}

fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn quarter() -> f64 {
    0.25
}
fn yes() -> bool {
    true
}

impl AutoencoderConfig {
    /// The smallest sensible network (ch 32, two levels, one block each, no
    /// attention) for tests and examples; adjust fields with struct update.
    pub fn small(resolution: usize) -> Self {
        Self {
            regularizer: Regularizer::Kl,
            in_channels: 3,
            out_ch: 3,
            ch: 32,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: Vec::new(),
            attn_type: AttnType::Vanilla,
            resolution,
            z_channels: 4,
            embed_dim: 3,
            dropout: 0.0,
            posterior_logvar_init: None,
            norm_groups: 32,
            n_embed: None,
            beta: 0.25,
            legacy: true,
            ema_decay: None,
        }
    }

    /// The quantizer's settings (meaningful for `regularizer = "vq"`).
    pub fn quantizer(&self) -> QuantizerConfig {
        QuantizerConfig {
            n_embed: self.n_embed.unwrap_or(1),
            embed_dim: self.embed_dim,
            beta: self.beta,
            legacy: self.legacy,
            ema_decay: self.ema_decay,
        }
    }

    /// Spatial downsampling factor f.
    pub fn downsampling(&self) -> usize {
        1 << (self.ch_mult.len() - 1)
    }

    /// Checks what serde cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: String| Err((format!("model.{k}"), why));
        if self.ch_mult.is_empty() {
            return bad("ch_mult", "must list at least one level".into());
        }
        let g = self.norm_groups;
        if g == 0 {
            return bad("norm_groups", "must be at least 1".into());
        }
        if self.ch == 0 || !self.ch.is_multiple_of(g) {
            return bad(
                "ch",
                format!(
                    "{} is not a positive multiple of norm_groups = {g}",
                    self.ch
                ),
            );
        }
        if self.z_channels == 0 || self.embed_dim == 0 || self.in_channels == 0 || self.out_ch == 0
        {
            return bad(
                "z_channels",
                "z_channels, embed_dim, in_channels and out_ch must be positive".into(),
            );
        }
        for (i, m) in self.ch_mult.iter().enumerate() {
            if *m == 0 || !(m * self.ch).is_multiple_of(g) {
                return bad(
                    "ch_mult",
                    format!(
                        "level {i} has {} channels, not a positive multiple of norm_groups = {g}",
                        m * self.ch
                    ),
                );
            }
        }
        if !self.resolution.is_multiple_of(self.downsampling()) {
            return bad(
                "resolution",
                format!(
                    "{} is not divisible by f = {}",
                    self.resolution,
                    self.downsampling()
                ),
            );
        }
        if self
            .posterior_logvar_init
            .is_some_and(|v| !(-30.0..=20.0).contains(&v))
        {
            return bad(
                "posterior_logvar_init",
                "must lie in the clamp range [-30, 20]".into(),
            );
        }
        match self.regularizer {
            Regularizer::Vq => {
                if self.n_embed.is_none_or(|n| n < 2) {
                    return bad(
                        "n_embed",
                        "a VQ model needs a codebook of at least 2 codes".into(),
                    );
                }
                if self.posterior_logvar_init.is_some() {
                    return bad("posterior_logvar_init", "applies to KL models only".into());
                }
                if !self.beta.is_finite() || self.beta < 0.0 {
                    return bad(
                        "beta",
                        format!("{} is not a non-negative number", self.beta),
                    );
                }
                if self.ema_decay.is_some_and(|d| !(0.0..1.0).contains(&d)) {
                    return bad("ema_decay", "must lie in [0, 1)".into());
                }
            }
            Regularizer::Kl => {
                if self.n_embed.is_some() || self.ema_decay.is_some() {
                    return bad(
                        "n_embed",
                        "n_embed and ema_decay apply to regularizer = \"vq\" only".into(),
                    );
                }
            }
        }
        if !self.dropout.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}
