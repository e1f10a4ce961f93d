//! Conditions as users give them (class labels, captions) and as the UNet
//! reads them (label ids, token ids, or a ready context), with the "null"
//! condition that condition dropout trains and classifier-free guidance
//! subtracts: the null class, or the empty (or negative) prompt.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Result};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use ldm_models::conditioner::{BertModel, ClipTextModel};
use ldm_text::{TextTokenizer, Tokenized, TokenizerKind};

use crate::diffusion::config::{ConditioningConfig, TextEncoderKind};
use crate::shared::assets;

/// One condition per sample, as a user or a dataset states it.
#[derive(Clone, Debug, PartialEq)]
pub enum Conditions {
    /// Class indices (the null class allowed).
    Classes(Vec<usize>),
    /// Captions / prompts (the empty prompt is the unconditional one).
    Prompts(Vec<String>),
}

impl Conditions {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Conditions::Classes(c) => c.len(),
            Conditions::Prompts(p) => p.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The conditions of samples `range`.
    pub fn slice(&self, range: Range<usize>) -> Conditions {
        match self {
            Conditions::Classes(c) => Conditions::Classes(c[range].to_vec()),
            Conditions::Prompts(p) => Conditions::Prompts(p[range].to_vec()),
        }
    }

    /// Each condition `n` times in a row (a grid row per condition).
    pub fn repeat_each(&self, n: usize) -> Conditions {
        fn rep<T: Clone>(v: &[T], n: usize) -> Vec<T> {
            v.iter()
                .flat_map(|x| std::iter::repeat_n(x.clone(), n))
                .collect()
        }
        match self {
            Conditions::Classes(c) => Conditions::Classes(rep(c, n)),
            Conditions::Prompts(p) => Conditions::Prompts(rep(p, n)),
        }
    }

    /// The same number of unconditional conditions: `null_class` for
    /// classes, `negative` (usually the empty prompt) for prompts.
    pub fn unconditional(&self, null_class: usize, negative: &str) -> Conditions {
        match self {
            Conditions::Classes(c) => Conditions::Classes(vec![null_class; c.len()]),
            Conditions::Prompts(p) => Conditions::Prompts(vec![negative.to_string(); p.len()]),
        }
    }
}

/// What [`crate::diffusion::model::LatentDiffusion::forward`] takes for a
/// batch: label ids (class embedder or `adm`), token ids (the jointly
/// trained text transformer), or a context computed outside the trained
/// model (a frozen text encoder).
#[derive(Clone, Debug)]
pub enum Cond<B: Backend> {
    /// `[B]` class indices.
    Labels(Tensor<B, 1, Int>),
    /// `[B, T]` token ids.
    Tokens(Tensor<B, 2, Int>),
    /// `[B, T, D]` cross-attention context.
    Context(Tensor<B, 3>),
}

impl<B: Backend> Cond<B> {
    /// Batch size.
    pub fn batch(&self) -> usize {
        match self {
            Cond::Labels(t) => t.dims()[0],
            Cond::Tokens(t) => t.dims()[0],
            Cond::Context(t) => t.dims()[0],
        }
    }

    /// `a` then `b` along the batch (classifier-free guidance's doubled
    /// batch: unconditional half first).
    pub fn cat(a: Cond<B>, b: Cond<B>) -> Cond<B> {
        match (a, b) {
            (Cond::Labels(a), Cond::Labels(b)) => Cond::Labels(Tensor::cat(vec![a, b], 0)),
            (Cond::Tokens(a), Cond::Tokens(b)) => Cond::Tokens(Tensor::cat(vec![a, b], 0)),
            (Cond::Context(a), Cond::Context(b)) => Cond::Context(Tensor::cat(vec![a, b], 0)),
            _ => unreachable!("both halves come from the same conditioner"),
        }
    }
}

/// Moves a condition computed without autodiff (the frozen encoder runs
/// there) into the training backend.
pub fn cond_from_inner<B: AutodiffBackend>(c: Cond<B::InnerBackend>) -> Cond<B> {
    match c {
        Cond::Labels(t) => Cond::Labels(Tensor::from_inner(t)),
        Cond::Tokens(t) => Cond::Tokens(Tensor::from_inner(t)),
        Cond::Context(t) => Cond::Context(Tensor::from_inner(t)),
    }
}

