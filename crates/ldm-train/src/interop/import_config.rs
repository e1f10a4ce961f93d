//! The architecture of an import: our `[model]` from a diffusers
//! `config.json` ([`config_from_diffusers`]) or from the tensor shapes of a
//! CompVis / Stable Diffusion first stage ([`config_from_ldm_shapes`]).
//! Used by [`crate::interop::import`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use burn::tensor::TensorData;
use ldm_models::{AttnType, AutoencoderConfig, Regularizer};
use serde_json::Value;

// ---------------------------------------------------------------- diffusers

fn json_usize(cfg: &Value, key: &str, default: usize, file: &str) -> Result<usize> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .with_context(|| format!("{file}: `{key}` = {v} is not a non-negative integer")),
    }
}

fn json_strs(cfg: &Value, key: &str, default: &[&str], file: &str) -> Result<Vec<String>> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{file}: `{key}` holds {v}, not a string"))
            })
            .collect(),
        Some(v) => bail!("{file}: `{key}` = {v} is not a list"),
    }
}

/// Levels whose block type is the attention variant; any other type is an error.
fn attention_levels(
    types: &[String],
    plain: &str,
    attn: &str,
    key: &str,
    file: &str,
) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (i, t) in types.iter().enumerate() {
        if t == attn {
            out.push(i);
        } else if t != plain {
            bail!("{file}: `{key}[{i}]` = \"{t}\" (only {plain} and {attn} map onto ldm levels)");
        }
    }
    Ok(out)
}

/// Our `[model]` for a diffusers `AutoencoderKL` / `VQModel` `config.json`
/// (defaults = diffusers' constructor defaults).
pub fn config_from_diffusers(cfg: &Value, file: &str) -> Result<AutoencoderConfig> {
    let class = cfg.get("_class_name").and_then(Value::as_str).unwrap_or("");
    let regularizer = match class {
        "AutoencoderKL" => Regularizer::Kl,
        "VQModel" => Regularizer::Vq,
        other => bail!(
            "{file}: `_class_name` is \"{other}\"; only AutoencoderKL and VQModel can be imported"
        ),
    };
    let boc: Vec<usize> = match cfg.get("block_out_channels") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_u64().map(|n| n as usize))
            .collect::<Option<_>>()
            .with_context(|| format!("{file}: `block_out_channels` must list integers"))?,
        _ => bail!("{file}: `block_out_channels` is missing or empty"),
    };
    let ch = boc[0];
    if ch == 0 || boc.iter().any(|c| c % ch != 0) {
        bail!(
            "{file}: block_out_channels {boc:?} is not ch · ch_mult with ch_mult[0] = 1 (every \
             level must be a multiple of the first): ldm's conv_in outputs ch and its first \
             level keeps that width"
        );
    }
    let levels = boc.len();
    let act = cfg.get("act_fn").and_then(Value::as_str).unwrap_or("silu");
    if act != "silu" {
        bail!("{file}: `act_fn` = \"{act}\" (the ldm autoencoder uses silu)");
    }
    for key in ["use_quant_conv", "use_post_quant_conv"] {
        if cfg.get(key).and_then(Value::as_bool) == Some(false) {
            bail!("{file}: `{key}` = false (our autoencoder always has quant_conv and post_quant_conv)");
        }
    }
    if let Some(n) = cfg.get("norm_type").and_then(Value::as_str) {
        if n != "group" {
            bail!("{file}: `norm_type` = \"{n}\" (only GroupNorm, \"group\", maps onto ldm)");
        }
    }
    let down = json_strs(cfg, "down_block_types", &["DownEncoderBlock2D"], file)?;
    let up = json_strs(cfg, "up_block_types", &["UpDecoderBlock2D"], file)?;
    if down.len() != levels || up.len() != levels {
        bail!(
            "{file}: {} down and {} up block types for {levels} block_out_channels",
            down.len(),
            up.len()
        );
    }
    let enc_attn = attention_levels(
        &down,
        "DownEncoderBlock2D",
        "AttnDownEncoderBlock2D",
        "down_block_types",
        file,
    )?;
    // up_blocks.k is our decoder level L−1−k.
    let mut dec_attn: Vec<usize> = attention_levels(
        &up,
        "UpDecoderBlock2D",
        "AttnUpDecoderBlock2D",
        "up_block_types",
        file,
    )?
    .into_iter()
    .map(|k| levels - 1 - k)
    .collect();
    dec_attn.sort_unstable();
    if enc_attn != dec_attn {
        bail!(
            "{file}: attention at encoder levels {enc_attn:?} but decoder levels {dec_attn:?} \
             (ldm places both through one attn_resolutions list)"
        );
    }
    let mid_attn = cfg
        .get("mid_block_add_attention")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let attn_type = match (mid_attn, enc_attn.is_empty()) {
        (true, _) => AttnType::Vanilla,
        (false, true) => AttnType::None,
        (false, false) => bail!(
            "{file}: mid_block_add_attention = false with attention blocks in levels \
             {enc_attn:?}: ldm's attn_type \"none\" removes all attention, not only the middle's"
        ),
    };
    let resolution = match cfg.get("sample_size") {
        Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
            a[0].as_u64().unwrap_or(0) as usize
        }
        Some(Value::Array(a)) => bail!("{file}: `sample_size` {a:?} is not square"),
        _ => json_usize(cfg, "sample_size", 32, file)?,
    };
    let f = 1usize << (levels - 1);
    if resolution == 0 || resolution % f != 0 {
        bail!("{file}: `sample_size` {resolution} is not a positive multiple of f = {f}");
    }
    let latent = json_usize(
        cfg,
        "latent_channels",
        if regularizer == Regularizer::Kl { 4 } else { 3 },
        file,
    )?;
    let (embed_dim, n_embed) = match regularizer {
        Regularizer::Kl => (latent, None),
        Regularizer::Vq => (
            json_usize(cfg, "vq_embed_dim", latent, file)?,
            Some(json_usize(cfg, "num_vq_embeddings", 256, file)?),
        ),
    };
    let model = AutoencoderConfig {
        regularizer,
        in_channels: json_usize(cfg, "in_channels", 3, file)?,
        out_ch: json_usize(cfg, "out_channels", 3, file)?,
        ch,
        ch_mult: boc.iter().map(|c| c / ch).collect(),
        num_res_blocks: json_usize(cfg, "layers_per_block", 1, file)?,
        attn_resolutions: enc_attn.iter().map(|i| resolution >> i).collect(),
        attn_type,
        resolution,
        z_channels: latent,
        embed_dim,
        norm_groups: json_usize(cfg, "norm_num_groups", 32, file)?,
        n_embed,
        ..AutoencoderConfig::small(resolution)
    };
    validated(model, file, None)
}

