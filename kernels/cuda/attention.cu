// Causal grouped-query attention in the flash style: key/value tiles staged
// in shared memory, an online softmax per query row, f32 accumulation, and
// no T×S score matrix in global memory. bf16 in and out; the forward saves
// the log-sum-exp of each row for the backward. Head dims 64 and 128.
//
// Layouts (one batch of equal-length sequences):
//   q, out, dq, dout: [B, T, Hq, D]    k, v, dk, dv: [B, S, Hkv, D]
//   lse, delta: [B, Hq, T]             doc_ids: [B, S] or null
// Query i sits at key index S − T + i (causal). With doc_ids, a query sees
// only keys of its own document (packed sequences); with window > 0 only
// keys less than `window` positions back (Mistral's sliding window).
// Query head h reads kv head h / (Hq / Hkv).
//
// The backward follows FlashAttention's recomputation: a preprocessing pass
// computes delta_i = dO_i·O_i, then one kernel accumulates dK and dV per key
// row over every query head of its group, and another accumulates dQ per
// query row, so no atomics are needed.
// CPU reference: kernels/src/cpu/attention.rs.
#include "common.cuh"

struct AttnDims {
    int T, S, Hq, Hkv;
    float scale;
    int window;  // 0: no sliding window
};

__device__ __forceinline__ bool attn_allowed(const AttnDims& d, const int* doc, int qpos, int j) {
    if (j > qpos) return false;
    if (d.window > 0 && qpos - j >= d.window) return false;
    if (doc != nullptr && doc[j] != doc[qpos]) return false;
    return true;
}

// One thread per query row; BR rows per block; key tiles of BC rows.
template <int D, int BR, int BC>
__device__ void attention_forward_impl(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       const bf16* __restrict__ v, const int* __restrict__ doc_ids,
                                       bf16* __restrict__ out, float* __restrict__ lse, AttnDims d)
{
    __shared__ bf16 ks[BC][D];
    __shared__ bf16 vs[BC][D];
    __shared__ float scores[BR][BC + 1];

    const int b = blockIdx.z, h = blockIdx.y, hk = h / (d.Hq / d.Hkv);
    const int i = blockIdx.x * BR + threadIdx.x;
    const bool active = i < d.T;
    const int qpos = d.S - d.T + i;
    const int* doc = doc_ids ? doc_ids + (long long)b * d.S : nullptr;

    float qr[D], o[D];
    const bf16* qrow = q + (((long long)b * d.T + i) * d.Hq + h) * D;
    for (int x = 0; x < D; ++x) { qr[x] = active ? to_f32(qrow[x]) * d.scale : 0.0f; o[x] = 0.0f; }
    float m = -INFINITY, l = 0.0f;

    // Keys beyond the block's last query are never visible.
    const int last_q = min(d.T - 1, (int)(blockIdx.x * BR + BR - 1));
    const int key_end = d.S - d.T + last_q + 1;
    for (int j0 = 0; j0 < key_end; j0 += BC) {
        __syncthreads();
        for (int e = threadIdx.x; e < BC * D; e += BR) {
            const int r = e / D, c = e % D, j = j0 + r;
            const long long off = (((long long)b * d.S + j) * d.Hkv + hk) * D + c;
            ks[r][c] = j < d.S ? k[off] : to_bf16(0.0f);
            vs[r][c] = j < d.S ? v[off] : to_bf16(0.0f);
        }
        __syncthreads();
        if (!active) continue;
        float tile_max = -INFINITY;
        for (int r = 0; r < BC; ++r) {
            const int j = j0 + r;
            float s = -INFINITY;
            if (j < d.S && attn_allowed(d, doc, qpos, j)) {
                s = 0.0f;
                for (int x = 0; x < D; ++x) s += qr[x] * to_f32(ks[r][x]);
            }
            scores[threadIdx.x][r] = s;
            tile_max = fmaxf(tile_max, s);
        }
        if (tile_max == -INFINITY) continue;
        const float m_new = fmaxf(m, tile_max);
        const float corr = __expf(m - m_new);
        l *= corr;
        for (int x = 0; x < D; ++x) o[x] *= corr;
        for (int r = 0; r < BC; ++r) {
            const float s = scores[threadIdx.x][r];
            if (s == -INFINITY) continue;
            const float p = __expf(s - m_new);
            l += p;
            for (int x = 0; x < D; ++x) o[x] += p * to_f32(vs[r][x]);
        }
        m = m_new;
    }
    if (!active) return;
    bf16* orow = out + (((long long)b * d.T + i) * d.Hq + h) * D;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int x = 0; x < D; ++x) orow[x] = to_bf16(o[x] * inv);
    lse[((long long)b * d.Hq + h) * d.T + i] = l > 0.0f ? m + logf(l) : -INFINITY;
}

