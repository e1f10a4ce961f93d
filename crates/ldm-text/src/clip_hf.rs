//! A Hugging Face CLIP `tokenizer/` folder (what `CLIPTokenizer.save_pretrained`
//! writes, as in a diffusers pipeline) turned into the one merges file
//! [`crate::TextTokenizer::clip`] reads.
//!
//! The folder holds `vocab.json` (token → id) and `merges.txt`. CLIP's
//! vocabulary is a function of its merges (see `clip_bpe.rs`), so the merges
//! are all a checkpoint needs to carry, provided `vocab.json` really is that
//! function's value; this is checked rather than assumed, because a folder
//! whose ids were assigned otherwise would silently feed the text encoder
//! the wrong embedding rows.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::clip_bpe;
use crate::error::{one_line, TextError};

/// Reads the CLIP tokenizer folder `dir` (`dir/vocab.json`, `dir/merges.txt`)
/// and returns a gzipped merges list in OpenAI's format: a `#version: 0.2`
/// header line, then the merges CLIP uses (at most 48,894, the first ones),
/// one `a b` per line. Written as a checkpoint's `bpe_simple_vocab_16e6.txt.gz`
/// copy, [`crate::TextTokenizer::clip`] reads it back to the folder's
/// tokenizer: `512 + n + 2` ids for `n` merges, every token at the id
/// `vocab.json` gives it. The bytes depend only on the merges (no file name
/// or time in the gzip header), so their fingerprint is reproducible.
///
/// The last merge line has no newline after it, so Python's
/// `SimpleTokenizer`, which does not strip the text, finds no empty merge in
/// a short list either.
///
/// Errors (one line each): a file that cannot be read ([`TextError::Read`],
/// naming it); a `merges.txt` that is not a merges list
/// ([`TextError::NotClipVocab`], naming it); a `vocab.json` that is not
/// exactly the vocabulary derived from those merges
/// ([`TextError::NotDerivedClipVocab`], naming it and the first token at a
/// different id, or the sizes).
pub fn clip_merges_from_hf_folder(dir: &Path) -> Result<Vec<u8>, TextError> {
    let merges_path = dir.join("merges.txt");
    let vocab_path = dir.join("vocab.json");
    let merges = clip_bpe::read_merges(&merges_path, &read(&merges_path)?)?;
    let vocab = read(&vocab_path)?;
    let not_derived = |reason: String| TextError::NotDerivedClipVocab {
        path: vocab_path.clone(),
        reason,
    };
    let vocab: HashMap<String, u32> = serde_json::from_slice(&vocab).map_err(|e| {
        not_derived(format!(
            "it is not a JSON object of token to id ({})",
            one_line(e)
        ))
    })?;
    let derived: HashMap<String, u32> = clip_bpe::vocab_map(&merges).into_iter().collect();
    check_derived(&vocab, &derived).map_err(not_derived)?;

    let mut text = String::from("#version: 0.2");
    for (a, b) in &merges {
        text.push('\n');
        text.push_str(a);
        text.push(' ');
        text.push_str(b);
    }
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(text.as_bytes())
        .expect("writing to memory does not fail");
    let gz = gz.finish().expect("writing to memory does not fail");
    // The BPE model itself must accept the merges (each half a token built
    // before it); a failure is the merges file's fault.
    clip_bpe::build(&merges_path, &gz)?;
    Ok(gz)
}

