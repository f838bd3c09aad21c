// LayerNorm with torch semantics, in f32: y = (x − mean)·rsqrt(var + eps)·w + b,
// var the biased variance (BERT / RoBERTa post-norm). One block per row
// forward; mean and rstd kept for the backward. CPU reference:
// kernels/src/cpu/layernorm.rs.
#include "common.cuh"

extern "C" __global__ void layernorm_forward(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                             const bf16* __restrict__ b, float eps, int dim,
                                             bf16* __restrict__ y, float* __restrict__ mean,
                                             float* __restrict__ rstd)
{
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const bf16* xr = x + row * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += to_f32(xr[i]);
    const float mu = block_sum(s, scratch) / dim;
    // Two passes (mean, then squared deviations) as torch does: no
    // cancellation for rows with a large mean.
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) { const float d = to_f32(xr[i]) - mu; ss += d * d; }
    const float r = rsqrtf(block_sum(ss, scratch) / dim + eps);
    if (threadIdx.x == 0) { mean[row] = mu; rstd[row] = r; }
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        y[row * dim + i] = to_bf16((to_f32(xr[i]) - mu) * r * to_f32(w[i]) + to_f32(b[i]));
}

// With x̂ = (x − mean)·r and g = w·dy: dx = r·(g − mean(g) − x̂·mean(g·x̂)).
// dw = Σ_rows dy·x̂ and db = Σ_rows dy go to per-block partial rows
// ([P, dim] each, block p owning rows p, p + P, ...), which `column_sum_f32`
// adds into dw and db: fixed summation order, no atomics.
extern "C" __global__ void layernorm_backward(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                                              const bf16* __restrict__ w, const float* __restrict__ mean,
                                              const float* __restrict__ rstd, int rows, int dim,
                                              bf16* __restrict__ dx, float* __restrict__ dw_partial,
                                              float* __restrict__ db_partial)
{
    __shared__ float scratch[32];
    float* wpart = dw_partial + (long long)blockIdx.x * dim;
    float* bpart = db_partial + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) { wpart[i] = 0.0f; bpart[i] = 0.0f; }
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float mu = mean[row], r = rstd[row];
        const bf16* xr = x + row * dim;
        const bf16* dyr = dy + row * dim;
        float sg = 0.0f, sgx = 0.0f;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float g = to_f32(w[i]) * to_f32(dyr[i]);
            sg += g;
            sgx += g * (to_f32(xr[i]) - mu) * r;
        }
        const float mean_g = block_sum(sg, scratch) / dim;
        const float mean_gx = block_sum(sgx, scratch) / dim;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float d = to_f32(dyr[i]);
            const float xhat = (to_f32(xr[i]) - mu) * r;
            dx[row * dim + i] = to_bf16(r * (to_f32(w[i]) * d - mean_g - xhat * mean_gx));
            wpart[i] += d * xhat;
            bpart[i] += d;
        }
    }
}
