//! The architecture of an import: our `[model]` from a diffusers
//! `config.json` ([`config_from_diffusers`]) or from the tensor shapes of a
//! CompVis / Stable Diffusion first stage ([`config_from_ldm_shapes`]), and
//! our UNet from a diffusers `UNet2DConditionModel` `config.json`
//! ([`unet_config_from_diffusers`]).
//! Used by [`crate::interop::import`].

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use burn::tensor::TensorData;
use ldm_models::{AttnType, AutoencoderConfig, Regularizer, UNetConfig};
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

// ---------------------------------------------------------------- diffusers UNet

/// A diffusers `UNet2DConditionModel` as our UNet.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusersUnet {
    /// The architecture.
    pub unet: UNetConfig,
    /// `use_linear_projection`: `proj_in`/`proj_out` are `Linear` there,
    /// 1×1 convs here (the same map; only the weight layout differs).
    pub linear_projection: bool,
}

/// Settings we implement only at one value (or a few), with why; a config
/// without the key has diffusers' default, which is always accepted.
#[rustfmt::skip]
const UNET_FIXED: &[(&str, &[&str], &str)] = &[
    ("center_input_sample", &["false"], "ours feeds the sample as is"),
    ("flip_sin_to_cos", &["true"], "our timestep embedding puts cosines first"),
    ("freq_shift", &["0"], "our frequencies are 10000^(-i/half)"),
    ("mid_block_type", &["\"UNetMidBlock2DCrossAttn\""], "our middle block is ResBlock → transformer → ResBlock"),
    ("only_cross_attention", &["false"], "attn1 is self-attention in ours"),
    ("mid_block_only_cross_attention", &["null", "false"], "attn1 is self-attention in ours"),
    ("dual_cross_attention", &["false"], "ours has one context"),
    ("downsample_padding", &["1"], "our Downsample pads 1 on every side"),
    ("mid_block_scale_factor", &["1"], "our ResBlocks do not rescale their output"),
    ("resnet_out_scale_factor", &["1"], "our ResBlocks do not rescale their output"),
    ("resnet_skip_time_act", &["false"], "our ResBlocks apply SiLU to the embedding"),
    ("dropout", &["0"], "our dropout also acts inside the transformers; set it in our config after import"),
    ("act_fn", &["\"silu\""], "our UNet uses SiLU"),
    ("norm_eps", &["1e-5"], "our UNet's GroupNorm eps is 1e-5"),
    ("time_embedding_type", &["\"positional\""], "ours is the sinusoidal embedding"),
    ("time_embedding_act_fn", &["null"], "our embedding MLP ends in a Linear"),
    ("timestep_post_act", &["null"], "our embedding MLP ends in a Linear"),
    ("time_cond_proj_dim", &["null"], "ours has no timestep condition projection"),
    ("conv_in_kernel", &["3"], "our input conv is 3×3"),
    ("conv_out_kernel", &["3"], "our output conv is 3×3"),
    ("encoder_hid_dim", &["null"], "ours feeds the context to cross-attention unprojected"),
    ("encoder_hid_dim_type", &["null"], "ours feeds the context to cross-attention unprojected"),
    ("class_embed_type", &["null"], "ours has only the label table (num_class_embeds)"),
    ("class_embeddings_concat", &["false"], "ours adds the class embedding to the time embedding"),
    ("addition_embed_type", &["null"], "ours has no added text/time embeddings"),
    ("attention_type", &["\"default\""], "ours has no gated (GLIGEN) attention"),
    ("cross_attention_norm", &["null"], "ours does not normalize the context"),
    ("reverse_transformer_layers_per_block", &["null"], "ours has one transformer depth"),
];

/// Whether two JSON values are equal, numbers compared by value (1 = 1.0).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Fails on the first [`UNET_FIXED`] setting with a value we do not implement.
fn check_fixed(cfg: &Value, file: &str) -> Result<()> {
    for (key, ok, why) in UNET_FIXED {
        let Some(v) = cfg.get(*key) else { continue };
        let accepted = ok.iter().any(|o| {
            let o: Value = serde_json::from_str(o).expect("valid JSON literal");
            same_json(v, &o)
        });
        if !accepted {
            bail!("{file}: `{key}` = {v} is not supported ({why})");
        }
    }
    Ok(())
}

