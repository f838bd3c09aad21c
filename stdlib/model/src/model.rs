//! The model: loading, saving, the KV cache and the inference API (scoring,
//! log-likelihoods, hidden states) over the one forward pass of `forward.rs`.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::config::Config;
use crate::error::ModelError;
use crate::forward::{Keys, Record, Segments};
use crate::primitives as p;
use crate::weights::{load_params, save_params, Layout, Params, SaveDtype};

/// A loaded causal language model (f32 parameters).
pub struct Model {
    pub config: Config,
    /// Every parameter, in `Config::param_shapes` order.
    pub params: Params,
    /// Where each layer's tensors are in `params`.
    pub layout: Layout,
    /// Ids that end a generation besides `config.eos_token_ids` (`<|im_end|>` when the tokenizer has it).
    pub chat_stop_ids: Vec<u32>,
    /// The directory the model was loaded from, if any.
    pub source_dir: Option<PathBuf>,
    rope: p::RopeTable,
}

/// The key/value cache of one sequence: per layer `[len, kv_dim]` rows.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `config`.
    pub fn new(config: &Config) -> KvCache {
        KvCache {
            k: vec![Vec::new(); config.num_hidden_layers],
            v: vec![Vec::new(); config.num_hidden_layers],
            len: 0,
        }
    }
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Appends new key and value rows to layer `layer`; returns all of that layer's keys and values.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> (&[f32], &[f32]) {
        self.k[layer].extend_from_slice(k);
        self.v[layer].extend_from_slice(v);
        (&self.k[layer], &self.v[layer])
    }
    /// Counts `n` new positions, once every layer has appended them.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// Summed log-probability of a continuation and lm-eval's `is_greedy`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogLikelihood {
    pub logprob: f64,
    pub is_greedy: bool,
}

/// One position's log-probability and its top-k alternatives (most likely first).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

impl Model {
    /// Loads config.json and the safetensors weights of `model_dir`.
    pub fn load(model_dir: &Path) -> Result<Model, ModelError> {
        let config = Config::load(model_dir)?;
        let params = load_params(model_dir, &config)?;
        let mut model = Model::from_params(config, params)?;
        model.chat_stop_ids = crate::tokenizer::chat_stop_ids(model_dir);
        model.source_dir = Some(model_dir.to_path_buf());
        Ok(model)
    }

    /// A model from parameters in memory (shapes are checked).
    pub fn from_params(config: Config, params: Params) -> Result<Model, ModelError> {
        let shapes = config.param_shapes();
        if shapes.len() != params.data.len()
            || shapes
                .iter()
                .zip(&params.data)
                .any(|((_, s), d)| s.iter().product::<usize>() != d.len())
        {
            return Err(ModelError::Input(
                "parameters do not match the config's shapes".into(),
            ));
        }
        let layout = Layout::new(&config);
        let rope = p::RopeTable::new(
            config.head_dim,
            config.rope_theta,
            config.max_position_embeddings.clamp(1, 1 << 16),
        );
        Ok(Model {
            config,
            params,
            layout,
            chat_stop_ids: Vec::new(),
            source_dir: None,
            rope,
        })
    }

    /// Writes config.json and the weights (f32 or bf16) into `out_dir`. Tokenizer files are
    /// copied separately with [`crate::copy_tokenizer_files`].
    pub fn save(&self, out_dir: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
        save_params(out_dir, &self.config, &self.params, dtype)
    }

    pub(crate) fn w(&self, i: usize) -> &[f32] {
        &self.params.data[i]
    }

    /// A RoPE table covering positions `< max_pos` when the cached one is too small.
    pub(crate) fn bigger_rope(&self, max_pos: usize) -> Option<p::RopeTable> {
        (max_pos > self.config.max_position_embeddings.clamp(1, 1 << 16)).then(|| {
            p::RopeTable::new(
                self.config.head_dim,
                self.config.rope_theta,
                max_pos.next_power_of_two(),
            )
        })
    }

    pub(crate) fn rope(&self) -> &p::RopeTable {
        &self.rope
    }

