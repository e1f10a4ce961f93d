//! What a whole Stable-Diffusion-style pipeline is, in our terms: its noise
//! schedule (diffusers' `scheduler_config.json`, or Stable Diffusion's for a
//! CompVis single file), and — for a single file, which carries no config —
//! the UNet and the CLIP text encoder read from the tensor shapes, with the
//! settings shapes cannot reveal (attention heads, norm groups) given by the
//! caller. Both directions live here: [`scheduler_config`] writes ours back.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use ldm_models::conditioner::{ClipActivation, ClipTextConfig};
use ldm_models::UNetConfig;
use serde_json::{json, Value};

use ldm_diffusion::NoiseSchedule;

use crate::diffusion::config::{
    noise_schedule, BetaScheduleName, DiffusionModelConfig, ParameterizationName,
};
use crate::interop::export::block_types;

/// The training schedule of a pipeline: the `[model]` keys it sets.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSettings {
    /// Diffusion steps T.
    pub timesteps: usize,
    /// β schedule.
    pub beta_schedule: BetaScheduleName,
    /// First β (linear schedules).
    pub linear_start: f64,
    /// Last β (linear schedules).
    pub linear_end: f64,
    /// What the UNet predicts.
    pub parameterization: ParameterizationName,
    /// Rescaled to zero terminal SNR.
    pub zero_terminal_snr: bool,
}

impl ScheduleSettings {
    /// Stable Diffusion 1.x / 2.x (`v1-inference.yaml`): 1000 steps, β from
    /// 0.00085 to 0.012 on the square-root scale, ε-prediction.
    pub fn stable_diffusion(parameterization: ParameterizationName) -> Self {
        Self {
            timesteps: 1000,
            beta_schedule: BetaScheduleName::Linear,
            linear_start: 0.00085,
            linear_end: 0.012,
            parameterization,
            zero_terminal_snr: false,
        }
    }

    /// The settings of `m` (its cosine offset aside).
    pub fn of(m: &DiffusionModelConfig) -> Self {
        Self {
            timesteps: m.timesteps,
            beta_schedule: m.beta_schedule,
            linear_start: m.linear_start,
            linear_end: m.linear_end,
            parameterization: m.parameterization,
            zero_terminal_snr: m.zero_terminal_snr,
        }
    }

    /// The noise schedule (a cosine one with diffusers' offset).
    pub fn noise_schedule(&self) -> NoiseSchedule {
        noise_schedule(
            self.beta_schedule,
            (self.linear_start, self.linear_end),
            DIFFUSERS_COSINE_S,
            self.timesteps,
            self.zero_terminal_snr,
        )
    }

    /// Writes these settings into `m`.
    pub fn apply(&self, m: &mut DiffusionModelConfig) {
        m.timesteps = self.timesteps;
        m.beta_schedule = self.beta_schedule;
        m.linear_start = self.linear_start;
        m.linear_end = self.linear_end;
        m.parameterization = self.parameterization;
        m.zero_terminal_snr = self.zero_terminal_snr;
        if self.beta_schedule == BetaScheduleName::Cosine {
            m.cosine_s = DIFFUSERS_COSINE_S;
        }
    }
}

/// diffusers' name of each of our β schedules, and back.
const BETA_NAMES: [(&str, BetaScheduleName); 3] = [
    // Ours "linear" is the reference's: linear in √β, diffusers' "scaled_linear".
    ("scaled_linear", BetaScheduleName::Linear),
    ("linear", BetaScheduleName::SqrtLinear),
    ("squaredcos_cap_v2", BetaScheduleName::Cosine),
];

/// diffusers' `prediction_type` of each parameterization.
const PREDICTION_NAMES: [(&str, ParameterizationName); 3] = [
    ("epsilon", ParameterizationName::Eps),
    ("v_prediction", ParameterizationName::V),
    ("sample", ParameterizationName::X0),
];

