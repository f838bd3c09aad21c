//! The model: loading, saving and the inference forward pass (with a KV cache).
//!
//! Inference runs a batch as *segments*: the new tokens of every sequence are
//! concatenated into one `[T, hidden]` matrix so that every projection is one
//! large gemm, while attention runs per segment (in parallel) against that
//! segment's KV cache.

use std::path::{Path, PathBuf};

use flow_kernels::cpu as k;
use rayon::prelude::*;

use crate::config::Config;
use crate::error::ModelError;
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
    rope: k::RopeTable,
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
}

/// One segment's share of a layer's attention: q, new k, new v, output rows, and its cache.
type SegmentWork<'a> = (
    &'a [f32],
    &'a [f32],
    &'a [f32],
    &'a mut [f32],
    &'a mut KvCache,
);

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
        let rope = k::RopeTable::new(
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
    pub(crate) fn bigger_rope(&self, max_pos: usize) -> Option<k::RopeTable> {
        (max_pos > self.config.max_position_embeddings.clamp(1, 1 << 16)).then(|| {
            k::RopeTable::new(
                self.config.head_dim,
                self.config.rope_theta,
                max_pos.next_power_of_two(),
            )
        })
    }

    pub(crate) fn rope(&self) -> &k::RopeTable {
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
        let c = &self.config;
        let (h, inter, qd, kvd, hd) = (
            c.hidden_size,
            c.intermediate_size,
            c.q_dim(),
            c.kv_dim(),
            c.head_dim,
        );
        let eps = c.rms_norm_eps as f32;
        let lens: Vec<usize> = segs.iter().map(|(t, _)| t.len()).collect();
        let t_total: usize = lens.iter().sum();
        let mut ids = Vec::with_capacity(t_total);
        let mut positions = Vec::with_capacity(t_total);
        let mut max_pos = 0;
        for (toks, cache) in segs.iter() {
            ids.extend_from_slice(toks);
            positions.extend((0..toks.len()).map(|i| (cache.len + i) as u32));
            max_pos = max_pos.max(cache.len + toks.len());
        }
        let bigger = self.bigger_rope(max_pos);
        let rope = bigger.as_ref().unwrap_or(&self.rope);
        let mut x = vec![0.0f32; t_total * h];
        k::embedding_forward(&ids, self.w(self.layout.embed), h, &mut x);
        let mut hbuf = vec![0.0f32; t_total * h];
        let mut rstd = vec![0.0f32; t_total * c.num_attention_heads.max(1)];
        let mut q = vec![0.0f32; t_total * qd];
        let mut kk = vec![0.0f32; t_total * kvd];
        let mut vv = vec![0.0f32; t_total * kvd];
        let mut tmp = vec![0.0f32; t_total * qd.max(kvd)];
        let mut attn = vec![0.0f32; t_total * qd];
        let mut gate = vec![0.0f32; t_total * inter];
        let mut up = vec![0.0f32; t_total * inter];
        for (li, lw) in self.layout.layers.iter().enumerate() {
            k::rmsnorm_forward(
                &x,
                self.w(lw.input_norm),
                eps,
                t_total,
                h,
                &mut hbuf,
                &mut rstd[..t_total],
            );
            k::linear_forward(
                &hbuf,
                self.w(lw.q_w),
                lw.q_b.map(|b| self.w(b)),
                t_total,
                h,
                qd,
                &mut q,
            );
            k::linear_forward(
                &hbuf,
                self.w(lw.k_w),
                lw.k_b.map(|b| self.w(b)),
                t_total,
                h,
                kvd,
                &mut kk,
            );
            k::linear_forward(
                &hbuf,
                self.w(lw.v_w),
                lw.v_b.map(|b| self.w(b)),
                t_total,
                h,
                kvd,
                &mut vv,
            );
            if let (Some(qn), Some(kn)) = (lw.q_norm, lw.k_norm) {
                let rows = t_total * c.num_attention_heads;
                k::rmsnorm_forward(
                    &q,
                    self.w(qn),
                    eps,
                    rows,
                    hd,
                    &mut tmp[..t_total * qd],
                    &mut rstd[..rows],
                );
                q.copy_from_slice(&tmp[..t_total * qd]);
                let rows = t_total * c.num_key_value_heads;
                k::rmsnorm_forward(
                    &kk,
                    self.w(kn),
                    eps,
                    rows,
                    hd,
                    &mut tmp[..t_total * kvd],
                    &mut rstd[..rows],
                );
                kk.copy_from_slice(&tmp[..t_total * kvd]);
            }
            k::rope_forward(&mut q, &positions, c.num_attention_heads, rope);
            k::rope_forward(&mut kk, &positions, c.num_key_value_heads, rope);
            let p = k::AttnParams {
                q_heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                window: c.layer_windows[li],
            };
            // split q/k/v/out by segment and run attention per segment in parallel
            let mut work: Vec<SegmentWork> = Vec::with_capacity(segs.len());
            {
                let (mut qr, mut kr, mut vr): (&[f32], &[f32], &[f32]) = (&q, &kk, &vv);
                let mut outr: &mut [f32] = &mut attn;
                for ((_, cache), &n) in segs.iter_mut().zip(&lens) {
                    let (qa, qb) = qr.split_at(n * qd);
                    let (ka, kb) = kr.split_at(n * kvd);
                    let (va, vb) = vr.split_at(n * kvd);
                    let (oa, ob) = std::mem::take(&mut outr).split_at_mut(n * qd);
                    work.push((qa, ka, va, oa, &mut **cache));
                    (qr, kr, vr, outr) = (qb, kb, vb, ob);
                }
            }
            work.into_par_iter().for_each(|(qs, ks, vs, out, cache)| {
                let n = qs.len() / qd;
                if n == 0 {
                    return;
                }
                cache.k[li].extend_from_slice(ks);
                cache.v[li].extend_from_slice(vs);
                let s = cache.k[li].len() / kvd;
                let mut lse = vec![0.0f32; p.q_heads * n];
                k::attention_forward(
                    &p,
                    n,
                    s,
                    qs,
                    &cache.k[li],
                    &cache.v[li],
                    None,
                    out,
                    &mut lse,
                );
            });
            k::linear_forward(
                &attn,
                self.w(lw.o_w),
                lw.o_b.map(|b| self.w(b)),
                t_total,
                qd,
                h,
                &mut hbuf,
            );
            add_in_place(&mut x, &hbuf);
            k::rmsnorm_forward(
                &x,
                self.w(lw.post_norm),
                eps,
                t_total,
                h,
                &mut hbuf,
                &mut rstd[..t_total],
            );
            k::linear_forward(&hbuf, self.w(lw.gate), None, t_total, h, inter, &mut gate);
            k::linear_forward(&hbuf, self.w(lw.up), None, t_total, h, inter, &mut up);
            // silu(gate)·up into `gate`'s buffer via `up` scratch
            {
                let act = &mut tmp;
                if act.len() < t_total * inter {
                    act.resize(t_total * inter, 0.0);
                }
                k::swiglu_forward(&gate, &up, &mut act[..t_total * inter]);
                k::linear_forward(
                    &act[..t_total * inter],
                    self.w(lw.down),
                    None,
                    t_total,
                    inter,
                    h,
                    &mut hbuf,
                );
            }
            add_in_place(&mut x, &hbuf);
        }
        for (_, cache) in segs.iter_mut() {
            cache.len = cache
                .k
                .first()
                .map(|kc| kc.len() / kvd.max(1))
                .unwrap_or(cache.len);
        }
        if c.num_hidden_layers == 0 {
            for ((toks, cache), _) in segs.iter_mut().zip(&lens) {
                cache.len += toks.len();
            }
        }
        k::rmsnorm_forward(
            &x,
            self.w(self.layout.norm),
            eps,
            t_total,
            h,
            &mut hbuf,
            &mut rstd[..t_total],
        );
        Ok(hbuf)
    }

    /// Logits `[rows, vocab]` of final hidden states `[rows, hidden]`.
    pub fn lm_head(&self, hidden: &[f32], rows: usize) -> Vec<f32> {
        let (h, v) = (self.config.hidden_size, self.config.vocab_size);
        let mut out = vec![0.0f32; rows * v];
        k::linear_forward(
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
                let lp = k::token_logprobs(&logits, cont, cont.len(), v);
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
        k::log_softmax_rows(&mut logits, n, v);
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

pub(crate) fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(a, b)| {
            for (p, q) in a.iter_mut().zip(b) {
                *p += *q;
            }
        });
}
