//! The encoder is written once over `EncoderBackend`: a second backend (the
//! CPU backend behind a wrapper that counts every compute call by name) runs
//! the same forward, backward and AdamW step, the calls go through it, and
//! the results are the CPU encoder's bit for bit: logits, every gradient,
//! the steps' losses, norms and rates, and the weights after 3 steps, with
//! dropout off and on.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flow_model::backend::{AdamW, AttnParams, Backend, CpuBackend, EncoderBackend, Keys};
use flow_model::encoder::attention::AttnCache;
use flow_model::encoder::{
    Batch, Dropout, Encoder, EncoderOn, FineTuneConfig, FineTuner, FineTunerOn,
};
use flow_model::Params;
use serde_json::Value;

/// The CPU backend, counting the compute calls made through it.
#[derive(Default)]
struct Counting {
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl Counting {
    fn count(&self, name: &'static str) -> CpuBackend {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
        CpuBackend
    }
    fn calls(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
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
        _p: &AttnParams,
        _layer: usize,
        _lens: &[usize],
        _q: &V,
        _k: &V,
        _v: &V,
        _keys: &mut [Keys<'_, Self>],
        _out: &mut V,
        _lse: &mut V,
    ) -> R<()> {
        unreachable!("the encoder has no causal attention")
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

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/encoder")
        .join(name)
}

fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The golden's batch and labels (right-padded rows, as transformers saw them).
fn golden_batch(enc: &Encoder, name: &str) -> (Batch, Vec<u32>) {
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir(name).join("golden.json")).unwrap(),
    )
    .unwrap();
    let batch = Batch::from_padded(
        &enc.config,
        &rows(&g["input_ids"]),
        &rows(&g["attention_mask"]),
    )
    .unwrap();
    let labels = g["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    (batch, labels)
}

#[test]
fn the_encoders_passes_run_through_a_second_backend_bit_for_bit() {
    for name in ["xlmr", "bert"] {
        let (mut cpu, _) = Encoder::load(&golden_dir(name).join("model"), 0).unwrap();
        // every dropout site active, so the masks go through the backend too
        cpu.config.hidden_dropout = 0.1;
        cpu.config.attention_dropout = 0.2;
        cpu.config.classifier_dropout = Some(0.3);
        let layers = cpu.config.num_hidden_layers;
        let (batch, labels) = golden_batch(&cpu, name);
        let other = EncoderOn::place(Counting::default(), cpu.clone()).unwrap();

        // the eval forward
        assert_eq!(
            bits(&cpu.logits(&batch)),
            bits(&other.try_logits(&batch).unwrap()),
            "{name} logits"
        );
        let calls = other.backend().calls();
        assert_eq!(calls["bidirectional_attention_forward"], layers, "{name}");
        assert_eq!(calls["layernorm_forward"], 1 + 2 * layers, "{name}");
        assert_eq!(calls["gelu_forward"], layers, "{name}");
        assert_eq!(calls["tanh_in_place"], 1, "{name}");
        // q, k, v, attention output, intermediate, output; dense and out_proj of the head
        assert_eq!(calls["linear_forward"], 6 * layers + 2, "{name}");
        assert_eq!(calls["embedding_forward"], 3, "{name}");
        assert!(
            !calls.contains_key("scale_by_mask"),
            "{name}: no dropout in eval"
        );

        for dropout_seed in [None, Some(5)] {
            let cfg = FineTuneConfig {
                lr: 1e-3,
                warmup_steps: 1,
                total_steps: 4,
                max_grad_norm: 0.1,
                dropout_seed,
                ..FineTuneConfig::default()
            };
            let place = |e: &Encoder| EncoderOn::place(Counting::default(), e.clone()).unwrap();
            let mut a = FineTuner::new(cpu.clone(), cfg.clone());
            let mut b = FineTunerOn::open(place(&cpu), cfg).unwrap();
            let (la, lb) = (
                a.gradients(&batch, &labels),
                b.try_gradients(&batch, &labels).unwrap(),
            );
            assert_eq!(la.to_bits(), lb.to_bits(), "{name} {dropout_seed:?} loss");
            let gb = b.grads_to_host().unwrap();
            for ((n, x), y) in a.grads().names.iter().zip(&a.grads().data).zip(&gb.data) {
                assert_eq!(bits(x), bits(y), "{name} {dropout_seed:?} gradient of {n}");
            }
            let calls = b.encoder.backend().calls();
            assert_eq!(calls["bidirectional_attention_backward"], layers, "{name}");
            assert_eq!(calls["layernorm_backward"], 1 + 2 * layers, "{name}");
            assert_eq!(calls["gelu_backward"], layers, "{name}");
            assert_eq!(calls["tanh_backward_in_place"], 1, "{name}");
            assert_eq!(calls["linear_backward"], 6 * layers + 2, "{name}");
            assert_eq!(calls["embedding_backward"], 3, "{name}");
            assert_eq!(calls["zero_grads"], 1, "{name}");
            // embeddings, 2 a layer, the head's dropout(s); the attention's masks are its own
            let dropped = dropout_seed.map_or(0, |_| match name {
                "xlmr" => 1 + 2 * layers + 2,
                _ => 1 + 2 * layers + 1,
            });
            assert_eq!(
                calls.get("upload_stats").copied().unwrap_or(0),
                dropped,
                "{name}"
            );
            for step in 1..=3 {
                let (sa, sb) = (
                    a.step(&batch, &labels),
                    b.try_step(&batch, &labels).unwrap(),
                );
                assert_eq!(sa, sb, "{name} {dropout_seed:?} step {step}");
            }
            let calls = b.encoder.backend().calls();
            assert_eq!(calls["adamw"], 3, "{name}");
            assert_eq!(calls["grad_norm_in_element_order"], 3, "{name}");
            let host = b.encoder.to_cpu().unwrap();
            for ((n, x), y) in a
                .encoder
                .params
                .names
                .iter()
                .zip(&a.encoder.params.data)
                .zip(&host.params.data)
            {
                assert_eq!(
                    bits(x),
                    bits(y),
                    "{name} {dropout_seed:?} {n} after 3 steps"
                );
            }
            assert_eq!(
                bits(&a.encoder.logits(&batch)),
                bits(&b.encoder.try_logits(&batch).unwrap()),
                "{name} {dropout_seed:?} logits after 3 steps"
            );
        }
    }
}