    /// An error naming the first token id outside the vocabulary, if any.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<(), ModelError> {
        let v = self.config.vocab_size;
        match tokens.iter().position(|&t| t as usize >= v) {
            Some(i) => Err(ModelError::Input(format!(
                "token id {} at position {i} is outside the vocabulary (size {v})",
                tokens[i]
            ))),
            None => Ok(()),
        }
    }

    /// Runs the new `tokens` of each segment through the network, appending to each segment's
    /// cache; returns the final normed hidden states `[Σ tokens, hidden]`, or an error naming a
    /// token id outside the vocabulary.
    pub fn forward_segments(
        &self,
        segs: &mut [(&[u32], &mut KvCache)],
    ) -> Result<Vec<f32>, ModelError> {
        for (toks, _) in segs.iter() {
            self.check_tokens(toks)?;
        }
        let tokens = Segments::after_caches(segs);
        let mut keys: Vec<Keys> = segs
            .iter_mut()
            .map(|(_, cache)| Keys::Cache(cache))
            .collect();
        Ok(self.forward(&tokens, &mut keys, Record::Nothing).hidden)
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]`.
    pub fn lm_head(&self, hidden: &[f32], rows: usize) -> Vec<f32> {
        let (h, v) = (self.config.hidden_size, self.config.vocab_size);
        let mut out = vec![0.0f32; rows * v];
        p::linear_forward(
            hidden,
            self.w(self.layout.lm_head),
            None,
            rows,
            h,
            v,
            &mut out,
        );
        out
    }

    /// Logits `[tokens.len(), vocab]` of one sequence, or an error for out-of-range tokens.
    pub fn try_forward_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.check_tokens(tokens)?;
        let mut cache = KvCache::new(&self.config);
        let hidden = self.forward_segments(&mut [(tokens, &mut cache)])?;
        Ok(self.lm_head(&hidden, tokens.len()))
    }

    /// Logits `[tokens.len(), vocab]` of one sequence. Out-of-range token ids give an empty
    /// vector (use [`Model::try_forward_logits`] for the error).
    pub fn forward_logits(&self, tokens: &[u32]) -> Vec<f32> {
        self.try_forward_logits(tokens).unwrap_or_default()
    }

    /// Summed log-probability of each continuation given its context, and whether every
    /// continuation token was the argmax. Requests are batched; a request whose tokens are out
    /// of range, or whose context is empty, gets `-inf` and `false`. Each request runs as its own
    /// forward pass (requests in parallel), so a result never depends on the rest of the batch.
    pub fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood> {
        let bad = LogLikelihood {
            logprob: f64::NEG_INFINITY,
            is_greedy: false,
        };
        let mut results = vec![bad; requests.len()];
        let valid: Vec<usize> = (0..requests.len())
            .filter(|&i| {
                let (ctx, cont) = &requests[i];
                !ctx.is_empty() && self.check_tokens(ctx).is_ok() && self.check_tokens(cont).is_ok()
            })
            .collect();
        // Requests that share a context (the choices of one question, the
        // labels of one document) run the context once and each
        // continuation on a copy of its KV cache. Every request takes this
        // same path alone or in a batch, so the numbers never depend on
        // what else is in the batch.
        let mut groups: Vec<(&[u32], Vec<usize>)> = Vec::new();
        let mut index: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
        for &i in &valid {
            let ctx = requests[i].0.as_slice();
            let g = *index.entry(ctx).or_insert_with(|| {
                groups.push((ctx, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let scored: Vec<(usize, LogLikelihood)> = groups
            .par_iter()
            .flat_map_iter(|(ctx, members)| {
                let conts: Vec<&[u32]> =
                    members.iter().map(|&i| requests[i].1.as_slice()).collect();
                members
                    .iter()
                    .copied()
                    .zip(self.score_continuations(ctx, &conts))
            })
            .collect();
        for (i, r) in scored {
            results[i] = r;
        }
        results
    }

    /// Scores every continuation after one shared context: the context's
    /// forward pass once, then each continuation on a copy of its cache.
    fn score_continuations(&self, ctx: &[u32], conts: &[&[u32]]) -> Vec<LogLikelihood> {
        let failed = LogLikelihood {
            logprob: f64::NEG_INFINITY,
            is_greedy: false,
        };
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let mut prefix_cache = KvCache::new(&self.config);
        let Ok(prefix) = self.forward_segments(&mut [(ctx, &mut prefix_cache)]) else {
            return vec![failed; conts.len()];
        };
        // The context's last position predicts a continuation's first token.
        let last = prefix[(ctx.len() - 1) * h..ctx.len() * h].to_vec();
        conts
            .par_iter()
            .map(|cont| {
                if cont.is_empty() {
                    return LogLikelihood {
                        logprob: 0.0,
                        is_greedy: true,
                    };
                }
                let mut rows = last.clone();
                if cont.len() > 1 {
                    let mut cache = prefix_cache.clone();
                    match self.forward_segments(&mut [(&cont[..cont.len() - 1], &mut cache)]) {
                        Ok(hidden) => rows.extend_from_slice(&hidden),
                        Err(_) => return failed,
                    }
                }
                let logits = self.lm_head(&rows, cont.len());
                let lp = p::token_logprobs(&logits, cont, cont.len(), v);
                LogLikelihood {
                    logprob: lp.iter().map(|(l, _)| *l as f64).sum(),
                    is_greedy: lp.iter().all(|(_, g)| *g),
                }
            })
            .collect()
    }

    /// Per-token log-probabilities of `tokens` (position 0 gets `None`) with the `top_k` most
    /// likely alternatives. Out-of-range tokens give all `None`.
    pub fn token_logprobs(&self, tokens: &[u32], top_k: usize) -> Vec<Option<TokenLogprob>> {
        let Ok(mut logits) = self.try_forward_logits(tokens) else {
            return vec![None; tokens.len()];
        };
        let v = self.config.vocab_size;
        let n = tokens.len();
        p::log_softmax_rows(&mut logits, n, v);
        let mut out = Vec::with_capacity(n);
        if n > 0 {
            out.push(None);
        }
        for i in 1..n {
            let row = &logits[(i - 1) * v..i * v];
            out.push(Some(TokenLogprob {
                token: tokens[i],
                logprob: row[tokens[i] as usize],
                top: top_k_of(row, top_k),
            }));
        }
        out
    }

    /// Mean over tokens of the final (normed) hidden states; empty for empty or invalid input.
    pub fn mean_hidden_state(&self, tokens: &[u32]) -> Vec<f32> {
        if tokens.is_empty() || self.check_tokens(tokens).is_err() {
            return Vec::new();
        }
        let h = self.config.hidden_size;
        let mut cache = KvCache::new(&self.config);
        let Ok(hidden) = self.forward_segments(&mut [(tokens, &mut cache)]) else {
            return Vec::new();
        };
        let mut mean = vec![0.0f64; h];
        for row in hidden.chunks_exact(h) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += *x as f64;
            }
        }
        mean.iter()
            .map(|m| (m / tokens.len() as f64) as f32)
            .collect()
    }
}

/// The `k` largest entries of `row` as (index, value), largest first.
pub(crate) fn top_k_of(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}
