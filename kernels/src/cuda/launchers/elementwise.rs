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

    /// y = gelu(x), the exact erf form.
    pub fn gelu_forward(
        &self,
        x: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "gelu_forward";
        let n = x.len();
        expect_len(E, "y", y, n)?;
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .input(x)
                .output(y)
                .long(&n_l)
                .launch(grid_stride(n))
        }
    }

    /// dx = dy · gelu'(x) (set).
    pub fn gelu_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        dx: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "gelu_backward";
        let n = x.len();
        expect_len(E, "dy", dy, n)?;
        expect_len(E, "dx", dx, n)?;
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .input(dy)
                .input(x)
                .output(dx)
                .long(&n_l)
                .launch(grid_stride(n))
        }
    }
}