/// File name of the tokenizer copy inside a diffusion checkpoint.
pub fn tokenizer_file_name(kind: TokenizerKind) -> &'static str {
    match kind {
        TokenizerKind::Wordpiece => "tokenizer.json",
        TokenizerKind::Clip => "bpe_simple_vocab_16e6.txt.gz",
    }
}

/// The frozen text encoder's weights inside a diffusion checkpoint.
pub const FROZEN_ENCODER_WEIGHTS: &str = "cond_stage.safetensors";
/// Its `config.json` inside a diffusion checkpoint.
pub const FROZEN_ENCODER_CONFIG: &str = "cond_stage.json";

/// Where a text run's files are: the configured ones (or setup.sh's) when
/// training, the checkpoint's copies when resuming or sampling.
#[derive(Clone, Debug)]
pub struct TextFiles {
    /// The tokenizer file.
    pub tokenizer: PathBuf,
    /// `config.json` and `model.safetensors` of the frozen encoder.
    pub frozen: Option<(PathBuf, PathBuf)>,
}

impl TextFiles {
    /// The files a config names (empty = what `scripts/setup.sh` fetched),
    /// each checked to exist.
    pub fn configured(c: &ConditioningConfig) -> Result<TextFiles> {
        let minilm = assets::cache_dir().join("text").join("minilm");
        let default_tok = match c.tokenizer_kind() {
            TokenizerKind::Wordpiece => minilm.join("tokenizer.json"),
            TokenizerKind::Clip => assets::cache_dir()
                .join("text")
                .join("clip")
                .join(tokenizer_file_name(TokenizerKind::Clip)),
        };
        let enc_dir = match c.encoder_dir.as_str() {
            "" => minilm,
            d => PathBuf::from(d),
        };
        // A pretrained encoder reads its own vocabulary, kept beside it.
        let tokenizer = match (c.tokenizer_file.as_str(), c.text_encoder()) {
            ("", TextEncoderKind::Minilm) => enc_dir.join("tokenizer.json"),
            ("", TextEncoderKind::Clip) => enc_dir.join(tokenizer_file_name(TokenizerKind::Clip)),
            ("", _) => default_tok,
            (f, _) => PathBuf::from(f),
        };
        let tokenizer = assets::locate(
            "",
            tokenizer,
            "conditioning.tokenizer_file: the tokenizer",
            "",
        )?;
        let frozen = match c.text_encoder() {
            TextEncoderKind::Transformer => None,
            TextEncoderKind::Minilm | TextEncoderKind::Clip => {
                let file = |name: &str| {
                    let what = "conditioning.encoder_dir: the frozen text encoder";
                    assets::locate("", enc_dir.join(name), what, "")
                };
                Some((file("config.json")?, file("model.safetensors")?))
            }
        };
        Ok(TextFiles { tokenizer, frozen })
    }

    /// The copies a checkpoint directory carries.
    pub fn in_checkpoint(dir: &Path, c: &ConditioningConfig) -> TextFiles {
        TextFiles {
            tokenizer: dir.join(tokenizer_file_name(c.tokenizer_kind())),
            frozen: (c.text_encoder() != TextEncoderKind::Transformer).then(|| {
                (
                    dir.join(FROZEN_ENCODER_CONFIG),
                    dir.join(FROZEN_ENCODER_WEIGHTS),
                )
            }),
        }
    }

    /// (checkpoint file name, bytes) of every file, for a checkpoint to carry.
    pub fn checkpoint_copies(
        &self,
        c: &ConditioningConfig,
    ) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let mut out = vec![(
            tokenizer_file_name(c.tokenizer_kind()),
            read(&self.tokenizer)?,
        )];
        if let Some((config, weights)) = &self.frozen {
            out.push((FROZEN_ENCODER_CONFIG, read(config)?));
            out.push((FROZEN_ENCODER_WEIGHTS, read(weights)?));
        }
        Ok(out)
    }
}

