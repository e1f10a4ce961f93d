//! Shape of an encoding: padding, length, attention mask, truncation at the
//! context boundary, the empty prompt, batches, shorter contexts.

mod common;

use common::{clip, clip_gz, wordpiece, wordpiece_json};
use ldm_text::{TextError, TextTokenizer, TokenizerKind, CONTEXT_LENGTH};

/// (tokenizer, start id, end id, pad id, id of the prompt word "a").
fn both() -> [(TextTokenizer, u32, u32, u32, u32); 2] {
    [
        (wordpiece(), 101, 102, 0, 1037),
        (clip(), 49406, 49407, 49407, 320),
    ]
}

#[test]
fn vocabulary_sizes_and_padding_ids() {
    let (w, c) = (wordpiece(), clip());
    assert_eq!(
        (w.kind(), w.vocab_size(), w.pad_id()),
        (TokenizerKind::Wordpiece, 30522, 0)
    );
    assert_eq!(
        (c.kind(), c.vocab_size(), c.pad_id()),
        (TokenizerKind::Clip, 49408, 49407)
    );
    assert_eq!((w.context_length(), c.context_length()), (77, 77));
}

#[test]
fn short_prompt_is_padded_with_mask_and_len() {
    for (tok, start, end, pad, a) in both() {
        let t = tok.encode("a a a").unwrap();
        assert_eq!(t.ids.len(), CONTEXT_LENGTH);
        assert_eq!(t.len, 5);
        assert!(!t.truncated);
        assert_eq!(&t.ids[..5], &[start, a, a, a, end]);
        assert!(t.ids[5..].iter().all(|&id| id == pad), "{:?}", t.ids);
        let mask = t.attention_mask();
        assert_eq!(mask.len(), CONTEXT_LENGTH);
        assert!(mask[..5].iter().all(|&m| m) && mask[5..].iter().all(|&m| !m));
        assert_eq!(tok.truncation_warning("a a a", &t), None);
    }
}

#[test]
fn empty_prompt_is_just_the_special_tokens() {
    for (tok, start, end, pad, _) in both() {
        for text in ["", "   ", "\n\t"] {
            let t = tok.encode(text).unwrap();
            assert_eq!((t.len, t.truncated), (2, false), "{} {text:?}", tok.kind());
            assert_eq!(&t.ids[..2], &[start, end]);
            assert!(t.ids[2..].iter().all(|&id| id == pad));
        }
    }
}

#[test]
fn exactly_full_context_is_not_truncated() {
    // "a" is one piece in both vocabularies: 75 of them + 2 specials = 77.
    let text = vec!["a"; CONTEXT_LENGTH - 2].join(" ");
    for (tok, start, end, _, a) in both() {
        let t = tok.encode(&text).unwrap();
        assert_eq!(
            (t.len, t.truncated),
            (CONTEXT_LENGTH, false),
            "{}",
            tok.kind()
        );
        assert_eq!(t.ids[0], start);
        assert!(t.ids[1..CONTEXT_LENGTH - 1].iter().all(|&id| id == a));
        assert_eq!(t.ids[CONTEXT_LENGTH - 1], end);
        assert!(t.attention_mask().iter().all(|&m| m));
    }
}

#[test]
fn longer_prompt_is_truncated_keeping_start_and_end() {
    let mut words = vec!["a"; CONTEXT_LENGTH - 2];
    words.push("cat"); // the 76th piece: one too many
    let text = words.join(" ");
    for (tok, start, end, _, a) in both() {
        let t = tok.encode(&text).unwrap();
        assert_eq!(t.ids.len(), CONTEXT_LENGTH);
        assert_eq!(
            (t.len, t.truncated),
            (CONTEXT_LENGTH, true),
            "{}",
            tok.kind()
        );
        assert_eq!(t.ids[0], start);
        assert!(t.ids[1..CONTEXT_LENGTH - 1].iter().all(|&id| id == a));
        assert_eq!(
            t.ids[CONTEXT_LENGTH - 1],
            end,
            "the end token survives truncation"
        );

        let warning = tok.truncation_warning(&text, &t).expect("a warning");
        assert!(!warning.contains('\n'), "{warning}");
        assert!(warning.contains("\"a a a"), "names the prompt: {warning}");
        assert!(
            warning.contains(&format!("77-token context of the {}", tok.kind())),
            "{warning}"
        );
    }
}

