//! Generation: batched prefill, then batched one-token decode steps over the
//! sequences still running, each with its own KV cache.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::backend::{infallible, Backend};
use crate::model::{KvCacheOn, Model, ModelOn};

/// How to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most new tokens per prompt.
    pub max_tokens: usize,
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities sum to `top_p`.
    pub top_p: f32,
    /// Seed of the sampler; prompt `i` draws from ChaCha8 stream `i`, so results do not depend on batching.
    pub seed: u64,
    /// Extra token ids that end a generation (besides the config's EOS ids and `<|im_end|>`).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced (it is included in `tokens`), or the prompt was invalid (empty
    /// `tokens`).
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

/// The result for one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// New tokens (including the stop token when one ended it).
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    /// Log-probability of each new token under the untempered model distribution.
    pub logprobs: Vec<f32>,
}

/// Picks the next token from one row of logits: the argmax when `temperature` is 0 (or not
/// finite), else a draw from `rng` among the most likely tokens whose probabilities (at that
/// temperature) sum to `top_p`. The row is overwritten (it is turned into probabilities).
pub fn sample(logits: &mut [f32], temperature: f32, top_p: f32, rng: &mut ChaCha8Rng) -> u32 {
    if temperature <= 0.0 || !temperature.is_finite() {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0f64;
    for l in logits.iter_mut() {
        let p = (((*l - max) / temperature) as f64).exp();
        *l = p as f32;
        total += p;
    }
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    });
    // keep the smallest prefix whose mass reaches top_p (at least one token)
    let top_p = if top_p > 0.0 && top_p < 1.0 {
        top_p as f64
    } else {
        1.0
    };
    let mut kept = 0;
    let mut mass = 0.0f64;
    for &i in &order {
        kept += 1;
        mass += logits[i as usize] as f64 / total;
        if mass >= top_p {
            break;
        }
    }
    let kept_mass: f64 = order[..kept]
        .iter()
        .map(|&i| logits[i as usize] as f64)
        .sum();
    let mut u = rng.random::<f64>() * kept_mass;
    for &i in &order[..kept] {
        u -= logits[i as usize] as f64;
        if u <= 0.0 {
            return i;
        }
    }
    order[kept - 1]
}

/// The index of the largest entry of `row` (the first one on ties).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

fn log_softmax_at(row: &[f32], t: u32) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    (row[t as usize] - max) - sum.ln() as f32
}

impl Model {
    /// Generates a continuation of every prompt. Invalid prompts (empty, or token ids outside
    /// the vocabulary) get an empty generation with `FinishReason::Stop`.
    pub fn generate(&self, prompts: &[Vec<u32>], opts: &GenerateOptions) -> Vec<Generation> {
        self.generate_each(prompts, opts, &mut |_, _| true)
    }

    /// [`Model::generate`], calling `on_token(prompt index, token)` as each new token is
    /// sampled; when it returns false that sequence ends there (with `FinishReason::Length`),
    /// so a server can stop work for a client that went away.
    pub fn generate_each(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Vec<Generation> {
        infallible(self.try_generate_each(prompts, opts, on_token))
    }
}

impl<B: Backend> ModelOn<B> {
    /// [`Model::generate_each`] on any backend: batched decoding with each sequence's KV cache
    /// on the backend and sampling on the host; fails only when the backend does.
    pub fn try_generate_each(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Generation>, B::Error> {
        let b = self.backend();
        let v = self.config.vocab_size;
        let h = self.config.hidden_size;
        let mut stops: Vec<u32> = self.config.eos_token_ids.clone();
        stops.extend_from_slice(&self.chat_stop_ids);
        stops.extend_from_slice(&opts.stop_tokens);
        let mut results: Vec<Generation> = prompts
            .iter()
            .map(|_| Generation {
                tokens: Vec::new(),
                finish_reason: FinishReason::Stop,
                logprobs: Vec::new(),
            })
            .collect();
        let mut active: Vec<usize> = (0..prompts.len())
            .filter(|&i| !prompts[i].is_empty() && self.check_tokens(&prompts[i]).is_ok())
            .collect();
        if opts.max_tokens == 0 {
            for &i in &active {
                results[i].finish_reason = FinishReason::Length;
            }
            return Ok(results);
        }
        let mut caches: Vec<KvCacheOn<B>> = prompts
            .iter()
            .map(|_| KvCacheOn::new(&self.config))
            .collect();
        let mut rngs: Vec<ChaCha8Rng> = (0..prompts.len())
            .map(|i| {
                let mut r = ChaCha8Rng::seed_from_u64(opts.seed);
                r.set_stream(i as u64);
                r
            })
            .collect();
        // the tokens each active sequence feeds next: the prompt, then its last new token
        // (prompts are checked above and sampled tokens are below the vocabulary size)
        let mut feed: Vec<Vec<u32>> = prompts.to_vec();
        while !active.is_empty() {
            let hidden = {
                let mut cache_refs: Vec<Option<&mut KvCacheOn<B>>> =
                    caches.iter_mut().map(Some).collect();
                let mut segs: Vec<(&[u32], &mut KvCacheOn<B>)> = active
                    .iter()
                    .filter_map(|&i| Some((feed[i].as_slice(), cache_refs[i].take()?)))
                    .collect();
                self.forward_checked(&mut segs)?
            };
            // last row of each segment
            let mut last_rows = Vec::with_capacity(active.len());
            let mut offset = 0;
            for &i in &active {
                offset += feed[i].len();
                last_rows.push(offset - 1);
            }
            let rows = b.gather_rows(&hidden, &last_rows, h)?;
            let mut logits = b.download(self.logits(&rows, active.len())?)?;
            let mut still = Vec::with_capacity(active.len());
            for (j, &i) in active.iter().enumerate() {
                let row = &mut logits[j * v..(j + 1) * v];
                let lp_row = row.to_vec();
                let t = sample(row, opts.temperature, opts.top_p, &mut rngs[i]);
                let g = &mut results[i];
                g.tokens.push(t);
                g.logprobs.push(log_softmax_at(&lp_row, t));
                let wanted = on_token(i, t);
                if stops.contains(&t) {
                    g.finish_reason = FinishReason::Stop;
                } else if !wanted || g.tokens.len() >= opts.max_tokens {
                    g.finish_reason = FinishReason::Length;
                } else {
                    feed[i] = vec![t];
                    still.push(i);
                }
            }
            active = still;
        }
        Ok(results)
    }
}