/// A pretrained text encoder kept frozen: its hidden states are the context.
// One per model, never in a collection: the size gap costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum FrozenEncoder<B: Backend> {
    /// all-MiniLM-L6-v2 (BERT): reads the attention mask.
    Minilm(BertModel<B>),
    /// A CLIP text encoder: causal, so padding never reaches the real
    /// tokens; like Stable Diffusion, no mask is passed and the padding
    /// positions' states stay in the context.
    Clip(ClipTextModel<B>),
}

impl<B: Backend> FrozenEncoder<B> {
    /// Loads the `kind` encoder from transformers' `config` and weights.
    fn load(
        kind: TextEncoderKind,
        config: &Path,
        weights: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let loaded = match kind {
            TextEncoderKind::Minilm => {
                BertModel::load_files(config, weights, device).map(Self::Minilm)
            }
            TextEncoderKind::Clip => {
                ClipTextModel::load_files(config, weights, device).map(Self::Clip)
            }
            TextEncoderKind::Transformer => {
                unreachable!("the text transformer is trained, not frozen")
            }
        };
        loaded.map_err(|e| anyhow::anyhow!("conditioning.encoder_dir: {e}"))
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        match self {
            Self::Minilm(m) => m.hidden_size(),
            Self::Clip(m) => m.hidden_size(),
        }
    }

    /// Rows of the token table: the ids the encoder can read.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Minilm(m) => m.embeddings.word_embeddings.weight.dims()[0],
            Self::Clip(m) => m.embeddings.token_embedding.weight.dims()[0],
        }
    }

    /// Positions the encoder has (the longest context it can read).
    pub fn max_positions(&self) -> usize {
        match self {
            Self::Minilm(m) => m.embeddings.position_embeddings.weight.dims()[0],
            Self::Clip(m) => m.embeddings.position_embedding.weight.dims()[0],
        }
    }

    /// `[B, T, D]` hidden states of `ids` (`mask`: true at real tokens).
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        match self {
            Self::Minilm(m) => m.forward(ids, mask),
            Self::Clip(m) => m.forward(ids),
        }
    }
}

/// The text side of a text-conditioned model that is not trained: the
/// tokenizer and, for `minilm` and `clip`, the frozen encoder.
pub struct TextSide<B: Backend> {
    /// Captions → token ids.
    pub tokenizer: TextTokenizer,
    /// The frozen encoder (None: the trained text transformer encodes).
    pub frozen: Option<FrozenEncoder<B>>,
    /// Prompts already warned about being truncated.
    warned: Mutex<HashSet<String>>,
    /// The frozen encoder's context per prompt, `[T·D]` values each.
    contexts: Mutex<HashMap<String, Vec<f32>>>,
}

/// Prompts whose frozen-encoder context is kept (77 tokens × width × 4
/// bytes: 118 KB each for MiniLM, 236 KB for SD 1.x's CLIP, so up to ~1 GB);
/// a training set's captions usually all fit.
const CONTEXT_CACHE_ENTRIES: usize = 4096;

impl<B: Backend> TextSide<B> {
    /// Opens the tokenizer and the frozen encoder of `files`.
    pub fn open(c: &ConditioningConfig, files: &TextFiles, device: &B::Device) -> Result<Self> {
        let tokenizer = TextTokenizer::open(c.tokenizer_kind(), &files.tokenizer, c.context_length)
            .map_err(|e| anyhow::anyhow!("conditioning.tokenizer_file: {e}"))?;
        let frozen = match &files.frozen {
            None => None,
            Some((config, weights)) => {
                let enc = FrozenEncoder::load(c.text_encoder(), config, weights, device)?;
                let (vocab, table) = (tokenizer.vocab_size(), enc.vocab_size());
                if vocab > table {
                    bail!(
                        "conditioning.tokenizer_file: {} has {vocab} tokens, but the frozen encoder's \
                         table ({}) has {table} rows; they are not a pair",
                        files.tokenizer.display(),
                        weights.display()
                    );
                }
                if c.context_length > enc.max_positions() {
                    bail!(
                        "conditioning.context_length: {} tokens, but the frozen encoder has {} positions",
                        c.context_length,
                        enc.max_positions()
                    );
                }
                Some(enc)
            }
        };
        Ok(Self {
            tokenizer,
            frozen,
            warned: Mutex::new(HashSet::new()),
            contexts: Mutex::new(HashMap::new()),
        })
    }

