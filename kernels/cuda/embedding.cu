// Token embedding lookup and its backward (scatter-add into an f32 table).
// An id outside [0, vocab) never reads or writes past the table: the
// forward writes a row of NaN for it (visible downstream, never a silent
// wrong row) and the backward skips it. The host checks ids before upload.
// CPU reference: kernels/src/cpu/embedding.rs.
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

extern "C" __global__ void embedding_backward(const int* __restrict__ ids, const bf16* __restrict__ dout,
                                              int vocab, int dim, float* __restrict__ dtable)
{
    const long long t = blockIdx.x;
    const long long id = ids[t];
    if (id < 0 || id >= vocab) return;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) atomicAdd(&dtable[id * dim + i], to_f32(dout[t * dim + i]));
}