/// The integers of list `a` (the value of `key`).
fn usizes(a: &[Value], key: &str, file: &str) -> Result<Vec<usize>> {
    a.iter()
        .map(|v| {
            v.as_u64().map(|n| n as usize).with_context(|| {
                format!("{file}: `{key}` holds {v}, not a non-negative integer (per-block lists are not supported)")
            })
        })
        .collect()
}

/// An integer key given once for all levels or as a list of one per level.
fn per_level(
    cfg: &Value,
    key: &str,
    default: usize,
    levels: usize,
    file: &str,
) -> Result<Vec<usize>> {
    match cfg.get(key) {
        Some(Value::Array(a)) if a.len() != levels => {
            bail!(
                "{file}: `{key}` has {} entries for {levels} levels",
                a.len()
            )
        }
        Some(Value::Array(a)) => usizes(a, key, file),
        _ => Ok(vec![json_usize(cfg, key, default, file)?; levels]),
    }
}

/// The one value `values` has at `levels` (ours has one per UNet).
fn uniform(values: &[usize], levels: &[usize], key: &str, file: &str) -> Result<usize> {
    let picked: BTreeSet<usize> = levels.iter().map(|&l| values[l]).collect();
    match picked.len() {
        1 => Ok(*picked.iter().next().expect("one")),
        _ => bail!(
            "{file}: `{key}` = {values:?} differs between levels {levels:?} (ours has one value per UNet)"
        ),
    }
}

/// `(num_heads, num_head_channels)` from diffusers' heads per level (its
/// `attention_head_dim` is a head *count*, a naming slip it keeps): one
/// count everywhere, or one width per head everywhere.
fn unet_heads(
    heads: &[usize],
    widths: &[usize],
    levels: &[usize],
    file: &str,
) -> Result<(Option<usize>, Option<usize>)> {
    // Ours splits every level's width (with attention or not) the same way.
    let splits_all = |n: usize| n > 0 && widths.iter().all(|w| w % n == 0);
    match uniform(heads, levels, "attention_head_dim", file) {
        Ok(h) if splits_all(h) => return Ok((Some(h), None)),
        _ => {}
    }
    let dims: Vec<usize> = widths
        .iter()
        .zip(heads)
        .map(|(&w, &h)| if h > 0 && w % h == 0 { w / h } else { 0 })
        .collect();
    match uniform(&dims, levels, "attention_head_dim", file) {
        Ok(d) if splits_all(d) => Ok((None, Some(d))),
        _ => bail!(
            "{file}: `attention_head_dim` = {heads:?} (heads per level) for block_out_channels {widths:?} is \
             neither one head count nor one head width at the attention levels {levels:?}"
        ),
    }
}

/// The levels with attention: where `down_block_types` has
/// `CrossAttnDownBlock2D`, which `up_block_types` must mirror.
fn unet_attention_levels(cfg: &Value, levels: usize, file: &str) -> Result<Vec<usize>> {
    const DOWN: [&str; 2] = ["DownBlock2D", "CrossAttnDownBlock2D"];
    const UP: [&str; 2] = ["UpBlock2D", "CrossAttnUpBlock2D"];
    // diffusers' defaults (Stable Diffusion's layout).
    let down = json_strs(
        cfg,
        "down_block_types",
        &[DOWN[1], DOWN[1], DOWN[1], DOWN[0]],
        file,
    )?;
    let up = json_strs(cfg, "up_block_types", &[UP[0], UP[1], UP[1], UP[1]], file)?;
    if down.len() != levels || up.len() != levels {
        bail!(
            "{file}: {} down and {} up block types for {levels} block_out_channels",
            down.len(),
            up.len()
        );
    }
    let attn = attention_levels(&down, DOWN[0], DOWN[1], "down_block_types", file)?;
    // up_blocks.k is level L−1−k.
    let mut up_attn: Vec<usize> = attention_levels(&up, UP[0], UP[1], "up_block_types", file)?
        .into_iter()
        .map(|k| levels - 1 - k)
        .collect();
    up_attn.sort_unstable();
    if attn != up_attn {
        bail!(
            "{file}: `up_block_types` put attention at levels {up_attn:?} but `down_block_types` at {attn:?} \
             (ours places both through one attention_resolutions list)"
        );
    }
    Ok(attn)
}

