//! `method: "ngram"`: fastText-like hashed word unigrams and bigrams plus
//! character 3- to 5-grams of each word (with `<`, `>` boundary marks), the
//! document vector being the mean of its features' weights, a logistic
//! output, trained by SGD. It scores a 3,000-character document in tens of
//! microseconds on one core.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::sigmoid;
use crate::op::{OpContext, OpResult};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Fibonacci hashing: the top `bits` bits of h × 2^64/φ, one multiply, and
/// every input bit reaches the bucket.
#[inline(always)]
fn bucket(h: u64, shift: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// The feature hashing of the n-gram classifier.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NgramFeatures {
    /// Number of hash buckets (a power of two).
    pub buckets: u32,
    /// Word n-grams up to this length (1 or 2).
    pub word_ngrams: u32,
    /// Character n-gram lengths inside `<word>`; `char_min` 0 disables them.
    pub char_min: u32,
    pub char_max: u32,
}

/// The first step of a character n-gram's hash, by its first byte: one
/// multiply fewer per n-gram start.
static CHAR_GRAM_FIRST: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (CHAR_GRAM_SEED ^ b as u64).wrapping_mul(FNV_PRIME);
        b += 1;
    }
    t
};
const CHAR_GRAM_SEED: u64 = 0x84222325u64 ^ 0xabcd;

/// A byte as it enters a word: lower-cased ASCII letters and digits, and
/// bytes >= 0x80 (so UTF-8 umlauts stay inside words) as themselves; 0 for
/// a byte that ends a word. One table load instead of range tests.
static WORD_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c >= 0x80 {
            t[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    t
};

impl NgramFeatures {
    /// Calls `emit(bucket)` for every feature of `text`, in this order for
    /// each word: the word, the bigram with the word before it, then the
    /// character n-grams of `<word>` by start and length. Words are maximal
    /// runs of letters and digits (bytes >= 0x80 count as letters); ASCII
    /// is lower-cased; a word is clipped to its first 64 bytes.
    ///
    /// The order is part of the model: the score sums the features'
    /// weights in it, in f32.
    #[inline]
    pub fn for_each(&self, text: &str, mut emit: impl FnMut(usize)) {
        // buckets is a power of two >= 2: the top log2(buckets) bits
        let shift = 64 - self.buckets.trailing_zeros();
        let (lo, hi) = (self.char_min as usize, self.char_max as usize);
        let bytes = text.as_bytes();
        let mut word = [0u8; 66];
        word[0] = b'<';
        let mut prev_word: u64 = 0;
        let mut have_prev = false;
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            while i < n && WORD_BYTE[bytes[i] as usize] == 0 {
                i += 1;
            }
            if i >= n {
                break;
            }
            // the word, lower-cased, with boundary marks, clipped to 64
            // bytes, and its hash, in one pass
            let mut len = 0;
            let mut h = FNV_OFFSET;
            while i < n {
                let c = WORD_BYTE[bytes[i] as usize];
                if c == 0 {
                    break;
                }
                if len < 64 {
                    word[len + 1] = c;
                    h = (h ^ c as u64).wrapping_mul(FNV_PRIME);
                    len += 1;
                }
                i += 1;
            }
            word[len + 1] = b'>';
            emit(bucket(h, shift));
            if self.word_ngrams >= 2 && have_prev {
                emit(bucket(
                    prev_word.rotate_left(23).wrapping_mul(FNV_PRIME) ^ h ^ 0x5bd1_e995,
                    shift,
                ));
            }
            prev_word = h;
            have_prev = true;
            // (char_max < char_min, which train_classifier refuses, has none)
            if lo > 0 && hi >= lo {
                let w = &word[..len + 2];
                // the default lengths get a copy of the loop with constant
                // bounds, unrolled by the compiler
                if (lo, hi) == (3, 5) {
                    char_grams(w, 3, 5, shift, &mut emit);
                } else {
                    char_grams(w, lo, hi, shift, &mut emit);
                }
            }
        }
    }
}

/// The character n-grams of lengths `lo..=hi` of the marked word `w`, by
/// start and length: FNV-1a from [`CHAR_GRAM_SEED`], the length in the top
/// byte. The starts with all `hi` bytes ahead run a fixed-length loop; the
/// last few, shorter ones, the tail loop. `1 <= lo <= hi`.
#[inline(always)]
fn char_grams(w: &[u8], lo: usize, hi: usize, shift: u32, emit: &mut impl FnMut(usize)) {
    let wl = w.len();
    let full = (wl + 1).saturating_sub(hi);
    for s in 0..full {
        let mut g = CHAR_GRAM_FIRST[w[s] as usize];
        if lo == 1 {
            emit(bucket(g ^ (1 << 56), shift));
        }
        for k in 1..hi {
            g = (g ^ w[s + k] as u64).wrapping_mul(FNV_PRIME);
            if k + 1 >= lo {
                emit(bucket(g ^ ((k as u64 + 1) << 56), shift));
            }
        }
    }
    for s in full..wl.saturating_sub(lo - 1) {
        let mut g = CHAR_GRAM_SEED;
        for (k, &b) in w[s..].iter().enumerate() {
            g = (g ^ b as u64).wrapping_mul(FNV_PRIME);
            if k + 1 >= lo {
                emit(bucket(g ^ ((k as u64 + 1) << 56), shift));
            }
        }
    }
}