extern "C" __global__ void attention_forward_d64(const bf16* q, const bf16* k, const bf16* v, const int* doc_ids,
                                                 bf16* out, float* lse, AttnDims d) {
    attention_forward_impl<64, 64, 64>(q, k, v, doc_ids, out, lse, d);
}
extern "C" __global__ void attention_forward_d128(const bf16* q, const bf16* k, const bf16* v, const int* doc_ids,
                                                  bf16* out, float* lse, AttnDims d) {
    attention_forward_impl<128, 32, 32>(q, k, v, doc_ids, out, lse, d);
}

// delta[b, h, i] = Σ_x dO[b, i, h, x] · O[b, i, h, x]; one thread per row.
template <int D>
__device__ void attention_backward_delta_impl(const bf16* __restrict__ out, const bf16* __restrict__ dout,
                                              float* __restrict__ delta, AttnDims d, int B)
{
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long rows = (long long)B * d.Hq * d.T;
    if (idx >= rows) return;
    const int i = idx % d.T;
    const int h = (idx / d.T) % d.Hq;
    const int b = idx / ((long long)d.T * d.Hq);
    const long long off = (((long long)b * d.T + i) * d.Hq + h) * D;
    float s = 0.0f;
    for (int x = 0; x < D; ++x) s += to_f32(dout[off + x]) * to_f32(out[off + x]);
    delta[idx] = s;
}

extern "C" __global__ void attention_backward_delta_d64(const bf16* out, const bf16* dout, float* delta, AttnDims d, int B) {
    attention_backward_delta_impl<64>(out, dout, delta, d, B);
}
extern "C" __global__ void attention_backward_delta_d128(const bf16* out, const bf16* dout, float* delta, AttnDims d, int B) {
    attention_backward_delta_impl<128>(out, dout, delta, d, B);
}

// dQ: one thread per query row, key tiles in shared memory.
template <int D, int BR, int BC>
__device__ void attention_backward_dq_impl(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                           const bf16* __restrict__ v, const int* __restrict__ doc_ids,
                                           const bf16* __restrict__ dout, const float* __restrict__ lse,
                                           const float* __restrict__ delta, bf16* __restrict__ dq, AttnDims d)
{
    __shared__ bf16 ks[BC][D];
    __shared__ bf16 vs[BC][D];
    __shared__ bf16 dos[BR][D];

    const int b = blockIdx.z, h = blockIdx.y, hk = h / (d.Hq / d.Hkv);
    const int i = blockIdx.x * BR + threadIdx.x;
    const bool active = i < d.T;
    const int qpos = d.S - d.T + i;
    const int* doc = doc_ids ? doc_ids + (long long)b * d.S : nullptr;
    const long long qoff = (((long long)b * d.T + i) * d.Hq + h) * D;

    float qr[D], acc[D];
    for (int x = 0; x < D; ++x) {
        qr[x] = active ? to_f32(q[qoff + x]) : 0.0f;
        acc[x] = 0.0f;
        dos[threadIdx.x][x] = active ? dout[qoff + x] : to_bf16(0.0f);
    }
    const float row_lse = active ? lse[((long long)b * d.Hq + h) * d.T + i] : 0.0f;
    const float row_delta = active ? delta[((long long)b * d.Hq + h) * d.T + i] : 0.0f;

    const int last_q = min(d.T - 1, (int)(blockIdx.x * BR + BR - 1));
    const int key_end = d.S - d.T + last_q + 1;
    for (int j0 = 0; j0 < key_end; j0 += BC) {
        __syncthreads();
        for (int e = threadIdx.x; e < BC * D; e += BR) {
            const int r = e / D, c = e % D, j = j0 + r;
            const long long off = (((long long)b * d.S + j) * d.Hkv + hk) * D + c;
            ks[r][c] = j < d.S ? k[off] : to_bf16(0.0f);
            vs[r][c] = j < d.S ? v[off] : to_bf16(0.0f);
        }
        __syncthreads();
        if (!active) continue;
        for (int r = 0; r < BC; ++r) {
            const int j = j0 + r;
            if (j >= d.S || !attn_allowed(d, doc, qpos, j)) continue;
            float s = 0.0f, dp = 0.0f;
            for (int x = 0; x < D; ++x) {
                s += qr[x] * to_f32(ks[r][x]);
                dp += to_f32(dos[threadIdx.x][x]) * to_f32(vs[r][x]);
            }
            const float p = __expf(s * d.scale - row_lse);
            const float ds = p * (dp - row_delta) * d.scale;
            for (int x = 0; x < D; ++x) acc[x] += ds * to_f32(ks[r][x]);
        }
    }
    if (!active) return;
    for (int x = 0; x < D; ++x) dq[qoff + x] = to_bf16(acc[x]);
}

