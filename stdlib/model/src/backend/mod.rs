//! The storage and compute layer the decoder is written over: one forward
//! pass, one backward pass, one optimizer step, one KV cache and one scoring
//! path, generic over a [`Backend`] (monomorphised: no dynamic dispatch in
//! the inner loops).
//!
//! A backend owns its buffers (host vectors on the CPU, device memory on a
//! GPU) and implements exactly the calls the passes make: the kernels of
//! `flow-kernels` (embedding, RMSNorm, linear, RoPE, SwiGLU, attention,
//! cross-entropy, residual adds), the optimizer's whole-model reductions and
//! AdamW, and the row copies the scoring and the chunked loss need. The
//! passes keep the orchestration (shapes, ordering, caching, what is
//! recorded, gradient flow), so the CPU backend, which CI runs everywhere,
//! tests the device path's orchestration too.

pub mod cpu;
pub mod cpu_bf16;
pub mod cuda;
pub mod encoder;

use std::borrow::Cow;
use std::convert::Infallible;

pub use cpu::CpuBackend;
pub use cpu_bf16::{Bf16Params, CpuBf16Backend};
pub use cuda::CudaBackend;
pub use encoder::EncoderBackend;
pub use flow_kernels::cpu::{AdamW, AttnParams};

use crate::error::ModelError;
use crate::model::KvCacheOn;
use crate::weights::Params;

/// The keys and values one segment of a batch attends to.
pub enum Keys<'a, B: Backend> {
    /// The segment's new keys and values are appended to the cache; it attends to all of it.
    Cache(&'a mut KvCacheOn<B>),
    /// Only the segment's own positions, never across documents (`None`: one document).
    Own(Option<&'a [u32]>),
}

/// One product of [`Backend::linear_forward_shared`]: `y[t×out_f] = x·wᵀ + bias`.
pub struct LinearOut<'a, B: Backend> {
    pub w: &'a B::Weight,
    pub bias: Option<&'a B::Weight>,
    pub out_f: usize,
    pub y: &'a mut B::Buf,
}

/// A place the model's tensors live and its arithmetic runs.
///
/// Buffers are flat, row-major: a `[rows, width]` matrix is `rows × width`
/// elements. Every compute call has the contract of the CPU kernel of the
/// same name in `flow_kernels::cpu` (which the CPU backend is).
pub trait Backend: Send + Sync + Sized {
    /// Why a call failed (the CPU backend cannot fail: `Infallible`).
    type Error: Into<ModelError> + std::fmt::Debug + Send;
    /// An activation or activation-gradient buffer (bf16 on a GPU).
    type Buf: Send + Sync;
    /// Per-row f32 statistics the backward reads: RMSNorm's rstd, attention's log-sum-exp.
    type Stats: Send + Sync;
    /// Token ids or positions, as the kernels read them.
    type Ids: Send + Sync;
    /// Every parameter of the model, as the products read them.
    type Params: Send + Sync;
    /// One parameter.
    type Weight: ?Sized + Sync;
    /// An f32 gradient (or optimizer moment) of every parameter.
    type Grads: Send + Sync;
    /// One parameter's gradient.
    type Grad: ?Sized + Send;
    /// What RoPE needs to rotate positions below the limit it was made for.
    type Rope: Send + Sync;
    /// One layer's cached keys (or values) of one sequence.
    type KvLayer: Default + Send + Sync;

    // --- storage ---

    /// A buffer of `n` zeros.
    fn zeros(&self, n: usize) -> Result<Self::Buf, Self::Error>;
    /// `n` zeroed statistics.
    fn zeros_stats(&self, n: usize) -> Result<Self::Stats, Self::Error>;
    /// A buffer holding `x`.
    fn upload(&self, x: &[f32]) -> Result<Self::Buf, Self::Error>;
    /// The values of `x`, on the host (f32).
    fn download(&self, x: Self::Buf) -> Result<Vec<f32>, Self::Error>;
    /// A copy of `x`.
    fn duplicate(&self, x: &Self::Buf) -> Result<Self::Buf, Self::Error>;
    /// Ids (or positions) as the kernels read them.
    fn upload_ids(&self, ids: &[u32]) -> Result<Self::Ids, Self::Error>;
    /// The rows `rows` of `x` (`width` wide), in that order, as one buffer.
    fn gather_rows(
        &self,
        x: &Self::Buf,
        rows: &[usize],
        width: usize,
    ) -> Result<Self::Buf, Self::Error>;
    /// `a`'s rows followed by `b`'s.
    fn concat(&self, a: &Self::Buf, b: &Self::Buf) -> Result<Self::Buf, Self::Error>;
    /// Overwrites `dst`'s rows from `first_row` on (`width` wide) with `src`.
    fn write_rows(
        &self,
        dst: &mut Self::Buf,
        first_row: usize,
        width: usize,
        src: &Self::Buf,
    ) -> Result<(), Self::Error>;

