//! The elementwise families: RoPE, SwiGLU, GELU.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::{as_int, as_long, expect_len, grid_stride, launch_error, one_thread_each};
use crate::cuda::{CudaError, Gpu};

impl Gpu {
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
        if !head_dim.is_multiple_of(2) {
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

    /// An elementwise kernel over `n` elements: inputs, outputs, then `n`
    /// (the parameter order of swiglu.cu and gelu.cu), one grid-stride loop.
    fn elementwise(
        &self,
        entry: &'static str,
        inputs: &[(&str, &CudaSlice<bf16>)],
        outputs: &mut [(&str, &mut CudaSlice<bf16>)],
    ) -> Result<(), CudaError> {
        let n = inputs[0].1.len();
        for (name, buffer) in inputs {
            expect_len(entry, name, buffer, n)?;
        }
        for (name, buffer) in outputs.iter() {
            expect_len(entry, name, buffer, n)?;
        }
        let n_l = as_long(n);
        let (f, sig) = self.kernel(entry)?;
        let mut call = self.call(&f, sig);
        for (_, buffer) in inputs {
            call = call.input(*buffer);
        }
        for (_, buffer) in outputs.iter_mut() {
            call = call.output(*buffer);
        }
        // SAFETY: every buffer holds n elements (checked above); the
        // kernels loop over n.
        unsafe { call.long(&n_l).launch(grid_stride(n)) }
    }

    /// out = silu(gate) · up.
    pub fn swiglu_forward(
        &self,
        gate: &CudaSlice<bf16>,
        up: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        self.elementwise(
            "swiglu_forward",
            &[("gate", gate), ("up", up)],
            &mut [("out", out)],
        )
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
        self.elementwise(
            "swiglu_backward",
            &[("gate", gate), ("up", up), ("dout", dout)],
            &mut [("dgate", dgate), ("dup", dup)],
        )
    }

    /// y = gelu(x), the exact erf form.
    pub fn gelu_forward(
        &self,
        x: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        self.elementwise("gelu_forward", &[("x", x)], &mut [("y", y)])
    }

    /// dx = dy · gelu'(x) (set).
    pub fn gelu_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        dx: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        self.elementwise("gelu_backward", &[("dy", dy), ("x", x)], &mut [("dx", dx)])
    }
}
