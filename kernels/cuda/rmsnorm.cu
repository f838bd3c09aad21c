// RMSNorm as Hugging Face computes it: in f32, y = w · x · rsqrt(mean(x²) + eps).
// One block per row. CPU reference: kernels/src/cpu/rmsnorm.rs.
#include "common.cuh"

extern "C" __global__ void rmsnorm_forward(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                           float eps, int dim, bf16* __restrict__ y,
                                           float* __restrict__ rstd)
{
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const bf16* xr = x + row * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) { const float v = to_f32(xr[i]); ss += v * v; }
    ss = block_sum(ss, scratch);
    const float r = rsqrtf(ss / dim + eps);
    if (threadIdx.x == 0) rstd[row] = r;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        y[row * dim + i] = to_bf16(to_f32(w[i]) * (to_f32(xr[i]) * r));
}

// dx = r·(w∘dy) − r³/dim · x · Σ(w∘dy∘x), and dw's partial sums without
// atomics: block p handles rows p, p + P, p + 2P, ... (P = gridDim.x) and
// owns row p of `dw_partial` [P, dim], which `column_sum_f32` then adds
// into dw. The order of every sum is fixed, so the result is the same bits
// on every run (bit-exact resume needs that; float atomics would not give it).
extern "C" __global__ void rmsnorm_backward(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                            const bf16* __restrict__ w, const float* __restrict__ rstd,
                                            int rows, int dim, bf16* __restrict__ dx,
                                            float* __restrict__ dw_partial)
{
    __shared__ float scratch[32];
    float* part = dw_partial + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) part[i] = 0.0f;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float r = rstd[row];
        const bf16* xr = x + row * dim;
        const bf16* dyr = dy + row * dim;
        float dot = 0.0f;
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            dot += to_f32(w[i]) * to_f32(dyr[i]) * to_f32(xr[i]);
        dot = block_sum(dot, scratch);
        const float c = r * r * r * dot / dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float xi = to_f32(xr[i]), gi = to_f32(dyr[i]);
            dx[row * dim + i] = to_bf16(r * to_f32(w[i]) * gi - c * xi);
            part[i] += gi * xi * r;
        }
    }
}
