//! OpenAI CLIP's text encoder, Stable Diffusion 1.x's conditioner
//! (`FrozenCLIPEmbedder` = transformers' `CLIPTextModel` of
//! openai/clip-vit-large-patch14: 12 layers, width 768, 12 heads, 123 M
//! parameters): token + position embeddings, a pre-LayerNorm *causal*
//! transformer, a final LayerNorm. Its `last_hidden_state` over the 77
//! padded tokens is the UNet's cross-attention context.
//!
//! Read from a transformers `save_pretrained` folder (`config.json` +
//! `model.safetensors`) by [`ClipTextModel::load`]; frozen, on any backend.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::layer_norm::LayerNorm;
use crate::multi_head::causal_multi_head_attention;
use crate::torch_weights::{load_hf_files, load_hf_folder, LoadError, TorchWeights};

/// The key prefix transformers gives the text tower in `CLIPTextModel`,
/// `CLIPTextModelWithProjection` and `CLIPModel` files.
pub const TEXT_MODEL_PREFIX: &str = "text_model.";

/// The `eos_token_id` of configs written before transformers PR #24773
/// (Stable Diffusion 1.x's among them); with it the pooled token is the one
/// with the largest id instead (`<|endoftext|>` is the largest CLIP id).
pub const LEGACY_EOS_TOKEN_ID: u32 = 2;

/// Architectures whose `config.json` holds the text settings at the top level.
const TEXT_ARCHITECTURES: [&str; 2] = ["CLIPTextModel", "CLIPTextModelWithProjection"];
/// The two-tower architecture, whose text settings are under `text_config`.
const FULL_ARCHITECTURE: &str = "CLIPModel";

/// The feed-forward activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipActivation {
    /// `x·σ(1.702·x)`: OpenAI's CLIP (Stable Diffusion 1.x).
    QuickGelu,
    /// The exact, erf-based GELU: OpenCLIP models (Stable Diffusion 2.x).
    Gelu,
}

impl ClipActivation {
    /// Applies the activation elementwise.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Self::Gelu => gelu(x),
        }
    }
}

/// The fields of a transformers `CLIPTextConfig` that shape the encoder.
/// Missing fields take transformers' defaults ([`ClipTextConfig::default`]);
/// the others (dropout, `projection_dim`, `pad_token_id`, …) do not change
/// `CLIPTextModel`'s output and are ignored. Padding is never masked: like
/// transformers without an `attention_mask`, and like Stable Diffusion, the
/// causal mask alone keeps padding out of the real tokens' states.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Rows of the token table (49,408 for CLIP's BPE).
    pub vocab_size: usize,
    /// Width of every hidden state (768 in Stable Diffusion 1.x).
    pub hidden_size: usize,
    /// Width of each layer's feed-forward.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must divide evenly).
    pub num_attention_heads: usize,
    /// Longest sequence the learned position table covers (77).
    pub max_position_embeddings: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// The feed-forward activation.
    pub hidden_act: ClipActivation,
    /// The end-of-text id that [`ClipTextModel::pooled`] looks for;
    /// [`LEGACY_EOS_TOKEN_ID`] selects transformers' legacy rule.
    pub eos_token_id: u32,
}

impl Default for ClipTextConfig {
    /// transformers 5.25's `CLIPTextConfig` defaults (the ViT-B/32 text tower).
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            layer_norm_eps: 1e-5,
            hidden_act: ClipActivation::QuickGelu,
            eos_token_id: 49407,
        }
    }
}

