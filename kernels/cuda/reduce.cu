// Reductions for global-norm gradient clipping: Σx² over many tensors into
// one f64 accumulator, and an in-place scale. CPU reference:
// kernels/src/cpu/reduce.rs.
#include "common.cuh"

template <typename T>
__device__ void sum_of_squares_impl(const T* __restrict__ x, long long n, double* __restrict__ acc)
{
    __shared__ double scratch[32];
    double s = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double v = to_f32(x[i]);
        s += v * v;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}

extern "C" __global__ void sum_of_squares_f32(const float* x, long long n, double* acc) { sum_of_squares_impl(x, n, acc); }
extern "C" __global__ void sum_of_squares_bf16(const bf16* x, long long n, double* acc) { sum_of_squares_impl(x, n, acc); }

extern "C" __global__ void scale_f32(float* x, long long n, float s)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) x[i] *= s;
}

// out[i] += Σ_p partial[p·dim + i], p in order: the second pass of the norms'
// weight gradients (deterministic, no atomics). One thread per column.
extern "C" __global__ void column_sum_f32(const float* __restrict__ partial, int parts, int dim,
                                          float* __restrict__ out)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= dim) return;
    float s = 0.0f;
    for (int p = 0; p < parts; ++p) s += partial[(long long)p * dim + i];
    out[i] += s;
}
