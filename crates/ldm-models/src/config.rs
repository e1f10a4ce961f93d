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
}

fn three() -> usize {
    3
}

impl AutoencoderConfig {
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
        if self.ch == 0 || !self.ch.is_multiple_of(32) {
            return bad(
                "ch",
                format!(
                    "{} is not a positive multiple of 32 (GroupNorm(32))",
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
            if !(m * self.ch).is_multiple_of(32) || *m == 0 {
                return bad(
                    "ch_mult",
                    format!(
                        "level {i} has {} channels; GroupNorm(32) needs a positive multiple of 32",
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
        if !self.dropout.is_finite() || !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}
