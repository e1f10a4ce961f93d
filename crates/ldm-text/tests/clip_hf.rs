//! Hugging Face / diffusers CLIP `tokenizer/` folders (`vocab.json` +
//! `merges.txt`) turned into the gzipped merges list a checkpoint carries.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use ldm_text::{clip_merges_from_hf_folder, TextError, TextTokenizer, CONTEXT_LENGTH};

use common::{clip, clip_gz, scratch};

/// Twenty merges, each built from tokens that exist before it.
const MERGES: [&str; 20] = [
    "t h",
    "th e</w>",
    "i n",
    "a n",
    "an d</w>",
    "o f</w>",
    "c a",
    "ca t</w>",
    "d o",
    "do g</w>",
    "p h",
    "ph o",
    "pho t",
    "phot o</w>",
    "r e",
    "o n</w>",
    "in g</w>",
    "a r",
    "h o",
    "ho r",
];

/// GPT-2's `bytes_to_unicode()` characters in its order, written as the
/// Python is (independently of the crate's table).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    cs.into_iter().map(|c| char::from_u32(c).unwrap()).collect()
}

/// What `CLIPTokenizer.save_pretrained` writes as `vocab.json` for `merges`.
fn vocab_json(merges: &[&str]) -> BTreeMap<String, u32> {
    let chars = byte_chars();
    let tokens = chars
        .iter()
        .map(|c| c.to_string())
        .chain(chars.iter().map(|c| format!("{c}</w>")))
        .chain(merges.iter().map(|m| m.replace(' ', "")))
        .chain(["<|startoftext|>".to_owned(), "<|endoftext|>".to_owned()]);
    tokens.zip(0..).collect()
}

/// A tokenizer folder in `dir` for `merges`, with `vocab` as its vocab.json.
fn write_folder(dir: &Path, merges: &[&str], vocab: &BTreeMap<String, u32>) {
    let mut text = String::from("#version: 0.2\n");
    for m in merges {
        text.push_str(m);
        text.push('\n');
    }
    std::fs::write(dir.join("merges.txt"), text).unwrap();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::to_string(vocab).unwrap(),
    )
    .unwrap();
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    text
}

/// The error from `dir`, checked to be one line naming `file`.
fn folder_err(dir: &Path, file: &Path) -> TextError {
    let err = clip_merges_from_hf_folder(dir).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains(&file.display().to_string()),
        "names {file:?}: {msg}"
    );
    err
}

