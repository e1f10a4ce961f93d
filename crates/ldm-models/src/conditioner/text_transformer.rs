//! The text encoder of the LDM text-to-image model (ldm `BERTEmbedder`),
//! trained jointly with the UNet from random initialization. Its network is
//! x_transformer's `TransformerWrapper(num_tokens = vocab, max_seq_len = 77,
//! attn_layers = Encoder(dim = n_embed, depth = n_layer))` read with
//! `return_embeddings = True`: token + learned position embeddings, `depth`
//! pre-norm blocks of self-attention and GELU feed-forward, a final norm.
//! The reference txt2img uses dim 1280 and depth 32.
//!
//! Parameter paths are the reference's `cond_stage_model.transformer.*` keys
//! without that prefix: `token_emb.weight`, `pos_emb.emb.weight`,
//! `attn_layers.layers.{i}.0.{weight,bias}` (the block's LayerNorm),
//! `attn_layers.layers.{2k}.1.{to_q,to_k,to_v}.weight`,
//! `attn_layers.layers.{2k}.1.to_out.{weight,bias}`,
//! `attn_layers.layers.{2k+1}.1.net.{0.0,2}.{weight,bias}`, `norm.{weight,bias}`.
//! The numbered levels come from lists of enums whose variant names are left
//! out of the paths, the mechanism of [`crate::sequential`]. The reference's
//! `to_logits.*` (a language-model head the embedder never uses) has no
//! counterpart and is to be ignored on import. Linear weights are burn's
//! `[in, out]`, the transpose of the reference tensors;
//! [`TextTransformer::from_reference`] reads a reference state dict as is.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig,
};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::layer_norm::LayerNorm;
use crate::multi_head::multi_head_attention;
use crate::torch_weights::{LoadError, TorchWeights};

/// PyTorch's `nn.LayerNorm` default, which x_transformer keeps.
const NORM_EPS: f64 = 1e-5;
/// The feed-forward's inner width is this many times `dim`.
const FF_MULT: usize = 4;

fn default_heads() -> usize {
    8
}
fn default_dim_head() -> usize {
    64
}

/// Shape of a [`TextTransformer`]; the reference `BERTEmbedder(n_embed,
/// n_layer, vocab_size, max_seq_len)` is `dim`, `depth`, `vocab_size`,
/// `max_seq_len`, with x_transformer's defaults of 8 heads of 64.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTransformerConfig {
    /// Token vocabulary (30,522 with the BERT uncased tokenizer).
    pub vocab_size: usize,
    /// Positions of the learned position table: the longest input (77).
    pub max_seq_len: usize,
    /// Width of the embeddings and of every block (`n_embed`).
    pub dim: usize,
    /// Number of attention + feed-forward pairs (`n_layer`).
    pub depth: usize,
    /// Attention heads.
    #[serde(default = "default_heads")]
    pub heads: usize,
    /// Width of each head (`heads · dim_head` need not equal `dim`).
    #[serde(default = "default_dim_head")]
    pub dim_head: usize,
}

impl TextTransformerConfig {
    /// The reference txt2img encoder: vocab 30,522, 77 tokens, dim 1280,
    /// depth 32, 8 heads of 64.
    pub fn reference_txt2img() -> Self {
        Self {
            vocab_size: 30522,
            max_seq_len: 77,
            dim: 1280,
            depth: 32,
            heads: 8,
            dim_head: 64,
        }
    }

    /// Every size must be positive.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("dim_head", self.dim_head),
        ];
        match sizes.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("text transformer `{name}` must be positive")),
            None => Ok(()),
        }
    }
}

/// x_transformer's `AbsolutePositionalEmbedding` (key `pos_emb.emb.weight`).
#[derive(Module, Debug)]
pub struct PositionEmbedding<B: Backend> {
    /// `[max_seq_len, dim]`.
    pub emb: Embedding<B>,
}

/// Bias-free q, k, v projections, `to_out` with bias; no mask, as in the
/// reference, which attends to padding tokens too.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// dim → heads·dim_head.
    pub to_q: Linear<B>,
    /// dim → heads·dim_head.
    pub to_k: Linear<B>,
    /// dim → heads·dim_head.
    pub to_v: Linear<B>,
    /// heads·dim_head → dim.
    pub to_out: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> Attention<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let q = self.to_q.forward(x.clone());
        let k = self.to_k.forward(x.clone());
        let v = self.to_v.forward(x);
        self.to_out
            .forward(multi_head_attention(q, k, v, self.heads, None))
    }
}

