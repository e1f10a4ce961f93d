//! CLIP's byte-level BPE, built in code from a merges list.
//!
//! There is no `tokenizer.json` for CLIP among the offline assets, only
//! OpenAI's `bpe_simple_vocab_16e6.txt.gz` (one merge per line after a
//! `#version` header). The same format, plain or gzipped, is what Hugging
//! Face's `CLIPTokenizer.save_pretrained` writes as `merges.txt` (see
//! [`crate::clip_merges_from_hf_folder`] for a whole `tokenizer/` folder),
//! so any CLIP-derived merges list is accepted, including the short ones of
//! tiny test pipelines. The vocabulary is derived from it exactly as OpenAI's
//! `SimpleTokenizer` does (and Hugging Face's `vocab.json` for
//! openai/clip-vit-large-patch14 records):
//!
//! 1. merges = the `n` non-empty lines after the header, at most the first
//!    48,894 (`[1 : 49152-256-2+1]` in Python; OpenAI's file has many more,
//!    a `merges.txt` usually exactly `n`), at least one; empty lines at the
//!    end (a trailing newline) are not merges;
//! 2. vocab = the 256 byte characters of `bytes_to_unicode()` in its order,
//!    the same 256 with `</w>` appended, each merge's two halves joined, and
//!    `<|startoftext|>`, `<|endoftext|>`: `512 + n + 2` ids (49,408 for
//!    OpenAI's list), the start token at `512 + n`, the end token after it.
//!
//! The pipeline around the BPE model is the one Hugging Face's
//! `CLIPTokenizerFast` serializes:
//!
//! * normalizer: NFC, every whitespace run to one space, lowercase;
//! * pre-tokenizer: CLIP's regex (below), keeping the matches and dropping
//!   the rest (the spaces), then each piece's UTF-8 bytes mapped to the byte
//!   characters (no prefix space);
//! * model: BPE with `</w>` marking the end of each piece;
//! * post-processor: `<|startoftext|> $A <|endoftext|>`.
//!
//! Differences from OpenAI's original cleaning, shared with the fast
//! tokenizer and deliberately kept: the original first runs
//! `ftfy.fix_text` (straightens curly quotes, splits ligatures such as `ﬁ`,
//! repairs mojibake, …) and `html.unescape` twice (`&amp;` → `&`); neither
//! is done here, so prompts containing such characters tokenize like
//! `CLIPTokenizerFast`, not like the slow `CLIPTokenizer`/open_clip (see
//! `NORMALIZATION_DIFFS` in `scripts/text_token_ids.py`). Plain text, accents,
//! emoji, CJK, digits, punctuation and odd whitespace give identical ids in
//! all three. Whitespace is Rust's Unicode `White_Space` where Python's
//! `str.split` also splits on the C0 separators U+001C–U+001F.
//!
//! The fast tokenizer's byte-level step also re-applies GPT-2's split regex;
//! it is left off here because it cannot split a piece CLIP's regex made (a
//! letter run, one digit, a contraction, or a run of other non-space
//! characters are each a single GPT-2 match).

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{one_line, TextError};
use crate::text_tokenizer::Built;

/// The start token; id 49406 with OpenAI's merges (`512 + n` with `n`).
pub(crate) const START: &str = "<|startoftext|>";
/// The end token, also the padding and the unknown token; id 49407 with
/// OpenAI's merges (`513 + n` with `n`).
pub(crate) const END: &str = "<|endoftext|>";
/// The most merges CLIP uses: its 49,152-entry BPE budget minus the 256
/// byte characters and the two special tokens, as in `SimpleTokenizer`.
pub(crate) const MERGES: usize = 49152 - 256 - 2;
/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Marks the last symbol of a word, as in `SimpleTokenizer.bpe`.
const END_OF_WORD: &str = "</w>";
/// CLIP's pre-tokenization: special tokens, English contractions, letter
/// runs, single digits, runs of anything else that is not whitespace. The
/// original compiles it with IGNORECASE; the text is lowercased before it
/// runs, so the flag is left off, as in the fast tokenizer's serialization.
const PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// GPT-2/CLIP's reversible byte → character table, in `bytes_to_unicode()`'s
/// order: the 188 printable Latin-1 bytes map to themselves (ascending),
/// then the other 68 bytes to U+0100, U+0101, … (ascending). The order is
/// what fixes the first 512 vocabulary ids.
pub(crate) fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table: Vec<(u8, char)> = (0..=255u8)
        .filter(|&b| printable(b))
        .map(|b| (b, char::from(b)))
        .collect();
    let others = (0..=255u8).filter(|&b| !printable(b));
    for (n, b) in others.enumerate() {
        let c = char::from_u32(256 + n as u32).expect("U+0100..U+0143 are characters");
        table.push((b, c));
    }
    table
}

