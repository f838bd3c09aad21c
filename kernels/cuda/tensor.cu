// The small tensor operations the model runtime's CUDA backend needs around
// the matrix products: residual adds, biases, casts and f32 gradient
// accumulation. CPU references: the plain loops of
// stdlib/model/src/backend/cpu.rs (add_in_place) and kernels/src/cpu/matmul.rs
// (linear_forward's bias, linear_backward's bias gradient).
#include "common.cuh"

// x[i] += y[i].
extern "C" __global__ void add_bf16(bf16* __restrict__ x, const bf16* __restrict__ y, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] = to_bf16(to_f32(x[i]) + to_f32(y[i]));
}

// y[r·cols + c] += bias[c] for every row r.
extern "C" __global__ void add_bias_bf16(bf16* __restrict__ y, const bf16* __restrict__ bias, long long rows,
                                         int cols)
{
    const long long n = rows * cols;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = to_bf16(to_f32(y[i]) + to_f32(bias[i % cols]));
}

// dbias[c] += Σ_r dy[r·cols + c], rows in order: one thread per column, so
// the sum is deterministic (no atomics).
extern "C" __global__ void bias_grad_bf16(const bf16* __restrict__ dy, long long rows, int cols,
                                          float* __restrict__ dbias)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (long long r = 0; r < rows; ++r) s += to_f32(dy[r * cols + c]);
    dbias[c] += s;
}

// acc[i] += x[i]: a bf16 product's contribution to an f32 gradient.
extern "C" __global__ void accumulate_bf16_f32(float* __restrict__ acc, const bf16* __restrict__ x, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        acc[i] += to_f32(x[i]);
}

// y[i] = bf16(x[i]): the working copy of f32 master weights.
extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x, bf16* __restrict__ y, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = to_bf16(x[i]);
}

// x[i] *= mask[i]: a dropout mask (0 or 1/(1 − p), kept in f32) applied to
// an activation or its gradient. CPU reference: scale_by_mask in
// stdlib/model/src/backend/encoder.rs.
extern "C" __global__ void scale_by_mask_bf16(bf16* __restrict__ x, const float* __restrict__ mask, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] = to_bf16(to_f32(x[i]) * mask[i]);
}

// x[i] = tanh(x[i]) (the encoder's pooler). CPU reference: tanh_in_place in
// stdlib/model/src/backend/encoder.rs.
extern "C" __global__ void tanh_bf16(bf16* __restrict__ x, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] = to_bf16(tanhf(to_f32(x[i])));
}

// dy[i] *= 1 − y[i]², the backward of y = tanh(x). CPU reference:
// tanh_backward_in_place in stdlib/model/src/backend/encoder.rs.
extern "C" __global__ void tanh_backward_bf16(bf16* __restrict__ dy, const bf16* __restrict__ y, long long n)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float t = to_f32(y[i]);
        dy[i] = to_bf16(to_f32(dy[i]) * (1.0f - t * t));
    }
}
