//! Host launchers: one method a kernel entry point, on device-resident
//! buffers (cudarc `CudaSlice`s). Each launcher checks the buffers' sizes
//! against the shape it is given, so a kernel never indexes past a buffer,
//! picks the launch geometry its kernel assumes (stated beside each), and
//! launches through [`KernelCall`], which checks the argument kinds against
//! the kernel's C signature.
//!
//! Outputs that a kernel accumulates into (`rmsnorm_backward`'s `dw`,
//! `embedding_backward`'s `dtable`) are added to, not set: zero them first.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig};
use half::bf16;

use super::launch::{signature, AttnDims, DeviceElem, KernelCall, Signature};
use super::{CudaError, Gpu};

/// Threads of a block for the row and grid-stride kernels (their block
/// reductions take at most 1024 and need a multiple of 32).
const THREADS: u32 = 256;

/// Blocks of a grid-stride loop: enough to fill any current GPU, fewer when
/// `n` is small. The kernels loop, so the cap loses no element.
fn grid_stride(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Exactly one thread per element, for kernels that do not loop.
fn one_thread_each(entry: &str, n: usize) -> Result<LaunchConfig, CudaError> {
    let blocks = n.div_ceil(THREADS as usize).max(1);
    let blocks = u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| launch_error(entry, format!("{n} elements need more than 2^31 blocks")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// One block of [`THREADS`] per row.
fn block_per_row(entry: &str, rows: usize) -> Result<LaunchConfig, CudaError> {
    let rows = u32::try_from(rows.max(1))
        .ok()
        .filter(|&r| r <= i32::MAX as u32)
        .ok_or_else(|| launch_error(entry, format!("{rows} rows exceed the grid's 2^31 blocks")))?;
    Ok(LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn launch_error(entry: &str, message: String) -> CudaError {
    CudaError::Launch {
        entry: entry.to_string(),
        message,
    }
}

/// `buffer` holds exactly `want` elements.
fn expect_len<T>(
    entry: &str,
    name: &str,
    buffer: &CudaSlice<T>,
    want: usize,
) -> Result<(), CudaError> {
    if buffer.len() == want {
        Ok(())
    } else {
        Err(launch_error(
            entry,
            format!(
                "`{name}` has {} elements, the shape needs {want}",
                buffer.len()
            ),
        ))
    }
}

fn as_int(entry: &str, name: &str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| {
        launch_error(
            entry,
            format!("`{name}` = {v} does not fit the kernel's int"),
        )
    })
}

fn as_long(v: usize) -> i64 {
    // A buffer's length is at most isize::MAX.
    v as i64
}

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
        if self.kv_heads == 0 || self.q_heads % self.kv_heads != 0 {
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
    /// The loaded function and signature of a kernel entry point.
    fn kernel(&self, entry: &str) -> Result<(CudaFunction, &'static Signature), CudaError> {
        let sig = signature(entry).ok_or_else(|| {
            launch_error(
                entry,
                "no such kernel entry point in the signature table".into(),
            )
        })?;
        Ok((self.function(sig.family, sig.entry)?, sig))
    }

    fn call<'a>(&'a self, function: &'a CudaFunction, sig: &'static Signature) -> KernelCall<'a> {
        KernelCall::new(self.stream(), function, sig)
    }

    /// y = w · x · rsqrt(mean(x²) + eps) per row of x `[rows, dim]`; the
    /// reciprocal RMS of each row to `rstd` for the backward.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_forward(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut CudaSlice<bf16>,
        rstd: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "rmsnorm_forward";
        expect_len(E, "x", x, rows * dim)?;
        expect_len(E, "w", w, dim)?;
        expect_len(E, "y", y, rows * dim)?;
        expect_len(E, "rstd", rstd, rows)?;
        let dim_i = as_int(E, "dim", dim)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per row.
        unsafe {
            self.call(&f, sig)
                .input(x)
                .input(w)
                .float(&eps)
                .int(&dim_i)
                .output(y)
                .output(rstd)
                .launch(block_per_row(E, rows)?)
        }
    }

    /// dx (set) and dw (added to: zero it first) of RMSNorm.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        rstd: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
        dx: &mut CudaSlice<bf16>,
        dw: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "rmsnorm_backward";
        expect_len(E, "dy", dy, rows * dim)?;
        expect_len(E, "x", x, rows * dim)?;
        expect_len(E, "w", w, dim)?;
        expect_len(E, "rstd", rstd, rows)?;
        expect_len(E, "dx", dx, rows * dim)?;
        expect_len(E, "dw", dw, dim)?;
        let dim_i = as_int(E, "dim", dim)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per row.
        unsafe {
            self.call(&f, sig)
                .input(dy)
                .input(x)
                .input(w)
                .input(rstd)
                .int(&dim_i)
                .output(dx)
                .output(dw)
                .launch(block_per_row(E, rows)?)
        }
    }

    fn rope(
        &self,
        entry: &'static str,
        x: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), CudaError> {
        let tokens = positions.len();
        if head_dim % 2 != 0 {
            return Err(launch_error(entry, format!("odd head dim {head_dim}")));
        }
        expect_len(entry, "x", x, tokens * heads * head_dim)?;
        let (tokens_i, heads_i, dim_i) = (
            as_int(entry, "tokens", tokens)?,
            as_int(entry, "heads", heads)?,
            as_int(entry, "head_dim", head_dim)?,
        );
        let config = one_thread_each(entry, tokens * heads * (head_dim / 2))?;
        let (f, sig) = self.kernel(entry)?;
        // SAFETY: sizes checked above; one thread per (token, head, i < d/2).
        unsafe {
            self.call(&f, sig)
                .output(x)
                .input(positions)
                .int(&tokens_i)
                .int(&heads_i)
                .int(&dim_i)
                .float(&theta)
                .launch(config)
        }
    }

    /// Rotates x `[tokens, heads, head_dim]` in place by each token's position.
    pub fn rope_forward(
        &self,
        x: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), CudaError> {
        self.rope("rope_forward", x, positions, heads, head_dim, theta)
    }

    /// The transposed rotation, applied to the gradient in place.
    pub fn rope_backward(
        &self,
        dx: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        heads: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<(), CudaError> {
        self.rope("rope_backward", dx, positions, heads, head_dim, theta)
    }

    /// out = silu(gate) · up.
    pub fn swiglu_forward(
        &self,
        gate: &CudaSlice<bf16>,
        up: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "swiglu_forward";
        let n = gate.len();
        expect_len(E, "up", up, n)?;
        expect_len(E, "out", out, n)?;
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .input(gate)
                .input(up)
                .output(out)
                .long(&n_l)
                .launch(grid_stride(n))
        }
    }

    /// dgate, dup (set) of SwiGLU.
    pub fn swiglu_backward(
        &self,
        gate: &CudaSlice<bf16>,
        up: &CudaSlice<bf16>,
        dout: &CudaSlice<bf16>,
        dgate: &mut CudaSlice<bf16>,
        dup: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "swiglu_backward";
        let n = gate.len();
        expect_len(E, "up", up, n)?;
        expect_len(E, "dout", dout, n)?;
        expect_len(E, "dgate", dgate, n)?;
        expect_len(E, "dup", dup, n)?;
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .input(gate)
                .input(up)
                .input(dout)
                .output(dgate)
                .output(dup)
                .long(&n_l)
                .launch(grid_stride(n))
        }
    }

    /// out `[tokens, dim]` = rows `ids` of `table` `[vocab, dim]`. An id
    /// outside the table gives a row of NaN (the host checks ids before
    /// they are uploaded; this keeps a bad one visible instead of reading
    /// past the table).
    pub fn embedding_forward(
        &self,
        ids: &CudaSlice<i32>,
        table: &CudaSlice<bf16>,
        dim: usize,
        out: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "embedding_forward";
        let tokens = ids.len();
        let vocab = table_rows(E, table.len(), dim)?;
        expect_len(E, "out", out, tokens * dim)?;
        let (dim_i, vocab_i) = (as_int(E, "dim", dim)?, as_int(E, "vocab", vocab)?);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per token; ids bounded by vocab in the kernel.
        unsafe {
            self.call(&f, sig)
                .input(ids)
                .input(table)
                .int(&vocab_i)
                .int(&dim_i)
                .output(out)
                .launch(block_per_row(E, tokens)?)
        }
    }

    /// dtable `[vocab, dim]` += the rows of dout scattered to their ids (f32,
    /// atomics; zero it first). An id outside the table is skipped.
    pub fn embedding_backward(
        &self,
        ids: &CudaSlice<i32>,
        dout: &CudaSlice<bf16>,
        dim: usize,
        dtable: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "embedding_backward";
        let tokens = ids.len();
        let vocab = table_rows(E, dtable.len(), dim)?;
        expect_len(E, "dout", dout, tokens * dim)?;
        let (dim_i, vocab_i) = (as_int(E, "dim", dim)?, as_int(E, "vocab", vocab)?);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per token; ids bounded by vocab in the kernel.
        unsafe {
            self.call(&f, sig)
                .input(ids)
                .input(dout)
                .int(&vocab_i)
                .int(&dim_i)
                .output(dtable)
                .launch(block_per_row(E, tokens)?)
        }
    }

    /// Per row of logits `[rows, vocab]`: the loss against its target (0
    /// for target −100) and dlogits = scale·(softmax − onehot) (0 for
    /// ignored rows).
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_forward_backward(
        &self,
        logits: &CudaSlice<bf16>,
        targets: &CudaSlice<i32>,
        vocab: usize,
        scale: f32,
        losses: &mut CudaSlice<f32>,
        dlogits: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "cross_entropy_forward_backward";
        let rows = targets.len();
        expect_len(E, "logits", logits, rows * vocab)?;
        expect_len(E, "losses", losses, rows)?;
        expect_len(E, "dlogits", dlogits, rows * vocab)?;
        let vocab_i = as_int(E, "vocab", vocab)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per row. Targets ≥ vocab
        // are the caller's to rule out (the host checks labels).
        unsafe {
            self.call(&f, sig)
                .input(logits)
                .input(targets)
                .int(&vocab_i)
                .float(&scale)
                .output(losses)
                .output(dlogits)
                .launch(block_per_row(E, rows)?)
        }
    }

    fn sum_of_squares<T: DeviceElem>(
        &self,
        entry: &'static str,
        x: &CudaSlice<T>,
    ) -> Result<f64, CudaError> {
        let s = self.stream();
        let mut acc = s
            .alloc_zeros::<f64>(1)
            .map_err(|e| launch_error(entry, format!("{e:?}")))?;
        let n_l = as_long(x.len());
        let (f, sig) = self.kernel(entry)?;
        // SAFETY: grid-stride loop over x's own length.
        unsafe {
            self.call(&f, sig)
                .input(x)
                .long(&n_l)
                .output(&mut acc)
                .launch(grid_stride(x.len()))?;
        }
        let host = s
            .clone_dtoh(&acc)
            .map_err(|e| launch_error(entry, format!("{e:?}")))?;
        Ok(host[0])
    }

    /// Σx² in f64 (global-norm clipping).
    pub fn sum_of_squares_f32(&self, x: &CudaSlice<f32>) -> Result<f64, CudaError> {
        self.sum_of_squares("sum_of_squares_f32", x)
    }

    /// Σx² in f64 of a bf16 tensor.
    pub fn sum_of_squares_bf16(&self, x: &CudaSlice<bf16>) -> Result<f64, CudaError> {
        self.sum_of_squares("sum_of_squares_bf16", x)
    }

    /// x *= s in place.
    pub fn scale_f32(&self, x: &mut CudaSlice<f32>, s: f32) -> Result<(), CudaError> {
        const E: &str = "scale_f32";
        let n = x.len();
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: grid-stride loop over x's own length.
        unsafe {
            self.call(&f, sig)
                .output(x)
                .long(&n_l)
                .float(&s)
                .launch(grid_stride(n))
        }
    }

    /// One AdamW step (torch.optim.AdamW's rules) on f32 parameters and
    /// gradients, all on the device; `grad_scale` multiplies the gradient
    /// first (global-norm clipping folded in).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_f32(
        &self,
        cfg: &crate::cpu::AdamW,
        step: u64,
        grad_scale: f32,
        param: &mut CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        grad: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "adamw_f32";
        let n = param.len();
        expect_len(E, "m", m, n)?;
        expect_len(E, "v", v, n)?;
        expect_len(E, "grad", grad, n)?;
        let (bc1, bc2) = bias_corrections(cfg, step);
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .output(param)
                .output(m)
                .output(v)
                .input(grad)
                .long(&n_l)
                .float(&cfg.lr)
                .float(&cfg.beta1)
                .float(&cfg.beta2)
                .float(&cfg.eps)
                .float(&cfg.weight_decay)
                .float(&bc1)
                .float(&bc2)
                .float(&grad_scale)
                .launch(grid_stride(n))
        }
    }

    /// One AdamW step with f32 master weights and moments, bf16 gradients
    /// in and the bf16 working copy of the parameters out (mixed precision).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_bf16(
        &self,
        cfg: &crate::cpu::AdamW,
        step: u64,
        grad_scale: f32,
        master: &mut CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        grad: &CudaSlice<bf16>,
        param: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "adamw_bf16";
        let n = master.len();
        expect_len(E, "m", m, n)?;
        expect_len(E, "v", v, n)?;
        expect_len(E, "grad", grad, n)?;
        expect_len(E, "param", param, n)?;
        let (bc1, bc2) = bias_corrections(cfg, step);
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .output(master)
                .output(m)
                .output(v)
                .input(grad)
                .output(param)
                .long(&n_l)
                .float(&cfg.lr)
                .float(&cfg.beta1)
                .float(&cfg.beta2)
                .float(&cfg.eps)
                .float(&cfg.weight_decay)
                .float(&bc1)
                .float(&bc2)
                .float(&grad_scale)
                .launch(grid_stride(n))
        }
    }

    /// SLERP of two device tensors of one dtype (f32 or bf16) with
    /// mergekit's rules, into `out`; returns whether the linear branch was
    /// taken (nearly parallel tensors).
    pub fn slerp<T: SlerpElem>(
        &self,
        t: f32,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        out: &mut CudaSlice<T>,
    ) -> Result<bool, CudaError> {
        let n = a.len();
        expect_len(T::REDUCE, "b", b, n)?;
        expect_len(T::APPLY, "out", out, n)?;
        let s = self.stream();
        let device = |e: cudarc::driver::DriverError| launch_error("slerp", format!("{e:?}"));
        let mut sums = s.alloc_zeros::<f64>(3).map_err(device)?;
        let mut coeffs = s.alloc_zeros::<f32>(3).map_err(device)?;
        let n_l = as_long(n);
        let threshold = crate::cpu::SLERP_DOT_THRESHOLD;
        let eps = crate::cpu::SLERP_NORM_EPS;
        let (reduce, reduce_sig) = self.kernel(T::REDUCE)?;
        let (coefficients, coefficients_sig) = self.kernel("slerp_coefficients")?;
        let (apply, apply_sig) = self.kernel(T::APPLY)?;
        // SAFETY: sizes checked above; the reduce and apply kernels loop
        // over n; the coefficients kernel reads 3 sums and writes 3 values
        // from one thread.
        unsafe {
            self.call(&reduce, reduce_sig)
                .input(a)
                .input(b)
                .long(&n_l)
                .output(&mut sums)
                .launch(grid_stride(n))?;
            self.call(&coefficients, coefficients_sig)
                .input(&sums)
                .float(&t)
                .double(&threshold)
                .double(&eps)
                .output(&mut coeffs)
                .launch(LaunchConfig {
                    grid_dim: (1, 1, 1),
                    block_dim: (1, 1, 1),
                    shared_mem_bytes: 0,
                })?;
            self.call(&apply, apply_sig)
                .input(a)
                .input(b)
                .long(&n_l)
                .input(&coeffs)
                .output(out)
                .launch(grid_stride(n))?;
        }
        let c = s.clone_dtoh(&coeffs).map_err(device)?;
        Ok(c[2] != 0.0)
    }

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

/// The element types SLERP has kernels for.
pub trait SlerpElem: DeviceElem {
    const REDUCE: &'static str;
    const APPLY: &'static str;
}
impl SlerpElem for f32 {
    const REDUCE: &'static str = "slerp_reduce_f32";
    const APPLY: &'static str = "slerp_apply_f32";
}
impl SlerpElem for bf16 {
    const REDUCE: &'static str = "slerp_reduce_bf16";
    const APPLY: &'static str = "slerp_apply_bf16";
}

/// 1 − β^step for both moments, computed in f64 as the CPU reference does.
fn bias_corrections(cfg: &crate::cpu::AdamW, step: u64) -> (f32, f32) {
    let step = step.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - (cfg.beta1 as f64).powi(step);
    let bc2 = 1.0 - (cfg.beta2 as f64).powi(step);
    (bc1 as f32, bc2 as f32)
}

fn table_rows(entry: &str, len: usize, dim: usize) -> Result<usize, CudaError> {
    if dim == 0 || len % dim != 0 {
        return Err(launch_error(
            entry,
            format!("a table of {len} elements is not [vocab, {dim}]"),
        ));
    }
    Ok(len / dim)
}