extern "C" __global__ void attention_backward_dq_d64(const bf16* q, const bf16* k, const bf16* v, const int* doc_ids,
                                                     const bf16* dout, const float* lse, const float* delta, bf16* dq, AttnDims d) {
    attention_backward_dq_impl<64, 64, 64>(q, k, v, doc_ids, dout, lse, delta, dq, d);
}
extern "C" __global__ void attention_backward_dq_d128(const bf16* q, const bf16* k, const bf16* v, const int* doc_ids,
                                                      const bf16* dout, const float* lse, const float* delta, bf16* dq, AttnDims d) {
    attention_backward_dq_impl<128, 32, 32>(q, k, v, doc_ids, dout, lse, delta, dq, d);
}

// dK, dV: one thread per key row, summed over every query head of the kv
// head's group and every query tile that can see the row.
template <int D, int BR, int BC>
__device__ void attention_backward_dkdv_impl(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                             const bf16* __restrict__ v, const int* __restrict__ doc_ids,
                                             const bf16* __restrict__ dout, const float* __restrict__ lse,
                                             const float* __restrict__ delta, bf16* __restrict__ dk,
                                             bf16* __restrict__ dv, AttnDims d)
{
    __shared__ bf16 qs[BR][D];
    __shared__ bf16 dos[BR][D];
    __shared__ bf16 kv_own[BC][2][D];
    __shared__ float lse_s[BR];
    __shared__ float delta_s[BR];

    const int b = blockIdx.z, hk = blockIdx.y, group = d.Hq / d.Hkv;
    const int j = blockIdx.x * BC + threadIdx.x;
    const bool active = j < d.S;
    const int* doc = doc_ids ? doc_ids + (long long)b * d.S : nullptr;
    const long long koff = (((long long)b * d.S + j) * d.Hkv + hk) * D;

    float dka[D], dva[D];
    for (int x = 0; x < D; ++x) {
        kv_own[threadIdx.x][0][x] = active ? k[koff + x] : to_bf16(0.0f);
        kv_own[threadIdx.x][1][x] = active ? v[koff + x] : to_bf16(0.0f);
        dka[x] = 0.0f;
        dva[x] = 0.0f;
    }
    // The first query that can see the block's first key.
    const int first_key = blockIdx.x * BC;
    const int i_start = max(0, first_key - (d.S - d.T));
    for (int hh = 0; hh < group; ++hh) {
        const int h = hk * group + hh;
        for (int i0 = (i_start / BR) * BR; i0 < d.T; i0 += BR) {
            __syncthreads();
            for (int e = threadIdx.x; e < BR * D; e += BC) {
                const int r = e / D, c = e % D, i = i0 + r;
                const long long off = (((long long)b * d.T + i) * d.Hq + h) * D + c;
                qs[r][c] = i < d.T ? q[off] : to_bf16(0.0f);
                dos[r][c] = i < d.T ? dout[off] : to_bf16(0.0f);
            }
            for (int r = threadIdx.x; r < BR; r += BC) {
                const int i = i0 + r;
                lse_s[r] = i < d.T ? lse[((long long)b * d.Hq + h) * d.T + i] : 0.0f;
                delta_s[r] = i < d.T ? delta[((long long)b * d.Hq + h) * d.T + i] : 0.0f;
            }
            __syncthreads();
            if (!active) continue;
            for (int r = 0; r < BR; ++r) {
                const int i = i0 + r;
                if (i >= d.T || !attn_allowed(d, doc, d.S - d.T + i, j)) continue;
                float s = 0.0f, dp = 0.0f;
                for (int x = 0; x < D; ++x) {
                    s += to_f32(qs[r][x]) * to_f32(kv_own[threadIdx.x][0][x]);
                    dp += to_f32(dos[r][x]) * to_f32(kv_own[threadIdx.x][1][x]);
                }
                const float p = __expf(s * d.scale - lse_s[r]);
                const float ds = p * (dp - delta_s[r]) * d.scale;
                for (int x = 0; x < D; ++x) {
                    dva[x] += p * to_f32(dos[r][x]);
                    dka[x] += ds * to_f32(qs[r][x]);
                }
            }
        }
    }
    if (!active) return;
    for (int x = 0; x < D; ++x) {
        dk[koff + x] = to_bf16(dka[x]);
        dv[koff + x] = to_bf16(dva[x]);
    }
}

