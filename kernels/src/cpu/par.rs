//! Small helpers for splitting work across rayon tasks.

/// A raw pointer that rayon tasks may share. Used only where each task
/// writes a disjoint, strided set of indices that `par_chunks_mut` cannot
/// express (e.g. one head's rows of a `[t, heads, d]` tensor).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);

// SAFETY: callers guarantee that concurrent tasks touch disjoint indices.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// A mutable view of `len` elements at `offset`.
    ///
    /// # Safety
    /// The range must lie in the original allocation and no other task may
    /// access it while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

/// Rows per rayon task so that each task handles at least `min_elems` elements.
pub(crate) fn rows_per_task(cols: usize, min_elems: usize) -> usize {
    (min_elems / cols.max(1)).max(1)
}

/// Dot product with independent partial sums so LLVM vectorises it.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}
