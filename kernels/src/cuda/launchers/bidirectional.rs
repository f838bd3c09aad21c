//! Bidirectional attention of an encoder (BERT / RoBERTa) over a ragged
//! batch, with dropout on its probabilities: the `bidir_attention_*`
//! entry points of `attention.cu`. The probabilities are materialised in
//! f32, one `n × n` block per (sequence, head), because training mode's
//! dropout masks them; the masks are drawn on the host and uploaded in the
//! same layout.

use cudarc::driver::{CudaSlice, LaunchConfig};
use half::bf16;

use super::{as_int, expect_len, launch_error};
use crate::cuda::launch::KernelCall;
use crate::cuda::{CudaError, Gpu};

/// Threads of a block: one query (or key) row each.
const ROWS_PER_BLOCK: u32 = 128;

/// The sequences of one batch on the device: their bounds and where each
/// one's probability blocks start.
pub struct BidirLayout {
    offsets: CudaSlice<i32>,
    prob_starts: CudaSlice<i32>,
    /// Sequences in the batch.
    pub sequences: usize,
    /// Rows (tokens) in the batch.
    pub tokens: usize,
    /// The longest sequence.
    pub max_len: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Elements of the probabilities (and of their masks): Σ n² · heads.
    pub prob_len: usize,
}

impl Gpu {
    /// The layout of sequences `offsets[s] .. offsets[s + 1]` (B + 1 bounds,
    /// increasing) with `heads` heads of `head_dim`.
    pub fn bidir_layout(
        &self,
        offsets: &[usize],
        heads: usize,
        head_dim: usize,
    ) -> Result<BidirLayout, CudaError> {
        const E: &str = "bidir_attention_forward";
        if offsets.is_empty() || offsets.windows(2).any(|w| w[1] < w[0]) {
            return Err(launch_error(
                E,
                "sequence bounds must be at least one and increasing".into(),
            ));
        }
        let sequences = offsets.len() - 1;
        let mut starts = Vec::with_capacity(sequences.max(1));
        let mut squares = 0usize;
        let mut max_len = 0;
        for w in offsets.windows(2) {
            let n = w[1] - w[0];
            starts.push(as_int(E, "probability offset", squares)?);
            squares += n * n;
            max_len = max_len.max(n);
        }
        as_int(E, "probabilities of the batch", squares)?;
        starts.push(0); // never read; keeps the buffer non-empty
        let bounds: Vec<i32> = offsets
            .iter()
            .map(|&o| as_int(E, "offset", o))
            .collect::<Result<_, _>>()?;
        let s = self.stream();
        let upload = |v: &[i32]| {
            s.clone_htod(v)
                .map_err(|e| launch_error(E, format!("{e:?}")))
        };
        Ok(BidirLayout {
            offsets: upload(&bounds)?,
            prob_starts: upload(&starts)?,
            sequences,
            tokens: offsets[sequences],
            max_len,
            heads,
            head_dim,
            prob_len: squares * heads,
        })
    }

    /// ctx (set, `[tokens, heads·head_dim]`) and the probabilities
    /// (`[prob_len]`) from q, k, v; `masks` (the probabilities' layout)
    /// drop probabilities.
    #[allow(clippy::too_many_arguments)]
    pub fn bidir_attention_forward(
        &self,
        layout: &BidirLayout,
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        masks: Option<&CudaSlice<f32>>,
        probs: &mut CudaSlice<f32>,
        ctx: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "bidir_attention_forward";
        let rows = layout.tokens * layout.heads * layout.head_dim;
        for (name, buf) in [("q", q), ("k", k), ("v", v)] {
            expect_len(E, name, buf, rows)?;
        }
        expect_len(E, "ctx", ctx, rows)?;
        expect_len(E, "probs", probs, layout.prob_len)?;
        if let Some(m) = masks {
            expect_len(E, "masks", m, layout.prob_len)?;
        }
        if layout.tokens == 0 || layout.head_dim == 0 {
            return Ok(());
        }
        let (config, heads, dim, scale) = geometry(E, layout)?;
        let (f, sig) = self.kernel(E)?;
        let call = self
            .call(&f, sig)
            .input(q)
            .input(k)
            .input(v)
            .input(&layout.offsets)
            .input(&layout.prob_starts);
        // SAFETY: sizes checked above; grid (row tiles, heads, sequences),
        // each thread one query row of its sequence (rows past it return).
        unsafe {
            with_masks(call, masks)
                .int(&heads)
                .int(&dim)
                .float(&scale)
                .output(probs)
                .output(ctx)
                .launch(config)
        }
    }