/// The cosine offset diffusers' `squaredcos_cap_v2` fixes.
const DIFFUSERS_COSINE_S: f64 = 0.008;

/// The schedule of a diffusers `scheduler_config.json` (any of its
/// schedulers: they share the training keys). Sampling-only keys
/// (`steps_offset`, `timestep_spacing`, `set_alpha_to_one`, …) are the
/// sampler's business and are left to `sample`'s options.
pub fn schedule_from_diffusers(cfg: &Value, file: &str) -> Result<ScheduleSettings> {
    if !matches!(cfg.get("trained_betas"), None | Some(Value::Null)) {
        bail!("{file}: `trained_betas` is set; only named β schedules are supported");
    }
    let num = |key: &str, default: f64| -> Result<f64> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .with_context(|| format!("{file}: `{key}` = {v} is not a number")),
        }
    };
    let name = |key: &str, default: &str| -> Result<String> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => bail!("{file}: `{key}` = {v} is not a string"),
        }
    };
    let schedule = name("beta_schedule", "linear")?;
    let beta_schedule = BETA_NAMES
        .iter()
        .find(|(n, _)| *n == schedule)
        .map(|(_, b)| *b)
        .with_context(|| {
            format!(
                "{file}: `beta_schedule` = \"{schedule}\" is not supported (scaled_linear, linear, squaredcos_cap_v2)"
            )
        })?;
    let prediction = name("prediction_type", "epsilon")?;
    let parameterization = PREDICTION_NAMES
        .iter()
        .find(|(n, _)| *n == prediction)
        .map(|(_, p)| *p)
        .with_context(|| {
            format!("{file}: `prediction_type` = \"{prediction}\" is not supported (epsilon, v_prediction, sample)")
        })?;
    let timesteps = num("num_train_timesteps", 1000.0)?;
    if timesteps < 2.0 || timesteps.fract() != 0.0 {
        bail!("{file}: `num_train_timesteps` = {timesteps} is not a step count");
    }
    Ok(ScheduleSettings {
        timesteps: timesteps as usize,
        beta_schedule,
        linear_start: num("beta_start", 0.0001)?,
        linear_end: num("beta_end", 0.02)?,
        parameterization,
        zero_terminal_snr: cfg
            .get("rescale_betas_zero_snr")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// A diffusers `DDIMScheduler` config for our schedule, set up as Stable
/// Diffusion's (leading spacing with offset 1, the final step to ᾱ_0): the
/// DDIM `sample` runs by default. Fails for a cosine offset diffusers lacks.
pub fn scheduler_config(m: &DiffusionModelConfig) -> Result<Value> {
    if m.beta_schedule == BetaScheduleName::Cosine && m.cosine_s != DIFFUSERS_COSINE_S {
        bail!(
            "model.cosine_s = {}: diffusers' cosine schedule (squaredcos_cap_v2) fixes s = {DIFFUSERS_COSINE_S}",
            m.cosine_s
        );
    }
    let beta = BETA_NAMES
        .iter()
        .find(|(_, b)| *b == m.beta_schedule)
        .map(|(n, _)| *n)
        .expect("every schedule has a name");
    let prediction = PREDICTION_NAMES
        .iter()
        .find(|(_, p)| *p == m.parameterization)
        .map(|(n, _)| *n)
        .expect("every parameterization has a name");
    Ok(json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": m.timesteps,
        "beta_start": m.linear_start,
        "beta_end": m.linear_end,
        "beta_schedule": beta,
        "trained_betas": null,
        "prediction_type": prediction,
        "rescale_betas_zero_snr": m.zero_terminal_snr,
        "clip_sample": false,
        "set_alpha_to_one": false,
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "thresholding": false,
    }))
}

