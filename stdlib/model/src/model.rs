//! The model: loading, saving, the KV cache and the inference API (scoring,
//! log-likelihoods, hidden states) over the one forward pass of `forward.rs`,
//! on any [`Backend`]; [`Model`] is the model on the CPU.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::backend::{infallible, model_error, Backend, CpuBackend, Keys};
use crate::config::Config;
use crate::error::ModelError;
use crate::forward::{Record, Segments};
use crate::weights::{load_params, save_params, Layout, Params, SaveDtype};

/// A loaded causal language model whose tensors live on backend `B`.
pub struct ModelOn<B: Backend> {
    pub config: Config,
    /// Every parameter, in `Config::param_shapes` order.
    pub params: B::Params,
    /// Where each layer's tensors are in `params`.
    pub layout: Layout,
    /// Ids that end a generation besides `config.eos_token_ids` (`<|im_end|>` when the tokenizer has it).
    pub chat_stop_ids: Vec<u32>,
    /// The directory the model was loaded from, if any.
    pub source_dir: Option<PathBuf>,
    pub(crate) backend: B,
    rope: B::Rope,
}

/// A loaded causal language model on the CPU (f32 parameters).
pub type Model = ModelOn<CpuBackend>;

/// The key/value cache of one sequence: per layer `[len, kv_dim]` rows, on backend `B`.
pub struct KvCacheOn<B: Backend> {
    k: Vec<B::KvLayer>,
    v: Vec<B::KvLayer>,
    len: usize,
}

/// The key/value cache of one sequence on the CPU.
pub type KvCache = KvCacheOn<CpuBackend>;

impl<B: Backend> std::fmt::Debug for KvCacheOn<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("layers", &self.k.len())
            .field("len", &self.len)
            .finish()
    }
}

impl Clone for KvCache {
    fn clone(&self) -> KvCache {
        infallible(self.duplicate(&CpuBackend))
    }
}

impl Default for KvCache {
    fn default() -> KvCache {
        KvCache {
            k: Vec::new(),
            v: Vec::new(),
            len: 0,
        }
    }
}

