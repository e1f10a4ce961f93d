//! The trained half of a latent diffusion model: the UNet and the
//! conditioner, laid out as the reference `LatentDiffusion` state dict
//! (`model.diffusion_model.*`, `cond_stage_model.*`), so a checkpoint's keys
//! read like a CompVis one.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ldm_models::conditioner::{ClassEmbedder, TextTransformer, TextTransformerConfig};
use ldm_models::UNet;

use crate::diffusion::condition::Cond;
use crate::diffusion::config::{
    ConditionKind, ConditioningKey, DiffusionRunConfig, TextEncoderKind,
};

/// The reference `DiffusionWrapper`: holds the UNet as `diffusion_model`.
#[derive(Module, Debug)]
pub struct DiffusionWrapper<B: Backend> {
    /// The denoiser.
    pub diffusion_model: UNet<B>,
}

/// The reference txt2img `BERTEmbedder`: its network sits under
/// `transformer`, so keys read `cond_stage_model.transformer.*`.
#[derive(Module, Debug)]
pub struct TransformerEmbedder<B: Backend> {
    /// Token ids → per-token context.
    pub transformer: TextTransformer<B>,
}

/// The trained conditioner (`cond_stage_model.*`; the variant name is not
/// part of the keys).
// One conditioner per model, never in a collection: the size gap costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Conditioner<B: Backend> {
    /// Class embedding as a one-token context (`crossattn` class models).
    Class(ClassEmbedder<B>),
    /// The jointly trained text transformer.
    Text(TransformerEmbedder<B>),
}

/// UNet + conditioner, the parameters the diffusion stage trains.
#[derive(Module, Debug)]
pub struct LatentDiffusion<B: Backend> {
    /// `model.diffusion_model.*`.
    pub model: DiffusionWrapper<B>,
    /// `cond_stage_model.*`: the class embedder of `crossattn` class models
    /// or the text transformer; None when unconditional, `adm`, or when a
    /// frozen text encoder (kept outside the trained weights) makes the context.
    pub cond_stage_model: Option<Conditioner<B>>,
    /// Classes the model knows (0 = not class-conditional). With `adm` the
    /// label table has one more row, the null class.
    pub num_classes: usize,
    /// Whether the model reads captions.
    pub text: bool,
}

/// The jointly trained text transformer of `cfg` (reference BERTEmbedder
/// shape: the BERT uncased vocabulary, `context_length` positions).
pub fn text_transformer_config(
    cfg: &DiffusionRunConfig,
    vocab_size: usize,
) -> TextTransformerConfig {
    let c = &cfg.conditioning;
    TextTransformerConfig {
        vocab_size,
        max_seq_len: c.context_length,
        dim: c.n_embed.expect("validated"),
        depth: c.n_layer.expect("validated"),
        heads: c.heads,
        dim_head: c.dim_head,
    }
}

impl<B: Backend> LatentDiffusion<B> {
    /// A fresh model for `cfg`, knowing `num_classes` classes (class models)
    /// or a tokenizer of `vocab_size` tokens (text models; 0 otherwise).
    pub fn new(
        cfg: &DiffusionRunConfig,
        num_classes: usize,
        vocab_size: usize,
        device: &B::Device,
    ) -> Self {
        let mut unet_cfg = cfg.model.unet.clone();
        let c = &cfg.conditioning;
        let cond_stage_model = match (c.kind, cfg.model.conditioning_key) {
            (ConditionKind::Class, ConditioningKey::Crossattn) => Some(Conditioner::Class(
                ClassEmbedder::new(num_classes, c.embed_dim.expect("validated"), device),
            )),
            (ConditionKind::Class, ConditioningKey::Adm) => {
                unet_cfg.num_classes = Some(num_classes + 1);
                None
            }
            (ConditionKind::Text, _) if c.text_encoder() == TextEncoderKind::Transformer => {
                Some(Conditioner::Text(TransformerEmbedder {
                    transformer: TextTransformer::new(
                        &text_transformer_config(cfg, vocab_size),
                        device,
                    ),
                }))
            }
            _ => None,
        };
        Self {
            model: DiffusionWrapper {
                diffusion_model: UNet::new(&unet_cfg, device),
            },
            cond_stage_model,
            num_classes: match c.kind {
                ConditionKind::Class => num_classes,
                _ => 0,
            },
            text: c.kind == ConditionKind::Text,
        }
    }

    /// Whether the model takes a condition (classes or text).
    pub fn is_conditional(&self) -> bool {
        self.num_classes > 0 || self.text
    }

    /// The label meaning "no class" (classifier-free guidance's unconditional half).
    pub fn null_class(&self) -> usize {
        self.num_classes
    }

    /// The model's prediction for `x_t` at `timesteps`, given the batch's
    /// condition when the model is conditional (see [`Cond`]).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        timesteps: &[f64],
        cond: Option<Cond<B>>,
    ) -> Tensor<B, 4> {
        let unet = &self.model.diffusion_model;
        let Some(cond) = cond.filter(|_| self.is_conditional()) else {
            return unet.forward(x, timesteps, None, None);
        };
        match (cond, &self.cond_stage_model) {
            (Cond::Labels(y), Some(Conditioner::Class(embedder))) => {
                unet.forward(x, timesteps, Some(embedder.forward(y)), None)
            }
            (Cond::Labels(y), _) => unet.forward(x, timesteps, None, Some(y)),
            (Cond::Tokens(ids), Some(Conditioner::Text(t))) => {
                unet.forward(x, timesteps, Some(t.transformer.forward(ids)), None)
            }
            (Cond::Context(ctx), _) => unet.forward(x, timesteps, Some(ctx), None),
            (Cond::Tokens(_), _) => {
                unreachable!("token ids only reach a model with a text transformer")
            }
        }
    }
}
