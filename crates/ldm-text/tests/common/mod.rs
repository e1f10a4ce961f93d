//! Helpers shared by the integration tests: where the vocabularies are and a
//! scratch folder for broken files.
// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use ldm_text::{TextTokenizer, CONTEXT_LENGTH};

/// `$CACHE/text/<parts…>` (`$LDM_TRAIN_CACHE` or `~/.cache/ldm-train`), or a
/// panic telling how to fetch it.
pub fn cache_file(parts: &[&str]) -> PathBuf {
    let cache = std::env::var_os("LDM_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache").join("ldm-train")
        });
    let path = parts
        .iter()
        .fold(cache.join("text"), |p, part| p.join(part));
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/setup.sh` to fetch the tokenizer vocabularies",
        path.display()
    );
    path
}

/// all-MiniLM-L6-v2's tokenizer.json (bert-base-uncased's vocabulary).
pub fn wordpiece_json() -> PathBuf {
    cache_file(&["minilm", "tokenizer.json"])
}

/// OpenAI's CLIP merges list.
pub fn clip_gz() -> PathBuf {
    cache_file(&["clip", "bpe_simple_vocab_16e6.txt.gz"])
}

pub fn wordpiece() -> TextTokenizer {
    TextTokenizer::wordpiece(&wordpiece_json(), CONTEXT_LENGTH).unwrap()
}

pub fn clip() -> TextTokenizer {
    TextTokenizer::clip(&clip_gz(), CONTEXT_LENGTH).unwrap()
}

/// A fresh empty folder under the system temp dir, unique per process and
/// test, so parallel tests do not collide.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ldm-text-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
