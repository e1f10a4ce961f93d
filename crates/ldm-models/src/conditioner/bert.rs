//! A frozen pretrained BERT encoder (transformers' `BertModel` without the
//! pooler), for the real all-MiniLM-L6-v2 that `scripts/setup.sh` unpacks to
//! `$LDM_TRAIN_CACHE/text/minilm/` (6 layers, width 384, 12 heads, 22.7 M
//! parameters). Its per-token hidden states are the UNet's cross-attention
//! context.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::layer_norm::LayerNorm;
use crate::multi_head::multi_head_attention;
use crate::torch_weights::{load_hf_files, load_hf_folder, LoadError, TorchWeights};

/// The fields of a Hugging Face BERT `config.json` that shape the encoder;
/// the file's other fields (dropout, `architectures`, …) are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Rows of the word-piece table (30,522 for the uncased BERT vocabulary).
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must divide evenly).
    pub num_attention_heads: usize,
    /// Width of each layer's feed-forward.
    pub intermediate_size: usize,
    /// Longest sequence the learned position table covers.
    pub max_position_embeddings: usize,
    /// Rows of the segment table; only segment 0 is used.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12 for BERT).
    pub layer_norm_eps: f64,
    /// Must be `gelu` (the exact, erf-based one); other activations are refused.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Must be `absolute`; relative position variants are refused.
    #[serde(default = "default_pos")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_pos() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads a Hugging Face `config.json`; errors name the file.
    pub fn from_json(path: &Path) -> Result<Self, LoadError> {
        let err = |why: String| LoadError(format!("{}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|e| err(format!("not a BERT config ({e})")))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Checks what this implementation supports.
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
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

/// Word, position and segment embeddings, summed and normalized.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Embedding<B>,
    /// `embeddings.position_embeddings`.
    pub position_embeddings: Embedding<B>,
    /// `embeddings.token_type_embeddings` (row 0 is the only segment used).
    pub token_type_embeddings: Embedding<B>,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

/// One post-norm encoder layer (`encoder.layer.{i}`).
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// `attention.self.query`.
    pub query: Linear<B>,
    /// `attention.self.key`.
    pub key: Linear<B>,
    /// `attention.self.value`.
    pub value: Linear<B>,
    /// `attention.output.dense`.
    pub attention_dense: Linear<B>,
    /// `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm<B>,
    /// `intermediate.dense`.
    pub intermediate: Linear<B>,
    /// `output.dense`.
    pub output_dense: Linear<B>,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm<B>,
}

/// The BERT encoder: `forward` is transformers'
/// `BertModel(input_ids, attention_mask).last_hidden_state`.
///
/// Parameter paths here are our own (Rust has no field called `self`); the
/// Hugging Face keys are only read, by [`BertModel::load`], and listed at
/// each field. It is meant to stay frozen: [`BertModel::load`] returns it
/// with gradients off, and a trainer holding it should keep it so.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    /// Input embeddings.
    pub embeddings: BertEmbeddings<B>,
    /// `encoder.layer.*`.
    pub layers: Vec<BertLayer<B>>,
    /// Attention heads per layer.
    pub heads: usize,
}

impl<B: Backend> BertModel<B> {
    /// Random weights of the configured shape (tests, shape checks).
    pub fn new(cfg: &BertConfig, device: &B::Device) -> Self {
        let h = cfg.hidden_size;
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let ln = || LayerNorm::new(h, cfg.layer_norm_eps, device);
        let emb = |n: usize| EmbeddingConfig::new(n, h).init(device);
        Self {
            embeddings: BertEmbeddings {
                word_embeddings: emb(cfg.vocab_size),
                position_embeddings: emb(cfg.max_position_embeddings),
                token_type_embeddings: emb(cfg.type_vocab_size),
                layer_norm: ln(),
            },
            layers: (0..cfg.num_hidden_layers)
                .map(|_| BertLayer {
                    query: lin(h, h),
                    key: lin(h, h),
                    value: lin(h, h),
                    attention_dense: lin(h, h),
                    attention_norm: ln(),
                    intermediate: lin(h, cfg.intermediate_size),
                    output_dense: lin(cfg.intermediate_size, h),
                    output_norm: ln(),
                })
                .collect(),
            heads: cfg.num_attention_heads,
        }
    }

    /// Loads `dir/config.json` and `dir/model.safetensors` (a Hugging Face
    /// BERT folder such as `$LDM_TRAIN_CACHE/text/minilm`), frozen.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, LoadError> {
        load_hf_folder(dir, BertConfig::from_json, |c, w| {
            Self::from_weights(c, w, device)
        })
    }

    /// [`BertModel::load`] from explicitly named files.
    pub fn load_files(
        config: &Path,
        weights: &Path,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        load_hf_files(config, weights, BertConfig::from_json, |c, w| {
            Self::from_weights(c, w, device)
        })
    }

    /// Builds the encoder from Hugging Face `BertModel` keys (`embeddings.*`,
    /// `encoder.layer.{i}.*`; `pooler.*` and `embeddings.position_ids` are
    /// not needed), frozen.
    pub fn from_weights(
        cfg: &BertConfig,
        w: &TorchWeights,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        cfg.validate().map_err(|e| w.error(e))?;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let embeddings = BertEmbeddings {
            word_embeddings: w.embedding(
                "embeddings.word_embeddings.",
                cfg.vocab_size,
                h,
                device,
            )?,
            position_embeddings: w.embedding(
                "embeddings.position_embeddings.",
                cfg.max_position_embeddings,
                h,
                device,
            )?,
            token_type_embeddings: w.embedding(
                "embeddings.token_type_embeddings.",
                cfg.type_vocab_size,
                h,
                device,
            )?,
            layer_norm: w.layer_norm("embeddings.LayerNorm.", h, eps, device)?,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}.");
                let lin =
                    |k: &str, d_in, d_out| w.linear(&format!("{p}{k}."), d_in, d_out, true, device);
                let inter = cfg.intermediate_size;
                Ok(BertLayer {
                    query: lin("attention.self.query", h, h)?,
                    key: lin("attention.self.key", h, h)?,
                    value: lin("attention.self.value", h, h)?,
                    attention_dense: lin("attention.output.dense", h, h)?,
                    attention_norm: w.layer_norm(
                        &format!("{p}attention.output.LayerNorm."),
                        h,
                        eps,
                        device,
                    )?,
                    intermediate: lin("intermediate.dense", h, inter)?,
                    output_dense: lin("output.dense", inter, h)?,
                    output_norm: w.layer_norm(&format!("{p}output.LayerNorm."), h, eps, device)?,
                })
            })
            .collect::<Result<_, LoadError>>()?;
        let model = Self {
            embeddings,
            layers,
            heads: cfg.num_attention_heads,
        };
        Ok(model.no_grad())
    }

    /// Width of the hidden states (the context dimension the UNet sees).
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    /// `ids`: `[B, T]` word-piece ids; `mask`: `[B, T]`, `true` for real
    /// tokens and `false` for padding (the tokenizer's `attention_mask`).
    /// Returns the last hidden states `[B, T, hidden]`. Padding keys get no
    /// attention weight, so a real token's state does not depend on how
    /// much padding follows or on the padding ids; padding positions still
    /// get states of their own (as in transformers). Panics if `T` exceeds
    /// `max_position_embeddings`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let e = &self.embeddings;
        let [max_pos, h] = e.position_embeddings.weight.dims();
        assert!(
            t <= max_pos,
            "BERT input of {t} tokens is longer than its {max_pos} positions"
        );
        // transformers' order of additions: (words + segment 0) + positions.
        let segment = e.token_type_embeddings.weight.val().slice([0..1, 0..h]);
        let positions = e.position_embeddings.weight.val().slice([0..t, 0..h]);
        let x = e.word_embeddings.forward(ids) + segment.unsqueeze::<3>();
        let mut x = e.layer_norm.forward(x + positions.unsqueeze::<3>());
        for layer in &self.layers {
            let ctx = multi_head_attention(
                layer.query.forward(x.clone()),
                layer.key.forward(x.clone()),
                layer.value.forward(x.clone()),
                self.heads,
                Some(mask.clone()),
            );
            let a = layer
                .attention_norm
                .forward(layer.attention_dense.forward(ctx) + x);
            let f = layer
                .output_dense
                .forward(gelu(layer.intermediate.forward(a.clone())));
            x = layer.output_norm.forward(f + a);
        }
        x
    }
}

/// The sentence embedding of sentence-transformers' all-MiniLM-L6-v2: the
/// mean of the hidden states over real tokens, L2-normalized. `hidden`:
/// `[B, T, D]`, `mask`: `[B, T]` → `[B, D]`.
pub fn mean_pooled_normalized<B: Backend>(
    hidden: Tensor<B, 3>,
    mask: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    let [b, t, d] = hidden.dims();
    let w = mask.float().reshape([b, t, 1]);
    let count = w.clone().sum_dim(1).clamp_min(1e-9);
    let mean = ((hidden * w).sum_dim(1) / count).reshape([b, d]);
    // sentence-transformers' Normalize is F.normalize: x / max(‖x‖, 1e-12).
    let norm = mean
        .clone()
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    mean / norm
}