impl ClipTextConfig {
    /// Reads a transformers `config.json`: a `CLIPTextModel` or
    /// `CLIPTextModelWithProjection` one, or a `CLIPModel` one (its
    /// `text_config`). Errors name the file and the key.
    pub fn from_json(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError(format!("{}: {e}", path.display())))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// [`ClipTextConfig::from_json`] on the file's text; `origin` names it
    /// in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, LoadError> {
        let err = |why: String| LoadError(format!("{origin}: {why}"));
        let root: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON ({e})")))?;
        let (fields, at) = text_section(&root).map_err(err)?;
        let cfg = Self::from_fields(fields, at).map_err(err)?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// The settings from a config object; `at` is its key path prefix.
    fn from_fields(fields: &Map<String, Value>, at: &str) -> Result<Self, String> {
        let d = Self::default();
        Ok(Self {
            vocab_size: field(fields, at, "vocab_size", d.vocab_size)?,
            hidden_size: field(fields, at, "hidden_size", d.hidden_size)?,
            intermediate_size: field(fields, at, "intermediate_size", d.intermediate_size)?,
            num_hidden_layers: field(fields, at, "num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: field(fields, at, "num_attention_heads", d.num_attention_heads)?,
            max_position_embeddings: field(
                fields,
                at,
                "max_position_embeddings",
                d.max_position_embeddings,
            )?,
            layer_norm_eps: field(fields, at, "layer_norm_eps", d.layer_norm_eps)?,
            hidden_act: field(fields, at, "hidden_act", d.hidden_act)?,
            eos_token_id: field(fields, at, "eos_token_id", d.eos_token_id)?,
        })
    }

    /// Checks what this implementation supports.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }
}

/// The object holding the text settings and its key path prefix, chosen by
/// `architectures` (or, where that is absent or null, `model_type`).
fn text_section(root: &Value) -> Result<(&Map<String, Value>, &'static str), String> {
    let obj = root.as_object().ok_or("not a JSON object")?;
    let full = match obj.get("architectures").filter(|a| !a.is_null()) {
        Some(archs) => {
            let names: Vec<&str> = archs
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if names.iter().any(|n| TEXT_ARCHITECTURES.contains(n)) {
                false
            } else if names.contains(&FULL_ARCHITECTURE) {
                true
            } else {
                return Err(format!(
                    "key `architectures`: {archs} is not a CLIP text encoder (expected \
                     CLIPTextModel, CLIPTextModelWithProjection or CLIPModel)"
                ));
            }
        }
        None => match obj.get("model_type").and_then(Value::as_str) {
            None | Some("clip_text_model") => false,
            Some("clip") => true,
            Some(other) => {
                return Err(format!(
                    "key `model_type`: `{other}` is not a CLIP text encoder (expected \
                     clip_text_model or clip)"
                ))
            }
        },
    };
    if !full {
        return Ok((obj, ""));
    }
    let text = obj
        .get("text_config")
        .and_then(Value::as_object)
        .ok_or("key `text_config`: missing (a CLIPModel config keeps the text settings there)")?;
    Ok((text, "text_config."))
}

/// `fields[key]` as a `T`, or `default` when absent; errors name `{at}{key}`.
fn field<T: DeserializeOwned>(
    fields: &Map<String, Value>,
    at: &str,
    key: &str,
    default: T,
) -> Result<T, String> {
    match fields.get(key) {
        None => Ok(default),
        Some(v) => T::deserialize(v).map_err(|e| format!("key `{at}{key}`: {e}")),
    }
}

/// Token and position tables (`embeddings.*`).
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    /// `embeddings.token_embedding`.
    pub token_embedding: Embedding<B>,
    /// `embeddings.position_embedding`.
    pub position_embedding: Embedding<B>,
}

/// Causal multi-head self-attention (`encoder.layers.{i}.self_attn`).
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// `q_proj`.
    pub q_proj: Linear<B>,
    /// `k_proj`.
    pub k_proj: Linear<B>,
    /// `v_proj`.
    pub v_proj: Linear<B>,
    /// `out_proj`.
    pub out_proj: Linear<B>,
    /// Attention heads.
    pub heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// `[B, T, D]` → `[B, T, D]`; position `i` reads positions `0..=i` only.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let ctx = causal_multi_head_attention(
            self.q_proj.forward(x.clone()),
            self.k_proj.forward(x.clone()),
            self.v_proj.forward(x),
            self.heads,
            None,
        );
        self.out_proj.forward(ctx)
    }
}

/// The feed-forward (`encoder.layers.{i}.mlp`).
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// `fc1`.
    pub fc1: Linear<B>,
    /// `fc2`.
    pub fc2: Linear<B>,
    /// Between the two.
    pub activation: ClipActivation,
}

impl<B: Backend> ClipMlp<B> {
    /// `fc2(act(fc1(x)))`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(self.activation.apply(self.fc1.forward(x)))
    }
}

/// One pre-norm encoder layer (`encoder.layers.{i}`).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// `self_attn`.
    pub self_attn: ClipAttention<B>,
    /// `layer_norm1`, before the attention.
    pub layer_norm1: LayerNorm<B>,
    /// `mlp`.
    pub mlp: ClipMlp<B>,
    /// `layer_norm2`, before the feed-forward.
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// `x + attn(ln1(x))`, then `+ mlp(ln2(·))`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }

    /// Reads the layer whose keys start with `p` (`…encoder.layers.{i}.`).
    fn read(
        cfg: &ClipTextConfig,
        w: &TorchWeights,
        p: &str,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        let (h, inner) = (cfg.hidden_size, cfg.intermediate_size);
        let lin = |k: &str, d_in, d_out| w.linear(&format!("{p}{k}."), d_in, d_out, true, device);
        let norm = |k: &str| w.layer_norm(&format!("{p}{k}."), h, cfg.layer_norm_eps, device);
        Ok(Self {
            self_attn: ClipAttention {
                q_proj: lin("self_attn.q_proj", h, h)?,
                k_proj: lin("self_attn.k_proj", h, h)?,
                v_proj: lin("self_attn.v_proj", h, h)?,
                out_proj: lin("self_attn.out_proj", h, h)?,
                heads: cfg.num_attention_heads,
            },
            layer_norm1: norm("layer_norm1")?,
            mlp: ClipMlp {
                fc1: lin("mlp.fc1", h, inner)?,
                fc2: lin("mlp.fc2", inner, h)?,
                activation: cfg.hidden_act,
            },
            layer_norm2: norm("layer_norm2")?,
        })
    }
}

