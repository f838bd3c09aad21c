//! Causal grouped-query attention, forward and backward.

use cudarc::driver::{CudaSlice, LaunchConfig};
use half::bf16;

use super::{as_int, expect_len, launch_error, one_thread_each};
use crate::cuda::launch::{AttnDims, KernelCall};
use crate::cuda::{CudaError, Gpu};

/// Shape and masking of one batched attention call: `batch` sequences of
/// `t` queries over `s ≥ t` keys; q, out, dq, dout `[batch, t, q_heads,
/// head_dim]`; k, v, dk, dv `[batch, s, kv_heads, head_dim]`; lse, delta
/// `[batch, q_heads, t]`; doc ids `[batch, s]`.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub batch: usize,
    pub t: usize,
    pub s: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    /// 64 or 128.
    pub head_dim: usize,
    pub scale: f32,
    /// Mistral's sliding window: a query sees keys less than `window` back.
    pub window: Option<usize>,
}

impl AttentionShape {
    fn check(&self, entry: &str) -> Result<AttnDims, CudaError> {
        if self.head_dim != 64 && self.head_dim != 128 {
            return Err(launch_error(
                entry,
                format!("head dim {} (the kernels take 64 or 128)", self.head_dim),
            ));
        }
        if self.kv_heads == 0 || !self.q_heads.is_multiple_of(self.kv_heads) {
            return Err(launch_error(
                entry,
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.q_heads, self.kv_heads
                ),
            ));
        }
        if self.s < self.t {
            return Err(launch_error(
                entry,
                format!("s ({}) < t ({})", self.s, self.t),
            ));
        }
        if self.window == Some(0) {
            return Err(launch_error(
                entry,
                "a sliding window of 0 sees no key".into(),
            ));
        }
        Ok(AttnDims {
            t: as_int(entry, "t", self.t)?,
            s: as_int(entry, "s", self.s)?,
            q_heads: as_int(entry, "q_heads", self.q_heads)?,
            kv_heads: as_int(entry, "kv_heads", self.kv_heads)?,
            scale: self.scale,
            window: as_int(entry, "window", self.window.unwrap_or(0))?,
        })
    }

    fn q_len(&self) -> usize {
        self.batch * self.t * self.q_heads * self.head_dim
    }

    fn kv_len(&self) -> usize {
        self.batch * self.s * self.kv_heads * self.head_dim
    }

    fn rows(&self) -> usize {
        self.batch * self.q_heads * self.t
    }

    /// Query rows (forward, dq) or key rows (dk/dv) a block handles: the
    /// template arguments of the `_d64`/`_d128` entry points.
    fn tile(&self) -> u32 {
        if self.head_dim == 64 {
            64
        } else {
            32
        }
    }

    fn grid(&self, entry: &str, rows: usize, heads: usize) -> Result<LaunchConfig, CudaError> {
        let tile = self.tile() as usize;
        let blocks = u32::try_from(rows.div_ceil(tile).max(1))
            .map_err(|_| launch_error(entry, format!("{rows} rows are too many")))?;
        let heads = u32::try_from(heads).ok().filter(|&h| h <= 65_535);
        let batch = u32::try_from(self.batch).ok().filter(|&b| b <= 65_535);
        match (heads, batch) {
            (Some(h), Some(b)) => Ok(LaunchConfig {
                grid_dim: (blocks, h, b),
                block_dim: (self.tile(), 1, 1),
                shared_mem_bytes: 0,
            }),
            _ => Err(launch_error(
                entry,
                "more than 65,535 heads or sequences in one call".into(),
            )),
        }
    }

    fn entry(&self, stem: &str) -> String {
        format!("{stem}_d{}", self.head_dim)
    }
}

