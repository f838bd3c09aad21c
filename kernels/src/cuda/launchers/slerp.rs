//! SLERP of two device tensors with mergekit's rules.

use cudarc::driver::{CudaSlice, LaunchConfig};
use half::bf16;

use super::{as_long, expect_len, grid_stride, launch_error};
use crate::cuda::launch::DeviceElem;
use crate::cuda::{CudaError, Gpu};

impl Gpu {
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
