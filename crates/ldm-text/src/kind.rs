//! Which of the two reference tokenizers a config asks for.

use std::fmt;

/// The tokenizer family; in TOML configs it is written `"wordpiece"` or
/// `"clip"`.
///
/// The kind decides both how the vocabulary file is read and which special
/// tokens frame the prompt, so a checkpoint should record it alongside
/// [`crate::TextTokenizer::fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// BERT uncased WordPiece from a Hugging Face `tokenizer.json`
    /// (`[CLS] … [SEP]`, padded with `[PAD]` = 0), as the latent-diffusion
    /// reference's `BERTTokenizer` conditioner.
    Wordpiece,
    /// OpenAI CLIP byte-level BPE from a merges list: OpenAI's
    /// `bpe_simple_vocab_16e6.txt.gz` or any CLIP-derived one, gzipped or a
    /// plain `merges.txt` (`<|startoftext|> … <|endoftext|>`, padded with
    /// `<|endoftext|>`), as Stable Diffusion 1.x's `FrozenCLIPEmbedder`.
    Clip,
}

impl TokenizerKind {
    /// The name used in configs and messages: `"wordpiece"` or `"clip"`.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Wordpiece => "wordpiece",
            TokenizerKind::Clip => "clip",
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