#[test]
fn very_long_prompt_is_truncated_not_refused() {
    let text = "a photograph of an astronaut riding a horse on the moon, ".repeat(50);
    for (tok, start, end, _, _) in both() {
        let t = tok.encode(&text).unwrap();
        assert_eq!(
            (t.ids.len(), t.len, t.truncated),
            (CONTEXT_LENGTH, CONTEXT_LENGTH, true)
        );
        assert_eq!((t.ids[0], t.ids[CONTEXT_LENGTH - 1]), (start, end));
    }
}

#[test]
fn batch_equals_one_by_one() {
    let texts = ["A horse.", "", "An electric kettle.", "a photo of a cat"];
    for (tok, ..) in both() {
        let batch = tok.encode_batch(&texts).unwrap();
        assert_eq!(batch.len(), texts.len());
        for (text, got) in texts.iter().zip(&batch) {
            assert_eq!(got, &tok.encode(text).unwrap());
        }
    }
}

#[test]
fn shorter_context_pads_and_truncates_to_it() {
    let w = TextTokenizer::wordpiece(&wordpiece_json(), 8).unwrap();
    let c = TextTokenizer::clip(&clip_gz(), 8).unwrap();
    assert_eq!(
        w.encode("hello world").unwrap().ids,
        [101, 7592, 2088, 102, 0, 0, 0, 0]
    );
    let t = c.encode("a photo of a cat on a red mat").unwrap();
    assert!(t.truncated);
    assert_eq!(t.ids, [49406, 320, 1125, 539, 320, 2368, 525, 49407]);
    // The smallest usable context holds the two special tokens only.
    let t = TextTokenizer::clip(&clip_gz(), 2)
        .unwrap()
        .encode("a cat")
        .unwrap();
    assert_eq!((t.ids, t.len, t.truncated), (vec![49406, 49407], 2, true));
}

#[test]
fn context_too_short_for_the_special_tokens_is_an_error() {
    for n in [0, 1] {
        let err = TextTokenizer::clip(&clip_gz(), n).unwrap_err();
        assert!(matches!(err, TextError::ContextLength { context_length } if context_length == n));
        assert!(
            err.to_string()
                .starts_with(&format!("context length {n} is too short")),
            "{err}"
        );
    }
}

#[test]
fn literal_special_tokens_in_a_prompt_are_recognized() {
    // As the original CLIP regex does (case-insensitively), and BERT's
    // tokenizer.json does for its added [CLS]/[SEP]/… tokens.
    let clip = clip();
    for text in ["a cat <|endoftext|> dog", "a cat <|ENDOFTEXT|> dog"] {
        let t = clip.encode(text).unwrap();
        assert_eq!(
            &t.ids[..t.len],
            &[49406, 320, 2368, 49407, 1929, 49407],
            "{text}"
        );
    }
    let t = wordpiece().encode("a cat [SEP] dog").unwrap();
    assert_eq!(&t.ids[..t.len], &[101, 1037, 4937, 102, 3899, 102]);
}

#[test]
fn tokenizer_can_be_shared_across_loader_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<TextTokenizer>();
    let tok = std::sync::Arc::new(clip());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let tok = tok.clone();
            std::thread::spawn(move || tok.encode("a photo of a cat").unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(
            &h.join().unwrap().ids[..7],
            &[49406, 320, 1125, 539, 320, 2368, 49407]
        );
    }
}
