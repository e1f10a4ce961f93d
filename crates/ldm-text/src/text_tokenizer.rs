//! The tokenizer the conditioning stage holds: one of the two kinds, fixed
//! to a context length, with its vocabulary's fingerprint.

use std::fmt;
use std::path::{Path, PathBuf};

use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::error::{one_line, quote_prompt, TextError};
use crate::fingerprint::fnv1a_hex;
use crate::{clip_bpe, wordpiece, Tokenized, TokenizerKind};

/// What a kind-specific builder hands back: the engine with normalizer,
/// pre-tokenizer, model and `start $A end` template in place, and the token
/// to pad with.
pub(crate) struct Built {
    pub(crate) tokenizer: Tokenizer,
    pub(crate) pad_token: String,
    pub(crate) pad_id: u32,
}

/// A prompt tokenizer reproducing a reference implementation's ids (see the
/// crate docs for which one per [`TokenizerKind`]).
///
/// Opening reads and checks the vocabulary file once; encoding is then
/// infallible in practice, cheap, and safe from several threads (`&self`).
/// Every encoding has exactly [`TextTokenizer::context_length`] ids.
#[derive(Clone)]
pub struct TextTokenizer {
    kind: TokenizerKind,
    path: PathBuf,
    inner: Tokenizer,
    pad_id: u32,
    context_length: usize,
    fingerprint: String,
}

impl TextTokenizer {
    /// Opens the vocabulary at `path` as `kind`: a `tokenizer.json` for
    /// [`TokenizerKind::Wordpiece`], a merges list such as
    /// `bpe_simple_vocab_16e6.txt.gz` for [`TokenizerKind::Clip`]. This is the entry point for config-driven
    /// code; see [`TextTokenizer::wordpiece`] and [`TextTokenizer::clip`].
    pub fn open(
        kind: TokenizerKind,
        path: &Path,
        context_length: usize,
    ) -> Result<Self, TextError> {
        match kind {
            TokenizerKind::Wordpiece => Self::wordpiece(path, context_length),
            TokenizerKind::Clip => Self::clip(path, context_length),
        }
    }

    /// BERT WordPiece from a Hugging Face `tokenizer.json` (e.g.
    /// all-MiniLM-L6-v2's, which carries bert-base-uncased's vocabulary):
    /// `[CLS] pieces [SEP]`, then `[PAD]` up to `context_length`. Fails with
    /// a message naming `path` when the file is unreadable, not a tokenizer
    /// JSON, not a WordPiece model, or lacks `[CLS]`/`[SEP]`/`[PAD]`.
    pub fn wordpiece(tokenizer_json: &Path, context_length: usize) -> Result<Self, TextError> {
        Self::build(
            TokenizerKind::Wordpiece,
            tokenizer_json,
            context_length,
            wordpiece::build,
        )
    }

    /// CLIP byte-level BPE built from a merges list: OpenAI's
    /// `bpe_simple_vocab_16e6.txt.gz`, or any CLIP-derived list such as a
    /// Hugging Face `merges.txt`, gzipped (sniffed by its magic bytes) or
    /// plain UTF-8; a header line, then one `a b` merge per line. The first
    /// `n` merges are used, `1 <= n <= 48,894` (empty lines at the end do not
    /// count), for `512 + n + 2` ids: `<|startoftext|>` = `512 + n`,
    /// `<|endoftext|>` = `513 + n` (49406 and 49407 with OpenAI's list).
    /// Encodings are `<|startoftext|> pieces <|endoftext|>`, then
    /// `<|endoftext|>` up to `context_length`. Fails with a message naming the
    /// file (`merges`) when it is unreadable, neither gzip nor UTF-8 text, has
    /// no merge line, or a malformed one. For a Hugging Face `tokenizer/`
    /// folder see [`crate::clip_merges_from_hf_folder`].
    pub fn clip(merges: &Path, context_length: usize) -> Result<Self, TextError> {
        Self::build(TokenizerKind::Clip, merges, context_length, clip_bpe::build)
    }

    fn build(
        kind: TokenizerKind,
        path: &Path,
        context_length: usize,
        make: fn(&Path, &[u8]) -> Result<Built, TextError>,
    ) -> Result<Self, TextError> {
        if context_length < 2 {
            return Err(TextError::ContextLength { context_length });
        }
        let bytes = std::fs::read(path).map_err(|source| TextError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let Built {
            mut tokenizer,
            pad_token,
            pad_id,
        } = make(path, &bytes)?;
        // What `tokenizer(text, truncation=True, max_length=n,
        // padding="max_length")` sets on the engine in Python. The limit
        // counts the two special tokens, so `n - 2` pieces survive.
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: context_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            // Only fails when the context cannot hold the special tokens.
            .map_err(|_| TextError::ContextLength { context_length })?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(context_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(Self {
            kind,
            path: path.to_path_buf(),
            inner: tokenizer,
            pad_id,
            context_length,
            fingerprint: fnv1a_hex(&bytes),
        })
    }

    /// Tokenizes one prompt to exactly [`TextTokenizer::context_length`]
    /// ids. An empty prompt gives just the start and end tokens; a prompt
    /// too long for the context is cut (keeping both special tokens) and
    /// flagged in [`Tokenized::truncated`] rather than refused, as the
    /// references do.
    pub fn encode(&self, text: &str) -> Result<Tokenized, TextError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| TextError::Encode {
                path: self.path.clone(),
                prompt: quote_prompt(text),
                reason: one_line(e),
            })?;
        let ids = encoding.get_ids().to_vec();
        debug_assert_eq!(ids.len(), self.context_length);
        let len = encoding
            .get_attention_mask()
            .iter()
            .filter(|&&m| m != 0)
            .count();
        // With stride 0 the engine moves every dropped piece into
        // `overflowing`; a prompt that fits exactly has none.
        let truncated = !encoding.get_overflowing().is_empty();
        Ok(Tokenized {
            ids,
            len,
            truncated,
        })
    }

    /// [`TextTokenizer::encode`] for each prompt, in order (a caption batch).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Tokenized>, TextError> {
        texts.iter().map(|text| self.encode(text)).collect()
    }

    /// The one-line warning to print when `tokenized` (the encoding of
    /// `text`) was truncated, naming the prompt and how much was kept;
    /// `None` when it fit.
    pub fn truncation_warning(&self, text: &str, tokenized: &Tokenized) -> Option<String> {
        tokenized.truncated.then(|| {
            format!(
                "warning: prompt {} is longer than the {}-token context of the {} tokenizer; only its first {} tokens are used",
                quote_prompt(text),
                self.context_length,
                self.kind,
                self.context_length - 2
            )
        })
    }

    /// Which of the two tokenizers this is.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// The vocabulary file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of distinct ids (special tokens included): the row count of
    /// the text encoder's token embedding. 30,522 for bert-base-uncased,
    /// 49,408 for CLIP (`512 + n + 2` for a list of `n` merges).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id that fills the positions after the prompt: `[PAD]` = 0 for
    /// WordPiece, `<|endoftext|>` = 49407 for CLIP (`513 + n` for `n`
    /// merges; the same id as the end token, so use [`Tokenized::len`] to
    /// find where padding starts).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// How many ids every encoding has.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// 16 hex digits identifying the vocabulary file's exact bytes (64-bit
    /// FNV-1a). A checkpoint records it so that a run resumed or sampled
    /// with a different vocabulary is refused instead of silently feeding
    /// the text encoder different ids; it does not depend on where the file
    /// lives or on the context length.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

impl fmt::Debug for TextTokenizer {
    // The engine's own Debug prints the whole vocabulary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .field("context_length", &self.context_length)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}
