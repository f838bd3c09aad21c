//! The CPU backend behind a wrapper that counts every compute call by
//! name: a second backend for the tests that the passes written over
//! `Backend` and `EncoderBackend` really go through the backend.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;

use flow_model::backend::{AdamW, AttnParams, Backend, CpuBackend, EncoderBackend, Keys};
use flow_model::encoder::attention::AttnCache;
use flow_model::encoder::Dropout;
use flow_model::Params;

/// The CPU backend, counting the compute calls made through it.
#[derive(Default)]
pub struct Counting {
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl Counting {
    fn count(&self, name: &'static str) -> CpuBackend {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
        CpuBackend
    }
    /// The calls counted since the last `calls()`, by name (and resets).
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    /// How many calls were counted since the last `calls()`.
    pub fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
}

pub type R<T> = Result<T, Infallible>;
pub type V = Vec<f32>;

impl Backend for Counting {
    type Error = Infallible;
    type Buf = V;
    type Stats = V;
    type Ids = Vec<u32>;
    type Params = Params;
    type Weight = [f32];
    type Grads = Params;
    type Grad = [f32];
    type Rope = <CpuBackend as Backend>::Rope;
    type KvLayer = V;

    fn zeros(&self, n: usize) -> R<V> {
        CpuBackend.zeros(n)
    }
    fn zeros_stats(&self, n: usize) -> R<V> {
        CpuBackend.zeros_stats(n)
    }
    fn upload(&self, x: &[f32]) -> R<V> {
        CpuBackend.upload(x)
    }
    fn download(&self, x: V) -> R<V> {
        CpuBackend.download(x)
    }
    fn duplicate(&self, x: &V) -> R<V> {
        CpuBackend.duplicate(x)
    }
    fn upload_ids(&self, ids: &[u32]) -> R<Vec<u32>> {
        CpuBackend.upload_ids(ids)
    }
    fn gather_rows(&self, x: &V, rows: &[usize], width: usize) -> R<V> {
        CpuBackend.gather_rows(x, rows, width)
    }
    fn concat(&self, a: &V, b: &V) -> R<V> {
        CpuBackend.concat(a, b)
    }
    fn write_rows(&self, dst: &mut V, first_row: usize, width: usize, src: &V) -> R<()> {
        CpuBackend.write_rows(dst, first_row, width, src)
    }
    fn params_from_host(&self, params: Params) -> R<Params> {
        CpuBackend.params_from_host(params)
    }
    fn params_to_host<'a>(&self, params: &'a Params) -> R<Cow<'a, Params>> {
        CpuBackend.params_to_host(params)
    }
    fn weight(params: &Params, i: usize) -> &[f32] {
        CpuBackend::weight(params, i)
    }
    fn grads_zeroed(&self, params: &Params) -> R<Params> {
        CpuBackend.grads_zeroed(params)
    }
    fn grads_to_host<'a>(&self, grads: &'a Params) -> R<Cow<'a, Params>> {
        CpuBackend.grads_to_host(grads)
    }
    fn grads_from_host(&self, grads: Params) -> R<Params> {
        CpuBackend.grads_from_host(grads)
    }
    fn grad_and_bias(
        grads: &mut Params,
        w: usize,
        b: Option<usize>,
    ) -> (&mut [f32], Option<&mut [f32]>) {
        CpuBackend::grad_and_bias(grads, w, b)
    }
    fn rope(&self, head_dim: usize, theta: f64, max_positions: usize) -> R<Self::Rope> {
        CpuBackend.rope(head_dim, theta, max_positions)
    }
    fn duplicate_kv(&self, layer: &V) -> R<V> {
        CpuBackend.duplicate_kv(layer)
    }
    fn embedding_forward(&self, ids: &Vec<u32>, table: &[f32], dim: usize, out: &mut V) -> R<()> {
        self.count("embedding_forward")
            .embedding_forward(ids, table, dim, out)
    }
    fn embedding_backward(&self, ids: &[u32], dout: &V, dim: usize, dtable: &mut [f32]) -> R<()> {
        self.count("embedding_backward")
            .embedding_backward(ids, dout, dim, dtable)
    }
    fn rmsnorm_forward(
        &self,
        x: &V,
        w: &[f32],
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut V,
        rstd: &mut V,
    ) -> R<()> {
        self.count("rmsnorm_forward")
            .rmsnorm_forward(x, w, eps, rows, dim, y, rstd)
    }
    fn rmsnorm_backward(
        &self,
        dy: &V,
        x: &V,
        w: &[f32],
        rstd: &V,
        rows: usize,
        dim: usize,
        dx: &mut V,
        dw: &mut [f32],
    ) -> R<()> {
        self.count("rmsnorm_backward")
            .rmsnorm_backward(dy, x, w, rstd, rows, dim, dx, dw)
    }
    fn linear_forward(
        &self,
        x: &V,
        w: &[f32],
        bias: Option<&[f32]>,
        t: usize,
        i: usize,
        o: usize,
        y: &mut V,
    ) -> R<()> {
        self.count("linear_forward")
            .linear_forward(x, w, bias, t, i, o, y)
    }
    fn linear_backward(
        &self,
        dy: &V,
        x: &V,
        w: &[f32],
        t: usize,
        i: usize,
        o: usize,
        dx: Option<&mut V>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> R<()> {
        self.count("linear_backward")
            .linear_backward(dy, x, w, t, i, o, dx, dw, db)
    }
    fn rope_forward(
        &self,
        x: &mut V,
        positions: &Vec<u32>,
        heads: usize,
        rope: &Self::Rope,
    ) -> R<()> {
        self.count("rope_forward")
            .rope_forward(x, positions, heads, rope)
    }
    fn rope_backward(
        &self,
        dx: &mut V,
        positions: &Vec<u32>,
        heads: usize,
        rope: &Self::Rope,
    ) -> R<()> {
        self.count("rope_backward")
            .rope_backward(dx, positions, heads, rope)
    }
    fn swiglu_forward(&self, gate: &V, up: &V, out: &mut V) -> R<()> {
        self.count("swiglu_forward").swiglu_forward(gate, up, out)
    }
    fn swiglu_backward(&self, gate: &V, up: &V, dout: &V, dgate: &mut V, dup: &mut V) -> R<()> {
        self.count("swiglu_backward")
            .swiglu_backward(gate, up, dout, dgate, dup)
    }
    fn add_in_place(&self, x: &mut V, y: &V) -> R<()> {
        self.count("add_in_place").add_in_place(x, y)
    }
    fn attention_forward(
        &self,
        p: &AttnParams,
        layer: usize,
        lens: &[usize],
        q: &V,
        k: &V,
        v: &V,
        keys: &mut [Keys<'_, Self>],
        out: &mut V,
        lse: &mut V,
    ) -> R<()> {
        self.count("attention_forward");
        // The CPU backend's attention over this backend's caches: move each cache's layer
        // into a CPU cache and back.
        let qd = p.q_heads * p.head_dim;
        let kvd = p.kv_heads * p.head_dim;
        let mut row = 0;
        for (&n, keys) in lens.iter().zip(keys.iter_mut()) {
            let rows = |x: &V, w: usize| x[row * w..(row + n) * w].to_vec();
            let (qs, ks, vs) = (rows(q, qd), rows(k, kvd), rows(v, kvd));
            let mut o = vec![0.0; n * qd];
            let mut l = vec![0.0; n * p.q_heads];
            if n > 0 {
                match keys {
                    Keys::Cache(cache) => {
                        let (kc, vc) = cache.layer_mut(layer);
                        kc.extend_from_slice(&ks);
                        vc.extend_from_slice(&vs);
                        let s = kc.len() / kvd;
                        flow_kernels::cpu::attention_forward(
                            p, n, s, &qs, kc, vc, None, &mut o, &mut l,
                        );
                    }
                    Keys::Own(docs) => {
                        flow_kernels::cpu::attention_forward(
                            p, n, n, &qs, &ks, &vs, *docs, &mut o, &mut l,
                        );
                    }
                }
            }
            out[row * qd..(row + n) * qd].copy_from_slice(&o);
            lse[row * p.q_heads..(row + n) * p.q_heads].copy_from_slice(&l);
            row += n;
        }
        Ok(())
    }
    fn attention_backward(
        &self,
        p: &AttnParams,
        lens: &[usize],
        docs: &[Option<&[u32]>],
        q: &V,
        k: &V,
        v: &V,
        out: &V,
        lse: &V,
        dout: &V,
        dq: &mut V,
        dk: &mut V,
        dv: &mut V,
    ) -> R<()> {
        self.count("attention_backward")
            .attention_backward(p, lens, docs, q, k, v, out, lse, dout, dq, dk, dv)
    }
    fn cross_entropy(
        &self,
        logits: &V,
        targets: &[i32],
        rows: usize,
        vocab: usize,
        dlogits: Option<(&mut V, f32)>,
    ) -> R<(f64, usize)> {
        self.count("cross_entropy")
            .cross_entropy(logits, targets, rows, vocab, dlogits)
    }
    fn zero_grads(&self, grads: &mut Params) -> R<()> {
        self.count("zero_grads").zero_grads(grads)
    }
    fn grad_norm(&self, grads: &Params) -> R<f64> {
        self.count("grad_norm").grad_norm(grads)
    }
    fn scale_grads(&self, grads: &mut Params, s: f32) -> R<()> {
        self.count("scale_grads").scale_grads(grads, s)
    }
    fn adamw(
        &self,
        decay: &AdamW,
        no_decay: &AdamW,
        step: u64,
        params: &mut Params,
        grads: &Params,
        m: &mut Params,
        v: &mut Params,
    ) -> R<()> {
        self.count("adamw")
            .adamw(decay, no_decay, step, params, grads, m, v)
    }
}

impl EncoderBackend for Counting {
    type AttnProbs = AttnCache;

    fn upload_stats(&self, x: &[f32]) -> R<V> {
        self.count("upload_stats").upload_stats(x)
    }
    fn layernorm_forward(
        &self,
        x: &V,
        w: &[f32],
        b: &[f32],
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut V,
        mean: &mut V,
        rstd: &mut V,
    ) -> R<()> {
        self.count("layernorm_forward")
            .layernorm_forward(x, w, b, eps, rows, dim, y, mean, rstd)
    }
    fn layernorm_backward(
        &self,
        dy: &V,
        x: &V,
        w: &[f32],
        mean: &V,
        rstd: &V,
        rows: usize,
        dim: usize,
        dx: &mut V,
        dw: &mut [f32],
        db: &mut [f32],
    ) -> R<()> {
        self.count("layernorm_backward")
            .layernorm_backward(dy, x, w, mean, rstd, rows, dim, dx, dw, db)
    }
    fn gelu_forward(&self, x: &V, y: &mut V) -> R<()> {
        self.count("gelu_forward").gelu_forward(x, y)
    }
    fn gelu_backward(&self, dy: &V, x: &V, dx: &mut V) -> R<()> {
        self.count("gelu_backward").gelu_backward(dy, x, dx)
    }
    fn tanh_in_place(&self, x: &mut V) -> R<()> {
        self.count("tanh_in_place").tanh_in_place(x)
    }
    fn tanh_backward_in_place(&self, dy: &mut V, y: &V) -> R<()> {
        self.count("tanh_backward_in_place")
            .tanh_backward_in_place(dy, y)
    }
    fn scale_by_mask(&self, x: &mut V, mask: &V) -> R<()> {
        self.count("scale_by_mask").scale_by_mask(x, mask)
    }
    fn bidirectional_attention_forward(
        &self,
        q: &V,
        k: &V,
        v: &V,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        ctx: &mut V,
        keep: bool,
        dropout: Option<(&Dropout, usize)>,
    ) -> R<AttnCache> {
        self.count("bidirectional_attention_forward")
            .bidirectional_attention_forward(q, k, v, offsets, heads, head_dim, ctx, keep, dropout)
    }
    fn bidirectional_attention_backward(
        &self,
        dctx: &V,
        q: &V,
        k: &V,
        v: &V,
        probs: &AttnCache,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        dq: &mut V,
        dk: &mut V,
        dv: &mut V,
    ) -> R<()> {
        self.count("bidirectional_attention_backward")
            .bidirectional_attention_backward(
                dctx, q, k, v, probs, offsets, heads, head_dim, dq, dk, dv,
            )
    }
    fn grad_norm_in_element_order(&self, grads: &Params) -> R<f64> {
        self.count("grad_norm_in_element_order")
            .grad_norm_in_element_order(grads)
    }
}