    /// dq, dk, dv (set) from dctx and the forward's probabilities; `ds`
    /// (`[prob_len]`) is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn bidir_attention_backward(
        &self,
        layout: &BidirLayout,
        dctx: &CudaSlice<bf16>,
        q: &CudaSlice<bf16>,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        probs: &CudaSlice<f32>,
        masks: Option<&CudaSlice<f32>>,
        ds: &mut CudaSlice<f32>,
        dq: &mut CudaSlice<bf16>,
        dk: &mut CudaSlice<bf16>,
        dv: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const DQ: &str = "bidir_attention_backward_dq";
        const DKDV: &str = "bidir_attention_backward_dkdv";
        let rows = layout.tokens * layout.heads * layout.head_dim;
        for (name, buf) in [("dctx", dctx), ("q", q), ("k", k), ("v", v)] {
            expect_len(DQ, name, buf, rows)?;
        }
        expect_len(DQ, "dq", dq, rows)?;
        expect_len(DKDV, "dk", dk, rows)?;
        expect_len(DKDV, "dv", dv, rows)?;
        expect_len(DQ, "probs", probs, layout.prob_len)?;
        expect_len(DQ, "ds", ds, layout.prob_len)?;
        if let Some(m) = masks {
            expect_len(DQ, "masks", m, layout.prob_len)?;
        }
        if layout.tokens == 0 || layout.head_dim == 0 {
            return Ok(());
        }
        let (config, heads, dim, scale) = geometry(DQ, layout)?;
        let (f, sig) = self.kernel(DQ)?;
        let call = self
            .call(&f, sig)
            .input(dctx)
            .input(k)
            .input(v)
            .input(&layout.offsets)
            .input(&layout.prob_starts)
            .input(probs);
        // SAFETY: sizes checked above; one thread per query row.
        unsafe {
            with_masks(call, masks)
                .int(&heads)
                .int(&dim)
                .float(&scale)
                .output(ds)
                .output(dq)
                .launch(config)?;
        }
        let (f, sig) = self.kernel(DKDV)?;
        let call = self
            .call(&f, sig)
            .input(q)
            .input(dctx)
            .input(&layout.offsets)
            .input(&layout.prob_starts)
            .input(probs);
        let ds: &CudaSlice<f32> = ds;
        // SAFETY: sizes checked above; one thread per key row, after the dq
        // kernel on the same stream (it wrote ds).
        unsafe {
            with_masks(call, masks)
                .input(ds)
                .int(&heads)
                .int(&dim)
                .output(dk)
                .output(dv)
                .launch(config)
        }
    }
}

/// The mask buffer, or a null pointer without dropout.
fn with_masks<'a>(call: KernelCall<'a>, masks: Option<&'a CudaSlice<f32>>) -> KernelCall<'a> {
    match masks {
        Some(m) => call.input(m),
        None => call.null_input::<f32>(),
    }
}

/// Grid (row tiles, heads, sequences), heads and head dim as ints, and the
/// scale 1/√head_dim.
fn geometry(entry: &str, l: &BidirLayout) -> Result<(LaunchConfig, i32, i32, f32), CudaError> {
    let tiles = u32::try_from(l.max_len.div_ceil(ROWS_PER_BLOCK as usize).max(1))
        .map_err(|_| launch_error(entry, format!("a sequence of {} rows", l.max_len)))?;
    let heads = u32::try_from(l.heads).ok().filter(|&h| h <= 65_535);
    let seqs = u32::try_from(l.sequences).ok().filter(|&s| s <= 65_535);
    let (Some(h), Some(s)) = (heads, seqs) else {
        return Err(launch_error(
            entry,
            "more than 65,535 heads or sequences in one call".into(),
        ));
    };
    let config = LaunchConfig {
        grid_dim: (tiles, h, s.max(1)),
        block_dim: (ROWS_PER_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    Ok((
        config,
        as_int(entry, "heads", l.heads)?,
        as_int(entry, "head_dim", l.head_dim)?,
        1.0 / (l.head_dim as f32).sqrt(),
    ))
}
