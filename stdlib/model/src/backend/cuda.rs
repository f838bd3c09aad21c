//! The CUDA backend: bf16 weights and activations on one device, f32 master
//! weights, gradients and AdamW moments beside them (mixed precision, as the
//! seeds trained), matrix products through cuBLASLt (bf16 in, f32
//! accumulation) and every other call through the launchers of
//! `flow_kernels::cuda`.
//!
//! Opening probes the driver first ([`CudaBackend::open`] returns an error,
//! never panics, on a machine without one). Segments of a batch run their
//! attention one launch each, on copies of their rows; a KV cache layer is
//! one exactly-sized buffer, re-allocated as it grows (the attention
//! launchers take whole buffers).

use std::borrow::Cow;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use flow_kernels::cuda::{AttentionShape, Blas, CudaError, Gpu};
use half::bf16;

use super::{two_mut, AdamW, AttnParams, Backend, Keys};
use crate::error::ModelError;
use crate::weights::Params;

mod encoder;
pub use encoder::CudaAttnProbs;

/// One CUDA device with flow's kernels and a cuBLASLt handle.
pub struct CudaBackend {
    gpu: Gpu,
    blas: Blas,
    ordinal: usize,
}

/// Every parameter on the device: the bf16 copy the kernels read and the f32 master the
/// optimizer updates.
pub struct CudaParams {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    weights: Vec<CudaSlice<bf16>>,
    master: Vec<CudaSlice<f32>>,
}

impl CudaParams {
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.weights.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

/// f32 gradients (or moments) of every parameter, on the device.
pub struct CudaGrads {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    data: Vec<CudaSlice<f32>>,
}

/// What the RoPE kernels need (they compute the angles themselves).
#[derive(Clone, Copy, Debug)]
pub struct CudaRope {
    pub theta: f32,
}

/// One layer's cached keys or values of one sequence: `[len, kv_dim]` bf16 rows.
#[derive(Default)]
pub struct CudaKv {
    rows: Option<CudaSlice<bf16>>,
}

fn cuda(e: CudaError) -> ModelError {
    ModelError::Device(e.to_string())
}

fn driver(e: cudarc::driver::DriverError) -> ModelError {
    ModelError::Device(format!("CUDA driver: {e:?}"))
}

type R<T> = Result<T, ModelError>;

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

impl CudaBackend {
    /// Opens device `ordinal`: the driver is probed first, then NVRTC (the kernels compile on
    /// first use) and cuBLASLt are looked for, so a machine without them gets an error that
    /// says what is missing.
    pub fn open(ordinal: usize) -> R<CudaBackend> {
        let info = flow_kernels::cuda::probe().map_err(cuda)?;
        if ordinal >= info.devices {
            return Err(ModelError::Device(format!(
                "device {ordinal} does not exist (the driver reports {} device(s))",
                info.devices
            )));
        }
        flow_kernels::cuda::load_nvrtc().map_err(cuda)?;
        flow_kernels::cuda::locate_headers().map_err(cuda)?;
        let gpu = Gpu::new(ordinal).map_err(cuda)?;
        let blas = gpu.blas().map_err(cuda)?;
        Ok(CudaBackend { gpu, blas, ordinal })
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    fn stream(&self) -> &Arc<CudaStream> {
        self.gpu.stream()
    }

    fn zeros_of<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> R<CudaSlice<T>> {
        self.stream().alloc_zeros::<T>(n).map_err(driver)
    }

    /// Rows `first..first + n` of `x` (`width` wide) as their own buffer.
    fn rows_of(
        &self,
        x: &CudaSlice<bf16>,
        first: usize,
        n: usize,
        width: usize,
    ) -> R<CudaSlice<bf16>> {
        let mut out = self.zeros_of::<bf16>(n * width)?;
        if n * width > 0 {
            self.stream()
                .memcpy_dtod(&x.slice(first * width..(first + n) * width), &mut out)
                .map_err(driver)?;
        }
        Ok(out)
    }

    /// Copies `src` into `dst` from element `at` on.
    fn put<T: cudarc::driver::DeviceRepr>(
        &self,
        dst: &mut CudaSlice<T>,
        at: usize,
        src: &CudaSlice<T>,
    ) -> R<()> {
        if src.is_empty() {
            return Ok(());
        }
        if at + src.len() > dst.len() {
            return Err(ModelError::Device(format!(
                "copy of {} elements at {at} into a buffer of {}",
                src.len(),
                dst.len()
            )));
        }
        self.stream()
            .memcpy_dtod(src, &mut dst.slice_mut(at..at + src.len()))
            .map_err(driver)
    }

    /// `y[m×n] = op(a)·op(b)` (beta 0) in bf16 with f32 accumulation; an empty product is
    /// all zeros.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &CudaSlice<bf16>,
        a_t: bool,
        b: &CudaSlice<bf16>,
        b_t: bool,
        c: &mut CudaSlice<bf16>,
    ) -> R<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return self.stream().memset_zeros(c).map_err(driver);
        }
        self.blas
            .gemm_bf16(m, n, k, a, a_t, b, b_t, c, 0.0)
            .map_err(cuda)
    }

    /// Appends `rows` to a cached layer; returns the whole layer.
    fn kv_append<'a>(
        &self,
        layer: &'a mut CudaKv,
        rows: &CudaSlice<bf16>,
    ) -> R<&'a CudaSlice<bf16>> {
        let old = layer.rows.as_ref().map_or(0, |r| r.len());
        let mut grown = self.zeros_of::<bf16>(old + rows.len())?;
        if let Some(prev) = &layer.rows {
            self.put(&mut grown, 0, prev)?;
        }
        self.put(&mut grown, old, rows)?;
        Ok(layer.rows.insert(grown))
    }

    fn docs_of(&self, docs: Option<&[u32]>) -> R<Option<CudaSlice<i32>>> {
        docs.map(|d| {
            // u32::MAX (padding) becomes -1: the kernels only compare ids for equality.
            let ids: Vec<i32> = d.iter().map(|&x| x as i32).collect();
            self.stream().clone_htod(&ids).map_err(driver)
        })
        .transpose()
    }
}

