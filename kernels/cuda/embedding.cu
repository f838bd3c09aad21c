// Token embedding lookup and its backward. CPU reference:
// kernels/src/cpu/embedding.rs.
//
// The backward has no atomics: the host groups the batch's token positions
// by id (`EmbeddingBuckets`: the distinct ids, and for each the positions
// that hold it, in order), and one block per distinct id sums its
// positions' gradient rows in f32 and adds the sum to that id's table row,
// which no other block touches. The summation order is fixed, so the result
// is the same bits on every run (bit-exact resume).
//
// The forward bounds ids by `vocab`: an id outside the table gives a row of
// NaN (visible downstream, never a silent wrong row) instead of a read past
// the table. The host checks ids before upload.
#include "common.cuh"

extern "C" __global__ void embedding_forward(const int* __restrict__ ids, const bf16* __restrict__ table,
                                             int vocab, int dim, bf16* __restrict__ out)
{
    const long long t = blockIdx.x;
    const long long id = ids[t];
    const bool valid = id >= 0 && id < vocab;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[t * dim + i] = valid ? table[id * dim + i] : to_bf16(__int_as_float(0x7fc00000));
}

// Block u: dtable[ids[u]] += Σ_{j in starts[u]..starts[u+1]} dout[positions[j]].
extern "C" __global__ void embedding_backward(const int* __restrict__ ids, const int* __restrict__ starts,
                                              const int* __restrict__ positions, const bf16* __restrict__ dout,
                                              int dim, float* __restrict__ dtable)
{
    const long long u = blockIdx.x;
    const long long id = ids[u];
    const int begin = starts[u], end = starts[u + 1];
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float s = 0.0f;
        for (int j = begin; j < end; ++j) s += to_f32(dout[(long long)positions[j] * dim + i]);
        dtable[id * dim + i] += s;
    }
}
