//! Prompt tokenizers for text-conditioned diffusion, offline and backend-free.
//!
//! Two tokenizers, each reproducing what a reference implementation feeds its
//! text encoder, id for id:
//!
//! * [`TokenizerKind::Wordpiece`]: the latent-diffusion reference's
//!   `BERTTokenizer` (Hugging Face `BertTokenizerFast`, bert-base-uncased,
//!   `truncation=True, max_length=77, padding="max_length"`), read from a
//!   `tokenizer.json` such as all-MiniLM-L6-v2's (same 30,522-entry uncased
//!   vocabulary). Output: `[CLS] pieces… [SEP] [PAD]…`.
//! * [`TokenizerKind::Clip`]: Stable Diffusion 1.x's `FrozenCLIPEmbedder`
//!   (Hugging Face `CLIPTokenizer`, openai/clip-vit-large-patch14), built in
//!   code from OpenAI's `bpe_simple_vocab_16e6.txt.gz` merges list, or any
//!   CLIP-derived merges list, gzipped or a plain `merges.txt` (tiny test
//!   pipelines keep only the first few merges: `512 + n + 2` ids).
//!   [`clip_merges_from_hf_folder`] turns a Hugging Face / diffusers
//!   `tokenizer/` folder (`vocab.json` + `merges.txt`) into such a file
//!   after checking the vocabulary is the one its merges derive. Output:
//!   `<|startoftext|> pieces… <|endoftext|>`, padded with `<|endoftext|>`.
//!
//! Both always give exactly `context_length` ids ([`CONTEXT_LENGTH`] = 77 in
//! every reference). A longer prompt is cut to the first `context_length - 2`
//! pieces, keeping both special tokens, and flagged
//! ([`Tokenized::truncated`]) so the caller can warn — it is not an error,
//! because the references silently do the same.
//!
//! The heavy lifting is the Rust `tokenizers` crate (the engine behind the
//! Python fast tokenizers); this crate fixes its configuration so it matches
//! the references, and turns every failure into a one-line [`TextError`]
//! naming the file. The expected ids come from the Python libraries
//! themselves (`scripts/text_token_ids.py`) and are pinned in
//! `tests/known_ids.rs`.
//!
//! ```no_run
//! use ldm_text::{TextTokenizer, TokenizerKind, CONTEXT_LENGTH};
//! # fn main() -> Result<(), ldm_text::TextError> {
//! let vocab = std::path::Path::new("bpe_simple_vocab_16e6.txt.gz");
//! let tok = TextTokenizer::open(TokenizerKind::Clip, vocab, CONTEXT_LENGTH)?;
//! let t = tok.encode("a photo of a cat")?;
//! assert_eq!(&t.ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
//! if let Some(warning) = tok.truncation_warning("a photo of a cat", &t) {
//!     eprintln!("{warning}");
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod clip_bpe;
mod clip_hf;
mod error;
mod fingerprint;
mod kind;
mod text_tokenizer;
mod tokenized;
mod wordpiece;

pub use clip_hf::{clip_hf_folder_files, clip_merges_from_hf_folder};
pub use error::TextError;
pub use kind::TokenizerKind;
pub use text_tokenizer::TextTokenizer;
pub use tokenized::Tokenized;

/// The number of token positions every reference text encoder reads: the
/// prompt is padded or truncated to exactly this many ids (77 for CLIP and
/// for the latent-diffusion BERT conditioner alike).
pub const CONTEXT_LENGTH: usize = 77;