/// diffusers' `UNet2DConditionModel` `config.json` for our UNet (latents
/// `sample_size` wide); refuses what that class cannot express.
pub fn unet_diffusers_config(u: &UNetConfig, sample_size: usize) -> Result<Value> {
    if !u.use_spatial_transformer {
        bail!("model.unet.use_spatial_transformer = false: plain self-attention blocks have no UNet2DConditionModel counterpart");
    }
    let Some(context) = u.context_dim else {
        bail!("model.unet.context_dim: unset, but diffusers' UNet2DConditionModel always cross-attends");
    };
    let levels = u.channel_mult.len();
    let widths: Vec<usize> = u
        .channel_mult
        .iter()
        .map(|m| m * u.model_channels)
        .collect();
    let attn: Vec<bool> = (0..levels)
        .map(|i| u.attention_resolutions.contains(&(1 << i)))
        .collect();
    let down = block_types(&attn, "CrossAttnDownBlock2D", "DownBlock2D", false);
    let up = block_types(&attn, "CrossAttnUpBlock2D", "UpBlock2D", true);
    // diffusers' `attention_head_dim` is the head count of each level.
    let heads: Vec<usize> = widths.iter().map(|w| u.heads(*w).0).collect();
    Ok(json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size,
        "in_channels": u.in_channels,
        "out_channels": u.out_channels,
        "down_block_types": down,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": up,
        "block_out_channels": widths,
        "layers_per_block": u.num_res_blocks,
        "attention_head_dim": heads,
        "transformer_layers_per_block": u.transformer_depth,
        "cross_attention_dim": context,
        "norm_num_groups": u.norm_groups,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "center_input_sample": false,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "only_cross_attention": false,
        "use_linear_projection": false,
        "upcast_attention": false,
        "resnet_time_scale_shift": if u.use_scale_shift_norm { "scale_shift" } else { "default" },
        "num_class_embeds": u.num_classes,
        "class_embed_type": null,
    }))
}

// ---------------------------------------------------------------- shapes

/// How the attention layers split into heads (shapes cannot tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    /// The same number of heads at every level (Stable Diffusion 1.x: 8).
    Count(usize),
    /// Heads of this width (Stable Diffusion 2.x: 64).
    Width(usize),
}

/// Shapes of a state dict's tensors, keys without their prefix.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// The shape of `key`, or an error naming `prefix` + key.
fn shape<'a>(shapes: &'a Shapes, key: &str, prefix: &str, file: &str) -> Result<&'a [usize]> {
    shapes
        .get(key)
        .map(Vec::as_slice)
        .with_context(|| format!("{file}: no `{prefix}{key}`"))
}

/// Dimension `i` of `key`'s shape, or an error naming `prefix` + key.
fn dim(shapes: &Shapes, key: &str, i: usize, prefix: &str, file: &str) -> Result<usize> {
    let s = shape(shapes, key, prefix, file)?;
    s.get(i)
        .copied()
        .with_context(|| format!("{file}: `{prefix}{key}` has shape {s:?}, with no dimension {i}"))
}

/// Sorted distinct integers `N` of keys `{start}N.…`.
fn indices(shapes: &Shapes, start: &str) -> BTreeSet<usize> {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(start)?.split('.').next()?.parse().ok())
        .collect()
}