/// The merges of `bytes` (the content of `path`): gzipped (sniffed by the
/// gzip magic) or plain UTF-8 text, one merge per line after a header line.
/// Errors name `path`.
pub(crate) fn read_merges(path: &Path, bytes: &[u8]) -> Result<Vec<(String, String)>, TextError> {
    let invalid = |reason: String| TextError::NotClipVocab {
        path: path.to_path_buf(),
        reason,
    };
    let text = if bytes.starts_with(&GZIP_MAGIC) {
        let mut text = String::new();
        MultiGzDecoder::new(bytes)
            .read_to_string(&mut text)
            .map_err(|e| {
                invalid(format!(
                    "cannot read it as gzipped UTF-8 text ({})",
                    one_line(e)
                ))
            })?;
        text
    } else {
        std::str::from_utf8(bytes)
            .map_err(|e| {
                invalid(format!(
                    "it is neither gzipped nor UTF-8 text ({})",
                    one_line(e)
                ))
            })?
            .to_owned()
    };
    parse_merges(&text).map_err(invalid)
}

/// The vocabulary CLIP derives from `merges`, in id order: the 256 byte
/// characters, the same with `</w>`, each merge joined, then
/// `<|startoftext|>`, `<|endoftext|>`. As a map (Python's
/// `dict(zip(vocab, range(...)))`) a later duplicate would win; no CLIP
/// merges list has one.
fn vocab_tokens(merges: &[(String, String)]) -> Vec<String> {
    let mut vocab: Vec<String> = bytes_to_unicode()
        .iter()
        .map(|&(_, c)| c.to_string())
        .collect();
    let with_suffix: Vec<String> = vocab.iter().map(|c| format!("{c}{END_OF_WORD}")).collect();
    vocab.extend(with_suffix);
    vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.extend([START.to_owned(), END.to_owned()]);
    vocab
}

/// [`vocab_tokens`] as the token → id map the BPE model (and Hugging Face's
/// `vocab.json`) holds; later duplicates win, as in Python.
pub(crate) fn vocab_map(merges: &[(String, String)]) -> Vocab {
    vocab_tokens(merges).into_iter().zip(0u32..).collect()
}

/// Parses `bytes` (the content of `path`) as a merges list, gzipped or
/// plain, and builds the CLIP tokenizer; padding is `<|endoftext|>`.
pub(crate) fn build(path: &Path, bytes: &[u8]) -> Result<Built, TextError> {
    let invalid = |reason: String| TextError::NotClipVocab {
        path: path.to_path_buf(),
        reason,
    };
    let merges = read_merges(path, bytes)?;
    let vocab = vocab_map(&merges);
    let (start_id, end_id) = (vocab[START], vocab[END]);

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(END.to_owned())
        .end_of_word_suffix(END_OF_WORD.to_owned())
        .build()
        .map_err(|e| invalid(one_line(e)))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
        NFC.into(),
        Replace::new(ReplacePattern::Regex(r"\s+".to_owned()), " ")
            .expect("constant regex compiles")
            .into(),
        Lowercase.into(),
    ])));
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        Split::new(
            SplitPattern::Regex(PATTERN.to_owned()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .expect("constant regex compiles")
        .into(),
        ByteLevel::new(false, true, false).into(),
    ])));
    let template = TemplateProcessing::builder()
        .try_single(format!("{START} $A {END}").as_str())
        .and_then(|b| b.try_pair(format!("{START} $A {END} $B:1 {END}:1").as_str()))
        .expect("constant template parses")
        .special_tokens(vec![(START, start_id), (END, end_id)])
        .build()
        .expect("template names only its own special tokens");
    tokenizer.with_post_processor(Some(template));
    // Written in a prompt, the special tokens are recognized as such (after
    // lowercasing, as the original's case-insensitive regex would).
    tokenizer.add_special_tokens(&[
        AddedToken::from(START, true).normalized(true),
        AddedToken::from(END, true).normalized(true),
    ]);
    Ok(Built {
        tokenizer,
        pad_token: END.to_owned(),
        pad_id: end_id,
    })
}

