//! Matrix products on the GPU through cuBLASLt (cudarc's `cublaslt`),
//! loaded at run time like the driver: from `FLOW_CUBLASLT_LIB`, a CUDA
//! install, or the `nvidia-cublas` wheel. cudarc panics when it cannot
//! find the library, so nothing here touches it before [`load_cublaslt`]
//! succeeded; a machine without cuBLASLt gets [`CudaError::NoCublasLt`].
//!
//! flow's tensors are row-major; cuBLASLt's are column-major. A row-major
//! `C = op(A)·op(B)` is the column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`, so the call
//! swaps the operands and the roles of m and n ([`column_major`]); the
//! mapping is tested on the CPU against cuBLAS's documented semantics.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::CudaSlice;
use half::bf16;

use super::{load_library_once, locate_library, CudaError, Gpu};

/// Finds libcublasLt: `FLOW_CUBLASLT_LIB`, then `lib64`/`lib` of the CUDA
/// roots (the system install, `CUDA_HOME`, the wheels' folders).
pub fn locate_cublaslt() -> Result<PathBuf, CudaError> {
    locate_library(
        "FLOW_CUBLASLT_LIB",
        &["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
    )
    .map_err(|searched| CudaError::NoCublasLt { searched })
}

/// Loads libcublasLt once and keeps it loaded. Returns its path.
pub fn load_cublaslt() -> Result<&'static Path, CudaError> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    load_library_once(&LOADED, "libcublasLt", locate_cublaslt)
}

/// The cuBLASLt call for the row-major product `C[m×n] = op(A)·op(B) +
/// beta·C`, with A `m×k` (`k×m` if `a_t`) and B `k×n` (`n×k` if `b_t`),
/// all densely packed. The returned configuration takes B's buffer as its
/// first operand and A's as its second.
pub fn column_major(m: usize, n: usize, k: usize, a_t: bool, b_t: bool, beta: f32) -> MatmulConfig {
    MatmulConfig {
        // cuBLAS's A is our B: op(B)ᵀ, n×k column-major.
        transa: b_t,
        // cuBLAS's B is our A: op(A)ᵀ, k×m column-major.
        transb: a_t,
        transc: false,
        m: n as u64,
        n: m as u64,
        k: k as u64,
        alpha: 1.0,
        lda: if b_t { k as i64 } else { n as i64 },
        ldb: if a_t { m as i64 } else { k as i64 },
        beta,
        ldc: n as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    }
}

/// A cuBLASLt handle on a GPU's stream.
pub struct Blas {
    lt: CudaBlasLT,
}

impl Gpu {
    /// cuBLASLt on this device's stream, or why it is unavailable.
    pub fn blas(&self) -> Result<Blas, CudaError> {
        load_cublaslt()?;
        let lt = CudaBlasLT::new(self.stream().clone()).map_err(|e| CudaError::Launch {
            entry: "cublasLtCreate".into(),
            message: format!("{e:?}"),
        })?;
        Ok(Blas { lt })
    }
}

impl Blas {
    /// Row-major `C[m×n] = op(A)·op(B) + beta·C` in bf16 with f32
    /// accumulation; `beta` 0 (C is only written) or 1 (accumulate).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &CudaSlice<bf16>,
        a_t: bool,
        b: &CudaSlice<bf16>,
        b_t: bool,
        c: &mut CudaSlice<bf16>,
        beta: f32,
    ) -> Result<(), CudaError> {
        let error = |message: String| CudaError::Launch {
            entry: "cublasLtMatmul".into(),
            message,
        };
        if beta != 0.0 && beta != 1.0 {
            return Err(error(format!("beta must be 0 or 1, got {beta}")));
        }
        for (name, have, want) in [
            ("A", a.len(), m * k),
            ("B", b.len(), k * n),
            ("C", c.len(), m * n),
        ] {
            if have != want {
                return Err(error(format!(
                    "{name} has {have} elements, the shape needs {want}"
                )));
            }
        }
        if m == 0 || n == 0 || k == 0 {
            return Err(error(format!("an empty product ({m}×{k} by {k}×{n})")));
        }
        let cfg = column_major(m, n, k, a_t, b_t, beta);
        // SAFETY: every buffer holds exactly the elements its layout in
        // `cfg` spans (checked above).
        unsafe { self.lt.matmul(cfg, b, a, c, None, None) }.map_err(|e| error(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::column_major;
    use cudarc::cublaslt::MatmulConfig;

    /// cuBLAS's column-major `C = alpha·op(A)·op(B) + beta·C` as its
    /// documentation defines it (element (i, j) of a column-major matrix
    /// with leading dimension ld is at i + j·ld).
    fn cublas_reference(cfg: &MatmulConfig, a: &[f64], b: &[f64], c: &mut [f64]) {
        let (m, n, k) = (cfg.m as usize, cfg.n as usize, cfg.k as usize);
        let (lda, ldb, ldc) = (cfg.lda as usize, cfg.ldb as usize, cfg.ldc as usize);
        let op_a = |i: usize, p: usize| {
            if cfg.transa {
                a[p + i * lda]
            } else {
                a[i + p * lda]
            }
        };
        let op_b = |p: usize, j: usize| {
            if cfg.transb {
                b[j + p * ldb]
            } else {
                b[p + j * ldb]
            }
        };
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| op_a(i, p) * op_b(p, j)).sum();
                c[i + j * ldc] = cfg.alpha as f64 * dot + cfg.beta as f64 * c[i + j * ldc];
            }
        }
    }

    #[test]
    fn the_column_major_call_computes_the_row_major_product() {
        let (m, n, k) = (3usize, 5usize, 4usize);
        let a_buf: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b_buf: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        for a_t in [false, true] {
            for b_t in [false, true] {
                for beta in [0.0f32, 1.0] {
                    // Row-major op(A)[i][p], op(B)[p][j] read straight from the buffers.
                    let op_a = |i: usize, p: usize| {
                        if a_t {
                            a_buf[p * m + i]
                        } else {
                            a_buf[i * k + p]
                        }
                    };
                    let op_b = |p: usize, j: usize| {
                        if b_t {
                            b_buf[j * k + p]
                        } else {
                            b_buf[p * n + j]
                        }
                    };
                    let c0: Vec<f64> = (0..m * n).map(|i| i as f64).collect();
                    let mut want = c0.clone();
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|p| op_a(i, p) * op_b(p, j)).sum();
                            want[i * n + j] = dot + beta as f64 * c0[i * n + j];
                        }
                    }
                    let cfg = column_major(m, n, k, a_t, b_t, beta);
                    let mut got = c0.clone();
                    cublas_reference(&cfg, &b_buf, &a_buf, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-12,
                            "a_t {a_t} b_t {b_t} beta {beta}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }
}