#[test]
fn a_tiny_tokenizer_folder_round_trips_through_the_merges_gz() {
    let dir = scratch("hf-tiny");
    let vocab = vocab_json(&MERGES);
    write_folder(&dir, &MERGES, &vocab);
    let gz = clip_merges_from_hf_folder(&dir).unwrap();
    assert_eq!(&gz[..2], [0x1f, 0x8b]);
    assert_eq!(
        gunzip(&gz),
        format!("#version: 0.2\n{}", MERGES.join("\n")),
        "OpenAI's format, no trailing newline"
    );
    assert_eq!(
        clip_merges_from_hf_folder(&dir).unwrap(),
        gz,
        "deterministic"
    );

    let path = dir.join("bpe_simple_vocab_16e6.txt.gz");
    std::fs::write(&path, &gz).unwrap();
    let tok = TextTokenizer::clip(&path, CONTEXT_LENGTH).unwrap();
    assert_eq!(tok.vocab_size(), 512 + 20 + 2);
    let (start, end) = (vocab["<|startoftext|>"], vocab["<|endoftext|>"]);
    assert_eq!((start, end, tok.pad_id()), (532, 533, 533));
    let t = tok.encode("The cat and the dog, a photo").unwrap();
    let expected: Vec<u32> = [
        "<|startoftext|>",
        "the</w>",
        "cat</w>",
        "and</w>",
        "the</w>",
        "dog</w>",
        ",</w>",
        "a</w>",
        "photo</w>",
        "<|endoftext|>",
    ]
    .iter()
    .map(|token| vocab[*token])
    .collect();
    assert_eq!(t.ids[..t.len], expected);
    assert_eq!(&expected[1..4], [513, 519, 516]);
    assert!(t.ids[t.len..].iter().all(|&id| id == end));
    // A word only partly merged: h o r → `hor`, then s e </w> alone.
    let t = tok.encode("horse").unwrap();
    assert_eq!(
        t.ids[..t.len],
        [start, vocab["hor"], vocab["s"], vocab["e</w>"], end]
    );
    // The folder's own merges.txt opens to the same tokenizer.
    let direct = TextTokenizer::clip(&dir.join("merges.txt"), CONTEXT_LENGTH).unwrap();
    for text in ["The cat and the dog, a photo", "horse", "ringing on, of"] {
        assert_eq!(direct.encode(text).unwrap(), tok.encode(text).unwrap());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_vocab_json_not_derived_from_the_merges_is_refused() {
    let dir = scratch("hf-mismatch");
    let vocab_path = dir.join("vocab.json");
    let derived = vocab_json(&MERGES);

    let mut changed = derived.clone();
    changed.insert("dog</w>".to_owned(), 999);
    write_folder(&dir, &MERGES, &changed);
    let err = folder_err(&dir, &vocab_path);
    assert!(
        matches!(err, TextError::NotDerivedClipVocab { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not the CLIP vocabulary derived from its merges.txt: \
             token \"dog</w>\" has id 999, its merges give it 521",
            vocab_path.display()
        )
    );

    let mut missing = derived.clone();
    missing.remove("ca");
    write_folder(&dir, &MERGES, &missing);
    let err = folder_err(&dir, &vocab_path);
    assert!(
        err.to_string()
            .ends_with("token \"ca\" is missing, its merges give it id 518"),
        "{err}"
    );

    let mut extra = derived.clone();
    extra.insert("<|pad|>".to_owned(), 534);
    write_folder(&dir, &MERGES, &extra);
    let err = folder_err(&dir, &vocab_path);
    assert!(
        err.to_string()
            .ends_with("it has 535 tokens, its merges give 534, e.g. \"<|pad|>\" at id 534"),
        "{err}"
    );

    // The vocabulary of only the first 19 merges does not match 20.
    write_folder(&dir, &MERGES, &vocab_json(&MERGES[..19]));
    let err = folder_err(&dir, &vocab_path);
    assert!(err
        .to_string()
        .ends_with("token \"hor\" is missing, its merges give it id 531"));

    std::fs::write(&vocab_path, "[1, 2]").unwrap();
    let err = folder_err(&dir, &vocab_path);
    assert!(
        err.to_string()
            .contains("it is not a JSON object of token to id"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_or_broken_files_are_named() {
    let dir = scratch("hf-missing");
    write_folder(&dir, &MERGES, &vocab_json(&MERGES));
    let merges = dir.join("merges.txt");
    std::fs::remove_file(&merges).unwrap();
    let err = folder_err(&dir, &merges);
    assert!(matches!(err, TextError::Read { .. }), "{err:?}");

    write_folder(&dir, &MERGES, &vocab_json(&MERGES));
    let vocab = dir.join("vocab.json");
    std::fs::remove_file(&vocab).unwrap();
    let err = folder_err(&dir, &vocab);
    assert!(matches!(err, TextError::Read { .. }), "{err:?}");

    // Only a header: the merges file is named, not the vocabulary.
    write_folder(&dir, &[], &vocab_json(&[]));
    let err = folder_err(&dir, &merges);
    assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");

    // A merge of halves that do not exist yet, with a matching vocab.json.
    let bad = ["zz qq"];
    write_folder(&dir, &bad, &vocab_json(&bad));
    let err = folder_err(&dir, &merges);
    assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn openai_merges_as_a_tokenizer_folder_give_the_same_ids() {
    let text = gunzip(&std::fs::read(clip_gz()).unwrap());
    let merges: Vec<&str> = text.split('\n').skip(1).take(49152 - 256 - 2).collect();
    let dir = scratch("hf-openai");
    write_folder(&dir, &merges, &vocab_json(&merges));
    let gz = clip_merges_from_hf_folder(&dir).unwrap();
    assert_eq!(gunzip(&gz), format!("#version: 0.2\n{}", merges.join("\n")));
    let path = dir.join("bpe_simple_vocab_16e6.txt.gz");
    std::fs::write(&path, &gz).unwrap();
    let (ours, openai) = (TextTokenizer::clip(&path, CONTEXT_LENGTH).unwrap(), clip());
    assert_eq!((ours.vocab_size(), ours.pad_id()), (49408, 49407));
    for prompt in [
        "a photo of a cat",
        "A Painting of a Squirrel eating a burger, trending on artstation",
        "naïve café 東京 🙂 <|endoftext|> 1234",
    ] {
        assert_eq!(ours.encode(prompt).unwrap(), openai.encode(prompt).unwrap());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