extern "C" __global__ void attention_backward_dkdv_d64(const bf16* q, const bf16* k, const bf16* v, const int* doc_ids,
                                                       const bf16* dout, const float* lse, const float* delta,
                                                       bf16* dk, bf16* dv, AttnDims d) {
    attention_backward_dkdv_impl<64, 64, 64>(q, k, v, doc_ids, dout, lse, delta, dk, dv, d);
}
extern "C" __global__ void attention_backward_dkdv_d128(const bf16* q, const bf16* k, const bf16* v, const int* doc_ids,
                                                        const bf16* dout, const float* lse, const float* delta,
                                                        bf16* dk, bf16* dv, AttnDims d) {
    attention_backward_dkdv_impl<128, 32, 32>(q, k, v, doc_ids, dout, lse, delta, dk, dv, d);
}

// ---------------------------------------------------------------------------
// Bidirectional attention of an encoder (BERT / RoBERTa) over a ragged batch,
// with dropout on the probabilities: sequence s is rows offsets[s] ..
// offsets[s + 1] of q, k, v, ctx ([T, heads·D], head h at columns h·D ..)
// and attends to all of its own rows (a padding mask, without the padding).
// The probabilities P are materialised in f32 (the dropout masks, drawn on
// the host, multiply them), one n×n block per (sequence, head) at
// prob_starts[s]·heads + h·n·n, rows = queries; masks (same layout, 0 or
// 1/(1 − p)) may be null. One thread per (query or key row, head,
// sequence); the backward needs no atomics: dq per query row, then dk, dv
// per key row from the stored dS. Any head dim.
// CPU reference: stdlib/model/src/encoder/attention.rs.

__device__ __forceinline__ long long bidir_block(const int* prob_starts, int s, int h, int heads, int n) {
    return (long long)prob_starts[s] * heads + (long long)h * n * n;
}

// ctx (set) and P from q, k, v.
extern "C" __global__ void bidir_attention_forward(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                   const bf16* __restrict__ v, const int* __restrict__ offsets,
                                                   const int* __restrict__ prob_starts,
                                                   const float* __restrict__ masks, int heads, int head_dim,
                                                   float scale, float* __restrict__ probs,
                                                   bf16* __restrict__ ctx)
{
    const int s = blockIdx.z, h = blockIdx.y;
    const int r0 = offsets[s], n = offsets[s + 1] - r0;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long width = (long long)heads * head_dim;
    const long long col = (long long)h * head_dim;
    const long long blk = bidir_block(prob_starts, s, h, heads, n);
    float* p = probs + blk + (long long)i * n;
    const bf16* qi = q + (r0 + i) * width + col;
    float m = -INFINITY;
    for (int j = 0; j < n; ++j) {
        const bf16* kj = k + (r0 + j) * width + col;
        float dot = 0.0f;
        for (int x = 0; x < head_dim; ++x) dot += to_f32(qi[x]) * to_f32(kj[x]);
        p[j] = dot * scale;
        m = fmaxf(m, p[j]);
    }
    float sum = 0.0f;
    for (int j = 0; j < n; ++j) {
        p[j] = expf(p[j] - m);
        sum += p[j];
    }
    const float inv = 1.0f / sum;
    for (int j = 0; j < n; ++j) p[j] *= inv;
    const float* mrow = masks ? masks + blk + (long long)i * n : nullptr;
    bf16* out = ctx + (r0 + i) * width + col;
    for (int x = 0; x < head_dim; ++x) {
        float o = 0.0f;
        for (int j = 0; j < n; ++j) {
            const float w = mrow ? p[j] * mrow[j] : p[j];
            o += w * to_f32(v[(r0 + j) * width + col + x]);
        }
        out[x] = to_bf16(o);
    }
}