impl<B: Backend> KvCacheOn<B> {
    /// An empty cache for `config`.
    pub fn new(config: &Config) -> KvCacheOn<B> {
        let layers = || (0..config.num_hidden_layers).map(|_| B::KvLayer::default());
        KvCacheOn {
            k: layers().collect(),
            v: layers().collect(),
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
    /// A copy of the cache (on the same backend).
    pub fn duplicate(&self, backend: &B) -> Result<KvCacheOn<B>, B::Error> {
        let copy = |layers: &[B::KvLayer]| {
            layers
                .iter()
                .map(|l| backend.duplicate_kv(l))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(KvCacheOn {
            k: copy(&self.k)?,
            v: copy(&self.v)?,
            len: self.len,
        })
    }
    /// Layer `layer`'s keys and values, for a backend's attention to append to.
    pub fn layer_mut(&mut self, layer: usize) -> (&mut B::KvLayer, &mut B::KvLayer) {
        (&mut self.k[layer], &mut self.v[layer])
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

const FAILED: LogLikelihood = LogLikelihood {
    logprob: f64::NEG_INFINITY,
    is_greedy: false,
};

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
        let rope = infallible(CpuBackend.rope(
            config.head_dim,
            config.rope_theta,
            rope_positions(&config),
        ));
        Ok(Model {
            config,
            params,
            layout,
            chat_stop_ids: Vec::new(),
            source_dir: None,
            backend: CpuBackend,
            rope,
        })
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]`.
    pub fn lm_head(&self, hidden: &[f32], rows: usize) -> Vec<f32> {
        infallible(self.logits(&hidden.to_vec(), rows))
    }

    /// Summed log-probability of each continuation given its context, and whether every
    /// continuation token was the argmax. Requests are batched; a request whose tokens are out
    /// of range, or whose context is empty, gets `-inf` and `false`. Each request runs as its own
    /// forward pass (requests in parallel), so a result never depends on the rest of the batch.
    pub fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood> {
        infallible(self.try_loglikelihood(requests))
    }

    /// Per-token log-probabilities of `tokens` (position 0 gets `None`) with the `top_k` most
    /// likely alternatives. Out-of-range tokens give all `None`.
    pub fn token_logprobs(&self, tokens: &[u32], top_k: usize) -> Vec<Option<TokenLogprob>> {
        infallible(self.try_token_logprobs(tokens, top_k))
    }

    /// Mean over tokens of the final (normed) hidden states; empty for empty or invalid input.
    pub fn mean_hidden_state(&self, tokens: &[u32]) -> Vec<f32> {
        infallible(self.try_mean_hidden_state(tokens))
    }
}

/// The positions the model's own RoPE table covers (longer passes build a bigger one).
fn rope_positions(config: &Config) -> usize {
    config.max_position_embeddings.clamp(1, 1 << 16)
}

impl<B: Backend> ModelOn<B> {
    /// `model` placed on `backend` (its parameters uploaded).
    pub fn place(backend: B, model: Model) -> Result<ModelOn<B>, ModelError> {
        let rope = backend
            .rope(
                model.config.head_dim,
                model.config.rope_theta,
                rope_positions(&model.config),
            )
            .map_err(model_error)?;
        Ok(ModelOn {
            params: backend
                .params_from_host(model.params)
                .map_err(model_error)?,
            config: model.config,
            layout: model.layout,
            chat_stop_ids: model.chat_stop_ids,
            source_dir: model.source_dir,
            backend,
            rope,
        })
    }

    /// The backend the model lives on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Writes config.json and the weights (f32 or bf16) into `out_dir`. Tokenizer files are
    /// copied separately with [`crate::copy_tokenizer_files`].
    pub fn save(&self, out_dir: &Path, dtype: SaveDtype) -> Result<(), ModelError> {
        let params = self
            .backend
            .params_to_host(&self.params)
            .map_err(model_error)?;
        save_params(out_dir, &self.config, &params, dtype)
    }

    pub(crate) fn w(&self, i: usize) -> &B::Weight {
        B::weight(&self.params, i)
    }

    /// A RoPE table covering positions `< max_pos` when the cached one is too small.
    pub(crate) fn bigger_rope(&self, max_pos: usize) -> Result<Option<B::Rope>, B::Error> {
        if max_pos > rope_positions(&self.config) {
            Ok(Some(self.backend.rope(
                self.config.head_dim,
                self.config.rope_theta,
                max_pos.next_power_of_two(),
            )?))
        } else {
            Ok(None)
        }
    }

    pub(crate) fn rope(&self) -> &B::Rope {
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
        segs: &mut [(&[u32], &mut KvCacheOn<B>)],
    ) -> Result<B::Buf, ModelError> {
        for (toks, _) in segs.iter() {
            self.check_tokens(toks)?;
        }
        self.forward_checked(segs).map_err(model_error)
    }

    /// [`ModelOn::forward_segments`] of tokens already checked to be in range.
    pub(crate) fn forward_checked(
        &self,
        segs: &mut [(&[u32], &mut KvCacheOn<B>)],
    ) -> Result<B::Buf, B::Error> {
        let tokens = Segments::after_caches(segs);
        let mut keys: Vec<Keys<B>> = segs
            .iter_mut()
            .map(|(_, cache)| Keys::Cache(cache))
            .collect();
        Ok(self.forward(&tokens, &mut keys, Record::Nothing)?.hidden)
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]`, on the backend.
    pub fn logits(&self, hidden: &B::Buf, rows: usize) -> Result<B::Buf, B::Error> {
        let (h, v) = (self.config.hidden_size, self.config.vocab_size);
        let mut out = self.backend.zeros(rows * v)?;
        self.backend.linear_forward(
            hidden,
            self.w(self.layout.lm_head),
            None,
            rows,
            h,
            v,
            &mut out,
        )?;
        Ok(out)
    }

    /// Logits `[tokens.len(), vocab]` of one sequence, or an error for out-of-range tokens.
    pub fn try_forward_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.check_tokens(tokens)?;
        self.host_logits(tokens).map_err(model_error)
    }

    /// Host logits of one sequence of checked tokens.
    fn host_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, B::Error> {
        let mut cache = KvCacheOn::new(&self.config);
        let hidden = self.forward_checked(&mut [(tokens, &mut cache)])?;
        self.backend.download(self.logits(&hidden, tokens.len())?)
    }

    /// Logits `[tokens.len(), vocab]` of one sequence. Out-of-range token ids give an empty
    /// vector (use [`ModelOn::try_forward_logits`] for the error).
    pub fn forward_logits(&self, tokens: &[u32]) -> Vec<f32> {
        self.try_forward_logits(tokens).unwrap_or_default()
    }

    /// [`Model::loglikelihood`] on any backend; fails only when the backend does.
    pub fn try_loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, B::Error> {
        let mut results = vec![FAILED; requests.len()];
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
        let scored: Vec<Vec<(usize, LogLikelihood)>> = groups
            .par_iter()
            .map(|(ctx, members)| {
                let conts: Vec<&[u32]> =
                    members.iter().map(|&i| requests[i].1.as_slice()).collect();
                let scores = self.score_continuations(ctx, &conts)?;
                Ok(members.iter().copied().zip(scores).collect())
            })
            .collect::<Result<_, B::Error>>()?;
        for (i, r) in scored.into_iter().flatten() {
            results[i] = r;
        }
        Ok(results)
    }

    /// Scores every continuation after one shared context (tokens checked): the context's
    /// forward pass once, then each continuation on a copy of its cache.
    fn score_continuations(
        &self,
        ctx: &[u32],
        conts: &[&[u32]],
    ) -> Result<Vec<LogLikelihood>, B::Error> {
        let b = &self.backend;
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let mut prefix_cache = KvCacheOn::new(&self.config);
        let prefix = self.forward_checked(&mut [(ctx, &mut prefix_cache)])?;
        // The context's last position predicts a continuation's first token.
        let last = b.gather_rows(&prefix, &[ctx.len() - 1], h)?;
        conts
            .par_iter()
            .map(|cont| {
                if cont.is_empty() {
                    return Ok(LogLikelihood {
                        logprob: 0.0,
                        is_greedy: true,
                    });
                }
                let rows = if cont.len() > 1 {
                    let mut cache = prefix_cache.duplicate(b)?;
                    let hidden =
                        self.forward_checked(&mut [(&cont[..cont.len() - 1], &mut cache)])?;
                    b.concat(&last, &hidden)?
                } else {
                    b.duplicate(&last)?
                };
                let logits = b.download(self.logits(&rows, cont.len())?)?;
                let lp = flow_kernels::cpu::token_logprobs(&logits, cont, cont.len(), v);
                Ok(LogLikelihood {
                    logprob: lp.iter().map(|(l, _)| *l as f64).sum(),
                    is_greedy: lp.iter().all(|(_, g)| *g),
                })
            })
            .collect()
    }

    /// [`Model::token_logprobs`] on any backend; fails only when the backend does.
    pub fn try_token_logprobs(
        &self,
        tokens: &[u32],
        top_k: usize,
    ) -> Result<Vec<Option<TokenLogprob>>, B::Error> {
        if self.check_tokens(tokens).is_err() {
            return Ok(vec![None; tokens.len()]);
        }
        let mut logits = self.host_logits(tokens)?;
        let v = self.config.vocab_size;
        let n = tokens.len();
        flow_kernels::cpu::log_softmax_rows(&mut logits, n, v);
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
        Ok(out)
    }

    /// [`Model::mean_hidden_state`] on any backend; fails only when the backend does.
    pub fn try_mean_hidden_state(&self, tokens: &[u32]) -> Result<Vec<f32>, B::Error> {
        if tokens.is_empty() || self.check_tokens(tokens).is_err() {
            return Ok(Vec::new());
        }
        let h = self.config.hidden_size;
        let mut cache = KvCacheOn::new(&self.config);
        let hidden = self
            .backend
            .download(self.forward_checked(&mut [(tokens, &mut cache)])?)?;
        let mut mean = vec![0.0f64; h];
        for row in hidden.chunks_exact(h) {
            for (m, x) in mean.iter_mut().zip(row) {
                *m += *x as f64;
            }
        }
        Ok(mean
            .iter()
            .map(|m| (m / tokens.len() as f64) as f32)
            .collect())
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
