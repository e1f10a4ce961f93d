//! One encoded prompt, already at the text encoder's fixed length.

/// A prompt as token ids, padded or truncated to the tokenizer's context
/// length, plus what a text encoder needs besides the ids.
///
/// CLIP pads with the same id it ends with (`<|endoftext|>` = 49407), so the
/// padding cannot be recovered from `ids` alone: use [`Tokenized::len`] or
/// [`Tokenized::attention_mask`] to tell real tokens from padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenized {
    /// Exactly `context_length` ids: start token, prompt pieces, end token,
    /// then padding.
    pub ids: Vec<u32>,
    /// How many leading ids are real tokens (special tokens included), i.e.
    /// where padding starts; always in `2..=context_length`.
    pub len: usize,
    /// True when the prompt had more pieces than fit and the tail was
    /// dropped (the start and end tokens are always kept). The reference
    /// implementations truncate silently; the caller should warn (see
    /// [`crate::TextTokenizer::truncation_warning`]).
    pub truncated: bool,
}

impl Tokenized {
    /// `true` for the first [`Tokenized::len`] positions and `false` for the
    /// padding: the key mask of a text transformer, and what a
    /// BERT-style encoder takes as `attention_mask`.
    pub fn attention_mask(&self) -> Vec<bool> {
        (0..self.ids.len()).map(|i| i < self.len).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_mask_marks_the_real_tokens() {
        let t = Tokenized {
            ids: vec![101, 7592, 102, 0, 0],
            len: 3,
            truncated: false,
        };
        assert_eq!(t.attention_mask(), vec![true, true, true, false, false]);
    }
}