/// The merge pairs after the header line (at most `MERGES`, at least one),
/// or why the text is not a CLIP merges list. Empty lines at the end are not
/// merges; any other line splits on whitespace like Python's `str.split()`
/// into exactly two symbols.
fn parse_merges(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines: Vec<&str> = text.split('\n').skip(1).take(MERGES).collect();
    while lines.last().is_some_and(|line| line.trim().is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return Err("it has no merge lines after the header line".to_owned());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_owned(), b.to_owned())),
                _ => Err(format!(
                    "line {} is {:?}, not two symbols separated by a space",
                    i + 2,
                    line.chars().take(40).collect::<String>()
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_in_openai_order() {
        let table = bytes_to_unicode();
        assert_eq!(table.len(), 256);
        assert_eq!(table[0], (b'!', '!'));
        assert_eq!(table[187], (0xFF, 'ÿ'));
        // The first non-printable byte (0x00) takes U+0100; space (0x20) is
        // the 33rd of them: U+0120 'Ġ', the character GPT-2 users know.
        assert_eq!(table[188], (0x00, '\u{100}'));
        assert!(table.contains(&(b' ', 'Ġ')));
        let mut bytes: Vec<u8> = table.iter().map(|&(b, _)| b).collect();
        let mut chars: Vec<char> = table.iter().map(|&(_, c)| c).collect();
        bytes.sort_unstable();
        bytes.dedup();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!((bytes.len(), chars.len()), (256, 256));
    }

    #[test]
    fn merges_list_is_one_to_merges_well_formed_lines() {
        let short = "#version: 0.2\ni n\nt h\n";
        let merges = parse_merges(short).unwrap();
        assert_eq!(merges, [("i".into(), "n".into()), ("t".into(), "h".into())]);
        // Without the trailing newline, or with several empty lines, the same.
        assert_eq!(parse_merges("#version: 0.2\ni n\nt h").unwrap(), merges);
        assert_eq!(parse_merges(&format!("{short}\n \r\n")).unwrap(), merges);
        for empty in [
            "",
            "#version: 0.2",
            "#version: 0.2\n",
            "#version: 0.2\n\n\n",
        ] {
            let err = parse_merges(empty).unwrap_err();
            assert_eq!(err, "it has no merge lines after the header line");
        }

        // OpenAI's file has more lines than CLIP uses: the first MERGES count.
        let mut text = String::from("#version: 0.2\n");
        for _ in 0..MERGES {
            text.push_str("a b\n");
        }
        assert_eq!(parse_merges(&text).unwrap().len(), MERGES);
        text.push_str("c d\nnot a merge\n");
        assert_eq!(parse_merges(&text).unwrap().len(), MERGES);
        let bad = text
            .replacen("a b\n", "a b c\n", 2)
            .replacen("a b c\n", "a b\n", 1);
        let err = parse_merges(&bad).unwrap_err();
        assert!(err.starts_with("line 3 is \"a b c\""), "{err}");
        // An empty line before the last merge is malformed, not skipped.
        let err = parse_merges("#version: 0.2\ni n\n\nt h\n").unwrap_err();
        assert!(err.starts_with("line 3 is \"\""), "{err}");
    }

    #[test]
    fn vocabulary_grows_with_the_merges() {
        let merges = [("i".to_owned(), "n".to_owned())];
        let tokens = vocab_tokens(&merges);
        assert_eq!(tokens.len(), 515);
        assert_eq!((tokens[0].as_str(), tokens[256].as_str()), ("!", "!</w>"));
        assert_eq!(&tokens[512..], ["in", START, END]);
        let vocab = vocab_map(&merges);
        assert_eq!((vocab["in"], vocab[START], vocab[END]), (512, 513, 514));
    }

    #[test]
    fn plain_and_gzipped_bytes_give_the_same_merges() {
        use std::io::Write;
        let text = "#version: 0.2\ni n\nt h\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let path = Path::new("merges.txt");
        let plain = read_merges(path, text.as_bytes()).unwrap();
        assert_eq!(read_merges(path, &gz).unwrap(), plain);
        let err = read_merges(path, &[0xff, 0xfe, b'a'])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("merges.txt is not a CLIP BPE merges list")
                && err.contains("it is neither gzipped nor UTF-8 text"),
            "{err}"
        );
        let err = read_merges(path, &gz[..gz.len() / 2])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read it as gzipped UTF-8 text"),
            "{err}"
        );
    }
}
