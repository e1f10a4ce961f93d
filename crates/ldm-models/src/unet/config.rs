//! Architecture of the UNet, named as the reference `unet_config.params` so
//! a YAML line translates to a TOML line.

use serde::{Deserialize, Serialize};

use super::resblock::UNET_NORM_GROUPS;

/// The `[model.unet]` section of a diffusion config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Latent side the model is trained at (informative, as in the reference).
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Input channels: the latent's, plus any concatenated condition.
    pub in_channels: usize,
    /// Output channels (the latent's).
    pub out_channels: usize,
    /// Base width `mc`; level i is `channel_mult[i] · mc` wide.
    pub model_channels: usize,
    /// ResBlocks per level in the encoder half (decoder: one more).
    pub num_res_blocks: usize,
    /// Downsampling factors (1, 2, 4, …) whose levels get attention.
    pub attention_resolutions: Vec<usize>,
    /// Dropout inside ResBlocks and transformers.
    #[serde(default)]
    pub dropout: f64,
    /// Width multiplier per level; the UNet downsamples 2^(len − 1)×.
    pub channel_mult: Vec<usize>,
    /// Heads per attention layer (ignored when `num_head_channels` is set).
    #[serde(default)]
    pub num_heads: Option<usize>,
    /// Channels per head; the head count then follows the layer's width.
    #[serde(default)]
    pub num_head_channels: Option<usize>,
    /// Spatial transformers (self- + cross-attention + GEGLU) instead of
    /// plain self-attention blocks.
    #[serde(default)]
    pub use_spatial_transformer: bool,
    /// Transformer blocks per spatial transformer.
    #[serde(default = "one")]
    pub transformer_depth: usize,
    /// Width of the cross-attention context (the conditioner's output).
    #[serde(default)]
    pub context_dim: Option<usize>,
    /// ResBlocks apply the embedding as `(1 + scale)·GN(h) + shift`.
    #[serde(default)]
    pub use_scale_shift_norm: bool,
    /// Classes of the label embedding added to the time embedding (`adm`).
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Groups of every GroupNorm. The reference hard-codes 32 (`GroupNorm32`);
    /// diffusers' `norm_num_groups` makes it a setting, which small test
    /// models use (a 32-wide level normalized in 32 groups normalizes each
    /// channel alone and cancels the time embedding a ResBlock adds).
    #[serde(default = "thirty_two")]
    pub norm_groups: usize,
}

fn one() -> usize {
    1
}

fn thirty_two() -> usize {
    UNET_NORM_GROUPS
}

impl UNetConfig {
    /// Heads and channels per head of an attention layer `channels` wide.
    pub fn heads(&self, channels: usize) -> (usize, usize) {
        match (self.num_head_channels, self.num_heads) {
            (Some(d), _) => (channels / d, d),
            (None, Some(h)) => (h, channels / h),
            (None, None) => (1, channels),
        }
    }

    /// Downsampling factor of the whole UNet.
    pub fn factor(&self) -> usize {
        1 << self.channel_mult.len().saturating_sub(1)
    }

    /// Checks the numbers fit together; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let mc = self.model_channels;
        if mc == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err("model_channels, in_channels and out_channels must be positive".into());
        }
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return Err("channel_mult: needs at least one positive entry".into());
        }
        if self.num_res_blocks == 0 {
            return Err("num_res_blocks: must be at least 1".into());
        }
        let levels: Vec<usize> = (0..self.channel_mult.len()).map(|i| 1 << i).collect();
        for ds in &self.attention_resolutions {
            if !levels.contains(ds) {
                return Err(format!(
                    "attention_resolutions: {ds} is not a downsampling factor of this UNet (one of {levels:?})"
                ));
            }
        }
        // The first ResBlock normalizes model_channels itself; every other
        // width (levels, and levels plus skips) is a sum of those.
        for ch in std::iter::once(mc).chain(self.channel_mult.iter().map(|m| m * mc)) {
            if self.norm_groups == 0 || !ch.is_multiple_of(self.norm_groups) {
                return Err(format!(
                    "channel_mult/model_channels: width {ch} does not split into norm_groups = {} groups",
                    self.norm_groups
                ));
            }
        }
        for &m in &self.channel_mult {
            let ch = m * mc;
            let (heads, d) = self.heads(ch);
            if heads == 0 || d == 0 || heads * d != ch {
                return Err(format!(
                    "num_heads/num_head_channels: width {ch} does not split into heads evenly"
                ));
            }
        }
        if self.use_spatial_transformer && self.transformer_depth == 0 {
            return Err("transformer_depth: must be at least 1".into());
        }
        if self.context_dim.is_some() && !self.use_spatial_transformer {
            return Err("context_dim: needs use_spatial_transformer = true".into());
        }
        if self.num_classes == Some(0) {
            return Err("num_classes: must be positive".into());
        }
        Ok(())
    }
}