/// The layer stack (`encoder`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// `encoder.layers`.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

/// transformers' `CLIPTextModel`: [`ClipTextModel::forward`] is its
/// `last_hidden_state`, [`ClipTextModel::pooled`] its `pooler_output`.
///
/// Parameter paths are transformers' keys without `text_model.` (burn's
/// `Linear` weights are the transpose of PyTorch's), so an export is a
/// prefix, not a rename table. Meant to stay frozen: [`ClipTextModel::load`]
/// returns it with gradients off.
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    /// `embeddings`.
    pub embeddings: ClipTextEmbeddings<B>,
    /// `encoder`.
    pub encoder: ClipEncoder<B>,
    /// `final_layer_norm`.
    pub final_layer_norm: LayerNorm<B>,
    /// The end-of-text id the pooled output is taken at (from the config).
    pub eos_token_id: u32,
}

impl<B: Backend> ClipTextModel<B> {
    /// Loads `dir/config.json` and `dir/model.safetensors` (what
    /// transformers' `save_pretrained` writes for `CLIPTextModel`,
    /// `CLIPTextModelWithProjection` or `CLIPModel`), frozen.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, LoadError> {
        load_hf_folder(dir, ClipTextConfig::from_json, |c, w| {
            Self::from_weights(c, w, device)
        })
    }

    /// [`ClipTextModel::load`] from explicitly named files.
    pub fn load_files(
        config: &Path,
        weights: &Path,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        load_hf_files(config, weights, ClipTextConfig::from_json, |c, w| {
            Self::from_weights(c, w, device)
        })
    }

    /// Builds the encoder from transformers keys, with or without the
    /// `text_model.` prefix (with it, keys outside it — a `CLIPModel`'s
    /// vision tower, projections, `logit_scale` — are another model's and
    /// skipped). `embeddings.position_ids`, a buffer older files store, is
    /// not needed. Any other key left over, and every missing or misshaped
    /// one, is named in a single error. Returned frozen.
    pub fn from_weights(
        cfg: &ClipTextConfig,
        w: &TorchWeights,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        cfg.validate().map_err(|e| w.error(e))?;
        let p = key_prefix(w);
        let position_ids = format!("{p}embeddings.position_ids");
        let ignore = |k: &str| !k.starts_with(p) || k == position_ids;
        let model = w.load_all(ignore, |w| Self::read(cfg, w, p, device))?;
        Ok(model.no_grad())
    }

    /// Reads every tensor under prefix `p`.
    fn read(
        cfg: &ClipTextConfig,
        w: &TorchWeights,
        p: &str,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        let h = cfg.hidden_size;
        let table = |k: &str, n| w.embedding(&format!("{p}embeddings.{k}."), n, h, device);
        let embeddings = ClipTextEmbeddings {
            token_embedding: table("token_embedding", cfg.vocab_size)?,
            position_embedding: table("position_embedding", cfg.max_position_embeddings)?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::read(cfg, w, &format!("{p}encoder.layers.{i}."), device))
            .collect::<Result<_, _>>()?;
        let final_layer_norm = w.layer_norm(
            &format!("{p}final_layer_norm."),
            h,
            cfg.layer_norm_eps,
            device,
        )?;
        Ok(Self {
            embeddings,
            encoder: ClipEncoder { layers },
            final_layer_norm,
            eos_token_id: cfg.eos_token_id,
        })
    }

    /// Width of the hidden states (the context dimension the UNet sees).
    pub fn hidden_size(&self) -> usize {
        self.embeddings.token_embedding.weight.dims()[1]
    }

    /// `ids`: `[B, T]` token ids below `vocab_size` (Stable Diffusion: the
    /// CLIP tokenizer's, padded to 77 with `<|endoftext|>`). Returns the
    /// last hidden states `[B, T, hidden]`, final LayerNorm applied. Causal:
    /// position `i` depends on tokens `0..=i` only. Panics if `T` exceeds
    /// `max_position_embeddings`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let e = &self.embeddings;
        let [max_pos, h] = e.position_embedding.weight.dims();
        assert!(
            t <= max_pos,
            "CLIP input of {t} tokens is longer than its {max_pos} positions"
        );
        let positions = e.position_embedding.weight.val().slice([0..t, 0..h]);
        let mut x = e.token_embedding.forward(ids) + positions.unsqueeze::<3>();
        for layer in &self.encoder.layers {
            x = layer.forward(x);
        }
        self.final_layer_norm.forward(x)
    }

    /// transformers' `pooler_output`: each row of `hidden` (`[B, T, D]`,
    /// from [`ClipTextModel::forward`]) at the first position of
    /// `eos_token_id` in `ids`, or — with [`LEGACY_EOS_TOKEN_ID`] — at the
    /// first position of the row's largest id. A row without it pools
    /// position 0, as torch's `argmax` of an all-false row does. `[B, D]`.
    pub fn pooled(&self, hidden: Tensor<B, 3>, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [b, t, d] = hidden.dims();
        let is_end = if self.eos_token_id == LEGACY_EOS_TOKEN_ID {
            let top = ids.clone().max_dim(1).expand([b, t]);
            ids.equal(top)
        } else {
            ids.equal_elem(self.eos_token_id as i64)
        };
        // The first match, found without relying on how a backend's argmax
        // breaks ties: non-matches get `t`, then the minimum.
        let none = t as i64;
        let at = Tensor::<B, 1, Int>::arange(0..none, &hidden.device())
            .reshape([1, t])
            .expand([b, t])
            .mask_fill(is_end.bool_not(), none)
            .min_dim(1);
        let at = at.clone().mask_fill(at.equal_elem(none), 0);
        hidden
            .gather(1, at.reshape([b, 1, 1]).expand([b, 1, d]))
            .reshape([b, d])
    }
}

