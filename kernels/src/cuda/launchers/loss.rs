//! The fused softmax cross-entropy over the vocabulary.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::{as_int, block_per_row, expect_len, launch_error};
use crate::cuda::{CudaError, Gpu};

impl Gpu {
    /// Per row of logits `[rows, vocab]`: the loss against its target (0
    /// for target −100) and dlogits = scale·(softmax − onehot) (0 for
    /// ignored rows). A target outside the vocabulary gives a NaN loss.
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
        if targets.is_empty() {
            return Ok(());
        }
        if vocab == 0 {
            return Err(launch_error(E, "an empty vocabulary".into()));
        }
        let rows = targets.len();
        expect_len(E, "logits", logits, rows * vocab)?;
        expect_len(E, "losses", losses, rows)?;
        expect_len(E, "dlogits", dlogits, rows * vocab)?;
        let vocab_i = as_int(E, "vocab", vocab)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per row; targets outside
        // the vocabulary are caught in the kernel.
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
}
