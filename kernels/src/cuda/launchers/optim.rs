//! The optimizer's kernels: AdamW (f32, and mixed precision) and the
//! reductions of global-norm clipping.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::{as_long, expect_len, grid_stride, launch_error};
use crate::cuda::launch::DeviceElem;
use crate::cuda::{CudaError, Gpu};

impl Gpu {
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
}

/// 1 − β^step for both moments, computed in f64 as the CPU reference does.
fn bias_corrections(cfg: &crate::cpu::AdamW, step: u64) -> (f32, f32) {
    let step = step.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - (cfg.beta1 as f64).powi(step);
    let bc2 = 1.0 - (cfg.beta2 as f64).powi(step);
    (bc1 as f32, bc2 as f32)
}