    /// Host parameters placed on the backend.
    fn params_from_host(&self, params: Params) -> Result<Self::Params, Self::Error>;
    /// The parameters as f32 on the host (the master weights where there are two copies).
    fn params_to_host<'a>(&self, params: &'a Self::Params) -> Result<Cow<'a, Params>, Self::Error>;
    /// Parameter `i`.
    fn weight(params: &Self::Params, i: usize) -> &Self::Weight;
    /// Zeroed f32 buffers shaped like `params`.
    fn grads_zeroed(&self, params: &Self::Params) -> Result<Self::Grads, Self::Error>;
    /// Gradients or moments as f32 on the host.
    fn grads_to_host<'a>(&self, grads: &'a Self::Grads) -> Result<Cow<'a, Params>, Self::Error>;
    /// Host gradients or moments placed on the backend.
    fn grads_from_host(&self, grads: Params) -> Result<Self::Grads, Self::Error>;
    /// The gradient of weight `w` and, when there is one, of its bias `b`.
    fn grad_and_bias(
        grads: &mut Self::Grads,
        w: usize,
        b: Option<usize>,
    ) -> (&mut Self::Grad, Option<&mut Self::Grad>);
    /// The RoPE of `head_dim` dimensions and base `theta` for positions `< max_positions`.
    fn rope(
        &self,
        head_dim: usize,
        theta: f64,
        max_positions: usize,
    ) -> Result<Self::Rope, Self::Error>;
    /// A copy of one cached layer.
    fn duplicate_kv(&self, layer: &Self::KvLayer) -> Result<Self::KvLayer, Self::Error>;

    // --- the kernels of the passes ---

    /// `out[i] = table[ids[i]]` (ids checked by the caller).
    fn embedding_forward(
        &self,
        ids: &Self::Ids,
        table: &Self::Weight,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    /// `dtable[ids[i]] += dout[i]`; `ids` on the host.
    fn embedding_backward(
        &self,
        ids: &[u32],
        dout: &Self::Buf,
        dim: usize,
        dtable: &mut Self::Grad,
    ) -> Result<(), Self::Error>;
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_forward(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut Self::Buf,
        rstd: &mut Self::Stats,
    ) -> Result<(), Self::Error>;
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Weight,
        rstd: &Self::Stats,
        rows: usize,
        dim: usize,
        dx: &mut Self::Buf,
        dw: &mut Self::Grad,
    ) -> Result<(), Self::Error>;
    /// `y[t×out] = x[t×in]·Wᵀ + bias`.
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        t: usize,
        in_f: usize,
        out_f: usize,
        y: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    /// [`Backend::linear_forward`] of one input `x` (`t × in_f`) with each of `products`:
    /// the projections that read the same activations (q, k, v; gate, up). A backend may
    /// run them together; each output is what `linear_forward` gives.
    fn linear_forward_shared(
        &self,
        x: &Self::Buf,
        t: usize,
        in_f: usize,
        products: &mut [LinearOut<'_, Self>],
    ) -> Result<(), Self::Error> {
        for p in products.iter_mut() {
            self.linear_forward(x, p.w, p.bias, t, in_f, p.out_f, p.y)?;
        }
        Ok(())
    }
    /// `dx` (set) `= dy·W`; `dw += dyᵀ·x`; `dbias += Σ_rows dy`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Weight,
        t: usize,
        in_f: usize,
        out_f: usize,
        dx: Option<&mut Self::Buf>,
        dw: &mut Self::Grad,
        dbias: Option<&mut Self::Grad>,
    ) -> Result<(), Self::Error>;
    fn rope_forward(
        &self,
        x: &mut Self::Buf,
        positions: &Self::Ids,
        heads: usize,
        rope: &Self::Rope,
    ) -> Result<(), Self::Error>;
    fn rope_backward(
        &self,
        dx: &mut Self::Buf,
        positions: &Self::Ids,
        heads: usize,
        rope: &Self::Rope,
    ) -> Result<(), Self::Error>;
    fn swiglu_forward(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    fn swiglu_backward(
        &self,
        gate: &Self::Buf,
        up: &Self::Buf,
        dout: &Self::Buf,
        dgate: &mut Self::Buf,
        dup: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    /// `x += y`, elementwise (residual connections, summed gradients).
    fn add_in_place(&self, x: &mut Self::Buf, y: &Self::Buf) -> Result<(), Self::Error>;
    /// Attention of every segment of a batch (`lens[i]` rows each, concatenated) in layer
    /// `layer`: q `[T, q_dim]`, k and v `[T, kv_dim]`, out `[T, q_dim]` and lse `[T, q_heads]`
    /// (per segment `[q_heads, len]`). A segment with a cache appends its k and v to it first.
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        &self,
        params: &AttnParams,
        layer: usize,
        lens: &[usize],
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        keys: &mut [Keys<'_, Self>],
        out: &mut Self::Buf,
        lse: &mut Self::Stats,
    ) -> Result<(), Self::Error>;
    /// The backward of [`Backend::attention_forward`] over segments' own keys; dq, dk, dv set.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        params: &AttnParams,
        lens: &[usize],
        docs: &[Option<&[u32]>],
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Stats,
        dout: &Self::Buf,
        dq: &mut Self::Buf,
        dk: &mut Self::Buf,
        dv: &mut Self::Buf,
    ) -> Result<(), Self::Error>;
    /// Softmax cross-entropy of `[rows, vocab]` logits against host targets (`IGNORE_INDEX`
    /// skipped): (summed token loss, counted tokens); `dlogits = scale·(softmax − onehot)`.
    fn cross_entropy(
        &self,
        logits: &Self::Buf,
        targets: &[i32],
        rows: usize,
        vocab: usize,
        dlogits: Option<(&mut Self::Buf, f32)>,
    ) -> Result<(f64, usize), Self::Error>;

    // --- the optimizer ---

    /// Sets every gradient to 0.
    fn zero_grads(&self, grads: &mut Self::Grads) -> Result<(), Self::Error>;
    /// The global L2 norm of every gradient.
    fn grad_norm(&self, grads: &Self::Grads) -> Result<f64, Self::Error>;
    /// Multiplies every gradient by `s`.
    fn scale_grads(&self, grads: &mut Self::Grads, s: f32) -> Result<(), Self::Error>;
    /// One AdamW step (1-based `step`) of every parameter; parameters with 2 or more
    /// dimensions use `decay`, the rest `no_decay`.
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        decay: &AdamW,
        no_decay: &AdamW,
        step: u64,
        params: &mut Self::Params,
        grads: &Self::Grads,
        m: &mut Self::Grads,
        v: &mut Self::Grads,
    ) -> Result<(), Self::Error>;
}

/// Elements `w` and (when given, `b != w`) `b` of `v`, both mutable: a weight's gradient and
/// its bias's.
pub(crate) fn two_mut<T>(v: &mut [T], w: usize, b: Option<usize>) -> (&mut T, Option<&mut T>) {
    match b {
        None => (&mut v[w], None),
        Some(b) if b > w => {
            let (lo, hi) = v.split_at_mut(b);
            (&mut lo[w], Some(&mut hi[0]))
        }
        Some(b) => {
            let (lo, hi) = v.split_at_mut(w);
            (&mut hi[0], Some(&mut lo[b]))
        }
    }
}

/// A backend's error as the runtime's.
pub(crate) fn model_error<E: Into<ModelError>>(e: E) -> ModelError {
    e.into()
}

/// The value of a call that cannot fail (the CPU backend's).
pub(crate) fn infallible<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => match e {},
    }
}

impl From<Infallible> for ModelError {
    fn from(e: Infallible) -> ModelError {
        match e {}
    }
}
