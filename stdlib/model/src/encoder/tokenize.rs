//! The encoder's tokenizer: `tokenizer.json` through the `tokenizers` crate
//! (XLM-R's sentencepiece Unigram, BERT's WordPiece), its post-processor
//! adding `<s> … </s>` / `[CLS] … [SEP]`, and HF's truncation of a single
//! sequence (the text's tokens cut to `max_len − 2`, the specials kept).

use std::path::Path;

use crate::error::ModelError;
use crate::tokenizer::Tokenizer;

pub struct EncoderTokenizer {
    inner: tokenizers::Tokenizer,
    path: std::path::PathBuf,
    /// The special token the post-processor puts last (`</s>`, `[SEP]`).
    last: u32,
    /// Whether the post-processor adds one token before and one after.
    specials: bool,
    first: u32,
}

impl EncoderTokenizer {
    pub fn load(dir: &Path) -> Result<EncoderTokenizer, ModelError> {
        // tokenizer.json may carry the padding and truncation of its
        // training (all-MiniLM's pads to 128): transformers ignores them, so does flow
        let mut inner = Tokenizer::load(dir)?.into_inner();
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| ModelError::invalid(&dir.join("tokenizer.json"), e.to_string()))?;
        let path = dir.join("tokenizer.json");
        let enc =
            |t: &str, special: bool| -> Result<Vec<u32>, ModelError> {
                Ok(crate::tokenizer::guarded(&path, "encode a text with", || {
                    inner.encode(t, special)
                })?
                .get_ids()
                .to_vec())
            };
        let empty = enc("", true)?;
        let (first, last, specials) = match empty.as_slice() {
            [a, b] => (*a, *b, true),
            _ => {
                let pick = |names: [&str; 2]| names.iter().find_map(|n| inner.token_to_id(n));
                match (pick(["<s>", "[CLS]"]), pick(["</s>", "[SEP]"])) {
                    (Some(a), Some(b)) => (a, b, false),
                    _ => {
                        return Err(ModelError::invalid(
                            &dir.join("tokenizer.json"),
                            "the tokenizer adds no <s>/</s> (or [CLS]/[SEP]) around a text and has no such tokens: not an encoder's tokenizer",
                        ))
                    }
                }
            }
        };
        Ok(EncoderTokenizer {
            inner,
            path,
            last,
            specials,
            first,
        })
    }

    /// Token ids of `text` with the special tokens, at most `max_len` (≥ 2).
    ///
    /// Only the text's beginning is tokenized: it is cut at the first
    /// whitespace after 2·max_len + 16 words (every word gives at least one
    /// token, so the cut lies past the truncation point).
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>, ModelError> {
        let max_len = max_len.max(2);
        let cut = cut_after_words(text, 2 * max_len + 16);
        let enc = |special: bool| -> Result<Vec<u32>, ModelError> {
            Ok(
                crate::tokenizer::guarded(&self.path, "encode a text with", || {
                    self.inner.encode(cut, special)
                })?
                .get_ids()
                .to_vec(),
            )
        };
        let mut ids = if self.specials {
            enc(true)?
        } else {
            let mut v = vec![self.first];
            v.extend(enc(false)?);
            v.push(self.last);
            v
        };
        if ids.len() > max_len {
            ids.truncate(max_len - 1);
            ids.push(self.last);
        }
        Ok(ids)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The prefix of `text` ending at the whitespace after its `words`-th word.
fn cut_after_words(text: &str, words: usize) -> &str {
    let mut n = 0;
    let mut in_word = false;
    for (i, ch) in text.char_indices() {
        if ch.is_whitespace() {
            if in_word {
                n += 1;
                if n >= words {
                    return &text[..i];
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::cut_after_words;

    #[test]
    fn cut_keeps_whole_words() {
        assert_eq!(cut_after_words("a bb  ccc d", 2), "a bb");
        assert_eq!(cut_after_words("a bb", 5), "a bb");
        assert_eq!(cut_after_words("  a\n\nb c", 2), "  a\n\nb");
    }
}