/// Our UNet (and diffusers' `use_linear_projection`) from the shapes of a
/// CompVis openaimodel state dict (`prefix` stripped). `heads` defaults to
/// Stable Diffusion's: 8 heads with 1×1-conv projections (1.x), 64-wide
/// heads with Linear ones (2.x).
pub fn unet_config_from_shapes(
    shapes: &Shapes,
    prefix: &str,
    file: &str,
    heads: Option<Heads>,
    norm_groups: usize,
) -> Result<(UNetConfig, bool)> {
    let get = |k: &str| shape(shapes, k, prefix, file);
    let dim = |k: &str, i: usize| dim(shapes, k, i, prefix, file);
    let (mc, in_channels) = match get("input_blocks.0.0.weight")? {
        [mc, i, 3, 3] => (*mc, *i),
        s => bail!("{file}: `{prefix}input_blocks.0.0.weight` has shape {s:?}, not a 3×3 conv"),
    };
    let out_channels = dim("out.2.weight", 0)?;
    // Walk the encoder half: ResBlocks (with or without a transformer), a
    // Downsample closing each level but the last.
    let mut levels: Vec<(Vec<usize>, Vec<bool>)> = vec![(Vec::new(), Vec::new())];
    let mut k = 1;
    loop {
        let at = |rest: &str| format!("input_blocks.{k}.{rest}");
        if shapes.contains_key(&at("0.op.weight")) {
            levels.push((Vec::new(), Vec::new()));
        } else if shapes.contains_key(&at("0.in_layers.0.weight")) {
            let width = dim(&at("0.out_layers.3.weight"), 0)?;
            let spatial = shapes.contains_key(&at("1.proj_in.weight"));
            if !spatial && shapes.keys().any(|key| key.starts_with(&at("1."))) {
                bail!(
                    "{file}: `{prefix}{}` is a plain self-attention block; only spatial-transformer UNets are imported",
                    at("1")
                );
            }
            let level = levels.last_mut().expect("one level at least");
            level.0.push(width);
            level.1.push(spatial);
        } else {
            break;
        }
        k += 1;
    }
    let num_res_blocks = levels[0].0.len();
    if num_res_blocks == 0 {
        bail!("{file}: no ResBlock at `{prefix}input_blocks.1`; not an openaimodel UNet we import");
    }
    let mut channel_mult = Vec::new();
    let mut attention_resolutions = Vec::new();
    for (i, (widths, attn)) in levels.iter().enumerate() {
        if widths.len() != num_res_blocks || widths.iter().any(|w| *w != widths[0]) {
            bail!(
                "{file}: level {i} of `{prefix}input_blocks` has ResBlocks {widths:?} wide; ours has \
                 {num_res_blocks} of one width per level"
            );
        }
        if attn.iter().any(|a| *a != attn[0]) {
            bail!("{file}: level {i} has attention in some of its blocks only");
        }
        if mc == 0 || widths[0] % mc != 0 {
            bail!(
                "{file}: level {i} is {} wide, not a multiple of model_channels {mc}",
                widths[0]
            );
        }
        channel_mult.push(widths[0] / mc);
        if attn[0] {
            attention_resolutions.push(1 << i);
        }
    }
    if !shapes.contains_key("middle_block.1.proj_in.weight") {
        bail!("{file}: no `{prefix}middle_block.1.proj_in.weight`; only spatial-transformer UNets are imported");
    }
    let linear_projection = get("middle_block.1.proj_in.weight")?.len() == 2;
    let depth = indices(shapes, "middle_block.1.transformer_blocks.").len();
    let context_dim = dim("middle_block.1.transformer_blocks.0.attn2.to_k.weight", 1)?;
    let emb = dim("input_blocks.1.0.emb_layers.1.weight", 0)?;
    let (num_heads, num_head_channels) = match heads.unwrap_or(if linear_projection {
        Heads::Width(64)
    } else {
        Heads::Count(8)
    }) {
        Heads::Count(n) => (Some(n), None),
        Heads::Width(d) => (None, Some(d)),
    };
    let cfg = UNetConfig {
        image_size: None,
        in_channels,
        out_channels,
        model_channels: mc,
        num_res_blocks,
        attention_resolutions,
        dropout: 0.0,
        channel_mult,
        num_heads,
        num_head_channels,
        use_spatial_transformer: true,
        transformer_depth: depth,
        context_dim: Some(context_dim),
        use_scale_shift_norm: emb == 2 * levels[0].0[0],
        num_classes: match shapes.get("label_emb.weight") {
            Some(_) => Some(dim("label_emb.weight", 0)?),
            None => None,
        },
        norm_groups,
    };
    cfg.validate().map_err(|why| {
        anyhow::anyhow!(
            "{file}: the UNet its shapes describe is invalid: {why} (shapes cannot tell the heads or \
             norm groups: pass --unet-heads / --unet-head-channels / --unet-norm-groups)"
        )
    })?;
    Ok((cfg, linear_projection))
}

