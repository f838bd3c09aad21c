//! RMSNorm and LayerNorm, and the column sum that finishes their weight
//! gradients (per-block partial rows, then one fixed-order sum: no atomics).

use cudarc::driver::CudaSlice;
use half::bf16;

use super::{as_int, block_per_row, expect_len, one_thread_each};
use crate::cuda::{CudaError, Gpu};

impl Gpu {
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
        if rows == 0 || dim == 0 {
            return Ok(());
        }
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

    /// dx (set) and dw (added to) of RMSNorm; dw without atomics (per-block
    /// partial sums, then a column sum), the same bits on every run.
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
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        expect_len(E, "dy", dy, rows * dim)?;
        expect_len(E, "x", x, rows * dim)?;
        expect_len(E, "w", w, dim)?;
        expect_len(E, "rstd", rstd, rows)?;
        expect_len(E, "dx", dx, rows * dim)?;
        expect_len(E, "dw", dw, dim)?;
        let (rows_i, dim_i) = (as_int(E, "rows", rows)?, as_int(E, "dim", dim)?);
        let parts = partial_rows(rows);
        let mut partial = self.scratch_f32(E, parts * dim)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; `parts` blocks, each owning one
        // partial row and striding over the data rows.
        unsafe {
            self.call(&f, sig)
                .input(dy)
                .input(x)
                .input(w)
                .input(rstd)
                .int(&rows_i)
                .int(&dim_i)
                .output(dx)
                .output(&mut partial)
                .launch(block_per_row(E, parts)?)?;
        }
        self.column_sum(&partial, parts, dim, dw)
    }

    /// LayerNorm forward per row of x `[rows, dim]`, with the mean and
    /// reciprocal standard deviation of each row kept for the backward.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_forward(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        b: &CudaSlice<bf16>,
        eps: f32,
        rows: usize,
        dim: usize,
        y: &mut CudaSlice<bf16>,
        mean: &mut CudaSlice<f32>,
        rstd: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "layernorm_forward";
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        expect_len(E, "x", x, rows * dim)?;
        expect_len(E, "w", w, dim)?;
        expect_len(E, "b", b, dim)?;
        expect_len(E, "y", y, rows * dim)?;
        expect_len(E, "mean", mean, rows)?;
        expect_len(E, "rstd", rstd, rows)?;
        let dim_i = as_int(E, "dim", dim)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per row.
        unsafe {
            self.call(&f, sig)
                .input(x)
                .input(w)
                .input(b)
                .float(&eps)
                .int(&dim_i)
                .output(y)
                .output(mean)
                .output(rstd)
                .launch(block_per_row(E, rows)?)
        }
    }

    /// LayerNorm backward: dx (set), dw and db (added to), the weight
    /// gradients without atomics.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        mean: &CudaSlice<f32>,
        rstd: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
        dx: &mut CudaSlice<bf16>,
        dw: &mut CudaSlice<f32>,
        db: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "layernorm_backward";
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        expect_len(E, "dy", dy, rows * dim)?;
        expect_len(E, "x", x, rows * dim)?;
        expect_len(E, "w", w, dim)?;
        expect_len(E, "mean", mean, rows)?;
        expect_len(E, "rstd", rstd, rows)?;
        expect_len(E, "dx", dx, rows * dim)?;
        expect_len(E, "dw", dw, dim)?;
        expect_len(E, "db", db, dim)?;
        let (rows_i, dim_i) = (as_int(E, "rows", rows)?, as_int(E, "dim", dim)?);
        let parts = partial_rows(rows);
        let mut w_partial = self.scratch_f32(E, parts * dim)?;
        let mut b_partial = self.scratch_f32(E, parts * dim)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; `parts` blocks, each owning one
        // partial row of each and striding over the data rows.
        unsafe {
            self.call(&f, sig)
                .input(dy)
                .input(x)
                .input(w)
                .input(mean)
                .input(rstd)
                .int(&rows_i)
                .int(&dim_i)
                .output(dx)
                .output(&mut w_partial)
                .output(&mut b_partial)
                .launch(block_per_row(E, parts)?)?;
        }
        self.column_sum(&w_partial, parts, dim, dw)?;
        self.column_sum(&b_partial, parts, dim, db)
    }

    /// out += the sum of the `parts` rows of `partial` `[parts, dim]`.
    fn column_sum(
        &self,
        partial: &CudaSlice<f32>,
        parts: usize,
        dim: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "column_sum_f32";
        expect_len(E, "partial", partial, parts * dim)?;
        expect_len(E, "out", out, dim)?;
        let (parts_i, dim_i) = (as_int(E, "parts", parts)?, as_int(E, "dim", dim)?);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one thread per column.
        unsafe {
            self.call(&f, sig)
                .input(partial)
                .int(&parts_i)
                .int(&dim_i)
                .output(out)
                .launch(one_thread_each(E, dim)?)
        }
    }
}

/// Blocks (and partial rows) of the norms' backward: enough to fill the
/// GPU, few enough that the column sum that follows is short.
fn partial_rows(rows: usize) -> usize {
    rows.clamp(1, 512)
}
