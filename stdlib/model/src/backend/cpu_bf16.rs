//! The CPU backend for inference with bf16 weights: half the bytes of
//! [`CpuBackend`](super::CpuBackend)'s f32 weights, and so about half the time
//! of a decoding step, which reads every weight once.
//!
//! Activations, the KV cache and every computation stay f32 (the weights are
//! widened, exactly, as they are read), so the only difference from the f32
//! backend is the rounding of the weights to bf16 when they are placed here,
//! and none at all for a checkpoint stored in bf16. It does not train: the
//! backward, gradient and optimizer calls are errors.

use std::borrow::Cow;

use flow_kernels::cpu as k;
use half::bf16;
use rayon::prelude::*;

use super::cpu::{attention_forward_on_host, shared_products_on_host};
use super::{AdamW, AttnParams, Backend, CpuBackend, Keys, LinearOut};
use crate::error::ModelError;
use crate::weights::Params;

/// CPU kernels over host buffers, with the parameters in bf16; inference only.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBf16Backend;

/// Every parameter in bf16, in `Config::param_shapes` order.
pub struct Bf16Params {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub data: Vec<Vec<bf16>>,
}

type R<T> = Result<T, ModelError>;

/// What a training call on this backend answers.
fn inference_only(what: &str) -> ModelError {
    ModelError::Input(format!(
        "{what}: the bf16 inference weights do not train; train a model loaded with f32 weights"
    ))
}

fn widen(w: &[bf16]) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    k::bf16_to_f32(w, &mut out);
    out
}

/// Runs a CPU kernel through the f32 backend (which cannot fail).
fn cpu<T>(r: Result<T, std::convert::Infallible>) -> R<T> {
    Ok(super::infallible(r))
}

impl Backend for CpuBf16Backend {
    type Error = ModelError;
    type Buf = Vec<f32>;
    type Stats = Vec<f32>;
    type Ids = Vec<u32>;
    type Params = Bf16Params;
    type Weight = [bf16];
    type Grads = Params;
    type Grad = [f32];
    type Rope = k::RopeTable;
    type KvLayer = Vec<f32>;

    fn zeros(&self, n: usize) -> R<Vec<f32>> {
        cpu(CpuBackend.zeros(n))
    }
    fn zeros_stats(&self, n: usize) -> R<Vec<f32>> {
        cpu(CpuBackend.zeros_stats(n))
    }
    fn upload(&self, x: &[f32]) -> R<Vec<f32>> {
        cpu(CpuBackend.upload(x))
    }
    fn download(&self, x: Vec<f32>) -> R<Vec<f32>> {
        Ok(x)
    }
    fn duplicate(&self, x: &Vec<f32>) -> R<Vec<f32>> {
        Ok(x.clone())
    }
    fn upload_ids(&self, ids: &[u32]) -> R<Vec<u32>> {
        Ok(ids.to_vec())
    }
    fn gather_rows(&self, x: &Vec<f32>, rows: &[usize], width: usize) -> R<Vec<f32>> {
        cpu(CpuBackend.gather_rows(x, rows, width))
    }
    fn concat(&self, a: &Vec<f32>, b: &Vec<f32>) -> R<Vec<f32>> {
        cpu(CpuBackend.concat(a, b))
    }
    fn write_rows(
        &self,
        dst: &mut Vec<f32>,
        first_row: usize,
        width: usize,
        src: &Vec<f32>,
    ) -> R<()> {
        cpu(CpuBackend.write_rows(dst, first_row, width, src))
    }

