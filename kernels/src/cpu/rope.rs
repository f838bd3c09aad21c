//! Rotary position embeddings, rotate-half convention of HF Llama/Qwen:
//! out[i] = x[i]·cos − x[i+d/2]·sin, out[i+d/2] = x[i+d/2]·cos + x[i]·sin.

use rayon::prelude::*;

/// Precomputed cos/sin per position for head_dim/2 frequencies.
pub struct RopeTable {
    head_dim: usize,
    max_positions: usize,
    /// [max_positions, head_dim/2]
    cos: Vec<f32>,
    /// [max_positions, head_dim/2]
    sin: Vec<f32>,
}

impl RopeTable {
    /// Table for positions `0..max_positions` with inv_freq = theta^(-2i/d).
    ///
    /// The angles are rounded the way HF computes them (inv_freq and
    /// position·inv_freq in f32), so long positions match transformers'
    /// logits rather than a more exact but different rotation.
    pub fn new(head_dim: usize, theta: f64, max_positions: usize) -> Self {
        assert!(
            head_dim & 1 == 0 && head_dim > 0,
            "RopeTable: head_dim {head_dim} must be even"
        );
        let half = head_dim / 2;
        let theta32 = theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / theta32.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = vec![0.0f32; max_positions * half];
        let mut sin = vec![0.0f32; max_positions * half];
        cos.par_chunks_mut(half.max(1))
            .zip(sin.par_chunks_mut(half.max(1)))
            .enumerate()
            .for_each(|(pos, (c, s))| {
                for i in 0..half {
                    let angle = (pos as f32 * inv_freq[i]) as f64;
                    c[i] = angle.cos() as f32;
                    s[i] = angle.sin() as f32;
                }
            });
        RopeTable {
            head_dim,
            max_positions,
            cos,
            sin,
        }
    }

    /// The head dimension this table was built for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Number of positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

/// Rotates every head of every token; `sign` = +1 forward, −1 for the transpose.
fn rotate(x: &mut [f32], positions: &[u32], heads: usize, table: &RopeTable, sign: f32) {
    let d = table.head_dim;
    let half = d / 2;
    assert_eq!(
        x.len(),
        positions.len() * heads * d,
        "rope: x must be [t, heads, head_dim]"
    );
    let row = heads * d;
    if row == 0 {
        return;
    }
    let tokens_per_task = (1usize << 14).div_ceil(row).max(1);
    x.par_chunks_mut(row * tokens_per_task)
        .zip(positions.par_chunks(tokens_per_task))
        .for_each(|(xb, pb)| {
            for (xt, &pos) in xb.chunks_exact_mut(row).zip(pb) {
                let pos = pos as usize;
                assert!(
                    pos < table.max_positions,
                    "rope: position {pos} beyond the table's {} positions",
                    table.max_positions
                );
                let c = &table.cos[pos * half..(pos + 1) * half];
                let s = &table.sin[pos * half..(pos + 1) * half];
                for head in xt.chunks_exact_mut(d) {
                    let (lo, hi) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (lo[i], hi[i]);
                        let si = sign * s[i];
                        lo[i] = a * c[i] - b * si;
                        hi[i] = b * c[i] + a * si;
                    }
                }
            }
        });
}

/// In place on x laid out [t, heads, head_dim]; positions[i] is token i's position.
pub fn rope_forward(x: &mut [f32], positions: &[u32], heads: usize, table: &RopeTable) {
    rotate(x, positions, heads, table, 1.0);
}

/// In place: the transpose (rotation by -angle) applied to the gradient.
pub fn rope_backward(dx: &mut [f32], positions: &[u32], heads: usize, table: &RopeTable) {
    rotate(dx, positions, heads, table, -1.0);
}