/// The exact (erf) GELU as a parameterless layer, so it holds its index.
#[derive(Module, Clone, Debug, Default)]
pub struct Gelu;

/// An entry of the feed-forward's `net.0` (`Sequential(Linear, GELU)`).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // path numbering only; a few per model
pub enum ProjectIn<B: Backend> {
    /// `net.0.0`.
    Linear(Linear<B>),
    /// `net.0.1`.
    Gelu(Gelu),
}

/// An entry of the feed-forward's `net`.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // path numbering only; a few per model
pub enum FfLayer<B: Backend> {
    /// `net.0`: dim → 4·dim, then GELU.
    ProjectIn(Vec<ProjectIn<B>>),
    /// `net.1` (probability 0, as in the reference).
    Dropout(Dropout),
    /// `net.2`: 4·dim → dim.
    Linear(Linear<B>),
}

/// x_transformer's `FeedForward(dim, mult = 4)` without GLU.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `[Sequential(Linear, GELU), Dropout, Linear]`.
    pub net: Vec<FfLayer<B>>,
}

impl<B: Backend> FeedForward<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.iter().fold(x, |h, layer| match layer {
            FfLayer::ProjectIn(seq) => seq.iter().fold(h, |h, l| match l {
                ProjectIn::Linear(lin) => lin.forward(h),
                ProjectIn::Gelu(_) => gelu(h),
            }),
            FfLayer::Dropout(d) => d.forward(h),
            FfLayer::Linear(lin) => lin.forward(h),
        })
    }
}

/// x_transformer's `Residual`: adds the block's input back; no parameters.
#[derive(Module, Clone, Debug, Default)]
pub struct Residual;

/// An entry of one `attn_layers.layers.{i}` ModuleList `[norm, block, residual]`.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // path numbering only; a few per model
pub enum BlockPart<B: Backend> {
    /// `.0`: the pre-norm.
    Norm(LayerNorm<B>),
    /// `.1` of the even layers.
    Attention(Attention<B>),
    /// `.1` of the odd layers.
    FeedForward(FeedForward<B>),
    /// `.2`.
    Residual(Residual),
}

/// x_transformer's `Encoder`: `layers` alternates attention (even index) and
/// feed-forward (odd index) blocks, each `x + block(norm(x))`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// `2 · depth` entries of `[Norm, Attention | FeedForward, Residual]`.
    pub layers: Vec<Vec<BlockPart<B>>>,
}

impl<B: Backend> Encoder<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layers
            .iter()
            .fold(x, |x, parts| match parts.as_slice() {
                [BlockPart::Norm(norm), block, BlockPart::Residual(_)] => {
                    let h = norm.forward(x.clone());
                    let h = match block {
                        BlockPart::Attention(a) => a.forward(h),
                        BlockPart::FeedForward(f) => f.forward(h),
                        _ => unreachable!(
                            "the block of an encoder layer is attention or feed-forward"
                        ),
                    };
                    x + h
                }
                _ => unreachable!("an encoder layer is [norm, block, residual]"),
            })
    }
}

/// The jointly trained text encoder of LDM txt2img (see the module docs for
/// its keys). `forward` maps token ids `[B, T]` (T ≤ `max_seq_len`) to the
/// context `[B, T, dim]` the UNet's cross-attention reads.
#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    /// `[vocab_size, dim]`, initialized N(0, 0.02²) as in the reference.
    pub token_emb: Embedding<B>,
    /// Learned positions, N(0, 0.02²).
    pub pos_emb: PositionEmbedding<B>,
    /// The pre-norm blocks.
    pub attn_layers: Encoder<B>,
    /// Final LayerNorm.
    pub norm: LayerNorm<B>,
}