/// Whether the ResBlocks apply the time embedding as scale and shift; the
/// embedding itself must be ours (4 · `model_channels` wide).
fn unet_time_scale_shift(cfg: &Value, mc: usize, file: &str) -> Result<bool> {
    let time_dim = json_usize(cfg, "time_embedding_dim", 4 * mc, file)?;
    if time_dim != 4 * mc {
        bail!(
            "{file}: `time_embedding_dim` = {time_dim} (ours is 4 · block_out_channels[0] = {})",
            4 * mc
        );
    }
    match cfg.get("resnet_time_scale_shift").and_then(Value::as_str) {
        None | Some("default") => Ok(false),
        Some("scale_shift") => Ok(true),
        Some(other) => bail!(
            "{file}: `resnet_time_scale_shift` = \"{other}\" (ours adds the embedding or applies it as \
             scale and shift)"
        ),
    }
}

/// Our UNet for a diffusers `UNet2DConditionModel` `config.json` (defaults
/// = diffusers' constructor defaults). Every setting we do not implement is a
/// one-line error naming its key. `upcast_attention` is accepted: it only
/// moves fp16 softmaxes to f32, and ours runs in f32.
pub fn unet_config_from_diffusers(cfg: &Value, file: &str) -> Result<DiffusersUnet> {
    let class = cfg.get("_class_name").and_then(Value::as_str).unwrap_or("");
    if class != "UNet2DConditionModel" {
        bail!("{file}: `_class_name` is \"{class}\"; only UNet2DConditionModel maps onto our UNet");
    }
    if !matches!(cfg.get("num_attention_heads"), None | Some(Value::Null)) {
        bail!("{file}: `num_attention_heads` is set; UNet2DConditionModel itself refuses it (heads come from attention_head_dim)");
    }
    check_fixed(cfg, file)?;
    let boc = match cfg.get("block_out_channels") {
        None | Some(Value::Null) => vec![320, 640, 1280, 1280],
        Some(Value::Array(a)) => usizes(a, "block_out_channels", file)?,
        Some(v) => bail!("{file}: `block_out_channels` = {v} is not a list"),
    };
    let mc = boc.first().copied().unwrap_or(0);
    if mc == 0 || boc.iter().any(|c| c % mc != 0) {
        bail!(
            "{file}: `block_out_channels` = {boc:?} is not model_channels · channel_mult (every level a \
             multiple of the first, which conv_in outputs)"
        );
    }
    let levels = boc.len();
    let attn = unet_attention_levels(cfg, levels, file)?;
    // The middle block's transformer takes the last level's settings.
    let mut attentive = attn.clone();
    attentive.push(levels - 1);
    let depth = per_level(cfg, "transformer_layers_per_block", 1, levels, file)?;
    let context = per_level(cfg, "cross_attention_dim", 1280, levels, file)?;
    let heads = per_level(cfg, "attention_head_dim", 8, levels, file)?;
    let (num_heads, num_head_channels) = unet_heads(&heads, &boc, &attentive, file)?;
    let scale_shift = unet_time_scale_shift(cfg, mc, file)?;
    let unet = UNetConfig {
        image_size: match cfg.get("sample_size") {
            Some(Value::Array(a)) if a.len() == 2 && a[0] == a[1] => {
                a[0].as_u64().map(|n| n as usize)
            }
            Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
            _ => None,
        },
        in_channels: json_usize(cfg, "in_channels", 4, file)?,
        out_channels: json_usize(cfg, "out_channels", 4, file)?,
        model_channels: mc,
        num_res_blocks: uniform(
            &per_level(cfg, "layers_per_block", 2, levels, file)?,
            &(0..levels).collect::<Vec<_>>(),
            "layers_per_block",
            file,
        )?,
        attention_resolutions: attn.iter().map(|l| 1 << l).collect(),
        dropout: 0.0,
        channel_mult: boc.iter().map(|c| c / mc).collect(),
        num_heads,
        num_head_channels,
        use_spatial_transformer: true,
        transformer_depth: uniform(&depth, &attentive, "transformer_layers_per_block", file)?,
        context_dim: Some(uniform(&context, &attentive, "cross_attention_dim", file)?),
        use_scale_shift_norm: scale_shift,
        num_classes: match json_usize(cfg, "num_class_embeds", 0, file)? {
            0 => None,
            n => Some(n),
        },
        norm_groups: json_usize(cfg, "norm_num_groups", 32, file)?,
    };
    unet.validate()
        .map_err(|why| anyhow::anyhow!("{file}: the derived UNet is invalid: {why}"))?;
    let linear_projection = cfg
        .get("use_linear_projection")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(DiffusersUnet {
        unet,
        linear_projection,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The UNet entries of Stable Diffusion 1.x's `unet/config.json`.
    fn sd1() -> Value {
        json!({
            "_class_name": "UNet2DConditionModel",
            "act_fn": "silu",
            "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false,
            "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
            "in_channels": 4,
            "layers_per_block": 2,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-05,
            "norm_num_groups": 32,
            "out_channels": 4,
            "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        })
    }

    #[test]
    fn stable_diffusion_1_is_the_ldm_txt2img_unet() {
        let d = unet_config_from_diffusers(&sd1(), "c.json").unwrap();
        let u = &d.unet;
        assert_eq!(
            (
                u.model_channels,
                &u.channel_mult,
                u.num_res_blocks,
                &u.attention_resolutions
            ),
            (320, &vec![1, 2, 4, 4], 2, &vec![1, 2, 4])
        );
        assert_eq!(
            (u.num_heads, u.num_head_channels, u.context_dim),
            (Some(8), None, Some(768))
        );
        assert_eq!(
            (u.transformer_depth, u.image_size, u.num_classes),
            (1, Some(64), None)
        );
        assert!(!d.linear_projection && !u.use_scale_shift_norm);
    }

    #[test]
    fn stable_diffusion_2_heads_become_a_head_width() {
        let mut c = sd1();
        c["attention_head_dim"] = json!([5, 10, 20, 20]);
        c["cross_attention_dim"] = json!(1024);
        c["use_linear_projection"] = json!(true);
        c["upcast_attention"] = json!(true);
        let d = unet_config_from_diffusers(&c, "c.json").unwrap();
        assert_eq!(
            (d.unet.num_heads, d.unet.num_head_channels),
            (None, Some(64))
        );
        assert!(d.linear_projection);
        // Heads per level that fit neither rule.
        c["attention_head_dim"] = json!([5, 8, 20, 20]);
        let err = unet_config_from_diffusers(&c, "c.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.json: `attention_head_dim` = [5, 8, 20, 20]"),
            "{err}"
        );
    }

    #[test]
    fn per_level_settings_need_one_value_where_attention_is() {
        let mut c = sd1();
        // Level 3 has no attention, but the middle block takes the last entry.
        c["transformer_layers_per_block"] = json!([2, 2, 2, 1]);
        let err = unet_config_from_diffusers(&c, "c.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`transformer_layers_per_block` = [2, 2, 2, 1] differs"),
            "{err}"
        );
        c["transformer_layers_per_block"] = json!([[1, 2], 2, 2, 2]);
        let err = unet_config_from_diffusers(&c, "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("per-block lists are not supported"), "{err}");
        c["transformer_layers_per_block"] = json!(2);
        c["up_block_types"] = json!([
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "UpBlock2D"
        ]);
        let err = unet_config_from_diffusers(&c, "c.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`up_block_types` put attention at levels [1, 2, 3]"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_settings_name_their_key() {
        for (key, value) in [
            ("num_attention_heads", json!(8)),
            ("addition_embed_type", json!("text_time")),
            ("time_embedding_dim", json!(512)),
            ("norm_eps", json!(1e-6)),
            ("_class_name", json!("UNet2DModel")),
            ("dropout", json!(0.1)),
        ] {
            let mut c = sd1();
            c[key] = value;
            let err = unet_config_from_diffusers(&c, "c.json")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("c.json: `{key}`")), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let mut c = sd1();
        c["num_class_embeds"] = json!(1000);
        c["mid_block_scale_factor"] = json!(1.0);
        let d = unet_config_from_diffusers(&c, "c.json").unwrap();
        assert_eq!(d.unet.num_classes, Some(1000));
    }
}
