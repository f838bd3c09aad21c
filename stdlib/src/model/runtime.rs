//! The model runtime as the model ops (`mcqa`, `generate`) and `flow serve`
//! see it: one object that tokenizes, renders the chat template, scores and
//! generates.
//!
//! [`LanguageModel`] mirrors the flow-model API (`Model`, `Tokenizer`,
//! `ChatTemplate`) so that the ops and the server do not depend on how the
//! runtime is split into types, and so that their logic is tested against
//! [`ToyModel`], a deterministic model small enough to check by hand.
//! [`load`] opens a model directory with the real runtime.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The summed log-probability of a continuation given its context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogLikelihood {
    pub logprob: f64,
    /// Whether every continuation token was the argmax (lm-eval's `is_greedy`).
    pub is_greedy: bool,
}

/// The log-probability of one token of a sequence given the tokens before it,
/// with the most likely alternatives at that position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// `(token id, log-probability)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Why generation of a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced; it is the last of the returned tokens (as in
    /// flow-model), or the prompt was invalid and no token was produced.
    Stop,
    /// `max_tokens` were produced.
    Length,
}

impl FinishReason {
    /// The name OpenAI's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// One generated continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    /// The log-probability of each generated token under the model.
    pub logprobs: Vec<f32>,
}

/// How to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Generation of a sequence ends when one of these (or an EOS token of
    /// the model) is produced.
    pub stop_tokens: Vec<u32>,
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A language model with its tokenizer and chat template.
///
/// Errors are messages that name what failed; they go to the user as they are.
pub trait LanguageModel: Send + Sync {
    /// Token ids of `text`; `add_special_tokens` adds what the tokenizer
    /// adds by default (e.g. a BOS token).
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String>;
    /// Text of `ids`.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String>;
    fn vocab_size(&self) -> usize;
    /// Tokens that end generation.
    fn eos_token_ids(&self) -> Vec<u32>;
    /// The longest sequence (prompt and generated tokens) the model takes.
    fn max_context(&self) -> usize;
    /// Summed log-probability of each continuation given its context.
    fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood>;
    /// The log-probability of every token of `tokens` given those before it
    /// (position 0 gets `None`), with the `top_k` most likely alternatives.
    fn token_logprobs(&self, tokens: &[u32], top_k: usize) -> Vec<Option<TokenLogprob>>;
    /// One generation per prompt.
    fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Vec<Generation>;
    /// One generation of `prompt`, `on_token` called with each new token as
    /// it is made; generation ends early (`FinishReason::Length`) when it
    /// returns false. The default generates in full, then replays the tokens;
    /// runtimes that can stop early override it.
    fn generate_each(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Generation {
        let mut generation = self
            .generate(&[prompt.to_vec()], opts)
            .pop()
            .unwrap_or(Generation {
                tokens: Vec::new(),
                finish_reason: FinishReason::Stop,
                logprobs: Vec::new(),
            });
        if let Some(cut) = generation.tokens.iter().position(|&t| !on_token(t)) {
            generation.tokens.truncate(cut + 1);
            generation.logprobs.truncate(cut + 1);
            generation.finish_reason = FinishReason::Length;
        }
        generation
    }
    /// The chat template applied to `messages`.
    fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String>;
}

/// Opens the model directory `model_dir` (config.json, safetensors weights,
/// tokenizer.json, and a chat template when there is one) with flow's runtime.
pub fn load(model_dir: &Path) -> Result<Box<dyn LanguageModel>, String> {
    if !model_dir.join("config.json").is_file() {
        return Err(format!(
            "{}: not a model directory (no config.json); pass a directory written by a model op or a Hugging Face model directory",
            model_dir.display()
        ));
    }
    let model = flow_model::Model::load(model_dir).map_err(|e| e.to_string())?;
    let tokenizer = flow_model::Tokenizer::load(model_dir).map_err(|e| e.to_string())?;
    // A model without a chat template still scores and completes text.
    let template = flow_model::ChatTemplate::load(model_dir).map_err(|e| e.to_string());
    Ok(Box::new(FlowModel {
        model,
        tokenizer,
        template,
    }))
}

/// flow-model's runtime behind [`LanguageModel`].
pub struct FlowModel {
    pub model: flow_model::Model,
    pub tokenizer: flow_model::Tokenizer,
    /// The chat template, or why there is none.
    pub template: Result<flow_model::ChatTemplate, String>,
}

impl LanguageModel for FlowModel {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| e.to_string())
    }
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| e.to_string())
    }
    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.model.config.eos_token_ids.clone()
    }
    fn max_context(&self) -> usize {
        self.model.config.max_position_embeddings
    }
    fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood> {
        self.model
            .loglikelihood(requests)
            .into_iter()
            .map(|l| LogLikelihood {
                logprob: l.logprob,
                is_greedy: l.is_greedy,
            })
            .collect()
    }
    fn token_logprobs(&self, tokens: &[u32], top_k: usize) -> Vec<Option<TokenLogprob>> {
        self.model
            .token_logprobs(tokens, top_k)
            .into_iter()
            .map(|t| {
                t.map(|t| TokenLogprob {
                    logprob: t.logprob,
                    top: t.top,
                })
            })
            .collect()
    }
    fn generate_each(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Generation {
        let o = flow_model::GenerateOptions {
            max_tokens: opts.max_tokens,
            temperature: opts.temperature,
            top_p: opts.top_p,
            seed: opts.seed,
            stop_tokens: opts.stop_tokens.clone(),
        };
        let g = self
            .model
            .generate_each(&[prompt.to_vec()], &o, &mut |_, t| on_token(t))
            .pop();
        match g {
            Some(g) => Generation {
                tokens: g.tokens,
                finish_reason: match g.finish_reason {
                    flow_model::FinishReason::Stop => FinishReason::Stop,
                    flow_model::FinishReason::Length => FinishReason::Length,
                },
                logprobs: g.logprobs,
            },
            None => Generation {
                tokens: Vec::new(),
                finish_reason: FinishReason::Stop,
                logprobs: Vec::new(),
            },
        }
    }
    fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Vec<Generation> {
        let o = flow_model::GenerateOptions {
            max_tokens: opts.max_tokens,
            temperature: opts.temperature,
            top_p: opts.top_p,
            seed: opts.seed,
            stop_tokens: opts.stop_tokens.clone(),
        };
        self.model
            .generate(prompts, &o)
            .into_iter()
            .map(|g| Generation {
                tokens: g.tokens,
                finish_reason: match g.finish_reason {
                    flow_model::FinishReason::Stop => FinishReason::Stop,
                    flow_model::FinishReason::Length => FinishReason::Length,
                },
                logprobs: g.logprobs,
            })
            .collect()
    }
    fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self
            .template
            .as_ref()
            .map_err(|e| format!("no chat template: {e}"))?;
        let msgs: Vec<flow_model::ChatMessage> = messages
            .iter()
            .map(|m| flow_model::ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        template
            .render(&msgs, add_generation_prompt)
            .map_err(|e| e.to_string())
    }
}