fn shape(params: &AttnParams, t: usize, s: usize) -> AttentionShape {
    AttentionShape {
        batch: 1,
        t,
        s,
        q_heads: params.q_heads,
        kv_heads: params.kv_heads,
        head_dim: params.head_dim,
        scale: params.scale,
        window: params.window,
    }
}

impl Backend for CudaBackend {
    type Error = ModelError;
    type Buf = CudaSlice<bf16>;
    type Stats = CudaSlice<f32>;
    type Ids = CudaSlice<i32>;
    type Params = CudaParams;
    type Weight = CudaSlice<bf16>;
    type Grads = CudaGrads;
    type Grad = CudaSlice<f32>;
    type Rope = CudaRope;
    type KvLayer = CudaKv;

    fn zeros(&self, n: usize) -> R<CudaSlice<bf16>> {
        self.zeros_of(n)
    }
    fn zeros_stats(&self, n: usize) -> R<CudaSlice<f32>> {
        self.zeros_of(n)
    }
    fn upload(&self, x: &[f32]) -> R<CudaSlice<bf16>> {
        self.stream().clone_htod(&to_bf16(x)).map_err(driver)
    }
    fn download(&self, x: CudaSlice<bf16>) -> R<Vec<f32>> {
        let host = self.stream().clone_dtoh(&x).map_err(driver)?;
        Ok(host.iter().map(|v| v.to_f32()).collect())
    }
    fn duplicate(&self, x: &CudaSlice<bf16>) -> R<CudaSlice<bf16>> {
        self.stream().clone_dtod(x).map_err(driver)
    }
    fn upload_ids(&self, ids: &[u32]) -> R<CudaSlice<i32>> {
        let ids: Vec<i32> = ids
            .iter()
            .map(|&i| {
                i32::try_from(i).map_err(|_| {
                    ModelError::Input(format!("id or position {i} does not fit the kernels' int"))
                })
            })
            .collect::<R<_>>()?;
        self.stream().clone_htod(&ids).map_err(driver)
    }
    fn gather_rows(&self, x: &CudaSlice<bf16>, rows: &[usize], width: usize) -> R<CudaSlice<bf16>> {
        let mut out = self.zeros_of::<bf16>(rows.len() * width)?;
        for (i, &r) in rows.iter().enumerate() {
            let row = self.rows_of(x, r, 1, width)?;
            self.put(&mut out, i * width, &row)?;
        }
        Ok(out)
    }
    fn concat(&self, a: &CudaSlice<bf16>, b: &CudaSlice<bf16>) -> R<CudaSlice<bf16>> {
        let mut out = self.zeros_of::<bf16>(a.len() + b.len())?;
        self.put(&mut out, 0, a)?;
        self.put(&mut out, a.len(), b)?;
        Ok(out)
    }
    fn write_rows(
        &self,
        dst: &mut CudaSlice<bf16>,
        first_row: usize,
        width: usize,
        src: &CudaSlice<bf16>,
    ) -> R<()> {
        self.put(dst, first_row * width, src)
    }

