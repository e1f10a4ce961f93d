//! Vocabulary files: wrong, missing or corrupt ones fail with one line that
//! names the file; the fingerprint tells vocabularies apart.

mod common;

use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use ldm_text::{TextError, TextTokenizer, TokenizerKind, CONTEXT_LENGTH};

use common::{clip, clip_gz, scratch, wordpiece, wordpiece_json};

/// The error opening `path` as `kind`, checked to be one line naming `path`.
fn open_err(kind: TokenizerKind, path: &Path) -> TextError {
    let err = TextTokenizer::open(kind, path, CONTEXT_LENGTH).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    err
}

fn gzip(text: &str) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

#[test]
fn missing_file_is_a_read_error() {
    let dir = scratch("missing");
    let path = dir.join("no-such-tokenizer.json");
    for kind in [TokenizerKind::Wordpiece, TokenizerKind::Clip] {
        let err = open_err(kind, &path);
        assert!(matches!(err, TextError::Read { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("cannot read tokenizer file "), "{msg}");
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
    }
    // A folder is not a file either.
    assert!(matches!(
        open_err(TokenizerKind::Clip, &dir),
        TextError::Read { .. }
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_tokenizer_json_is_not_wordpiece() {
    let dir = scratch("corrupt-json");
    let cases = [
        ("garbage.json", b"this is not json".to_vec()),
        (
            "truncated.json",
            std::fs::read(wordpiece_json()).unwrap()[..5000].to_vec(),
        ),
        ("other.json", br#"{"tokenizer": "bert"}"#.to_vec()),
    ];
    for (name, content) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let err = open_err(TokenizerKind::Wordpiece, &path);
        assert!(matches!(err, TextError::NotWordpiece { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(" is not a WordPiece tokenizer.json: "),
            "{err}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bpe_tokenizer_json_is_refused_as_wordpiece() {
    let dir = scratch("bpe-json");
    let path = dir.join("tokenizer.json");
    let json = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}"#;
    std::fs::write(&path, json).unwrap();
    let err = open_err(TokenizerKind::Wordpiece, &path);
    assert!(
        err.to_string().ends_with("its model is BPE, not WordPiece"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wordpiece_without_special_tokens_is_refused() {
    let dir = scratch("no-cls");
    let path = dir.join("tokenizer.json");
    let json = std::fs::read_to_string(wordpiece_json())
        .unwrap()
        .replace("[CLS]", "[XLS]");
    std::fs::write(&path, json).unwrap();
    let err = open_err(TokenizerKind::Wordpiece, &path);
    assert!(
        err.to_string()
            .ends_with("its vocabulary has no [CLS] token"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn swapped_files_are_refused_both_ways() {
    let err = open_err(TokenizerKind::Wordpiece, &clip_gz());
    assert!(matches!(err, TextError::NotWordpiece { .. }), "{err:?}");
    let err = open_err(TokenizerKind::Clip, &wordpiece_json());
    assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(" is not a CLIP BPE merges list (merges.txt, plain or gzipped): "),
        "{err}"
    );
}

/// Three merges: `th`, `the</w>`, `ca`; ids 512, 513, 514, then the start
/// and end tokens at 515 and 516.
const THREE_MERGES: &str = "#version: 0.2\nt h\nth e</w>\nc a\n";

/// `text`'s ids up to and including the end token.
fn prompt_ids(tok: &TextTokenizer, text: &str) -> Vec<u32> {
    let t = tok.encode(text).unwrap();
    assert_eq!(t.ids.len(), CONTEXT_LENGTH);
    assert!(t.ids[t.len..].iter().all(|&id| id == tok.pad_id()));
    t.ids[..t.len].to_vec()
}

#[test]
fn a_short_merges_list_builds_a_small_clip_tokenizer() {
    let dir = scratch("short-merges");
    let gz = dir.join("short.txt.gz");
    std::fs::write(&gz, gzip(THREE_MERGES)).unwrap();
    let plain = dir.join("merges.txt");
    std::fs::write(&plain, THREE_MERGES).unwrap();
    // The same list without its trailing newline.
    let bare = dir.join("bare.txt");
    std::fs::write(&bare, THREE_MERGES.trim_end()).unwrap();

    let tok = TextTokenizer::clip(&gz, CONTEXT_LENGTH).unwrap();
    assert_eq!(tok.vocab_size(), 512 + 3 + 2);
    assert_eq!(tok.pad_id(), 516);
    // Byte characters keep OpenAI's ids: `t</w>` = 256 + 83 and `a</w>` =
    // 320 as in the full vocabulary; `photo` has no merge, so it stays in
    // single characters p h o t o</w>.
    assert_eq!(prompt_ids(&tok, "The cat"), [515, 513, 514, 339, 516]);
    assert_eq!(
        prompt_ids(&tok, "a photo"),
        [515, 320, 79, 71, 78, 83, 334, 516]
    );
    assert_eq!(prompt_ids(&tok, ""), [515, 516]);
    // The special tokens written in a prompt are recognized at their ids.
    assert_eq!(prompt_ids(&tok, "<|endoftext|>"), [515, 516, 516]);
    for other in [&plain, &bare] {
        let t = TextTokenizer::open(TokenizerKind::Clip, other, CONTEXT_LENGTH).unwrap();
        assert_eq!(t.vocab_size(), 517);
        for text in ["The cat", "a photo", "the the cat, THE CAT!"] {
            assert_eq!(t.encode(text).unwrap(), tok.encode(text).unwrap());
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn clip_vocab_that_is_neither_gzip_nor_text_is_refused() {
    let dir = scratch("not-text");
    let binary = dir.join("bpe_simple_vocab_16e6.txt.gz");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, b'i', b' ', b'n']).unwrap();
    let err = open_err(TokenizerKind::Clip, &binary);
    assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("it is neither gzipped nor UTF-8 text"),
        "{err}"
    );

    let cut = dir.join("cut.txt.gz");
    let bytes = std::fs::read(clip_gz()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = open_err(TokenizerKind::Clip, &cut);
    assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot read it as gzipped UTF-8 text"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn clip_vocab_without_merges_or_with_bad_ones_is_refused() {
    let dir = scratch("bad-merges");
    for (name, text) in [
        ("empty.txt", ""),
        ("header.txt", "#version: 0.2\n"),
        ("blank.txt.gz", "#version: 0.2\n\n\n"),
    ] {
        let path = dir.join(name);
        if name.ends_with(".gz") {
            std::fs::write(&path, gzip(text)).unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        let err = open_err(TokenizerKind::Clip, &path);
        assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");
        assert!(
            err.to_string()
                .ends_with("it has no merge lines after the header line"),
            "{err}"
        );
    }

    let malformed = dir.join("malformed.txt.gz");
    std::fs::write(&malformed, gzip("#version: 0.2\nt h\nth e </w>\n")).unwrap();
    let err = open_err(TokenizerKind::Clip, &malformed);
    assert!(
        err.to_string()
            .ends_with("line 3 is \"th e </w>\", not two symbols separated by a space"),
        "{err}"
    );

    // A merge whose halves are not in the vocabulary built so far.
    let unknown = dir.join("unknown.txt");
    std::fs::write(&unknown, "#version: 0.2\ni n\nzz qq\n").unwrap();
    let err = open_err(TokenizerKind::Clip, &unknown);
    assert!(matches!(err, TextError::NotClipVocab { .. }), "{err:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fingerprint_is_stable_and_tells_vocabularies_apart() {
    let (w, c) = (wordpiece(), clip());
    for fp in [w.fingerprint(), c.fingerprint()] {
        assert_eq!(fp.len(), 16);
        assert!(
            fp.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{fp}"
        );
    }
    assert_ne!(w.fingerprint(), c.fingerprint());
    // Same bytes, same fingerprint: reopening, another context length,
    // another location.
    assert_eq!(wordpiece().fingerprint(), w.fingerprint());
    assert_eq!(
        TextTokenizer::clip(&clip_gz(), 16).unwrap().fingerprint(),
        c.fingerprint()
    );
    let dir = scratch("fingerprint");
    let copy = dir.join("copy.json");
    std::fs::copy(wordpiece_json(), &copy).unwrap();
    assert_eq!(
        TextTokenizer::wordpiece(&copy, 77).unwrap().fingerprint(),
        w.fingerprint()
    );
    // One token renamed: a different vocabulary.
    let json =
        std::fs::read_to_string(wordpiece_json())
            .unwrap()
            .replacen("\"horse\"", "\"horsy\"", 1);
    std::fs::write(&copy, json).unwrap();
    assert_ne!(
        TextTokenizer::wordpiece(&copy, 77).unwrap().fingerprint(),
        w.fingerprint()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn kind_is_written_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&TokenizerKind::Wordpiece).unwrap(),
        "\"wordpiece\""
    );
    assert_eq!(
        serde_json::to_string(&TokenizerKind::Clip).unwrap(),
        "\"clip\""
    );
    let kind: TokenizerKind = serde_json::from_str("\"clip\"").unwrap();
    assert_eq!(kind, TokenizerKind::Clip);
    assert!(serde_json::from_str::<TokenizerKind>("\"bpe\"").is_err());
    assert_eq!(TokenizerKind::Wordpiece.to_string(), "wordpiece");
}
