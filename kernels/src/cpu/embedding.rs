//! Token embedding lookup.

/// out[i] = table[ids[i]] (rows of `dim`).
pub fn embedding_forward(ids: &[u32], table: &[f32], dim: usize, out: &mut [f32]) {
    assert_eq!(out.len(), ids.len() * dim, "embedding_forward: out");
    let vocab = table.len().checked_div(dim).unwrap_or(0);
    for (row, &id) in out.chunks_exact_mut(dim.max(1)).zip(ids) {
        let id = id as usize;
        assert!(
            id < vocab,
            "embedding_forward: token id {id} outside the table's {vocab} rows"
        );
        row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
    }
}

/// dtable[ids[i]] += dout[i] (acc).
pub fn embedding_backward(ids: &[u32], dout: &[f32], dim: usize, dtable: &mut [f32]) {
    assert_eq!(dout.len(), ids.len() * dim, "embedding_backward: dout");
    let vocab = dtable.len().checked_div(dim).unwrap_or(0);
    for (row, &id) in dout.chunks_exact(dim.max(1)).zip(ids) {
        let id = id as usize;
        assert!(
            id < vocab,
            "embedding_backward: token id {id} outside the table's {vocab} rows"
        );
        for (d, g) in dtable[id * dim..(id + 1) * dim].iter_mut().zip(row) {
            *d += g;
        }
    }
}
