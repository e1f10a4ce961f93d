//! Architecture hyper-parameters of the autoencoder, named as in the
//! reference `ddconfig` so a YAML line translates to a TOML line.

use serde::{Deserialize, Serialize};

/// How the latent is regularized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Regularizer {
    /// Diagonal-Gaussian posterior with a KL penalty (`AutoencoderKL`).
    #[default]
    Kl,
}

/// The `[model]` section of an autoencoder config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Latent regularization (`kl`).
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
}

fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
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
            resolution,
            z_channels: 4,
            embed_dim: 3,
            dropout: 0.0,
            posterior_logvar_init: None,
            norm_groups: 32,
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
        if !self.dropout.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}
