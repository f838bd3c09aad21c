//! Kernel benchmarks on a GPU, printed as one JSON object a line
//! (`{"bench": .., "ms": .., "detail": ..}`) for `scripts/gpu_check.sh`,
//! which runs `scripts/gpu_bench_torch.py` on the same shapes in the same
//! call and prints the two side by side. Each figure is the median of
//! timed repetitions after warm-up, the stream synchronised around each.
//!
//! Shapes: attention forward + backward at the Qwen2.5-0.5B layer shape
//! (14 query heads, 2 kv heads, head dim 64, seq 2048, batch 4) and a 7B
//! shape (32/8 heads, head dim 128, seq 2048, batch 1); AdamW over 494M
//! parameters (Qwen2.5-0.5B) in mixed precision; SLERP of two bf16 tensors
//! of 2^28 elements against a device-to-device copy of the same bytes.

use std::time::Instant;

use cudarc::driver::CudaSlice;
use flow_kernels::cpu;
use flow_kernels::cuda::{self, AttentionShape, CudaError, Gpu};
use half::bf16;

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::NoDriver(format!("{e:?}"))
}

/// Median milliseconds of `reps` runs of `f` after `warmup` runs.
fn time(
    gpu: &Gpu,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), CudaError>,
) -> Result<f64, CudaError> {
    for _ in 0..warmup {
        f()?;
    }
    gpu.stream().synchronize().map_err(driver)?;
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        gpu.stream().synchronize().map_err(driver)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}

fn filled(gpu: &Gpu, n: usize, value: f32) -> Result<CudaSlice<bf16>, CudaError> {
    gpu.stream()
        .clone_htod(&vec![bf16::from_f32(value); n])
        .map_err(driver)
}

fn emit(bench: &str, ms: f64, detail: &str) {
    println!("{{\"bench\": \"{bench}\", \"ms\": {ms:.4}, \"detail\": \"{detail}\"}}");
}

fn attention(gpu: &Gpu, name: &str, shape: AttentionShape) -> Result<(), CudaError> {
    let s = gpu.stream();
    let q_len = shape.batch * shape.t * shape.q_heads * shape.head_dim;
    let kv_len = shape.batch * shape.s * shape.kv_heads * shape.head_dim;
    let rows = shape.batch * shape.q_heads * shape.t;
    let (q, k, v, dout) = (
        filled(gpu, q_len, 0.01)?,
        filled(gpu, kv_len, 0.02)?,
        filled(gpu, kv_len, 0.03)?,
        filled(gpu, q_len, 0.01)?,
    );
    let mut out = s.alloc_zeros::<bf16>(q_len).map_err(driver)?;
    let mut lse = s.alloc_zeros::<f32>(rows).map_err(driver)?;
    let mut delta = s.alloc_zeros::<f32>(rows).map_err(driver)?;
    let mut dq = s.alloc_zeros::<bf16>(q_len).map_err(driver)?;
    let mut dk = s.alloc_zeros::<bf16>(kv_len).map_err(driver)?;
    let mut dv = s.alloc_zeros::<bf16>(kv_len).map_err(driver)?;
    let ms = time(gpu, 2, 5, || {
        gpu.attention_forward(&shape, &q, &k, &v, None, &mut out, &mut lse)?;
        gpu.attention_backward(
            &shape, &q, &k, &v, None, &out, &dout, &lse, &mut delta, &mut dq, &mut dk, &mut dv,
        )
    })?;
    let detail = format!(
        "b{} t{} hq{} hkv{} d{} causal",
        shape.batch, shape.t, shape.q_heads, shape.kv_heads, shape.head_dim
    );
    emit(name, ms, &detail);
    Ok(())
}

fn main() {
    if let Err(e) = cuda::probe() {
        eprintln!("no GPU: {e}");
        std::process::exit(2);
    }
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot open GPU 0: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&gpu) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run(gpu: &Gpu) -> Result<(), CudaError> {
    let shape = |batch, q_heads, kv_heads, head_dim: usize| AttentionShape {
        batch,
        t: 2048,
        s: 2048,
        q_heads,
        kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window: None,
    };
    attention(gpu, "attention_fwd_bwd_0.5b", shape(4, 14, 2, 64))?;
    attention(gpu, "attention_fwd_bwd_7b", shape(1, 32, 8, 128))?;

    let s = gpu.stream();
    let n = 494_032_768usize;
    let cfg = cpu::AdamW {
        lr: 2e-5,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    // f32 parameters and gradients: what torch's fused AdamW is given.
    let mut param = s.alloc_zeros::<f32>(n).map_err(driver)?;
    let mut m = s.alloc_zeros::<f32>(n).map_err(driver)?;
    let mut v = s.alloc_zeros::<f32>(n).map_err(driver)?;
    let grad = s.clone_htod(&vec![0.001f32; n]).map_err(driver)?;
    let mut step = 0u64;
    let ms = time(gpu, 2, 10, || {
        step += 1;
        gpu.adamw_f32(&cfg, step, 1.0, &mut param, &mut m, &mut v, &grad)
    })?;
    emit("adamw_0.5b", ms, "494M f32 params and grads");
    drop((param, grad));
    // Mixed precision as the trainer runs it (flow only).
    let mut master = s.alloc_zeros::<f32>(n).map_err(driver)?;
    let grad = filled(gpu, n, 0.001)?;
    let mut param = s.alloc_zeros::<bf16>(n).map_err(driver)?;
    let ms = time(gpu, 2, 10, || {
        step += 1;
        gpu.adamw_bf16(
            &cfg,
            step,
            1.0,
            &mut master,
            &mut m,
            &mut v,
            &grad,
            &mut param,
        )
    })?;
    emit(
        "adamw_mixed_0.5b",
        ms,
        "494M params, f32 master+moments, bf16 grad and params",
    );
    drop((master, m, v, grad, param));

    let n = 1usize << 28;
    let (a, b) = (filled(gpu, n, 0.5)?, filled(gpu, n, -0.25)?);
    let mut out = s.alloc_zeros::<bf16>(n).map_err(driver)?;
    let ms = time(gpu, 2, 10, || gpu.slerp(0.5, &a, &b, &mut out).map(|_| ()))?;
    emit(
        "slerp_bf16",
        ms,
        "2^28 elements, reads 2 tensors twice, writes 1",
    );
    let ms = time(gpu, 2, 10, || s.memcpy_dtod(&a, &mut out).map_err(driver))?;
    emit("copy_bf16", ms, "2^28 elements device to device");
    Ok(())
}