    fn params_from_host(&self, params: Params) -> R<Bf16Params> {
        let data = params
            .data
            .into_par_iter()
            .map(|t| {
                let mut out = vec![bf16::ZERO; t.len()];
                k::f32_to_bf16(&t, &mut out);
                out
            })
            .collect();
        Ok(Bf16Params {
            names: params.names,
            shapes: params.shapes,
            data,
        })
    }
    fn params_to_host<'a>(&self, params: &'a Bf16Params) -> R<Cow<'a, Params>> {
        Ok(Cow::Owned(Params {
            names: params.names.clone(),
            shapes: params.shapes.clone(),
            data: params.data.par_iter().map(|t| widen(t)).collect(),
        }))
    }
    fn weight(params: &Bf16Params, i: usize) -> &[bf16] {
        &params.data[i]
    }
    fn grads_zeroed(&self, _params: &Bf16Params) -> R<Params> {
        Err(inference_only("gradients"))
    }
    fn grads_to_host<'a>(&self, grads: &'a Params) -> R<Cow<'a, Params>> {
        Ok(Cow::Borrowed(grads))
    }
    fn grads_from_host(&self, _grads: Params) -> R<Params> {
        Err(inference_only("gradients"))
    }
    fn grad_and_bias(
        grads: &mut Params,
        w: usize,
        b: Option<usize>,
    ) -> (&mut [f32], Option<&mut [f32]>) {
        CpuBackend::grad_and_bias(grads, w, b)
    }
    fn rope(&self, head_dim: usize, theta: f64, max_positions: usize) -> R<k::RopeTable> {
        cpu(CpuBackend.rope(head_dim, theta, max_positions))
    }
    fn duplicate_kv(&self, layer: &Vec<f32>) -> R<Vec<f32>> {
        Ok(layer.clone())
    }

    fn embedding_forward(
        &self,
        ids: &Vec<u32>,
        table: &[bf16],
        dim: usize,
        out: &mut Vec<f32>,
    ) -> R<()> {
        // ids are checked by the caller
        out.par_chunks_mut(dim.max(1))
            .zip(ids.par_iter())
            .for_each(|(row, &id)| {
                let id = id as usize;
                k::bf16_to_f32(&table[id * dim..(id + 1) * dim], row);
            });
        Ok(())
    }
    fn embedding_backward(
        &self,
        _ids: &[u32],
        _dout: &Vec<f32>,
        _dim: usize,
        _dtable: &mut [f32],
    ) -> R<()> {
        Err(inference_only("embedding backward"))
    }
    fn rmsnorm_forward(
        &self,
        x: &Vec<f32>,
        w: &[bf16],
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
    ) -> R<()> {
        k::rmsnorm_forward(x, &widen(w), eps, rows, dim, y, rstd);
        Ok(())
    }
    fn rmsnorm_backward(
        &self,
        _dy: &Vec<f32>,
        _x: &Vec<f32>,
        _w: &[bf16],
        _rstd: &Vec<f32>,
        _rows: usize,
        _dim: usize,
        _dx: &mut Vec<f32>,
        _dw: &mut [f32],
    ) -> R<()> {
        Err(inference_only("RMSNorm backward"))
    }
    fn linear_forward(
        &self,
        x: &Vec<f32>,
        w: &[bf16],
        bias: Option<&[bf16]>,
        t: usize,
        in_f: usize,
        out_f: usize,
        y: &mut Vec<f32>,
    ) -> R<()> {
        k::linear_forward_bf16(x, w, bias, t, in_f, out_f, y);
        Ok(())
    }
    fn linear_forward_shared(
        &self,
        x: &Vec<f32>,
        t: usize,
        in_f: usize,
        products: &mut [LinearOut<'_, CpuBf16Backend>],
    ) -> R<()> {
        shared_products_on_host(x, t, in_f, products, |x, p| {
            k::linear_forward_bf16(x, p.w, p.bias, t, in_f, p.out_f, p.y)
        });
        Ok(())
    }
    fn linear_backward(
        &self,
        _dy: &Vec<f32>,
        _x: &Vec<f32>,
        _w: &[bf16],
        _t: usize,
        _in_f: usize,
        _out_f: usize,
        _dx: Option<&mut Vec<f32>>,
        _dw: &mut [f32],
        _dbias: Option<&mut [f32]>,
    ) -> R<()> {
        Err(inference_only("linear backward"))
    }
    fn rope_forward(
        &self,
        x: &mut Vec<f32>,
        positions: &Vec<u32>,
        heads: usize,
        rope: &k::RopeTable,
    ) -> R<()> {
        cpu(CpuBackend.rope_forward(x, positions, heads, rope))
    }
    fn rope_backward(
        &self,
        _dx: &mut Vec<f32>,
        _positions: &Vec<u32>,
        _heads: usize,
        _rope: &k::RopeTable,
    ) -> R<()> {
        Err(inference_only("RoPE backward"))
    }
    fn swiglu_forward(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>) -> R<()> {
        cpu(CpuBackend.swiglu_forward(gate, up, out))
    }
    fn swiglu_backward(
        &self,
        _gate: &Vec<f32>,
        _up: &Vec<f32>,
        _dout: &Vec<f32>,
        _dgate: &mut Vec<f32>,
        _dup: &mut Vec<f32>,
    ) -> R<()> {
        Err(inference_only("SwiGLU backward"))
    }
    fn add_in_place(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> R<()> {
        cpu(CpuBackend.add_in_place(x, y))
    }
    fn attention_forward(
        &self,
        params: &AttnParams,
        layer: usize,
        lens: &[usize],
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        keys: &mut [Keys<'_, CpuBf16Backend>],
        out: &mut Vec<f32>,
        lse: &mut Vec<f32>,
    ) -> R<()> {
        attention_forward_on_host(params, layer, lens, q, k, v, keys, out, lse);
        Ok(())
    }
    fn attention_backward(
        &self,
        _params: &AttnParams,
        _lens: &[usize],
        _docs: &[Option<&[u32]>],
        _q: &Vec<f32>,
        _k: &Vec<f32>,
        _v: &Vec<f32>,
        _out: &Vec<f32>,
        _lse: &Vec<f32>,
        _dout: &Vec<f32>,
        _dq: &mut Vec<f32>,
        _dk: &mut Vec<f32>,
        _dv: &mut Vec<f32>,
    ) -> R<()> {
        Err(inference_only("attention backward"))
    }
    fn cross_entropy(
        &self,
        logits: &Vec<f32>,
        targets: &[i32],
        rows: usize,
        vocab: usize,
        dlogits: Option<(&mut Vec<f32>, f32)>,
    ) -> R<(f64, usize)> {
        cpu(CpuBackend.cross_entropy(logits, targets, rows, vocab, dlogits))
    }

    fn zero_grads(&self, _grads: &mut Params) -> R<()> {
        Err(inference_only("gradients"))
    }
    fn grad_norm(&self, _grads: &Params) -> R<f64> {
        Err(inference_only("gradients"))
    }
    fn scale_grads(&self, _grads: &mut Params, _s: f32) -> R<()> {
        Err(inference_only("gradients"))
    }
    fn adamw(
        &self,
        _decay: &AdamW,
        _no_decay: &AdamW,
        _step: u64,
        _params: &mut Bf16Params,
        _grads: &Params,
        _m: &mut Params,
        _v: &mut Params,
    ) -> R<()> {
        Err(inference_only("AdamW"))
    }
}
