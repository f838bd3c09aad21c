// Fused AdamW: f32 master weights and moments, bf16 gradients in, bf16
// parameters out, in one pass over memory (4+4+4 read, 4+4+4+2 written, 2
// read for the gradient: 28 bytes a parameter).
//
// Semantics of torch.optim.AdamW: decoupled weight decay applied to the
// master weight before the Adam update, bias-corrected moments.
// `grad_scale` folds global-norm clipping into the same pass.
// CPU reference: kernels/src/cpu/adamw.rs.
#include "common.cuh"

extern "C" __global__ void adamw_bf16(
    float* __restrict__ master, float* __restrict__ m, float* __restrict__ v,
    const bf16* __restrict__ grad, bf16* __restrict__ param, long long n,
    float lr, float beta1, float beta2, float eps, float weight_decay,
    float bias_correction1, float bias_correction2, float grad_scale)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = to_f32(grad[i]) * grad_scale;
        float p = master[i];
        p -= lr * weight_decay * p;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi / bias_correction2) + eps;
        p -= lr * (mi / bias_correction1) / denom;
        master[i] = p;
        param[i] = to_bf16(p);
    }
}

// The same update for f32 gradients and parameters (no separate bf16 copy).
extern "C" __global__ void adamw_f32(
    float* __restrict__ param, float* __restrict__ m, float* __restrict__ v,
    const float* __restrict__ grad, long long n,
    float lr, float beta1, float beta2, float eps, float weight_decay,
    float bias_correction1, float bias_correction2, float grad_scale)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = grad[i] * grad_scale;
        float p = param[i];
        p -= lr * weight_decay * p;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p -= lr * (mi / bias_correction1) / (sqrtf(vi / bias_correction2) + eps);
        param[i] = p;
    }
}