/// `text_model.` when the file has keys under it, else none.
fn key_prefix(w: &TorchWeights) -> &'static str {
    if w.keys().iter().any(|k| k.starts_with(TEXT_MODEL_PREFIX)) {
        TEXT_MODEL_PREFIX
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn quick_gelu_is_x_sigmoid_1702x() {
        let dev = Default::default();
        let x = Tensor::<Flex, 1>::from_floats([-2.0, -0.5, 0.0, 1.0, 3.0], &dev);
        let y: Vec<f32> = ClipActivation::QuickGelu
            .apply(x)
            .into_data()
            .to_vec()
            .unwrap();
        for (x, y) in [-2.0f32, -0.5, 0.0, 1.0, 3.0].into_iter().zip(y) {
            let want = x / (1.0 + (-1.702 * x).exp());
            assert!((y - want).abs() < 1e-6, "{x}: {y} vs {want}");
        }
    }

    #[test]
    fn config_reads_each_layout_and_names_bad_keys() {
        let text = r#"{"architectures": ["CLIPTextModel"], "hidden_size": 768,
                       "num_attention_heads": 12, "hidden_act": "quick_gelu", "eos_token_id": 2}"#;
        let cfg = ClipTextConfig::from_json_str(text, "a/config.json").unwrap();
        assert_eq!((cfg.hidden_size, cfg.eos_token_id), (768, 2));
        assert_eq!(
            cfg.vocab_size, 49408,
            "absent keys take transformers' defaults"
        );
        let full = r#"{"architectures": ["CLIPModel"], "hidden_size": 1,
                       "text_config": {"hidden_size": 64, "hidden_act": "gelu"}}"#;
        let cfg = ClipTextConfig::from_json_str(full, "b/config.json").unwrap();
        assert_eq!(
            (cfg.hidden_size, cfg.hidden_act),
            (64, ClipActivation::Gelu)
        );
        let untyped =
            r#"{"architectures": null, "model_type": "clip_text_model", "vocab_size": 9}"#;
        let cfg = ClipTextConfig::from_json_str(untyped, "d/config.json").unwrap();
        assert_eq!(cfg.vocab_size, 9);

        let err = |text: &str| {
            ClipTextConfig::from_json_str(text, "c/config.json")
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(r#"{"architectures": ["BertModel"]}"#),
            "c/config.json: key `architectures`: [\"BertModel\"] is not a CLIP text encoder \
             (expected CLIPTextModel, CLIPTextModelWithProjection or CLIPModel)"
        );
        assert_eq!(
            err(r#"{"model_type": "clip", "text_config": {"hidden_act": "relu"}}"#),
            "c/config.json: key `text_config.hidden_act`: unknown variant `relu`, \
             expected `quick_gelu` or `gelu`"
        );
        assert_eq!(
            err(r#"{"model_type": "clip"}"#),
            "c/config.json: key `text_config`: missing (a CLIPModel config keeps the text \
             settings there)"
        );
        assert_eq!(
            err(r#"{"hidden_size": "wide"}"#),
            "c/config.json: key `hidden_size`: invalid type: string \"wide\", expected usize"
        );
        assert_eq!(
            err(r#"{"hidden_size": 30, "num_attention_heads": 4}"#),
            "c/config.json: hidden_size 30 is not a multiple of num_attention_heads 4"
        );
    }
}
