//! The passes are written once over `Backend`: a second backend (here one
//! that forwards every call to the CPU backend and counts them) runs the same
//! forward, scoring, generation, training and checkpoint code, and gives the
//! CPU model's results bit for bit.

mod common;
use common::*;

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow_model::backend::{AdamW, AttnParams, Backend, CpuBackend, Keys};
use flow_model::train::{OptimConfig, Sequence, Trainer, TrainerOn};
use flow_model::{GenerateOptions, Model, ModelOn, Params};

/// The CPU backend, counting the compute calls made through it.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
}

impl Counting {
    fn count(&self) -> CpuBackend {
        self.calls.fetch_add(1, Ordering::Relaxed);
        CpuBackend
    }
}

type R<T> = Result<T, Infallible>;
type V = Vec<f32>;

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
        self.count().embedding_forward(ids, table, dim, out)
    }
    fn embedding_backward(&self, ids: &[u32], dout: &V, dim: usize, dtable: &mut [f32]) -> R<()> {
        self.count().embedding_backward(ids, dout, dim, dtable)
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
        self.count().rmsnorm_forward(x, w, eps, rows, dim, y, rstd)
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
        self.count()
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
        self.count().linear_forward(x, w, bias, t, i, o, y)
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
        self.count().linear_backward(dy, x, w, t, i, o, dx, dw, db)
    }
    fn rope_forward(
        &self,
        x: &mut V,
        positions: &Vec<u32>,
        heads: usize,
        rope: &Self::Rope,
    ) -> R<()> {
        self.count().rope_forward(x, positions, heads, rope)
    }
    fn rope_backward(
        &self,
        dx: &mut V,
        positions: &Vec<u32>,
        heads: usize,
        rope: &Self::Rope,
    ) -> R<()> {
        self.count().rope_backward(dx, positions, heads, rope)
    }
    fn swiglu_forward(&self, gate: &V, up: &V, out: &mut V) -> R<()> {
        self.count().swiglu_forward(gate, up, out)
    }
    fn swiglu_backward(&self, gate: &V, up: &V, dout: &V, dgate: &mut V, dup: &mut V) -> R<()> {
        self.count().swiglu_backward(gate, up, dout, dgate, dup)
    }
    fn add_in_place(&self, x: &mut V, y: &V) -> R<()> {
        self.count().add_in_place(x, y)
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
        self.calls.fetch_add(1, Ordering::Relaxed);
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
        self.count()
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
        self.count()
            .cross_entropy(logits, targets, rows, vocab, dlogits)
    }
    fn zero_grads(&self, grads: &mut Params) -> R<()> {
        self.count().zero_grads(grads)
    }
    fn grad_norm(&self, grads: &Params) -> R<f64> {
        self.count().grad_norm(grads)
    }
    fn scale_grads(&self, grads: &mut Params, s: f32) -> R<()> {
        self.count().scale_grads(grads, s)
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
        self.count()
            .adamw(decay, no_decay, step, params, grads, m, v)
    }
}

#[test]
fn a_second_backend_runs_the_same_passes_bit_for_bit() {
    for arch in ARCHS {
        let cpu = Model::load(&golden_dir(arch)).unwrap();
        let other =
            ModelOn::place(Counting::default(), Model::load(&golden_dir(arch)).unwrap()).unwrap();
        let toks: Vec<u32> = (0..19u32)
            .map(|i| (i * 37 + 5) % cpu.config.vocab_size as u32)
            .collect();
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&cpu.forward_logits(&toks)),
            bits(&other.forward_logits(&toks)),
            "{arch} logits"
        );
        let reqs = vec![
            (toks[..5].to_vec(), toks[5..9].to_vec()),
            (toks[..5].to_vec(), toks[9..].to_vec()),
        ];
        assert_eq!(
            cpu.loglikelihood(&reqs),
            other.try_loglikelihood(&reqs).unwrap(),
            "{arch} loglikelihood"
        );
        assert_eq!(
            cpu.token_logprobs(&toks, 2),
            other.try_token_logprobs(&toks, 2).unwrap(),
            "{arch} logprobs"
        );
        let opts = GenerateOptions {
            max_tokens: 6,
            temperature: 0.8,
            top_p: 0.9,
            seed: 3,
            ..Default::default()
        };
        let prompts = vec![toks[..4].to_vec(), toks[4..11].to_vec()];
        assert_eq!(
            cpu.generate(&prompts, &opts),
            other
                .try_generate_each(&prompts, &opts, &mut |_, _| true)
                .unwrap(),
            "{arch} generate"
        );
        let before = other.backend().calls.load(Ordering::Relaxed);
        assert!(
            before > 0,
            "{arch}: no compute call went through the backend"
        );

        let cfg = OptimConfig {
            lr: 1e-3,
            total_steps: 3,
            activation_checkpointing: true,
            ..OptimConfig::default()
        };
        let docs: Vec<u32> = (0..19).map(|i| (i / 7) as u32).collect();
        let batch = vec![
            vec![Sequence::causal(&toks)],
            vec![Sequence::packed(&toks, &docs)],
        ];
        let mut a = Trainer::new(cpu, cfg.clone());
        let mut b = TrainerOn::open(other, cfg).unwrap();
        for _ in 0..3 {
            let (sa, sb) = (a.step(&batch).unwrap(), b.step(&batch).unwrap());
            assert_eq!(sa, sb, "{arch} step");
        }
        let host = b.model.backend().params_to_host(&b.model.params).unwrap();
        for (x, y) in a.model.params.data.iter().zip(&host.data) {
            assert_eq!(bits(x), bits(y), "{arch} weights after 3 steps");
        }
        assert!(b.model.backend().calls.load(Ordering::Relaxed) > before);
    }
}