/// A transformers `CLIPTextConfig` from the shapes of a CLIPTextModel state
/// dict (`text_model.` optional): heads default to 64-wide (OpenAI's CLIP),
/// the activation to quick-GELU, the end token to the last id.
pub fn clip_config_from_shapes(
    shapes: &Shapes,
    prefix: &str,
    file: &str,
    heads: Option<usize>,
) -> Result<ClipTextConfig> {
    let p = if shapes.contains_key("text_model.embeddings.token_embedding.weight") {
        "text_model."
    } else {
        ""
    };
    let get = |k: &str| shape(shapes, &format!("{p}{k}"), prefix, file);
    let dim = |k: &str, i: usize| dim(shapes, &format!("{p}{k}"), i, prefix, file);
    let (vocab, hidden) = match get("embeddings.token_embedding.weight")? {
        [v, h] => (*v, *h),
        s => bail!("{file}: the CLIP token table has shape {s:?}"),
    };
    let cfg = ClipTextConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: dim("encoder.layers.0.mlp.fc1.weight", 0)?,
        num_hidden_layers: indices(shapes, &format!("{p}encoder.layers.")).len(),
        num_attention_heads: heads.unwrap_or(hidden / 64),
        max_position_embeddings: dim("embeddings.position_embedding.weight", 0)?,
        layer_norm_eps: 1e-5,
        hidden_act: ClipActivation::QuickGelu,
        eos_token_id: vocab.saturating_sub(1) as u32,
    };
    cfg.validate().map_err(|why| {
        anyhow::anyhow!(
            "{file}: the CLIP text encoder its shapes describe is invalid: {why} (pass --text-heads)"
        )
    })?;
    Ok(cfg)
}

