//! What can go wrong opening a vocabulary or encoding a prompt.

use std::path::PathBuf;

/// A tokenizer failure. Every message is one line and names the file (or the
/// prompt), so it can be shown to a user as is; where the cause is the asset
/// cache, the message says how to fetch it.
#[derive(thiserror::Error, Debug)]
pub enum TextError {
    /// The vocabulary file could not be read at all (missing, a folder,
    /// no permission).
    #[error("cannot read tokenizer file {}: {source} (the default vocabularies come from `bash scripts/setup.sh`)", .path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why the operating system refused.
        source: std::io::Error,
    },
    /// The file was read but is not a usable WordPiece `tokenizer.json`
    /// (not JSON, a different model such as BPE, special tokens missing).
    #[error("{} is not a WordPiece tokenizer.json: {reason}", .path.display())]
    NotWordpiece {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it, on one line.
        reason: String,
    },
    /// The file was read but is not a CLIP merges list such as OpenAI's
    /// `bpe_simple_vocab_16e6.txt.gz` or a Hugging Face `merges.txt`
    /// (neither gzipped nor plain UTF-8 text, a broken gzip stream, no merge
    /// line after the header, a malformed merge line, or a merge whose
    /// halves are not in the vocabulary built so far).
    #[error("{} is not a CLIP BPE merges list (merges.txt, plain or gzipped): {reason}", .path.display())]
    NotClipVocab {
        /// The file that was read.
        path: PathBuf,
        /// What was wrong with it, on one line.
        reason: String,
    },
    /// A Hugging Face CLIP tokenizer folder's `vocab.json` is not the
    /// vocabulary CLIP derives from the folder's `merges.txt` (not a JSON
    /// object of token → id, a token at another id, a different size), so
    /// the merges alone would not reproduce its ids.
    #[error("{} is not the CLIP vocabulary derived from its merges.txt: {reason}", .path.display())]
    NotDerivedClipVocab {
        /// The `vocab.json` that was read.
        path: PathBuf,
        /// The first difference, on one line.
        reason: String,
    },
    /// The context cannot even hold the start and end tokens.
    #[error("context length {context_length} is too short: a tokenized prompt needs at least 2 positions (start and end token); the references use 77")]
    ContextLength {
        /// The length that was asked for.
        context_length: usize,
    },
    /// The `tokenizers` engine failed on a prompt (not expected with the
    /// vocabularies above; kept so a bad file cannot panic a run).
    #[error("cannot tokenize prompt {prompt} with {}: {reason}", .path.display())]
    Encode {
        /// The vocabulary file in use.
        path: PathBuf,
        /// The prompt, quoted and shortened to keep the message one line.
        prompt: String,
        /// The engine's message, on one line.
        reason: String,
    },
}

/// `err`'s message with line breaks folded into spaces: the engine's and
/// serde's messages are usually one line already, but a user-facing error
/// must not depend on that.
pub(crate) fn one_line(err: impl std::fmt::Display) -> String {
    err.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` quoted with escapes (so newlines and tabs stay on one line) and
/// cut after 60 characters, for messages that name a prompt.
pub(crate) fn quote_prompt(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_quoted_on_one_line_and_shortened() {
        assert_eq!(quote_prompt("a\tcat\n"), r#""a\tcat\n""#);
        let long = "x".repeat(100);
        assert_eq!(quote_prompt(&long), format!("\"{}\"…", "x".repeat(60)));
    }

    #[test]
    fn one_line_folds_line_breaks() {
        assert_eq!(one_line("bad\nfile\r\n here"), "bad file here");
    }
}