/// Reads `flow_checkpoint.json` of a model directory, when there is one, so
/// that results can say which training checkpoint they measure.
pub fn read_checkpoint(model_dir: &Path) -> Result<Option<serde_json::Value>, String> {
    let path = model_dir.join("flow_checkpoint.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
    Ok(Some(value))
}

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

    fn argmax(row: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        best as u32
    }

    fn sample(row: &[f32], temperature: f32, top_p: f32, rng: &mut ChaCha8Rng) -> u32 {
        let mut probs: Vec<(u32, f64)> = row
            .iter()
            .enumerate()
            .map(|(i, &lp)| (i as u32, (lp as f64 / temperature as f64).exp()))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = probs.iter().map(|p| p.1).sum();
        let mut kept = Vec::new();
        let mut mass = 0.0;
        for (id, p) in probs {
            kept.push((id, p / total));
            mass += p / total;
            if mass >= top_p as f64 {
                break;
            }
        }
        let norm: f64 = kept.iter().map(|p| p.1).sum();
        let mut u = rng.random::<f64>() * norm;
        for &(id, p) in &kept {
            if u < p {
                return id;
            }
            u -= p;
        }
        kept[kept.len() - 1].0
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

    fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood> {
        requests
            .iter()
            .map(|(ctx, cont)| {
                let mut prev = ctx.last().copied().unwrap_or(Self::EOS);
                let mut logprob = 0.0f64;
                let mut is_greedy = true;
                for &t in cont {
                    let row = self.row(prev);
                    logprob += row[t as usize] as f64;
                    is_greedy &= Self::argmax(&row) == t;
                    prev = t;
                }
                LogLikelihood { logprob, is_greedy }
            })
            .collect()
    }

    fn token_logprobs(&self, tokens: &[u32], top_k: usize) -> Vec<Option<TokenLogprob>> {
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
                logprob: row[t as usize],
                top,
            }));
        }
        out
    }

    fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Vec<Generation> {
        prompts
            .iter()
            .map(|prompt| {
                let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                let mut prev = prompt.last().copied().unwrap_or(Self::EOS);
                let mut tokens = Vec::new();
                let mut logprobs = Vec::new();
                let mut finish_reason = FinishReason::Length;
                while tokens.len() < opts.max_tokens {
                    let row = self.row(prev);
                    let t = if opts.temperature <= 0.0 {
                        Self::argmax(&row)
                    } else {
                        Self::sample(&row, opts.temperature, opts.top_p, &mut rng)
                    };
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
            .collect()
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