/// transformers' `config.json` for a CLIP text encoder of `cfg` (the keys
/// `CLIPTextModel.from_pretrained` needs; the start and padding ids follow
/// CLIP's vocabulary, the last two ids being start and end).
pub fn clip_config_json(cfg: &ClipTextConfig) -> Value {
    let mut v = serde_json::to_value(cfg).expect("a config serializes");
    if let Value::Object(o) = &mut v {
        o.insert("architectures".into(), json!(["CLIPTextModel"]));
        o.insert("model_type".into(), json!("clip_text_model"));
        o.insert(
            "bos_token_id".into(),
            json!(cfg.eos_token_id.saturating_sub(1)),
        );
        o.insert("pad_token_id".into(), json!(cfg.eos_token_id));
        o.insert("torch_dtype".into(), json!("float32"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_diffusion_scheduler_round_trips() {
        let sd = json!({
            "_class_name": "PNDMScheduler",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "steps_offset": 1,
            "skip_prk_steps": true
        });
        let s = schedule_from_diffusers(&sd, "s.json").unwrap();
        assert_eq!(
            s,
            ScheduleSettings::stable_diffusion(ParameterizationName::Eps)
        );
        let (mut cfg, _) =
            crate::diffusion::config::load_run_config("tiny/txt2img-tux.toml", &[]).unwrap();
        s.apply(&mut cfg.model);
        let back = scheduler_config(&cfg.model).unwrap();
        assert_eq!(schedule_from_diffusers(&back, "b.json").unwrap(), s);
        assert_eq!(back["beta_schedule"], "scaled_linear");
        assert_eq!(
            (
                back["steps_offset"].clone(),
                back["set_alpha_to_one"].clone()
            ),
            (json!(1), json!(false))
        );
    }

    #[test]
    fn unet_configs_round_trip_through_diffusers() {
        let (cfg, _) =
            crate::diffusion::config::load_run_config("tiny/txt2img-tux.toml", &[]).unwrap();
        let mut u = cfg.model.unet;
        for (heads, width, scale_shift, classes) in [
            (Some(2), None, false, None),
            (None, Some(16), true, Some(4)),
        ] {
            u.num_heads = heads;
            u.num_head_channels = width;
            u.use_scale_shift_norm = scale_shift;
            u.num_classes = classes;
            u.norm_groups = 16;
            let j = unet_diffusers_config(&u, 8).unwrap();
            let back =
                crate::interop::import_config::unet_config_from_diffusers(&j, "u.json").unwrap();
            assert_eq!(
                back.unet,
                UNetConfig {
                    image_size: Some(8),
                    dropout: 0.0,
                    ..u.clone()
                }
            );
            assert!(!back.linear_projection);
        }
        u.context_dim = None;
        let err = unet_diffusers_config(&u, 8).unwrap_err().to_string();
        assert!(err.starts_with("model.unet.context_dim"), "{err}");
    }

    #[test]
    fn unknown_scheduler_settings_name_their_key() {
        for (key, value, part) in [
            (
                "beta_schedule",
                json!("sigmoid"),
                "`beta_schedule` = \"sigmoid\"",
            ),
            (
                "prediction_type",
                json!("flow"),
                "`prediction_type` = \"flow\"",
            ),
            ("trained_betas", json!([0.1, 0.2]), "`trained_betas` is set"),
            (
                "num_train_timesteps",
                json!(1.5),
                "`num_train_timesteps` = 1.5",
            ),
        ] {
            let err = schedule_from_diffusers(&json!({ key: value }), "s.json")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("s.json: ") && err.contains(part), "{err}");
        }
    }

    #[test]
    fn malformed_unet_shapes_are_errors_not_panics() {
        let mut shapes = Shapes::new();
        shapes.insert("input_blocks.0.0.weight".into(), vec![32, 4, 3, 3]);
        shapes.insert("out.2.weight".into(), vec![4, 32, 3, 3]);
        let err = |s: &Shapes| {
            unet_config_from_shapes(s, "m.", "f", None, 32)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&shapes).contains("no ResBlock at `m.input_blocks.1`"));
        shapes.insert("input_blocks.1.0.in_layers.0.weight".into(), vec![32]);
        shapes.insert("input_blocks.1.0.out_layers.3.weight".into(), vec![]);
        let e = err(&shapes);
        assert!(
            e.contains("`m.input_blocks.1.0.out_layers.3.weight` has shape []"),
            "{e}"
        );
    }

    #[test]
    fn clip_shapes_give_stable_diffusion_1s_encoder() {
        let mut shapes = Shapes::new();
        let t = "text_model.";
        shapes.insert(
            format!("{t}embeddings.token_embedding.weight"),
            vec![49408, 768],
        );
        shapes.insert(
            format!("{t}embeddings.position_embedding.weight"),
            vec![77, 768],
        );
        for i in 0..12 {
            shapes.insert(
                format!("{t}encoder.layers.{i}.mlp.fc1.weight"),
                vec![3072, 768],
            );
        }
        let c =
            clip_config_from_shapes(&shapes, "cond_stage_model.transformer.", "f", None).unwrap();
        assert_eq!(
            (
                c.vocab_size,
                c.hidden_size,
                c.intermediate_size,
                c.num_hidden_layers
            ),
            (49408, 768, 3072, 12)
        );
        assert_eq!((c.num_attention_heads, c.eos_token_id), (12, 49407));
        let j = clip_config_json(&c);
        assert_eq!(
            (j["bos_token_id"].clone(), j["hidden_act"].clone()),
            (json!(49406), json!("quick_gelu"))
        );
        let err = clip_config_from_shapes(&shapes, "cond_stage_model.transformer.", "f", Some(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--text-heads"), "{err}");
    }
}
