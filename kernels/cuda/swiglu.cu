// SwiGLU: out = silu(gate) · up, and its backward. CPU reference:
// kernels/src/cpu/swiglu.rs.
#include "common.cuh"

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

extern "C" __global__ void swiglu_forward(const bf16* __restrict__ gate, const bf16* __restrict__ up,
                                          bf16* __restrict__ out, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = to_f32(gate[i]);
        out[i] = to_bf16(g * sigmoid(g) * to_f32(up[i]));
    }
}

// d/dg silu(g) = s·(1 + g·(1 − s)) with s = sigmoid(g).
extern "C" __global__ void swiglu_backward(const bf16* __restrict__ gate, const bf16* __restrict__ up,
                                           const bf16* __restrict__ dout, bf16* __restrict__ dgate,
                                           bf16* __restrict__ dup, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = to_f32(gate[i]), u = to_f32(up[i]), d = to_f32(dout[i]);
        const float s = sigmoid(g);
        dgate[i] = to_bf16(d * u * s * (1.0f + g * (1.0f - s)));
        dup[i] = to_bf16(d * g * s);
    }
}
