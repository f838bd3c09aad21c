//! A deterministic model for the ops' and the server's tests.

use flow_model::generate::{argmax, sample};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

/// A deterministic byte-level bigram model for tests and examples.
///
/// Token `b` (0..=255) is the byte `b`; token 256 is the end of sequence,
/// written `<|eos|>`. The logit of token `v` after token `p` is a fixed
/// pseudo-random number in [-3, 3] drawn from `(seed, p, v)`, so every
/// log-probability can be recomputed independently by
/// [`ToyModel::logprob_after`].
#[derive(Clone, Debug)]
pub struct ToyModel {
    pub seed: u64,
    /// What [`LanguageModel::max_context`] reports.
    pub context: usize,
}

impl ToyModel {
    pub const EOS: u32 = 256;
    pub const VOCAB: usize = 257;
    const EOS_TEXT: &'static str = "<|eos|>";

    pub fn new(seed: u64) -> ToyModel {
        ToyModel {
            seed,
            context: 4096,
        }
    }

    fn logit(&self, prev: u32, next: u32) -> f32 {
        // splitmix64 of the triple: cheap, well mixed, reproducible.
        let mut z = self
            .seed
            .wrapping_add((prev as u64) << 20)
            .wrapping_add(next as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z % 6001) as f32) / 1000.0 - 3.0
    }

    /// Log-probabilities of every token after `prev`.
    pub fn row(&self, prev: u32) -> Vec<f32> {
        let logits: Vec<f32> = (0..Self::VOCAB as u32)
            .map(|v| self.logit(prev, v))
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        logits.iter().map(|&l| (l as f64 - log_z) as f32).collect()
    }

    /// log p(next | prev).
    pub fn logprob_after(&self, prev: u32, next: u32) -> f32 {
        self.row(prev)[next as usize]
    }
}

impl LanguageModel for ToyModel {
    fn encode(&self, text: &str, _add_special_tokens: bool) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix(Self::EOS_TEXT) {
                out.push(Self::EOS);
                rest = after;
            } else {
                let c = rest.chars().next().unwrap_or('\0');
                let mut buf = [0u8; 4];
                out.extend(c.encode_utf8(&mut buf).bytes().map(u32::from));
                rest = &rest[c.len_utf8()..];
            }
        }
        Ok(out)
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        let mut bytes = Vec::new();
        for &id in ids {
            match id {
                0..=255 => bytes.push(id as u8),
                Self::EOS if skip_special_tokens => {}
                Self::EOS => bytes.extend_from_slice(Self::EOS_TEXT.as_bytes()),
                _ => {
                    return Err(format!(
                        "token id {id} is outside the vocabulary of {} tokens",
                        Self::VOCAB
                    ))
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn vocab_size(&self) -> usize {
        Self::VOCAB
    }

    fn eos_token_ids(&self) -> Vec<u32> {
        vec![Self::EOS]
    }

    fn max_context(&self) -> usize {
        self.context
    }

    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String> {
        Ok(requests
            .iter()
            .map(|(ctx, cont)| {
                let mut prev = ctx.last().copied().unwrap_or(Self::EOS);
                let mut logprob = 0.0f64;
                let mut is_greedy = true;
                for &t in cont {
                    let row = self.row(prev);
                    logprob += row[t as usize] as f64;
                    is_greedy &= argmax(&row) == t;
                    prev = t;
                }
                LogLikelihood { logprob, is_greedy }
            })
            .collect())
    }

    fn token_logprobs(
        &self,
        tokens: &[u32],
        top_k: usize,
    ) -> Result<Vec<Option<TokenLogprob>>, String> {
        let mut out = Vec::with_capacity(tokens.len());
        for (i, &t) in tokens.iter().enumerate() {
            if i == 0 {
                out.push(None);
                continue;
            }
            let row = self.row(tokens[i - 1]);
            let mut order: Vec<u32> = (0..Self::VOCAB as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let top = order
                .iter()
                .take(top_k)
                .map(|&v| (v, row[v as usize]))
                .collect();
            out.push(Some(TokenLogprob {
                token: t,
                logprob: row[t as usize],
                top,
            }));
        }
        Ok(out)
    }

    fn generate(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>, String> {
        Ok(prompts
            .iter()
            .map(|prompt| {
                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                let mut prev = prompt.last().copied().unwrap_or(Self::EOS);
                let mut tokens = Vec::new();
                let mut logprobs = Vec::new();
                let mut finish_reason = FinishReason::Length;
                while tokens.len() < opts.max_tokens {
                    let row = self.row(prev);
                    // The row's log-probabilities are logits up to a constant.
                    let t = sample(&mut row.clone(), opts.temperature, opts.top_p, &mut rng);
                    tokens.push(t);
                    logprobs.push(row[t as usize]);
                    prev = t;
                    if t == Self::EOS || opts.stop_tokens.contains(&t) {
                        finish_reason = FinishReason::Stop;
                        break;
                    }
                }
                Generation {
                    tokens,
                    finish_reason,
                    logprobs,
                }
            })
            .collect())
    }

    fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let mut out = String::new();
        for m in messages {
            out.push_str(&format!("<{}>{}</{}>\n", m.role, m.content, m.role));
        }
        if add_generation_prompt {
            out.push_str("<assistant>");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_rows_are_distributions() {
        let m = ToyModel::new(7);
        for prev in [0u32, 65, 256] {
            let total: f64 = m.row(prev).iter().map(|&lp| (lp as f64).exp()).sum();
            assert!((total - 1.0).abs() < 1e-5, "row {prev} sums to {total}");
        }
    }

    #[test]
    fn toy_encode_decode_round_trip() {
        let m = ToyModel::new(1);
        let text = "Grüße <|eos|>x";
        let ids = m.encode(text, false).unwrap();
        assert_eq!(ids.iter().filter(|&&t| t == ToyModel::EOS).count(), 1);
        assert_eq!(m.decode(&ids, false).unwrap(), text);
        assert_eq!(m.decode(&ids, true).unwrap(), "Grüße x");
    }
}
