// Token embedding lookup and its backward (scatter-add into an f32 table).
// CPU reference: kernels/src/cpu/embedding.rs.
#include "common.cuh"

extern "C" __global__ void embedding_forward(const int* __restrict__ ids, const bf16* __restrict__ table,
                                             int dim, bf16* __restrict__ out)
{
    const long long t = blockIdx.x;
    const long long id = ids[t];
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[t * dim + i] = table[id * dim + i];
}

extern "C" __global__ void embedding_backward(const int* __restrict__ ids, const bf16* __restrict__ dout,
                                              int dim, float* __restrict__ dtable)
{
    const long long t = blockIdx.x;
    const long long id = ids[t];
    for (int i = threadIdx.x; i < dim; i += blockDim.x) atomicAdd(&dtable[id * dim + i], to_f32(dout[t * dim + i]));
}
