// Rotary position embedding, rotate-half convention of HF Llama/Qwen:
// x' = x·cos + rotate_half(x)·sin with inv_freq_i = theta^(-2i/d).
// In place on [tokens, heads, head_dim]; one thread per (token, head, i<d/2).
// Backward applies the transposed rotation (angle → −angle) to the gradient.
// CPU reference: kernels/src/cpu/rope.rs.
#include "common.cuh"

__device__ __forceinline__ void rope_rotate(bf16* x, const int* positions, int heads, int head_dim,
                                            float theta, float sign, long long total)
{
    const int half = head_dim / 2;
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int i = idx % half;
    const long long th = idx / half;            // token * heads + head
    const long long token = th / heads;
    const float inv_freq = powf(theta, -2.0f * (float)i / (float)head_dim);
    float s, c;
    sincosf((float)positions[token] * inv_freq, &s, &c);
    s *= sign;
    bf16* row = x + th * head_dim;
    const float a = to_f32(row[i]), b = to_f32(row[i + half]);
    row[i] = to_bf16(a * c - b * s);
    row[i + half] = to_bf16(b * c + a * s);
}

extern "C" __global__ void rope_forward(bf16* x, const int* positions, int tokens, int heads,
                                        int head_dim, float theta)
{
    rope_rotate(x, positions, heads, head_dim, theta, 1.0f, (long long)tokens * heads * (head_dim / 2));
}

extern "C" __global__ void rope_backward(bf16* dx, const int* positions, int tokens, int heads,
                                         int head_dim, float theta)
{
    rope_rotate(dx, positions, heads, head_dim, theta, -1.0f, (long long)tokens * heads * (head_dim / 2));
}
