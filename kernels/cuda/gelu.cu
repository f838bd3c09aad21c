// GELU, the exact (erf) form of torch's nn.GELU() and HF's "gelu":
// y = x·Φ(x) = x/2·(1 + erf(x/√2)); dy/dx = Φ(x) + x·φ(x). CUDA's erff is
// within 2 ulp (no fast-math). CPU reference: kernels/src/cpu/gelu.rs.
#include "common.cuh"

extern "C" __global__ void gelu_forward(const bf16* __restrict__ x, bf16* __restrict__ y, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = to_f32(x[i]);
        y[i] = to_bf16(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

extern "C" __global__ void gelu_backward(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                         bf16* __restrict__ dx, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = to_f32(x[i]);
        const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
        dx[i] = to_bf16(to_f32(dy[i]) * (cdf + v * pdf));
    }
}