impl Gpu {
    /// Causal GQA attention forward: out and the log-sum-exp of each query
    /// row (for the backward). `doc_ids` masks packed documents.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_forward(
        &self,
        shape: &AttentionShape,
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        doc_ids: Option<&CudaSlice<i32>>,
        out: &mut CudaSlice<bf16>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let entry = shape.entry("attention_forward");
        let dims = shape.check(&entry)?;
        expect_len(&entry, "q", q, shape.q_len())?;
        expect_len(&entry, "k", k, shape.kv_len())?;
        expect_len(&entry, "v", v, shape.kv_len())?;
        expect_len(&entry, "out", out, shape.q_len())?;
        expect_len(&entry, "lse", lse, shape.rows())?;
        if let Some(ids) = doc_ids {
            expect_len(&entry, "doc_ids", ids, shape.batch * shape.s)?;
        }
        let config = shape.grid(&entry, shape.t, shape.q_heads)?;
        let (f, sig) = self.kernel(&entry)?;
        let call = with_docs(self.call(&f, sig).input(q).input(k).input(v), doc_ids);
        // SAFETY: sizes checked above; grid (query tiles, q heads, batch).
        unsafe { call.output(out).output(lse).dims(&dims).launch(config) }
    }

    /// Attention backward by recomputation: dq, dk, dv (set) from the
    /// forward's out and lse. `delta` `[batch, q_heads, t]` is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_backward(
        &self,
        shape: &AttentionShape,
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        doc_ids: Option<&CudaSlice<i32>>,
        out: &CudaSlice<bf16>,
        dout: &CudaSlice<bf16>,
        lse: &CudaSlice<f32>,
        delta: &mut CudaSlice<f32>,
        dq: &mut CudaSlice<bf16>,
        dk: &mut CudaSlice<bf16>,
        dv: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        let delta_entry = shape.entry("attention_backward_delta");
        let dq_entry = shape.entry("attention_backward_dq");
        let dkdv_entry = shape.entry("attention_backward_dkdv");
        let dims = shape.check(&dq_entry)?;
        for (name, buf) in [("q", q), ("out", out), ("dout", dout)] {
            expect_len(&dq_entry, name, buf, shape.q_len())?;
        }
        for (name, buf) in [("k", k), ("v", v)] {
            expect_len(&dq_entry, name, buf, shape.kv_len())?;
        }
        expect_len(&dq_entry, "lse", lse, shape.rows())?;
        expect_len(&dq_entry, "delta", delta, shape.rows())?;
        expect_len(&dq_entry, "dq", dq, shape.q_len())?;
        expect_len(&dkdv_entry, "dk", dk, shape.kv_len())?;
        expect_len(&dkdv_entry, "dv", dv, shape.kv_len())?;
        if let Some(ids) = doc_ids {
            expect_len(&dq_entry, "doc_ids", ids, shape.batch * shape.s)?;
        }
        let batch = as_int(&delta_entry, "batch", shape.batch)?;
        let delta_config = one_thread_each(&delta_entry, shape.rows())?;
        let dq_config = shape.grid(&dq_entry, shape.t, shape.q_heads)?;
        let dkdv_config = shape.grid(&dkdv_entry, shape.s, shape.kv_heads)?;
        let (delta_f, delta_sig) = self.kernel(&delta_entry)?;
        let (dq_f, dq_sig) = self.kernel(&dq_entry)?;
        let (dkdv_f, dkdv_sig) = self.kernel(&dkdv_entry)?;
        // SAFETY: sizes checked above; delta one thread per query row; dq
        // grid (query tiles, q heads, batch); dk/dv grid (key tiles, kv
        // heads, batch).
        unsafe {
            self.call(&delta_f, delta_sig)
                .input(out)
                .input(dout)
                .output(delta)
                .dims(&dims)
                .int(&batch)
                .launch(delta_config)?;
            with_docs(self.call(&dq_f, dq_sig).input(q).input(k).input(v), doc_ids)
                .input(dout)
                .input(lse)
                .input(delta)
                .output(dq)
                .dims(&dims)
                .launch(dq_config)?;
            with_docs(
                self.call(&dkdv_f, dkdv_sig).input(q).input(k).input(v),
                doc_ids,
            )
            .input(dout)
            .input(lse)
            .input(delta)
            .output(dk)
            .output(dv)
            .dims(&dims)
            .launch(dkdv_config)
        }
    }
}

/// The document ids of packed sequences, or the null pointer the attention
/// kernels read as "one document".
fn with_docs<'a>(call: KernelCall<'a>, doc_ids: Option<&'a CudaSlice<i32>>) -> KernelCall<'a> {
    match doc_ids {
        Some(ids) => call.input(ids),
        None => call.null_input::<i32>(),
    }
}