fn validated(
    model: AutoencoderConfig,
    file: &str,
    hint: Option<&str>,
) -> Result<AutoencoderConfig> {
    match model.validate() {
        Ok(()) => Ok(model),
        Err((key, why)) => bail!(
            "{file}: the derived architecture is invalid: `{key}`: {why}{}",
            hint.unwrap_or("")
        ),
    }
}

// ---------------------------------------------------------------- ldm

/// Sorted distinct integers `N` of keys `{prefix}N.…`.
fn indices(keys: &BTreeSet<&str>, prefix: &str) -> Vec<usize> {
    let set: BTreeSet<usize> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect();
    set.into_iter().collect()
}

/// Our `[model]` from the tensor shapes of an LDM first stage (keys already
/// without prefix). Resolution 256 (where `attn_resolutions` are counted
/// from; it does not change the network) and 32 norm groups unless given.
pub fn config_from_ldm_shapes(
    tensors: &BTreeMap<String, (String, TensorData)>,
    prefix: &str,
    file: &str,
    norm_groups: Option<usize>,
) -> Result<AutoencoderConfig> {
    let shape = |k: &str| -> Result<Vec<usize>> {
        tensors
            .get(k)
            .map(|(_, d)| d.shape.to_vec())
            .with_context(|| {
                format!("{file}: missing `{prefix}{k}` (needed to derive the architecture)")
            })
    };
    let dim = |k: &str, i: usize| -> Result<usize> {
        let s = shape(k)?;
        s.get(i)
            .copied()
            .with_context(|| format!("{file}: `{prefix}{k}` has shape {s:?}"))
    };
    let keys: BTreeSet<&str> = tensors.keys().map(String::as_str).collect();
    let ch = dim("encoder.conv_in.weight", 0)?;
    let in_channels = dim("encoder.conv_in.weight", 1)?;
    let levels = indices(&keys, "encoder.down.");
    if levels.is_empty() || levels != (0..levels.len()).collect::<Vec<_>>() {
        bail!("{file}: encoder levels {levels:?} are not 0..L");
    }
    let blocks = indices(&keys, "encoder.down.0.block.");
    let num_res_blocks = blocks.len();
    if num_res_blocks == 0 {
        bail!("{file}: `{prefix}encoder.down.0` has no residual blocks");
    }
    let mut ch_mult = Vec::new();
    let mut attn_levels = Vec::new();
    for &i in &levels {
        let width = dim(
            &format!("encoder.down.{i}.block.{}.conv2.weight", num_res_blocks - 1),
            0,
        )?;
        if ch == 0 || width % ch != 0 {
            bail!("{file}: encoder level {i} has {width} channels, not a multiple of ch = {ch}");
        }
        ch_mult.push(width / ch);
        let enc = keys
            .iter()
            .any(|k| k.starts_with(&format!("encoder.down.{i}.attn.")));
        let dec = keys
            .iter()
            .any(|k| k.starts_with(&format!("decoder.up.{i}.attn.")));
        if enc != dec {
            bail!("{file}: level {i} has attention in only one of encoder and decoder");
        }
        if enc {
            attn_levels.push(i);
        }
    }
    let vq = keys.contains("quantize.embedding.weight");
    let enc_out = dim("encoder.conv_out.weight", 0)?;
    let qc = dim("quant_conv.weight", 0)?;
    let (z_channels, embed_dim) = if vq {
        (enc_out, qc)
    } else {
        (enc_out / 2, qc / 2)
    };
    let mid_attn = keys.iter().any(|k| k.starts_with("encoder.mid.attn_1."));
    let attn_type = match (mid_attn, attn_levels.is_empty()) {
        (true, _) => AttnType::Vanilla,
        (false, true) => AttnType::None,
        (false, false) => {
            bail!("{file}: attention in levels {attn_levels:?} but none in the middle")
        }
    };
    let f = 1usize << (levels.len() - 1);
    let resolution = 256usize.max(f);
    let model = AutoencoderConfig {
        regularizer: if vq { Regularizer::Vq } else { Regularizer::Kl },
        in_channels,
        out_ch: dim("decoder.conv_out.weight", 0)?,
        ch,
        ch_mult,
        num_res_blocks,
        attn_resolutions: attn_levels.iter().map(|i| resolution >> i).collect(),
        attn_type,
        resolution,
        z_channels,
        embed_dim,
        norm_groups: norm_groups.unwrap_or(32),
        n_embed: if vq {
            Some(dim("quantize.embedding.weight", 0)?)
        } else {
            None
        },
        ..AutoencoderConfig::small(resolution)
    };
    let hint = norm_groups.is_none().then_some(
        " (ldm's GroupNorm has 32 groups; pass --norm-groups N for weights trained with another count)",
    );
    validated(model, file, hint)
}
