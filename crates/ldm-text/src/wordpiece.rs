//! BERT uncased WordPiece, read from a Hugging Face `tokenizer.json`.
//!
//! The latent-diffusion reference's `BERTTokenizer` is
//! `BertTokenizerFast.from_pretrained("bert-base-uncased")` called with
//! `truncation=True, max_length=77, padding="max_length"`. A fast tokenizer
//! *is* a `tokenizer.json` run by the `tokenizers` engine, so loading the
//! same kind of file into the same engine reproduces it; what the file says
//! about normalization (BertNormalizer: clean text, split CJK characters,
//! strip accents, lowercase) and pre-tokenization (BertPreTokenizer) is kept
//! as is. Two things are not taken from the file:
//!
//! * truncation and padding: files carry their own (all-MiniLM-L6-v2's pads
//!   to 128); the caller's context length replaces them, as the keyword
//!   arguments of the Python call do;
//! * the post-processor: it is rebuilt as `[CLS] $A [SEP]` from the
//!   vocabulary's own ids, so any BERT vocabulary gets the framing the
//!   reference relies on, whatever template its file happened to carry.

use std::path::Path;

use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{ModelWrapper, Tokenizer};

use crate::error::{one_line, TextError};
use crate::text_tokenizer::Built;

/// Parses `bytes` (the content of `path`) as a WordPiece `tokenizer.json` and
/// installs the `[CLS] … [SEP]` template; padding is `[PAD]`.
pub(crate) fn build(path: &Path, bytes: &[u8]) -> Result<Built, TextError> {
    let invalid = |reason: String| TextError::NotWordpiece {
        path: path.to_path_buf(),
        reason,
    };
    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| invalid(one_line(e)))?;
    let model = match tokenizer.get_model() {
        ModelWrapper::WordPiece(_) => None,
        ModelWrapper::BPE(_) => Some("BPE"),
        ModelWrapper::WordLevel(_) => Some("WordLevel"),
        ModelWrapper::Unigram(_) => Some("Unigram"),
    };
    if let Some(model) = model {
        return Err(invalid(format!("its model is {model}, not WordPiece")));
    }
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| invalid(format!("its vocabulary has no {token} token")))
    };
    let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
        .map_err(|e| invalid(one_line(e)))?
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .map_err(|e| invalid(one_line(e)))?;
    tokenizer.with_post_processor(Some(template));
    Ok(Built {
        tokenizer,
        pad_token: "[PAD]".to_owned(),
        pad_id: pad,
    })
}
