//! Where the CPU time of a SmolLM2-135M forward (2×512 tokens) and training
//! step (1×512) goes, per kernel family: each family's kernels are called
//! with the shapes and counts the model makes (30 layers, hidden 576, 9/3
//! heads of 64, MLP 1536, vocab 49,152, tied head), each timed as the best
//! of a few repetitions (wall, and for matrix products flops per CPU-second,
//! which stays comparable on a machine shared with other work). Run by `cargo bench -p flow-kernels --bench cpu_families`
//! (see docs/performance.md); nothing here is a test.
//!
//! Usage: cpu_families [--reps 3] [--layers 30] [--gemm-only 1] [--decode-only 1]
//!
//! The decode section times the products of one decoding step (1 and 6
//! sequences, the demo's batch) with f32 weights (`linear_forward`, the
//! `gemm` crate) and bf16 weights (`linear_forward_bf16`), and gives the
//! bandwidth over the weights' bytes, which is what bounds them.

use std::time::Instant;

use flow_kernels::cpu::{self, AdamW, AttnParams, RopeTable};

const H: usize = 576;
const INTER: usize = 1536;
const HQ: usize = 9;
const HKV: usize = 3;
const D: usize = 64;
const VOCAB: usize = 49152;
const SEQ: usize = 512;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic values in [-0.5, 0.5) (no RNG dependency needed here).
fn fill(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

/// Best wall time of `f` over `reps` runs after one warm-up, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// CPU seconds this process has used (user + system, /proc/self/stat;
/// 10 ms resolution): on a machine shared with other work, flops per CPU
/// second compare kernels where wall time cannot.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the ")" that ends the command name: utime is the 12th, stime the 13th
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// (m, n, k, a_t, b_t, calls per step): the projections of `t` tokens.
fn forward_products(t: usize, layers: usize) -> Vec<(usize, usize, usize, bool, bool, usize)> {
    vec![
        (t, H, H, false, true, 2 * layers),       // q, o
        (t, HKV * D, H, false, true, 2 * layers), // k, v
        (t, INTER, H, false, true, 2 * layers),   // gate, up
        (t, H, INTER, false, true, layers),       // down
        (t, VOCAB, H, false, true, 1),            // lm_head
    ]
}

/// The backward's products for `t` tokens: dx = dy·W, dW += dyᵀ·x per projection.
fn backward_products(t: usize, layers: usize) -> Vec<(usize, usize, usize, bool, bool, usize)> {
    let mut v = Vec::new();
    for (out_f, in_f, n) in [
        (H, H, 2 * layers),
        (HKV * D, H, 2 * layers),
        (INTER, H, 2 * layers),
        (H, INTER, layers),
        (VOCAB, H, 1),
    ] {
        v.push((t, in_f, out_f, false, false, n)); // dx
        v.push((out_f, in_f, t, true, false, n)); // dW
    }
    v
}

/// (wall seconds per step, flops per step, flops per CPU second).
fn time_products(
    reps: usize,
    list: &[(usize, usize, usize, bool, bool, usize)],
) -> (f64, f64, f64) {
    let (mut secs, mut flops) = (0.0, 0.0);
    let (mut cpu, mut cpu_flops) = (0.0, 0.0);
    for &(m, n, k, a_t, b_t, calls) in list {
        let a = fill(m * k, 1);
        let b = fill(k * n, 2);
        let mut c = vec![0.0f32; m * n];
        let c0 = cpu_seconds();
        let s = best(reps, || cpu::gemm(m, n, k, &a, a_t, &b, b_t, &mut c, 1.0));
        cpu += cpu_seconds() - c0;
        cpu_flops += 2.0 * (m * n * k * (reps + 1)) as f64;
        secs += s * calls as f64;
        flops += 2.0 * (m * n * k * calls) as f64;
    }
    (secs, flops, cpu_flops / cpu.max(1e-9))
}

fn main() {
    let reps = arg("--reps", 3);
    let layers = arg("--layers", 30);
    #[cfg(target_arch = "x86_64")]
    let isa = if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512f"
    } else if std::arch::is_x86_feature_detected!("fma") {
        "avx2+fma"
    } else {
        "scalar"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let isa = "its own choice";
    println!(
        "cpu_families: SmolLM2-135M shape ({layers} layers), {} threads, gemm crate on {isa}",
        rayon::current_num_threads(),
    );
    let report = |what: &str, secs: f64| println!("RESULT {what:<58} {:>8.3} s", secs);

    // one decoding step's products: every weight read once for `t` rows, each
    // call with its own weights (as the layers have), so they stream from memory
    for t in [1usize, 6] {
        let list = forward_products(t, layers);
        let mut calls = Vec::new();
        for &(m, n, k, _, _, count) in &list {
            for c in 0..count {
                let w = fill(n * k, 2 + c as u32);
                let mut w16 = vec![half::bf16::ZERO; w.len()];
                cpu::f32_to_bf16(&w, &mut w16);
                calls.push((m, n, k, fill(m * k, 1), w, w16, vec![0.0f32; m * n]));
            }
        }
        let params: usize = calls.iter().map(|c| c.1 * c.2).sum();
        let f32_secs = best(reps, || {
            for (m, n, k, x, w, _, y) in calls.iter_mut() {
                cpu::linear_forward(x, w, None, *m, *k, *n, y);
            }
        });
        let bf16_secs = best(reps, || {
            for (m, n, k, x, _, w16, y) in calls.iter_mut() {
                cpu::linear_forward_bf16(x, w16, None, *m, *k, *n, y);
            }
        });
        let gbs = |bytes: usize, secs: f64| bytes as f64 / secs / 1e9;
        report(
            &format!(
                "decode step {t} row(s), f32 weights ({:.1} GB/s)",
                gbs(4 * params, f32_secs)
            ),
            f32_secs,
        );
        report(
            &format!(
                "decode step {t} row(s), bf16 weights ({:.1} GB/s)",
                gbs(2 * params, bf16_secs)
            ),
            bf16_secs,
        );
    }
    if arg("--decode-only", 0) == 1 {
        return;
    }

    // matrix products
    {
        for (phase, list) in [
            ("forward 2x512", forward_products(2 * SEQ, layers)),
            ("train fwd 1x512", forward_products(SEQ, layers)),
            ("train bwd 1x512", backward_products(SEQ, layers)),
        ] {
            let (s, f, per_cpu) = time_products(reps, &list);
            report(
                &format!(
                    "gemm {phase} ({:.0} GFLOP/s, {:.0} per CPU-s)",
                    f / s / 1e9,
                    per_cpu / 1e9
                ),
                s,
            );
        }
    }

    if arg("--gemm-only", 0) == 1 {
        return;
    }

    // attention, one sequence of 512 per call
    let p = AttnParams {
        q_heads: HQ,
        kv_heads: HKV,
        head_dim: D,
        scale: 1.0 / (D as f32).sqrt(),
        window: None,
    };
    let q = fill(SEQ * HQ * D, 3);
    let k = fill(SEQ * HKV * D, 4);
    let v = fill(SEQ * HKV * D, 5);
    let mut out = vec![0.0f32; SEQ * HQ * D];
    let mut lse = vec![0.0f32; HQ * SEQ];
    let fwd = best(reps, || {
        cpu::attention_forward(&p, SEQ, SEQ, &q, &k, &v, None, &mut out, &mut lse)
    });
    report("attention forward (per 512-token sequence)", fwd);
    report(
        "attention forward 2x512 x layers",
        fwd * (2 * layers) as f64,
    );
    let dout = fill(SEQ * HQ * D, 6);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0f32; q.len()],
        vec![0.0f32; k.len()],
        vec![0.0f32; v.len()],
    );
    let bwd = best(reps, || {
        cpu::attention_backward(
            &p, SEQ, SEQ, &q, &k, &v, None, &out, &lse, &dout, &mut dq, &mut dk, &mut dv,
        )
    });
    report("attention backward 1x512 x layers", bwd * layers as f64);

    // norms (2 per layer + final), rope (q and k), swiglu, at t tokens
    let t = 2 * SEQ;
    let x = fill(t * H, 7);
    let w = fill(H, 8);
    let mut y = vec![0.0f32; t * H];
    let mut rstd = vec![0.0f32; t];
    let norm = best(reps, || {
        cpu::rmsnorm_forward(&x, &w, 1e-5, t, H, &mut y, &mut rstd)
    });
    report(
        "rmsnorm forward 2x512 x (2 layers+1)",
        norm * (2 * layers + 1) as f64,
    );
    let table = RopeTable::new(D, 100000.0, 8192);
    let positions: Vec<u32> = (0..t as u32).map(|i| i % SEQ as u32).collect();
    let mut qr = fill(t * HQ * D, 9);
    let mut kr = fill(t * HKV * D, 10);
    let rope = best(reps, || {
        cpu::rope_forward(&mut qr, &positions, HQ, &table);
        cpu::rope_forward(&mut kr, &positions, HKV, &table);
    });
    report("rope forward 2x512 x layers", rope * layers as f64);
    let g = fill(t * INTER, 11);
    let u = fill(t * INTER, 12);
    let mut act = vec![0.0f32; t * INTER];
    let sw = best(reps, || cpu::swiglu_forward(&g, &u, &mut act));
    report("swiglu forward 2x512 x layers", sw * layers as f64);
    let ts = SEQ;
    let (mut dg, mut du) = (vec![0.0f32; ts * INTER], vec![0.0f32; ts * INTER]);
    let swb = best(reps, || {
        cpu::swiglu_backward(
            &g[..ts * INTER],
            &u[..ts * INTER],
            &act[..ts * INTER],
            &mut dg,
            &mut du,
        )
    });
    report("swiglu backward 1x512 x layers", swb * layers as f64);
    let (mut dx, mut dw) = (vec![0.0f32; ts * H], vec![0.0f32; H]);
    let normb = best(reps, || {
        cpu::rmsnorm_backward(
            &x[..ts * H],
            &x[..ts * H],
            &w,
            &rstd[..ts],
            ts,
            H,
            &mut dx,
            &mut dw,
        )
    });
    report(
        "rmsnorm backward 1x512 x (2 layers+1)",
        normb * (2 * layers + 1) as f64,
    );

    // cross-entropy over the 512 x 49152 logits of the training step
    let logits = fill(ts * VOCAB, 13);
    let targets: Vec<i32> = (0..ts as i32).map(|i| (i * 97) % VOCAB as i32).collect();
    let mut dlogits = vec![0.0f32; ts * VOCAB];
    let ce = best(reps, || {
        std::hint::black_box(cpu::cross_entropy(
            &logits,
            &targets,
            ts,
            VOCAB,
            Some((&mut dlogits, 1.0 / ts as f32)),
        ));
    });
    report("cross-entropy + dlogits 1x512", ce);

    // AdamW over the 134.5M parameters (30 layers of 3.54M + 28.3M embedding)
    let n_params = layers * (4 * H * H / 3 * 2 + 3 * H * INTER + 2 * H) + VOCAB * H + H;
    let mut param = fill(n_params, 14);
    let grad = fill(n_params, 15);
    let (mut m1, mut m2) = (vec![0.0f32; n_params], vec![0.0f32; n_params]);
    let cfg = AdamW {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut step = 0;
    let opt = best(reps, || {
        step += 1;
        cpu::adamw_step(&cfg, step, &mut param, &grad, &mut m1, &mut m2)
    });
    report(&format!("adamw step ({n_params} parameters)"), opt);
}