    fn params_from_host(&self, params: Params) -> R<CudaParams> {
        let s = self.stream();
        let weights = params
            .data
            .iter()
            .map(|d| s.clone_htod(&to_bf16(d)).map_err(driver))
            .collect::<R<_>>()?;
        let master = params
            .data
            .iter()
            .map(|d| s.clone_htod(d).map_err(driver))
            .collect::<R<_>>()?;
        Ok(CudaParams {
            names: params.names,
            shapes: params.shapes,
            weights,
            master,
        })
    }
    fn params_to_host<'a>(&self, params: &'a CudaParams) -> R<Cow<'a, Params>> {
        let data = params
            .master
            .iter()
            .map(|d| self.stream().clone_dtoh(d).map_err(driver))
            .collect::<R<_>>()?;
        Ok(Cow::Owned(Params {
            names: params.names.clone(),
            shapes: params.shapes.clone(),
            data,
        }))
    }
    fn weight(params: &CudaParams, i: usize) -> &CudaSlice<bf16> {
        &params.weights[i]
    }
    fn grads_zeroed(&self, params: &CudaParams) -> R<CudaGrads> {
        Ok(CudaGrads {
            names: params.names.clone(),
            shapes: params.shapes.clone(),
            data: params
                .master
                .iter()
                .map(|m| self.zeros_of::<f32>(m.len()))
                .collect::<R<_>>()?,
        })
    }
    fn grads_to_host<'a>(&self, grads: &'a CudaGrads) -> R<Cow<'a, Params>> {
        let data = grads
            .data
            .iter()
            .map(|d| self.stream().clone_dtoh(d).map_err(driver))
            .collect::<R<_>>()?;
        Ok(Cow::Owned(Params {
            names: grads.names.clone(),
            shapes: grads.shapes.clone(),
            data,
        }))
    }
    fn grads_from_host(&self, grads: Params) -> R<CudaGrads> {
        Ok(CudaGrads {
            data: grads
                .data
                .iter()
                .map(|d| self.stream().clone_htod(d).map_err(driver))
                .collect::<R<_>>()?,
            names: grads.names,
            shapes: grads.shapes,
        })
    }
    fn grad_and_bias(
        grads: &mut CudaGrads,
        w: usize,
        b: Option<usize>,
    ) -> (&mut CudaSlice<f32>, Option<&mut CudaSlice<f32>>) {
        two_mut(&mut grads.data, w, b)
    }
    fn rope(&self, _head_dim: usize, theta: f64, _max_positions: usize) -> R<CudaRope> {
        Ok(CudaRope {
            theta: theta as f32,
        })
    }
    fn duplicate_kv(&self, layer: &CudaKv) -> R<CudaKv> {
        Ok(CudaKv {
            rows: layer.rows.as_ref().map(|r| self.duplicate(r)).transpose()?,
        })
    }

    fn embedding_forward(
        &self,
        ids: &CudaSlice<i32>,
        table: &CudaSlice<bf16>,
        dim: usize,
        out: &mut CudaSlice<bf16>,
    ) -> R<()> {
        self.gpu
            .embedding_forward(ids, table, dim, out)
            .map_err(cuda)
    }
    fn embedding_backward(
        &self,
        ids: &[u32],
        dout: &CudaSlice<bf16>,
        dim: usize,
        dtable: &mut CudaSlice<f32>,
    ) -> R<()> {
        self.gpu
            .embedding_backward(ids, dout, dim, dtable)
            .map_err(cuda)
    }
    fn rmsnorm_forward(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut CudaSlice<bf16>,
        rstd: &mut CudaSlice<f32>,
    ) -> R<()> {
        self.gpu
            .rmsnorm_forward(x, w, eps, rows, dim, y, rstd)
            .map_err(cuda)
    }
    fn rmsnorm_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        rstd: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
        dx: &mut CudaSlice<bf16>,
        dw: &mut CudaSlice<f32>,
    ) -> R<()> {
        self.gpu
            .rmsnorm_backward(dy, x, w, rstd, rows, dim, dx, dw)
            .map_err(cuda)
    }
    fn linear_forward(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        bias: Option<&CudaSlice<bf16>>,
        t: usize,
        in_f: usize,
        out_f: usize,
        y: &mut CudaSlice<bf16>,
    ) -> R<()> {
        // y[t×out] = x[t×in]·W[out×in]ᵀ
        self.gemm(t, out_f, in_f, x, false, w, true, y)?;
        match bias {
            Some(b) if t > 0 => self.gpu.add_bias_bf16(y, b).map_err(cuda),
            _ => Ok(()),
        }
    }
    fn linear_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        t: usize,
        in_f: usize,
        out_f: usize,
        dx: Option<&mut CudaSlice<bf16>>,
        dw: &mut CudaSlice<f32>,
        dbias: Option<&mut CudaSlice<f32>>,
    ) -> R<()> {
        if let Some(dx) = dx {
            // dx[t×in] = dy[t×out]·W[out×in]
            self.gemm(t, in_f, out_f, dy, false, w, false, dx)?;
        }
        if t > 0 {
            // dW[out×in] += dy[t×out]ᵀ·x[t×in], the bf16 product added into the f32 gradient
            let mut prod = self.zeros_of::<bf16>(out_f * in_f)?;
            self.gemm(out_f, in_f, t, dy, true, x, false, &mut prod)?;
            self.gpu.accumulate_bf16_f32(dw, &prod).map_err(cuda)?;
        }
        match dbias {
            Some(db) => self.gpu.bias_grad_bf16(dy, db).map_err(cuda),
            None => Ok(()),
        }
    }
    fn rope_forward(
        &self,
        x: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        heads: usize,
        rope: &CudaRope,
    ) -> R<()> {
        let head_dim = x.len() / (positions.len() * heads).max(1);
        self.gpu
            .rope_forward(x, positions, heads, head_dim, rope.theta)
            .map_err(cuda)
    }
    fn rope_backward(
        &self,
        dx: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        heads: usize,
        rope: &CudaRope,
    ) -> R<()> {
        let head_dim = dx.len() / (positions.len() * heads).max(1);
        self.gpu
            .rope_backward(dx, positions, heads, head_dim, rope.theta)
            .map_err(cuda)
    }
    fn swiglu_forward(
        &self,
        gate: &CudaSlice<bf16>,
        up: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
    ) -> R<()> {
        self.gpu.swiglu_forward(gate, up, out).map_err(cuda)
    }
    fn swiglu_backward(
        &self,
        gate: &CudaSlice<bf16>,
        up: &CudaSlice<bf16>,
        dout: &CudaSlice<bf16>,
        dgate: &mut CudaSlice<bf16>,
        dup: &mut CudaSlice<bf16>,
    ) -> R<()> {
        self.gpu
            .swiglu_backward(gate, up, dout, dgate, dup)
            .map_err(cuda)
    }
    fn add_in_place(&self, x: &mut CudaSlice<bf16>, y: &CudaSlice<bf16>) -> R<()> {
        self.gpu.add_bf16(x, y).map_err(cuda)
    }
    fn attention_forward(
        &self,
        params: &AttnParams,
        layer: usize,
        lens: &[usize],
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        keys: &mut [Keys<'_, CudaBackend>],
        out: &mut CudaSlice<bf16>,
        lse: &mut CudaSlice<f32>,
    ) -> R<()> {
        let qd = params.q_heads * params.head_dim;
        let kvd = params.kv_heads * params.head_dim;
        let mut row = 0;
        for (&n, keys) in lens.iter().zip(keys.iter_mut()) {
            if n == 0 {
                continue;
            }
            let qs = self.rows_of(q, row, n, qd)?;
            let ks = self.rows_of(k, row, n, kvd)?;
            let vs = self.rows_of(v, row, n, kvd)?;
            let mut o = self.zeros_of::<bf16>(n * qd)?;
            let mut l = self.zeros_of::<f32>(n * params.q_heads)?;
            match keys {
                Keys::Cache(cache) => {
                    let (kc, vc) = cache.layer_mut(layer);
                    let kc = self.kv_append(kc, &ks)?;
                    let vc = self.kv_append(vc, &vs)?;
                    let s = kc.len() / kvd;
                    self.gpu
                        .attention_forward(&shape(params, n, s), &qs, kc, vc, None, &mut o, &mut l)
                        .map_err(cuda)?;
                }
                Keys::Own(docs) => {
                    let d = self.docs_of(*docs)?;
                    self.gpu
                        .attention_forward(
                            &shape(params, n, n),
                            &qs,
                            &ks,
                            &vs,
                            d.as_ref(),
                            &mut o,
                            &mut l,
                        )
                        .map_err(cuda)?;
                }
            }
            self.put(out, row * qd, &o)?;
            self.put(lse, row * params.q_heads, &l)?;
            row += n;
        }
        Ok(())
    }
    fn attention_backward(
        &self,
        params: &AttnParams,
        lens: &[usize],
        docs: &[Option<&[u32]>],
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        out: &CudaSlice<bf16>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<bf16>,
        dq: &mut CudaSlice<bf16>,
        dk: &mut CudaSlice<bf16>,
        dv: &mut CudaSlice<bf16>,
    ) -> R<()> {
        let (qh, qd) = (params.q_heads, params.q_heads * params.head_dim);
        let kvd = params.kv_heads * params.head_dim;
        let mut row = 0;
        for (s, &n) in lens.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let qs = self.rows_of(q, row, n, qd)?;
            let ks = self.rows_of(k, row, n, kvd)?;
            let vs = self.rows_of(v, row, n, kvd)?;
            let os = self.rows_of(out, row, n, qd)?;
            let dos = self.rows_of(dout, row, n, qd)?;
            let mut ls = self.zeros_of::<f32>(n * qh)?;
            self.stream()
                .memcpy_dtod(&lse.slice(row * qh..(row + n) * qh), &mut ls)
                .map_err(driver)?;
            let d = self.docs_of(docs.get(s).copied().flatten())?;
            let mut delta = self.zeros_of::<f32>(n * qh)?;
            let mut dqs = self.zeros_of::<bf16>(n * qd)?;
            let mut dks = self.zeros_of::<bf16>(n * kvd)?;
            let mut dvs = self.zeros_of::<bf16>(n * kvd)?;
            self.gpu
                .attention_backward(
                    &shape(params, n, n),
                    &qs,
                    &ks,
                    &vs,
                    d.as_ref(),
                    &os,
                    &dos,
                    &ls,
                    &mut delta,
                    &mut dqs,
                    &mut dks,
                    &mut dvs,
                )
                .map_err(cuda)?;
            self.put(dq, row * qd, &dqs)?;
            self.put(dk, row * kvd, &dks)?;
            self.put(dv, row * kvd, &dvs)?;
            row += n;
        }
        Ok(())
    }
    fn cross_entropy(
        &self,
        logits: &CudaSlice<bf16>,
        targets: &[i32],
        rows: usize,
        vocab: usize,
        dlogits: Option<(&mut CudaSlice<bf16>, f32)>,
    ) -> R<(f64, usize)> {
        if rows == 0 || vocab == 0 {
            return Ok((0.0, 0));
        }
        let d_targets = self.stream().clone_htod(targets).map_err(driver)?;
        let mut losses = self.zeros_of::<f32>(rows)?;
        let mut scratch;
        let (dl, scale) = match dlogits {
            Some((d, s)) => (d, s),
            None => {
                scratch = self.zeros_of::<bf16>(rows * vocab)?;
                (&mut scratch, 0.0)
            }
        };
        self.gpu
            .cross_entropy_forward_backward(logits, &d_targets, vocab, scale, &mut losses, dl)
            .map_err(cuda)?;
        let losses = self.stream().clone_dtoh(&losses).map_err(driver)?;
        let counted = targets
            .iter()
            .filter(|&&t| t != flow_kernels::cpu::IGNORE_INDEX)
            .count();
        Ok((losses.iter().map(|&l| l as f64).sum(), counted))
    }

    fn zero_grads(&self, grads: &mut CudaGrads) -> R<()> {
        for g in &mut grads.data {
            self.stream().memset_zeros(g).map_err(driver)?;
        }
        Ok(())
    }
    fn grad_norm(&self, grads: &CudaGrads) -> R<f64> {
        let mut sum = 0.0;
        for g in &grads.data {
            sum += self.gpu.sum_of_squares_f32(g).map_err(cuda)?;
        }
        Ok(sum.sqrt())
    }
    fn scale_grads(&self, grads: &mut CudaGrads, s: f32) -> R<()> {
        for g in &mut grads.data {
            self.gpu.scale_f32(g, s).map_err(cuda)?;
        }
        Ok(())
    }
    fn adamw(
        &self,
        decay: &AdamW,
        no_decay: &AdamW,
        step: u64,
        params: &mut CudaParams,
        grads: &CudaGrads,
        m: &mut CudaGrads,
        v: &mut CudaGrads,
    ) -> R<()> {
        for i in 0..params.len() {
            let cfg = if params.shapes[i].len() >= 2 {
                decay
            } else {
                no_decay
            };
            self.gpu
                .adamw_f32(
                    cfg,
                    step,
                    1.0,
                    &mut params.master[i],
                    &mut m.data[i],
                    &mut v.data[i],
                    &grads.data[i],
                )
                .map_err(cuda)?;
            self.gpu
                .cast_f32_bf16(&params.master[i], &mut params.weights[i])
                .map_err(cuda)?;
        }
        Ok(())
    }
}
