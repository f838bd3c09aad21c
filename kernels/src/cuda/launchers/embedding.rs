//! Token embeddings: the lookup, and the backward grouped by id on the host.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::{as_int, block_per_row, expect_len, launch_error};
use crate::cuda::{CudaError, Gpu};

impl Gpu {
    /// out `[tokens, dim]` = rows `ids` of `table` `[vocab, dim]`. An id
    /// outside the table gives a row of NaN (the host checks ids before
    /// they are uploaded; this keeps a bad one visible instead of reading
    /// past the table).
    pub fn embedding_forward(
        &self,
        ids: &CudaSlice<i32>,
        table: &CudaSlice<bf16>,
        dim: usize,
        out: &mut CudaSlice<bf16>,
    ) -> Result<(), CudaError> {
        const E: &str = "embedding_forward";
        if ids.is_empty() || dim == 0 {
            return Ok(());
        }
        let tokens = ids.len();
        let vocab = table_rows(E, table.len(), dim)?;
        expect_len(E, "out", out, tokens * dim)?;
        let (dim_i, vocab_i) = (as_int(E, "dim", dim)?, as_int(E, "vocab", vocab)?);
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; one block per token; ids bounded by vocab in the kernel.
        unsafe {
            self.call(&f, sig)
                .input(ids)
                .input(table)
                .int(&vocab_i)
                .int(&dim_i)
                .output(out)
                .launch(block_per_row(E, tokens)?)
        }
    }

    /// dtable `[vocab, dim]` += the rows of dout `[tokens, dim]` summed by
    /// token id, for the batch's ids as the host has them. The ids are
    /// grouped on the host ([`EmbeddingBuckets`]) and each distinct id's
    /// row is summed by one block: no atomics, the same bits on every run.
    pub fn embedding_backward(
        &self,
        ids: &[u32],
        dout: &CudaSlice<bf16>,
        dim: usize,
        dtable: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        const E: &str = "embedding_backward";
        let vocab = table_rows(E, dtable.len(), dim)?;
        expect_len(E, "dout", dout, ids.len() * dim)?;
        let buckets = EmbeddingBuckets::new(ids, vocab).map_err(|m| launch_error(E, m))?;
        if buckets.ids.is_empty() {
            return Ok(());
        }
        let s = self.stream();
        let upload = |v: &[i32]| {
            s.clone_htod(v)
                .map_err(|e| launch_error(E, format!("{e:?}")))
        };
        let (d_ids, d_starts, d_positions) = (
            upload(&buckets.ids)?,
            upload(&buckets.starts)?,
            upload(&buckets.positions)?,
        );
        let dim_i = as_int(E, "dim", dim)?;
        let (f, sig) = self.kernel(E)?;
        // SAFETY: sizes checked above; ids < vocab and positions < tokens
        // (EmbeddingBuckets checks both); one block per distinct id.
        unsafe {
            self.call(&f, sig)
                .input(&d_ids)
                .input(&d_starts)
                .input(&d_positions)
                .input(dout)
                .int(&dim_i)
                .output(dtable)
                .launch(block_per_row(E, buckets.ids.len())?)
        }
    }
}

/// A batch's token positions grouped by id, for the embedding backward:
/// the distinct ids in increasing order, `starts[u]..starts[u + 1]` the
/// range of `positions` that hold id `ids[u]`, positions in increasing order.
#[derive(Debug, PartialEq, Eq)]
pub struct EmbeddingBuckets {
    pub ids: Vec<i32>,
    pub starts: Vec<i32>,
    pub positions: Vec<i32>,
}

impl EmbeddingBuckets {
    /// Groups `ids`; an id outside `[0, vocab)` is an error naming its position.
    pub fn new(ids: &[u32], vocab: usize) -> Result<EmbeddingBuckets, String> {
        if ids.len() > i32::MAX as usize {
            return Err(format!(
                "{} tokens exceed the kernel's int positions",
                ids.len()
            ));
        }
        if let Some((at, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(format!(
                "token {at} has id {id}, outside the table's {vocab} rows"
            ));
        }
        let mut order: Vec<i32> = (0..ids.len() as i32).collect();
        // Stable, so positions of one id stay in increasing order.
        order.sort_by_key(|&p| ids[p as usize]);
        let mut buckets = EmbeddingBuckets {
            ids: Vec::new(),
            starts: Vec::new(),
            positions: order,
        };
        for (j, &p) in buckets.positions.iter().enumerate() {
            let id = ids[p as usize] as i32;
            if buckets.ids.last() != Some(&id) {
                buckets.ids.push(id);
                buckets.starts.push(j as i32);
            }
        }
        buckets.starts.push(ids.len() as i32);
        Ok(buckets)
    }
}

fn table_rows(entry: &str, len: usize, dim: usize) -> Result<usize, CudaError> {
    if dim == 0 || !len.is_multiple_of(dim) {
        return Err(launch_error(
            entry,
            format!("a table of {len} elements is not [vocab, {dim}]"),
        ));
    }
    Ok(len / dim)
}

#[cfg(test)]
mod tests {
    use super::EmbeddingBuckets;

    #[test]
    fn embedding_buckets_group_positions_by_id_in_order() {
        // ids by position:  0  1  2  3  4  5
        let ids = [5u32, 0, 5, 3, 0, 5];
        let b = EmbeddingBuckets::new(&ids, 6).unwrap();
        assert_eq!(b.ids, vec![0, 3, 5]);
        assert_eq!(b.starts, vec![0, 2, 3, 6]);
        assert_eq!(b.positions, vec![1, 4, 3, 0, 2, 5]);
    }

    #[test]
    fn embedding_buckets_of_no_tokens_are_empty() {
        let b = EmbeddingBuckets::new(&[], 6).unwrap();
        assert!(b.ids.is_empty());
        assert_eq!(b.starts, vec![0]);
    }

    #[test]
    fn an_id_outside_the_table_is_an_error_naming_its_position() {
        let e = EmbeddingBuckets::new(&[1, 2, 6], 6).unwrap_err();
        assert!(e.contains("token 2 has id 6"), "{e}");
    }
}
