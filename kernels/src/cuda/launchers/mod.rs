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

use super::launch::{signature, KernelCall, Signature};
use super::{CudaError, Gpu};

mod attention;
mod bidirectional;
mod elementwise;
mod embedding;
mod loss;
mod norm;
mod optim;
mod slerp;
mod tensor;

pub use attention::AttentionShape;
pub use bidirectional::BidirLayout;
pub use embedding::EmbeddingBuckets;
pub use slerp::SlerpElem;

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

    /// Scratch the kernels set before they read it.
    fn scratch_f32(&self, entry: &str, n: usize) -> Result<CudaSlice<f32>, CudaError> {
        self.stream()
            .alloc_zeros::<f32>(n)
            .map_err(|e| launch_error(entry, format!("{e:?}")))
    }
}