/// A trained n-gram classifier: features, weights and the decision threshold.
#[derive(Clone, Debug)]
pub struct NgramModel {
    pub features: NgramFeatures,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl NgramModel {
    /// The logit of `text` being positive.
    #[inline]
    pub fn logit(&self, text: &str) -> f32 {
        let mut sum = 0f32;
        let mut count = 0u32;
        let w = &self.weights[..];
        self.features.for_each(text, |b| {
            // `b` is masked to the bucket count, which equals w.len()
            sum += w[b];
            count += 1;
        });
        self.bias + if count > 0 { sum / count as f32 } else { 0.0 }
    }

    /// The probability of `text` being positive.
    pub fn score(&self, text: &str) -> f32 {
        sigmoid(self.logit(text))
    }
}

/// SGD on the logistic loss of bias + mean(weights[features]) over the
/// training examples (feature buckets, is positive), the rate decaying
/// linearly from `lr0` (to 1% of it).
pub(super) fn train_ngram(
    ctx: &OpContext,
    features: &NgramFeatures,
    train: &[(&[u32], bool)],
    epochs: u32,
    lr0: f32,
    seed: u64,
) -> OpResult<NgramModel> {
    let mut weights = vec![0f32; features.buckets as usize];
    let mut bias = 0f32;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let total = (epochs as usize * train.len()) as f32;
    let mut step = 0f32;
    ctx.progress.set_total(epochs as u64, "epochs");
    for _ in 0..epochs {
        ctx.check_cancelled()?;
        order.shuffle(&mut rng);
        for &i in &order {
            let (f, y) = train[i];
            let lr = lr0 * (1.0 - step / total).max(0.01);
            step += 1.0;
            if f.is_empty() {
                continue;
            }
            let inv = 1.0 / f.len() as f32;
            let z = bias + f.iter().map(|&b| weights[b as usize]).sum::<f32>() * inv;
            let g = sigmoid(z) - if y { 1.0 } else { 0.0 };
            bias -= lr * g * 0.1;
            let gw = lr * g * inv * 10.0;
            for &b in f {
                weights[b as usize] -= gw;
            }
        }
        ctx.progress.inc(1);
    }
    Ok(NgramModel {
        features: features.clone(),
        weights,
        bias,
    })
}

impl NgramModel {
    /// The probability of a document given its feature buckets.
    pub fn score_features(&self, f: &[u32]) -> f32 {
        let s: f32 = f.iter().map(|&b| self.weights[b as usize]).sum();
        sigmoid(
            self.bias
                + if f.is_empty() {
                    0.0
                } else {
                    s / f.len() as f32
                },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The feature hashing written plainly, byte by byte, as the
    /// definition [`NgramFeatures::for_each`] must keep (its order too: the
    /// score sums in it).
    fn reference_features(f: &NgramFeatures, text: &str) -> Vec<usize> {
        let shift = 64 - f.buckets.trailing_zeros();
        let is_word_byte = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80;
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut prev: Option<u64> = None;
        let mut i = 0;
        while i < bytes.len() {
            if !is_word_byte(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_word_byte(bytes[i]) {
                i += 1;
            }
            let mut w = vec![b'<'];
            w.extend(bytes[start..i].iter().take(64).map(u8::to_ascii_lowercase));
            w.push(b'>');
            let mut h = FNV_OFFSET;
            for &b in &w[1..w.len() - 1] {
                h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
            }
            out.push(bucket(h, shift));
            if let (2.., Some(p)) = (f.word_ngrams, prev) {
                out.push(bucket(
                    p.rotate_left(23).wrapping_mul(FNV_PRIME) ^ h ^ 0x5bd1_e995,
                    shift,
                ));
            }
            prev = Some(h);
            if f.char_min > 0 {
                let (lo, hi) = (f.char_min as usize, f.char_max as usize);
                for s in 0..w.len() {
                    for len in lo..=hi {
                        if s + len > w.len() {
                            break;
                        }
                        let mut g = 0x84222325u64 ^ 0xabcd;
                        for &b in &w[s..s + len] {
                            g = (g ^ b as u64).wrapping_mul(FNV_PRIME);
                        }
                        out.push(bucket(g ^ ((len as u64) << 56), shift));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn features_are_the_reference_hashing_in_its_order() {
        let long = format!("{} {}! {}", "A".repeat(63), "b".repeat(64), "ÄÖ".repeat(40));
        let texts = [
            "",
            " ,; ",
            "a",
            "ab",
            "abc",
            "Übelkeit und  Fieber\n\tnach 3 Tagen ",
            "x".repeat(70).as_str(),
            long.as_str(),
            "a1b2 C3-d4 E",
            "Die Patientin (72) klagte über Schmerzen; Ärztin: \"Blutdruck 120/80\".",
        ]
        .map(String::from);
        for (word_ngrams, char_min, char_max) in [
            (2, 3, 5),
            (1, 3, 5),
            (2, 1, 1),
            (2, 2, 4),
            (2, 4, 8),
            (2, 0, 0),
            (2, 5, 3),
        ] {
            let f = NgramFeatures {
                buckets: 1 << 12,
                word_ngrams,
                char_min,
                char_max,
            };
            for t in &texts {
                let mut got = Vec::new();
                f.for_each(t, |b| got.push(b));
                assert_eq!(
                    got,
                    reference_features(&f, t),
                    "{t:?} with {word_ngrams}, {char_min}..{char_max}"
                );
            }
        }
    }
}
