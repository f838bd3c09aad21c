"""The PyTorch side of scripts/gpu_check.sh's benchmarks: the same shapes as
kernels/examples/gpu_bench.rs, one JSON object a line, median of timed
repetitions after warm-up with the device synchronised around each."""
import json
import time

import torch
import torch.nn.functional as F


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def emit(bench, ms, detail):
    print(json.dumps({"bench": bench, "ms": round(ms, 4), "detail": detail}), flush=True)


def attention(name, batch, q_heads, kv_heads, head_dim, t=2048):
    dev, dt = "cuda", torch.bfloat16
    # SDPA takes [B, H, T, D]; GQA through enable_gqa (the flash backend).
    q = torch.full((batch, q_heads, t, head_dim), 0.01, device=dev, dtype=dt, requires_grad=True)
    k = torch.full((batch, kv_heads, t, head_dim), 0.02, device=dev, dtype=dt, requires_grad=True)
    v = torch.full((batch, kv_heads, t, head_dim), 0.03, device=dev, dtype=dt, requires_grad=True)
    dout = torch.full((batch, q_heads, t, head_dim), 0.01, device=dev, dtype=dt)

    def step():
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out.backward(dout)

    emit(name, median_ms(step, 2, 5), f"b{batch} t{t} hq{q_heads} hkv{kv_heads} d{head_dim} causal, SDPA flash")


def main():
    attention("attention_fwd_bwd_0.5b", 4, 14, 2, 64)
    attention("attention_fwd_bwd_7b", 1, 32, 8, 128)

    n = 494_032_768
    p = torch.zeros(n, device="cuda", dtype=torch.float32, requires_grad=True)
    p.grad = torch.full_like(p, 0.001)
    opt = torch.optim.AdamW([p], lr=2e-5, weight_decay=0.1, fused=True)
    emit("adamw_0.5b", median_ms(opt.step, 2, 10), "494M f32 params and grads, fused=True")
    del p, opt
    torch.cuda.empty_cache()

    n = 1 << 28
    a = torch.full((n,), 0.5, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    emit("copy_bf16", median_ms(lambda: b.copy_(a), 2, 10), "2^28 elements device to device")


if __name__ == "__main__":
    main()
