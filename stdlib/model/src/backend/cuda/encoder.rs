//! The encoder's calls on the CUDA backend: LayerNorm and GELU through
//! their kernels, tanh and the dropout masks through `tensor.cu`, and
//! bidirectional attention through the `bidir_attention_*` kernels, whose
//! probabilities (and masks, drawn on the host exactly as the CPU draws
//! them) are materialised in f32.

use cudarc::driver::CudaSlice;
use flow_kernels::cuda::BidirLayout;
use half::bf16;

use super::{cuda, driver, CudaBackend, CudaGrads, R};
use crate::backend::{Backend, EncoderBackend};
use crate::encoder::dropout::{Dropout, Site};

/// One layer's attention probabilities on the device, with their layout and
/// dropout masks.
pub struct CudaAttnProbs {
    layout: BidirLayout,
    probs: CudaSlice<f32>,
    masks: Option<CudaSlice<f32>>,
}

impl EncoderBackend for CudaBackend {
    type AttnProbs = CudaAttnProbs;

    fn upload_stats(&self, x: &[f32]) -> R<CudaSlice<f32>> {
        self.stream().clone_htod(x).map_err(driver)
    }
    fn layernorm_forward(
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
    ) -> R<()> {
        self.gpu
            .layernorm_forward(x, w, b, eps, rows, dim, y, mean, rstd)
            .map_err(cuda)
    }
    fn layernorm_backward(
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
    ) -> R<()> {
        self.gpu
            .layernorm_backward(dy, x, w, mean, rstd, rows, dim, dx, dw, db)
            .map_err(cuda)
    }
    fn gelu_forward(&self, x: &CudaSlice<bf16>, y: &mut CudaSlice<bf16>) -> R<()> {
        self.gpu.gelu_forward(x, y).map_err(cuda)
    }
    fn gelu_backward(
        &self,
        dy: &CudaSlice<bf16>,
        x: &CudaSlice<bf16>,
        dx: &mut CudaSlice<bf16>,
    ) -> R<()> {
        self.gpu.gelu_backward(dy, x, dx).map_err(cuda)
    }
    fn tanh_in_place(&self, x: &mut CudaSlice<bf16>) -> R<()> {
        self.gpu.tanh_bf16(x).map_err(cuda)
    }
    fn tanh_backward_in_place(&self, dy: &mut CudaSlice<bf16>, y: &CudaSlice<bf16>) -> R<()> {
        self.gpu.tanh_backward_bf16(dy, y).map_err(cuda)
    }
    fn scale_by_mask(&self, x: &mut CudaSlice<bf16>, mask: &CudaSlice<f32>) -> R<()> {
        self.gpu.scale_by_mask_bf16(x, mask).map_err(cuda)
    }
    fn bidirectional_attention_forward(
        &self,
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
        ctx: &mut CudaSlice<bf16>,
        _keep: bool,
        dropout: Option<(&Dropout, usize)>,
    ) -> R<CudaAttnProbs> {
        let layout = self
            .gpu
            .bidir_layout(offsets, heads, head_dim)
            .map_err(cuda)?;
        // the CPU's masks: block (sequence, head) at sequence·heads + head
        let masks = match dropout {
            Some((d, layer)) if d.attention > 0.0 => {
                let mut all = Vec::with_capacity(layout.prob_len);
                for (s, w) in offsets.windows(2).enumerate() {
                    let n = w[1] - w[0];
                    for h in 0..heads {
                        let site = Site::Attention {
                            layer,
                            block: s * heads + h,
                        };
                        if let Some(m) = d.mask(site, n * n, d.attention) {
                            all.extend_from_slice(&m);
                        }
                    }
                }
                Some(self.upload_stats(&all)?)
            }
            _ => None,
        };
        let mut probs = self.zeros_stats(layout.prob_len)?;
        self.gpu
            .bidir_attention_forward(&layout, q, k, v, masks.as_ref(), &mut probs, ctx)
            .map_err(cuda)?;
        Ok(CudaAttnProbs {
            layout,
            probs,
            masks,
        })
    }
    fn bidirectional_attention_backward(
        &self,
        dctx: &CudaSlice<bf16>,
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        probs: &CudaAttnProbs,
        _offsets: &[usize],
        _heads: usize,
        _head_dim: usize,
        dq: &mut CudaSlice<bf16>,
        dk: &mut CudaSlice<bf16>,
        dv: &mut CudaSlice<bf16>,
    ) -> R<()> {
        let mut ds = self.zeros_stats(probs.layout.prob_len)?;
        self.gpu
            .bidir_attention_backward(
                &probs.layout,
                dctx,
                q,
                k,
                v,
                &probs.probs,
                probs.masks.as_ref(),
                &mut ds,
                dq,
                dk,
                dv,
            )
            .map_err(cuda)
    }
    fn grad_norm_in_element_order(&self, grads: &CudaGrads) -> R<f64> {
        // the device's reduction order (the CPU's sequential sum is not worth a device's time)
        self.grad_norm(grads)
    }
}
