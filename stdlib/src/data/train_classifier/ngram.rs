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

impl NgramFeatures {
    /// Calls `emit(bucket)` for every feature of `text`. Words are maximal
    /// runs of letters and digits (bytes >= 0x80 count as letters, so UTF-8
    /// umlauts stay inside words); ASCII is lower-cased.
    #[inline]
    pub fn for_each(&self, text: &str, mut emit: impl FnMut(usize)) {
        // buckets is a power of two >= 2: the top log2(buckets) bits
        let shift = 64 - self.buckets.trailing_zeros();
        let bytes = text.as_bytes();
        let mut word = [0u8; 66];
        let mut prev_word: u64 = 0;
        let mut have_prev = false;
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            while i < n && !is_word_byte(bytes[i]) {
                i += 1;
            }
            if i >= n {
                break;
            }
            let start = i;
            while i < n && is_word_byte(bytes[i]) {
                i += 1;
            }
            // the word, lower-cased, with boundary marks, clipped to 64 bytes
            let len = (i - start).min(64);
            word[0] = b'<';
            for k in 0..len {
                word[k + 1] = bytes[start + k].to_ascii_lowercase();
            }
            word[len + 1] = b'>';
            let w = &word[..len + 2];
            let mut h = FNV_OFFSET;
            for &b in &w[1..len + 1] {
                h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
            }
            emit(bucket(h, shift));
            if self.word_ngrams >= 2 && have_prev {
                emit(bucket(
                    prev_word.rotate_left(23).wrapping_mul(FNV_PRIME) ^ h ^ 0x5bd1_e995,
                    shift,
                ));
            }
            prev_word = h;
            have_prev = true;
            if self.char_min > 0 {
                let (lo, hi) = (self.char_min as usize, self.char_max as usize);
                let wl = w.len();
                for s in 0..wl.saturating_sub(lo - 1) {
                    let mut g = 0x84222325u64 ^ 0xabcd;
                    let end = (s + hi).min(wl);
                    for (k, &b) in w[s..end].iter().enumerate() {
                        g = (g ^ b as u64).wrapping_mul(FNV_PRIME);
                        if k + 1 >= lo {
                            emit(bucket(g ^ ((k as u64 + 1) << 56), shift));
                        }
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
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
