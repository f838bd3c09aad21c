//! Launchers of `tensor.cu`: residual adds, biases, casts and f32 gradient
//! accumulation around the matrix products (the model runtime's CUDA backend).

use cudarc::driver::{CudaSlice, LaunchConfig};
use half::bf16;

use super::{as_int, as_long, expect_len, grid_stride, launch_error, THREADS};
use crate::cuda::launch::DeviceElem;
use crate::cuda::{CudaError, Gpu};

impl Gpu {
    /// `x += y`, elementwise.
    pub fn add_bf16(&self, x: &mut CudaSlice<bf16>, y: &CudaSlice<bf16>) -> Result<(), CudaError> {
        self.update_from("add_bf16", x, y)
    }

    /// Launches `entry(out, input, n)`, a grid-stride kernel that updates
    /// `out` elementwise from an `input` of the same length.
    fn update_from<O: DeviceElem, I: DeviceElem>(
        &self,
        entry: &'static str,
        out: &mut CudaSlice<O>,
        input: &CudaSlice<I>,
    ) -> Result<(), CudaError> {
        let n = out.len();
        expect_len(entry, "input", input, n)?;
        if n == 0 {
            return Ok(());
        }
        let n_l = as_long(n);
        let (f, sig) = self.kernel(entry)?;
        // SAFETY: sizes checked above; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .output(out)
                .input(input)
                .long(&n_l)
                .launch(grid_stride(n))
        }
    }

    /// `y[r, c] += bias[c]` for each of `y`'s rows.
    pub fn add_bias_bf16(
        &self,
        y: &mut CudaSlice<bf16>,
        bias: &CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "add_bias_bf16";
        let cols = bias.len();
        if cols == 0 || !y.len().is_multiple_of(cols) {
            return Err(launch_error(
                E,
                format!("{} elements are not rows of a {cols}-element bias", y.len()),
            ));
        }
        if y.is_empty() {
            return Ok(());
        }
        let (rows_l, cols_i) = (as_long(y.len() / cols), as_int(E, "cols", cols)?);
        let config = grid_stride(y.len());
        let (f, sig) = self.kernel(E)?;
        // SAFETY: y holds rows × cols elements (checked); grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .output(y)
                .input(bias)
                .long(&rows_l)
                .int(&cols_i)
                .launch(config)
        }
    }

    /// `dbias[c] += Σ_r dy[r, c]` (rows summed in order).
    pub fn bias_grad_bf16(
        &self,
        dy: &CudaSlice<bf16>,
        dbias: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "bias_grad_bf16";
        let cols = dbias.len();
        if cols == 0 || !dy.len().is_multiple_of(cols) {
            return Err(launch_error(
                E,
                format!(
                    "{} elements are not rows of a {cols}-element bias",
                    dy.len()
                ),
            ));
        }
        let (rows_l, cols_i) = (as_long(dy.len() / cols), as_int(E, "cols", cols)?);
        let config = LaunchConfig {
            grid_dim: ((cols as u32).div_ceil(THREADS), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let (f, sig) = self.kernel(E)?;
        // SAFETY: one thread per column, each reading its column of dy (checked size).
        unsafe {
            self.call(&f, sig)
                .input(dy)
                .long(&rows_l)
                .int(&cols_i)
                .output(dbias)
                .launch(config)
        }
    }

    /// `acc += x`, a bf16 buffer added into an f32 one.
    pub fn accumulate_bf16_f32(
        &self,
        acc: &mut CudaSlice<f32>,
        x: &CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        self.update_from("accumulate_bf16_f32", acc, x)
    }

    /// `y = bf16(x)`.
    pub fn cast_f32_bf16(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "cast_f32_bf16";
        let n = x.len();
        expect_len(E, "y", y, n)?;
        if n == 0 {
            return Ok(());
        }
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

    /// `x *= mask`, elementwise: a dropout mask (f32, so 1 / (1 − p) stays exact).
    pub fn scale_by_mask_bf16(
        &self,
        x: &mut CudaSlice<bf16>,
        mask: &CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        self.update_from("scale_by_mask_bf16", x, mask)
    }

    /// `x = tanh(x)`.
    pub fn tanh_bf16(&self, x: &mut CudaSlice<bf16>) -> Result<(), CudaError> {
        const E: &str = "tanh_bf16";
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let n_l = as_long(n);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: n is x's length; grid-stride loop.
        unsafe {
            self.call(&f, sig)
                .output(x)
                .long(&n_l)
                .launch(grid_stride(n))
        }
    }

    /// `dy *= 1 − y²`, the backward of `y = tanh(x)`.
    pub fn tanh_backward_bf16(
        &self,
        dy: &mut CudaSlice<bf16>,
        y: &CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        self.update_from("tanh_backward_bf16", dy, y)
    }
}