    /// Width of the context the frozen encoder produces (None: trained encoder).
    pub fn frozen_width(&self) -> Option<usize> {
        self.frozen.as_ref().map(|m| m.hidden_size())
    }

    /// Token ids of `prompts`, warning once per prompt that does not fit.
    fn tokenize(&self, prompts: &[String]) -> Result<Vec<Tokenized>> {
        prompts
            .iter()
            .map(|p| {
                let t = self.tokenizer.encode(p)?;
                if let Some(w) = self.tokenizer.truncation_warning(p, &t) {
                    if self.warned.lock().expect("not poisoned").insert(p.clone()) {
                        eprintln!("{w}");
                    }
                }
                Ok(t)
            })
            .collect::<Result<_, ldm_text::TextError>>()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// `[n, T]` token ids of `toks`.
    fn ids(&self, toks: &[Tokenized], device: &B::Device) -> Tensor<B, 2, Int> {
        let (n, t) = (toks.len(), self.tokenizer.context_length());
        let ids: Vec<i64> = toks
            .iter()
            .flat_map(|k| k.ids.iter().map(|&i| i as i64))
            .collect();
        Tensor::from_data(TensorData::new(ids, [n, t]), device)
    }

    /// The frozen encoder's `[T·D]` context of one prompt, computed alone
    /// (so the values never depend on which prompts share a batch: a
    /// resumed run reads the same numbers) and kept for the next time the
    /// caption comes round.
    fn frozen_context(
        &self,
        model: &FrozenEncoder<B>,
        prompt: &str,
        tok: &Tokenized,
        device: &B::Device,
    ) -> Vec<f32> {
        if let Some(v) = self.contexts.lock().expect("not poisoned").get(prompt) {
            return v.clone();
        }
        let t = self.tokenizer.context_length();
        let mask =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(tok.attention_mask(), [1, t]), device);
        let ids = self.ids(std::slice::from_ref(tok), device);
        let v: Vec<f32> = model
            .forward(ids, mask)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        let mut cache = self.contexts.lock().expect("not poisoned");
        if cache.len() < CONTEXT_CACHE_ENTRIES {
            cache.insert(prompt.to_string(), v.clone());
        }
        v
    }

    /// What the model reads for `prompts`: the frozen encoder's hidden
    /// states, or token ids for the trained transformer.
    pub fn encode(&self, prompts: &[String], device: &B::Device) -> Result<Cond<B>> {
        let toks = self.tokenize(prompts)?;
        Ok(match &self.frozen {
            None => Cond::Tokens(self.ids(&toks, device)),
            Some(model) => {
                let (n, t, d) = (
                    toks.len(),
                    self.tokenizer.context_length(),
                    model.hidden_size(),
                );
                let values: Vec<f32> = prompts
                    .iter()
                    .zip(&toks)
                    .flat_map(|(p, k)| self.frozen_context(model, p, k, device))
                    .collect();
                Cond::Context(Tensor::from_data(
                    TensorData::new(values, [n, t, d]),
                    device,
                ))
            }
        })
    }
}

/// [`Cond`] of `conds` for a model: label ids, or what `text` makes of the
/// prompts.
pub fn encode_conditions<B: Backend>(
    conds: &Conditions,
    text: Option<&TextSide<B>>,
    device: &B::Device,
) -> Result<Cond<B>> {
    match conds {
        Conditions::Classes(c) => {
            let ids: Vec<i64> = c.iter().map(|&l| l as i64).collect();
            Ok(Cond::Labels(Tensor::from_data(
                TensorData::new(ids, [c.len()]),
                device,
            )))
        }
        Conditions::Prompts(p) => match text {
            Some(text) => text.encode(p, device),
            None => bail!("the model is not text-conditioned: prompts cannot be used"),
        },
    }
}
