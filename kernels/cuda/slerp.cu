// SLERP of a tensor pair with mergekit's rules, without a round trip to the
// host: (1) reduce |a|², |b|², a·b in f64 on the device, (2) one thread turns
// them into the two coefficients, (3) out = ca·a + cb·b.
//
// mergekit: normalise each side unless its norm is below 1e-8; if the
// |dot| of the normalised tensors exceeds 0.9995 interpolate linearly,
// else apply the spherical formula — in both cases to the ORIGINAL tensors.
// CPU reference: kernels/src/cpu/slerp.rs.
#include "common.cuh"

// sums[0] += Σa², sums[1] += Σb², sums[2] += Σab. `sums` starts zeroed.
template <typename T>
__device__ void slerp_reduce_impl(const T* __restrict__ a, const T* __restrict__ b, long long n,
                                  double* __restrict__ sums)
{
    __shared__ double scratch[32];
    double aa = 0.0, bb = 0.0, ab = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const double x = to_f32(a[i]), y = to_f32(b[i]);
        aa += x * x; bb += y * y; ab += x * y;
    }
    aa = block_sum(aa, scratch);
    bb = block_sum(bb, scratch);
    ab = block_sum(ab, scratch);
    if (threadIdx.x == 0) {
        atomicAdd(&sums[0], aa);
        atomicAdd(&sums[1], bb);
        atomicAdd(&sums[2], ab);
    }
}

extern "C" __global__ void slerp_reduce_f32(const float* a, const float* b, long long n, double* sums) {
    slerp_reduce_impl(a, b, n, sums);
}
extern "C" __global__ void slerp_reduce_bf16(const bf16* a, const bf16* b, long long n, double* sums) {
    slerp_reduce_impl(a, b, n, sums);
}

// coeffs[0] = weight of a, coeffs[1] = weight of b, coeffs[2] = 1 when the
// linear branch was taken (for logging).
extern "C" __global__ void slerp_coefficients(const double* sums, float t, double dot_threshold,
                                              double norm_eps, float* coeffs)
{
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    double na = sqrt(sums[0]), nb = sqrt(sums[1]);
    if (!(na > norm_eps)) na = 1.0;
    if (!(nb > norm_eps)) nb = 1.0;
    const double dot = sums[2] / (na * nb);
    if (fabs(dot) > dot_threshold) {
        coeffs[0] = 1.0f - t;
        coeffs[1] = t;
        coeffs[2] = 1.0f;
        return;
    }
    const double theta0 = acos(dot);
    const double sin0 = sin(theta0);
    const double theta_t = theta0 * (double)t;
    coeffs[0] = (float)(sin(theta0 - theta_t) / sin0);
    coeffs[1] = (float)(sin(theta_t) / sin0);
    coeffs[2] = 0.0f;
}

template <typename T>
__device__ void slerp_apply_impl(const T* __restrict__ a, const T* __restrict__ b, long long n,
                                 const float* __restrict__ coeffs, T* __restrict__ out)
{
    const float ca = coeffs[0], cb = coeffs[1];
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float r = ca * to_f32(a[i]) + cb * to_f32(b[i]);
        if constexpr (sizeof(T) == 2) out[i] = to_bf16(r); else out[i] = r;
    }
}

extern "C" __global__ void slerp_apply_f32(const float* a, const float* b, long long n, const float* coeffs, float* out) {
    slerp_apply_impl(a, b, n, coeffs, out);
}
extern "C" __global__ void slerp_apply_bf16(const bf16* a, const bf16* b, long long n, const float* coeffs, bf16* out) {
    slerp_apply_impl(a, b, n, coeffs, out);
}