impl<B: Backend> TextTransformer<B> {
    /// A freshly initialized encoder: embeddings N(0, 0.02²) (the
    /// reference's `init_`), linear layers burn's default (PyTorch's uniform
    /// ±1/√fan_in), norms identity.
    pub fn new(cfg: &TextTransformerConfig, device: &B::Device) -> Self {
        let dim = cfg.dim;
        let inner = cfg.heads * cfg.dim_head;
        let emb = |n: usize| {
            EmbeddingConfig::new(n, dim)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device)
        };
        let ln = || BlockPart::Norm(LayerNorm::new(dim, NORM_EPS, device));
        let proj =
            |i: usize, o: usize, bias: bool| LinearConfig::new(i, o).with_bias(bias).init(device);
        let layers = (0..cfg.depth)
            .flat_map(|_| {
                let attn = Attention {
                    to_q: proj(dim, inner, false),
                    to_k: proj(dim, inner, false),
                    to_v: proj(dim, inner, false),
                    to_out: proj(inner, dim, true),
                    heads: cfg.heads,
                };
                let ff = FeedForward {
                    net: vec![
                        FfLayer::ProjectIn(vec![
                            ProjectIn::Linear(proj(dim, FF_MULT * dim, true)),
                            ProjectIn::Gelu(Gelu),
                        ]),
                        FfLayer::Dropout(DropoutConfig::new(0.0).init()),
                        FfLayer::Linear(proj(FF_MULT * dim, dim, true)),
                    ],
                };
                [
                    vec![
                        ln(),
                        BlockPart::Attention(attn),
                        BlockPart::Residual(Residual),
                    ],
                    vec![
                        ln(),
                        BlockPart::FeedForward(ff),
                        BlockPart::Residual(Residual),
                    ],
                ]
            })
            .collect();
        Self {
            token_emb: emb(cfg.vocab_size),
            pos_emb: PositionEmbedding {
                emb: emb(cfg.max_seq_len),
            },
            attn_layers: Encoder { layers },
            norm: LayerNorm::new(dim, NORM_EPS, device),
        }
    }

    /// Reads a reference state dict (PyTorch layout, keys `{prefix}token_emb.weight`
    /// …, e.g. prefix `cond_stage_model.transformer.` in an LDM checkpoint);
    /// `to_logits.*` and every key outside the model are ignored. Errors name
    /// the file and the first missing or misshaped key.
    pub fn from_reference(
        cfg: &TextTransformerConfig,
        w: &TorchWeights,
        prefix: &str,
        device: &B::Device,
    ) -> Result<Self, LoadError> {
        cfg.validate().map_err(|e| w.error(e))?;
        let (dim, inner) = (cfg.dim, cfg.heads * cfg.dim_head);
        let ln = |p: &str| w.layer_norm(&format!("{prefix}{p}"), dim, NORM_EPS, device);
        let lin = |p: &str, i, o, bias| w.linear(&format!("{prefix}{p}"), i, o, bias, device);
        let mut layers = Vec::with_capacity(2 * cfg.depth);
        for i in 0..2 * cfg.depth {
            let p = format!("attn_layers.layers.{i}.");
            let block = if i % 2 == 0 {
                BlockPart::Attention(Attention {
                    to_q: lin(&format!("{p}1.to_q."), dim, inner, false)?,
                    to_k: lin(&format!("{p}1.to_k."), dim, inner, false)?,
                    to_v: lin(&format!("{p}1.to_v."), dim, inner, false)?,
                    to_out: lin(&format!("{p}1.to_out."), inner, dim, true)?,
                    heads: cfg.heads,
                })
            } else {
                let hidden = FF_MULT * dim;
                BlockPart::FeedForward(FeedForward {
                    net: vec![
                        FfLayer::ProjectIn(vec![
                            ProjectIn::Linear(lin(&format!("{p}1.net.0.0."), dim, hidden, true)?),
                            ProjectIn::Gelu(Gelu),
                        ]),
                        FfLayer::Dropout(DropoutConfig::new(0.0).init()),
                        FfLayer::Linear(lin(&format!("{p}1.net.2."), hidden, dim, true)?),
                    ],
                })
            };
            layers.push(vec![
                BlockPart::Norm(ln(&format!("{p}0."))?),
                block,
                BlockPart::Residual(Residual),
            ]);
        }
        Ok(Self {
            token_emb: w.embedding(&format!("{prefix}token_emb."), cfg.vocab_size, dim, device)?,
            pos_emb: PositionEmbedding {
                emb: w.embedding(
                    &format!("{prefix}pos_emb.emb."),
                    cfg.max_seq_len,
                    dim,
                    device,
                )?,
            },
            attn_layers: Encoder { layers },
            norm: ln("norm.")?,
        })
    }

    /// `ids`: `[B, T]` token ids with T ≤ `max_seq_len` → `[B, T, dim]`.
    /// Panics on a longer input.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let [max_len, dim] = self.pos_emb.emb.weight.dims();
        assert!(
            t <= max_len,
            "text transformer input of {t} tokens is longer than its {max_len} positions"
        );
        let positions = self.pos_emb.emb.weight.val().slice([0..t, 0..dim]);
        let x = self.token_emb.forward(ids) + positions.unsqueeze::<3>();
        self.norm.forward(self.attn_layers.forward(x))
    }
}
