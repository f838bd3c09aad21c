// Fused softmax cross-entropy over a row of logits: the loss of the row and,
// in the same pass, dlogits = scale·(softmax − onehot) written in place of
// the logits' gradient. Rows whose target is -100 count nothing and get a
// zero gradient; a target outside [0, vocab) gets a NaN loss and a zero
// gradient, so a bad label is visible instead of a read past the row.
// One block per row. CPU reference:
// kernels/src/cpu/cross_entropy.rs.
#include "common.cuh"

extern "C" __global__ void cross_entropy_forward_backward(
    const bf16* __restrict__ logits, const int* __restrict__ targets, int vocab, float scale,
    float* __restrict__ losses, bf16* __restrict__ dlogits)
{
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const bf16* lr = logits + row * (long long)vocab;
    bf16* dr = dlogits + row * (long long)vocab;
    const int target = targets[row];
    if (target < 0 || target >= vocab) {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) dr[i] = to_bf16(0.0f);
        if (threadIdx.x == 0) losses[row] = target == -100 ? 0.0f : __int_as_float(0x7fc00000);
        return;
    }
    float m = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, to_f32(lr[i]));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += __expf(to_f32(lr[i]) - m);
    s = block_sum(s, scratch);
    const float lse = m + logf(s);
    if (threadIdx.x == 0) losses[row] = lse - to_f32(lr[target]);
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float p = __expf(to_f32(lr[i]) - lse);
        dr[i] = to_bf16(scale * (p - (i == target ? 1.0f : 0.0f)));
    }
}