fn read(path: &Path) -> Result<Vec<u8>, TextError> {
    std::fs::read(path).map_err(|source| TextError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `Ok` when `vocab` is exactly `derived`; else the first difference in
/// id order of `derived`, then the size difference with the lowest-id token
/// `derived` lacks.
fn check_derived(
    vocab: &HashMap<String, u32>,
    derived: &HashMap<String, u32>,
) -> Result<(), String> {
    let mut expected: Vec<(&String, u32)> = derived.iter().map(|(t, &id)| (t, id)).collect();
    expected.sort_unstable_by_key(|&(_, id)| id);
    for (token, id) in expected {
        match vocab.get(token) {
            Some(&got) if got == id => {}
            Some(&got) => {
                return Err(format!(
                    "token {token:?} has id {got}, its merges give it {id}"
                ))
            }
            None => {
                return Err(format!(
                    "token {token:?} is missing, its merges give it id {id}"
                ))
            }
        }
    }
    if vocab.len() != derived.len() {
        let extra = vocab
            .iter()
            .filter(|(t, _)| !derived.contains_key(*t))
            .min_by_key(|&(_, &id)| id)
            .map(|(t, id)| format!(", e.g. {t:?} at id {id}"))
            .unwrap_or_default();
        return Err(format!(
            "it has {} tokens, its merges give {}{extra}",
            vocab.len(),
            derived.len()
        ));
    }
    Ok(())
}

/// The files of a transformers CLIP `tokenizer/` folder (what
/// `CLIPTokenizer.from_pretrained` reads) for the merges list `merges` (the
/// bytes of `path`, gzipped or plain, as [`crate::TextTokenizer::clip`]
/// reads them): `vocab.json` (derived from the merges),
/// `merges.txt`, `tokenizer_config.json` (`model_max_length` =
/// `context_length`) and `special_tokens_map.json`. The inverse of
/// [`clip_merges_from_hf_folder`].
pub fn clip_hf_folder_files(
    path: &Path,
    merges: &[u8],
    context_length: usize,
) -> Result<Vec<(&'static str, String)>, TextError> {
    let merges = clip_bpe::read_merges(path, merges)?;
    let vocab: std::collections::BTreeMap<String, u32> =
        clip_bpe::vocab_map(&merges).into_iter().collect();
    let mut text = String::from("#version: 0.2\n");
    for (a, b) in &merges {
        text.push_str(&format!("{a} {b}\n"));
    }
    let specials = serde_json::json!({
        "bos_token": clip_bpe::START,
        "eos_token": clip_bpe::END,
        "pad_token": clip_bpe::END,
        "unk_token": clip_bpe::END,
    });
    let mut config = specials.clone();
    for (k, v) in [
        ("tokenizer_class", serde_json::json!("CLIPTokenizer")),
        ("model_max_length", serde_json::json!(context_length)),
        ("add_prefix_space", serde_json::json!(false)),
        ("do_lower_case", serde_json::json!(true)),
        ("errors", serde_json::json!("replace")),
    ] {
        config[k] = v;
    }
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("JSON serializes");
    Ok(vec![
        (
            "vocab.json",
            serde_json::to_string(&vocab).expect("JSON serializes"),
        ),
        ("merges.txt", text),
        ("tokenizer_config.json", json(&config)),
        ("special_tokens_map.json", json(&specials)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, u32)]) -> HashMap<String, u32> {
        entries.iter().map(|&(t, id)| (t.to_owned(), id)).collect()
    }

    #[test]
    fn first_difference_is_named() {
        let derived = map(&[("a", 0), ("b", 1), ("ab", 2)]);
        assert_eq!(check_derived(&derived.clone(), &derived), Ok(()));
        assert_eq!(
            check_derived(&map(&[("a", 0), ("b", 2), ("ab", 1)]), &derived),
            Err("token \"b\" has id 2, its merges give it 1".to_owned())
        );
        assert_eq!(
            check_derived(&map(&[("a", 0), ("ab", 2)]), &derived),
            Err("token \"b\" is missing, its merges give it id 1".to_owned())
        );
        assert_eq!(
            check_derived(
                &map(&[("a", 0), ("b", 1), ("ab", 2), ("z", 4), ("y", 3)]),
                &derived
            ),
            Err("it has 5 tokens, its merges give 3, e.g. \"y\" at id 3".to_owned())
        );
    }
}