// dS = P∘(dP − Σ_j dP∘P)·scale with dP = (dO·Vᵀ)∘M (stored in ds), and dq (set) = dS·K.
extern "C" __global__ void bidir_attention_backward_dq(const bf16* __restrict__ dctx, const bf16* __restrict__ k,
                                                       const bf16* __restrict__ v,
                                                       const int* __restrict__ offsets,
                                                       const int* __restrict__ prob_starts,
                                                       const float* __restrict__ probs,
                                                       const float* __restrict__ masks, int heads,
                                                       int head_dim, float scale, float* __restrict__ ds,
                                                       bf16* __restrict__ dq)
{
    const int s = blockIdx.z, h = blockIdx.y;
    const int r0 = offsets[s], n = offsets[s + 1] - r0;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long width = (long long)heads * head_dim;
    const long long col = (long long)h * head_dim;
    const long long row = bidir_block(prob_starts, s, h, heads, n) + (long long)i * n;
    const float* p = probs + row;
    const float* mrow = masks ? masks + row : nullptr;
    float* d = ds + row;
    const bf16* doi = dctx + (r0 + i) * width + col;
    float dot = 0.0f;
    for (int j = 0; j < n; ++j) {
        const bf16* vj = v + (r0 + j) * width + col;
        float g = 0.0f;
        for (int x = 0; x < head_dim; ++x) g += to_f32(doi[x]) * to_f32(vj[x]);
        if (mrow) g *= mrow[j];
        d[j] = g;
        dot += g * p[j];
    }
    for (int j = 0; j < n; ++j) d[j] = p[j] * (d[j] - dot) * scale;
    bf16* out = dq + (r0 + i) * width + col;
    for (int x = 0; x < head_dim; ++x) {
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) acc += d[j] * to_f32(k[(r0 + j) * width + col + x]);
        out[x] = to_bf16(acc);
    }
}

// dk (set) = dSᵀ·Q and dv (set) = (P∘M)ᵀ·dO, one thread per key row; after
// bidir_attention_backward_dq (which writes ds) on the same stream.
extern "C" __global__ void bidir_attention_backward_dkdv(const bf16* __restrict__ q,
                                                         const bf16* __restrict__ dctx,
                                                         const int* __restrict__ offsets,
                                                         const int* __restrict__ prob_starts,
                                                         const float* __restrict__ probs,
                                                         const float* __restrict__ masks,
                                                         const float* __restrict__ ds, int heads,
                                                         int head_dim, bf16* __restrict__ dk,
                                                         bf16* __restrict__ dv)
{
    const int s = blockIdx.z, h = blockIdx.y;
    const int r0 = offsets[s], n = offsets[s + 1] - r0;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    const long long width = (long long)heads * head_dim;
    const long long col = (long long)h * head_dim;
    const long long blk = bidir_block(prob_starts, s, h, heads, n);
    bf16* dkj = dk + (r0 + j) * width + col;
    bf16* dvj = dv + (r0 + j) * width + col;
    for (int x = 0; x < head_dim; ++x) {
        float gk = 0.0f, gv = 0.0f;
        for (int i = 0; i < n; ++i) {
            const long long e = blk + (long long)i * n + j;
            gk += ds[e] * to_f32(q[(r0 + i) * width + col + x]);
            const float w = masks ? probs[e] * masks[e] : probs[e];
            gv += w * to_f32(dctx[(r0 + i) * width + col + x]);
        }
        dkj[x] = to_bf16(gk);
        dvj[x] = to_bf16(gv);
    }
}
