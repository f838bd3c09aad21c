//! Every CUDA kernel against its CPU reference, on fresh random inputs,
//! with every output poisoned (NaN) before the launch so that an element a
//! kernel skips shows up. bf16 inputs are rounded first and the CPU
//! reference runs on the rounded values, so the comparison measures the
//! kernel, not the input rounding. Prints one line a check and exits 1 on
//! any mismatch, 2 without a GPU. Needs a GPU; run through
//! `scripts/gpu_check.sh` on a device machine.
//!
//! Tolerances (largest |error| over the largest |reference|): 1e-5 for f32
//! outputs of elementwise kernels, 1e-4 for f32 reductions summed in another
//! order, 1e-2 for bf16 outputs (8 bits of mantissa) and 2e-2 for bf16
//! outputs of long dot products (attention).

use cudarc::driver::CudaSlice;
use flow_kernels::cpu;
use flow_kernels::cuda::{self, AttentionShape, CudaError, Gpu};
use half::bf16;
use rand::{Rng, SeedableRng};

const F32_ELEMENTWISE: f64 = 1e-5;
const F32_REDUCTION: f64 = 1e-4;
const BF16: f64 = 1e-2;
const BF16_DOT: f64 = 2e-2;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The values as bf16 sees them.
fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
}

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want
        .iter()
        .fold(0f64, |m, x| m.max(x.abs() as f64))
        .max(1e-12);
    got.iter()
        .zip(want)
        .map(|(x, y)| {
            if x.is_nan() != y.is_nan() {
                f64::INFINITY
            } else if x.is_nan() {
                0.0
            } else {
                ((*x as f64) - (*y as f64)).abs() / scale
            }
        })
        .fold(0f64, f64::max)
}

/// Uploads and downloads, with the driver's errors turned into ours.
struct Device<'g> {
    gpu: &'g Gpu,
}

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::NoDriver(format!("{e:?}"))
}

impl Device<'_> {
    fn f32(&self, x: &[f32]) -> Result<CudaSlice<f32>, CudaError> {
        self.gpu.stream().clone_htod(x).map_err(driver)
    }
    fn bf16(&self, x: &[f32]) -> Result<CudaSlice<bf16>, CudaError> {
        self.gpu.stream().clone_htod(&to_bf16(x)).map_err(driver)
    }
    fn i32(&self, x: &[i32]) -> Result<CudaSlice<i32>, CudaError> {
        self.gpu.stream().clone_htod(x).map_err(driver)
    }
    fn poisoned_f32(&self, n: usize) -> Result<CudaSlice<f32>, CudaError> {
        self.f32(&vec![f32::NAN; n])
    }
    fn poisoned_bf16(&self, n: usize) -> Result<CudaSlice<bf16>, CudaError> {
        self.bf16(&vec![f32::NAN; n])
    }
    fn zeros_f32(&self, n: usize) -> Result<CudaSlice<f32>, CudaError> {
        self.f32(&vec![0.0; n])
    }
    fn get_f32(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>, CudaError> {
        self.gpu.stream().clone_dtoh(x).map_err(driver)
    }
    fn get_bf16(&self, x: &CudaSlice<bf16>) -> Result<Vec<f32>, CudaError> {
        let v = self.gpu.stream().clone_dtoh(x).map_err(driver)?;
        Ok(v.iter().map(|b| b.to_f32()).collect())
    }
}

/// The lines printed so far and whether any failed.
#[derive(Default)]
struct Report {
    failed: usize,
    passed: usize,
}

impl Report {
    fn compare(&mut self, what: &str, got: &[f32], want: &[f32], tolerance: f64) {
        let err = max_rel_err(got, want);
        let ok = err <= tolerance;
        println!(
            "{:<8} {what:<58} max rel err {err:9.2e} (tol {tolerance:.0e})",
            if ok { "ok" } else { "MISMATCH" }
        );
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    fn error(&mut self, what: &str, e: &CudaError) {
        println!("{:<8} {what:<58} {e}", "ERROR");
        self.failed += 1;
    }
}

type Check = fn(&Device, &mut Report) -> Result<(), CudaError>;

fn rmsnorm(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let (rows, dim, eps) = (37usize, 896usize, 1e-6f32);
    let x = rounded(&random(rows * dim, 1));
    let w = rounded(&random(dim, 2));
    let dy = rounded(&random(rows * dim, 3));
    let (mut y_want, mut rstd_want) = (vec![0f32; rows * dim], vec![0f32; rows]);
    cpu::rmsnorm_forward(&x, &w, eps, rows, dim, &mut y_want, &mut rstd_want);
    let (mut dx_want, mut dw_want) = (vec![0f32; rows * dim], vec![0f32; dim]);
    cpu::rmsnorm_backward(
        &dy,
        &x,
        &w,
        &rstd_want,
        rows,
        dim,
        &mut dx_want,
        &mut dw_want,
    );

    let (dx_, dw_, ddy) = (d.bf16(&x)?, d.bf16(&w)?, d.bf16(&dy)?);
    let (mut y, mut rstd) = (d.poisoned_bf16(rows * dim)?, d.poisoned_f32(rows)?);
    d.gpu
        .rmsnorm_forward(&dx_, &dw_, eps, rows, dim, &mut y, &mut rstd)?;
    r.compare(
        "rmsnorm_forward y (37x896)",
        &d.get_bf16(&y)?,
        &y_want,
        BF16,
    );
    r.compare(
        "rmsnorm_forward rstd",
        &d.get_f32(&rstd)?,
        &rstd_want,
        F32_REDUCTION,
    );
    let (mut dx, mut dw) = (d.poisoned_bf16(rows * dim)?, d.zeros_f32(dim)?);
    d.gpu
        .rmsnorm_backward(&ddy, &dx_, &dw_, &rstd, rows, dim, &mut dx, &mut dw)?;
    r.compare("rmsnorm_backward dx", &d.get_bf16(&dx)?, &dx_want, BF16);
    r.compare(
        "rmsnorm_backward dw (partial sums)",
        &d.get_f32(&dw)?,
        &dw_want,
        F32_REDUCTION,
    );
    Ok(())
}

fn rope(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let (heads, head_dim, theta) = (3usize, 64usize, 1e6f32);
    // Long positions too: the angles there need an accurate sincos.
    let positions: Vec<u32> = (0..12)
        .chain([1000, 4095, 8191, 30_000, 32_767, 131_071])
        .collect();
    let tokens = positions.len();
    let x = rounded(&random(tokens * heads * head_dim, 4));
    let table = cpu::RopeTable::new(head_dim, theta as f64, 131_072);
    let mut want = x.clone();
    cpu::rope_forward(&mut want, &positions, heads, &table);
    let mut back_want = x.clone();
    cpu::rope_backward(&mut back_want, &positions, heads, &table);

    let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
    let dpos = d.i32(&pos)?;
    let mut dx = d.bf16(&x)?;
    d.gpu.rope_forward(&mut dx, &dpos, heads, head_dim, theta)?;
    r.compare(
        "rope_forward (positions up to 131071)",
        &d.get_bf16(&dx)?,
        &want,
        BF16,
    );
    let mut dg = d.bf16(&x)?;
    d.gpu
        .rope_backward(&mut dg, &dpos, heads, head_dim, theta)?;
    r.compare("rope_backward", &d.get_bf16(&dg)?, &back_want, BF16);
    Ok(())
}

fn swiglu(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let n = 10_007usize;
    let (gate, up, dout) = (
        rounded(&random(n, 5)),
        rounded(&random(n, 6)),
        rounded(&random(n, 7)),
    );
    let mut want = vec![0f32; n];
    cpu::swiglu_forward(&gate, &up, &mut want);
    let (mut dgate_want, mut dup_want) = (vec![0f32; n], vec![0f32; n]);
    cpu::swiglu_backward(&gate, &up, &dout, &mut dgate_want, &mut dup_want);

    let (dgt, dup_, ddo) = (d.bf16(&gate)?, d.bf16(&up)?, d.bf16(&dout)?);
    let mut out = d.poisoned_bf16(n)?;
    d.gpu.swiglu_forward(&dgt, &dup_, &mut out)?;
    r.compare("swiglu_forward (n=10007)", &d.get_bf16(&out)?, &want, BF16);
    let (mut dgate, mut dup) = (d.poisoned_bf16(n)?, d.poisoned_bf16(n)?);
    d.gpu
        .swiglu_backward(&dgt, &dup_, &ddo, &mut dgate, &mut dup)?;
    r.compare(
        "swiglu_backward dgate",
        &d.get_bf16(&dgate)?,
        &dgate_want,
        BF16,
    );
    r.compare("swiglu_backward dup", &d.get_bf16(&dup)?, &dup_want, BF16);
    Ok(())
}

fn embedding(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let (vocab, dim) = (101usize, 72usize);
    let table = rounded(&random(vocab * dim, 8));
    let ids: Vec<u32> = vec![0, 5, 5, 100, 17, 5, 63, 0, 99];
    let dout = rounded(&random(ids.len() * dim, 9));
    let mut want = vec![0f32; ids.len() * dim];
    cpu::embedding_forward(&ids, &table, dim, &mut want);
    let mut dtable_want = vec![0f32; vocab * dim];
    cpu::embedding_backward(&ids, &dout, dim, &mut dtable_want);

    let dids = d.i32(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>())?;
    let dtab = d.bf16(&table)?;
    let mut out = d.poisoned_bf16(ids.len() * dim)?;
    d.gpu.embedding_forward(&dids, &dtab, dim, &mut out)?;
    r.compare(
        "embedding_forward (repeated ids)",
        &d.get_bf16(&out)?,
        &want,
        0.0,
    );
    let ddo = d.bf16(&dout)?;
    let mut dtable = d.zeros_f32(vocab * dim)?;
    d.gpu.embedding_backward(&ids, &ddo, dim, &mut dtable)?;
    r.compare(
        "embedding_backward (grouped by id, no atomics)",
        &d.get_f32(&dtable)?,
        &dtable_want,
        F32_ELEMENTWISE,
    );

    // An id outside the table: a NaN row forward; an error backward (the
    // host groups the ids and checks them).
    let bad = d.i32(&[3, vocab as i32, -1])?;
    let mut out = d.poisoned_bf16(3 * dim)?;
    d.gpu.embedding_forward(&bad, &dtab, dim, &mut out)?;
    let got = d.get_bf16(&out)?;
    let mut want = vec![f32::NAN; 3 * dim];
    want[..dim].copy_from_slice(&table[3 * dim..4 * dim]);
    r.compare(
        "embedding_forward (ids outside the table: NaN rows)",
        &got,
        &want,
        0.0,
    );
    let ones = d.bf16(&vec![1.0; 2 * dim])?;
    let mut dtable = d.zeros_f32(vocab * dim)?;
    match d
        .gpu
        .embedding_backward(&[3, vocab as u32], &ones, dim, &mut dtable)
    {
        Err(e) => println!(
            "{:<8} {:<58} {e}",
            "ok", "embedding_backward (id outside the table: error)"
        ),
        Ok(()) => {
            println!("MISMATCH embedding_backward accepted an id outside the table");
            r.failed += 1;
        }
    }
    Ok(())
}

fn layernorm(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let (rows, dim, eps) = (29usize, 768usize, 1e-12f32);
    // A large mean per row: the two-pass variance must not cancel.
    let x: Vec<f32> = rounded(
        &random(rows * dim, 13)
            .iter()
            .map(|v| v + 3.0)
            .collect::<Vec<_>>(),
    );
    let w = rounded(&random(dim, 14));
    let b = rounded(&random(dim, 15));
    let dy = rounded(&random(rows * dim, 16));
    let (mut y_want, mut mean_want, mut rstd_want) =
        (vec![0f32; rows * dim], vec![0f32; rows], vec![0f32; rows]);
    cpu::layernorm_forward(
        &x,
        &w,
        &b,
        eps,
        rows,
        dim,
        &mut y_want,
        &mut mean_want,
        &mut rstd_want,
    );
    let (mut dx_want, mut dw_want, mut db_want) =
        (vec![0f32; rows * dim], vec![0f32; dim], vec![0f32; dim]);
    cpu::layernorm_backward(
        &dy,
        &x,
        &w,
        &mean_want,
        &rstd_want,
        rows,
        dim,
        &mut dx_want,
        &mut dw_want,
        &mut db_want,
    );

    let (dx_, dw_, db_, ddy) = (d.bf16(&x)?, d.bf16(&w)?, d.bf16(&b)?, d.bf16(&dy)?);
    let (mut y, mut mean, mut rstd) = (
        d.poisoned_bf16(rows * dim)?,
        d.poisoned_f32(rows)?,
        d.poisoned_f32(rows)?,
    );
    d.gpu.layernorm_forward(
        &dx_, &dw_, &db_, eps, rows, dim, &mut y, &mut mean, &mut rstd,
    )?;
    r.compare(
        "layernorm_forward y (29x768, mean 3)",
        &d.get_bf16(&y)?,
        &y_want,
        BF16,
    );
    r.compare(
        "layernorm_forward mean",
        &d.get_f32(&mean)?,
        &mean_want,
        F32_REDUCTION,
    );
    r.compare(
        "layernorm_forward rstd",
        &d.get_f32(&rstd)?,
        &rstd_want,
        F32_REDUCTION,
    );
    let (mut dx, mut dw, mut db) = (
        d.poisoned_bf16(rows * dim)?,
        d.zeros_f32(dim)?,
        d.zeros_f32(dim)?,
    );
    d.gpu.layernorm_backward(
        &ddy, &dx_, &dw_, &mean, &rstd, rows, dim, &mut dx, &mut dw, &mut db,
    )?;
    r.compare("layernorm_backward dx", &d.get_bf16(&dx)?, &dx_want, BF16);
    r.compare(
        "layernorm_backward dw (partial sums)",
        &d.get_f32(&dw)?,
        &dw_want,
        F32_REDUCTION,
    );
    r.compare(
        "layernorm_backward db (partial sums)",
        &d.get_f32(&db)?,
        &db_want,
        F32_REDUCTION,
    );
    Ok(())
}

fn gelu(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let n = 20_011usize;
    let x: Vec<f32> = rounded(&random(n, 17).iter().map(|v| v * 6.0).collect::<Vec<_>>());
    let dy = rounded(&random(n, 18));
    let (mut y_want, mut dx_want) = (vec![0f32; n], vec![0f32; n]);
    cpu::gelu_forward(&x, &mut y_want);
    cpu::gelu_backward(&dy, &x, &mut dx_want);
    let (dx_, ddy) = (d.bf16(&x)?, d.bf16(&dy)?);
    let mut y = d.poisoned_bf16(n)?;
    d.gpu.gelu_forward(&dx_, &mut y)?;
    r.compare(
        "gelu_forward (exact erf, x in [-6, 6])",
        &d.get_bf16(&y)?,
        &y_want,
        BF16,
    );
    let mut dx = d.poisoned_bf16(n)?;
    d.gpu.gelu_backward(&ddy, &dx_, &mut dx)?;
    r.compare("gelu_backward", &d.get_bf16(&dx)?, &dx_want, BF16);
    Ok(())
}

fn cross_entropy(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let (rows, vocab) = (13usize, 3001usize);
    let logits: Vec<f32> = rounded(
        &random(rows * vocab, 10)
            .iter()
            .map(|v| v * 8.0)
            .collect::<Vec<_>>(),
    );
    let mut targets: Vec<i32> = (0..rows as i32).map(|i| (i * 229) % vocab as i32).collect();
    targets[4] = cpu::IGNORE_INDEX;
    let scale = 1.0 / (rows as f32 - 1.0);
    let mut dlogits_want = vec![0f32; rows * vocab];
    let (loss_want, counted) = cpu::cross_entropy(
        &logits,
        &targets,
        rows,
        vocab,
        Some((&mut dlogits_want, scale)),
    );
    assert_eq!(counted, rows - 1);

    let (dl, dt) = (d.bf16(&logits)?, d.i32(&targets)?);
    let (mut losses, mut dlogits) = (d.poisoned_f32(rows)?, d.poisoned_bf16(rows * vocab)?);
    d.gpu
        .cross_entropy_forward_backward(&dl, &dt, vocab, scale, &mut losses, &mut dlogits)?;
    let loss: f64 = d.get_f32(&losses)?.iter().map(|&l| l as f64).sum();
    r.compare(
        "cross_entropy loss sum (13x3001, one ignored row)",
        &[loss as f32],
        &[loss_want as f32],
        F32_REDUCTION,
    );
    r.compare(
        "cross_entropy dlogits",
        &d.get_bf16(&dlogits)?,
        &dlogits_want,
        BF16,
    );
    Ok(())
}

fn reduce(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let x = random(1 << 20, 11);
    let want = cpu::sum_of_squares(&x);
    let got = d.gpu.sum_of_squares_f32(&d.f32(&x)?)?;
    r.compare(
        "sum_of_squares_f32 (2^20)",
        &[got as f32],
        &[want as f32],
        F32_REDUCTION,
    );
    let xr = rounded(&x);
    let want = cpu::sum_of_squares(&xr);
    let got = d.gpu.sum_of_squares_bf16(&d.bf16(&xr)?)?;
    r.compare(
        "sum_of_squares_bf16 (2^20)",
        &[got as f32],
        &[want as f32],
        F32_REDUCTION,
    );
    let mut want = x.clone();
    cpu::scale_in_place(&mut want, 0.37);
    let mut dx = d.f32(&x)?;
    d.gpu.scale_f32(&mut dx, 0.37)?;
    r.compare("scale_f32", &d.get_f32(&dx)?, &want, F32_ELEMENTWISE);
    Ok(())
}

fn adamw(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let cfg = cpu::AdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let n = (1 << 16) + 3;
    // f32: parameters, moments and gradients all f32.
    let p0 = random(n, 12);
    let (mut p_cpu, mut m_cpu, mut v_cpu) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
    let (mut p, mut m, mut v) = (d.f32(&p0)?, d.zeros_f32(n)?, d.zeros_f32(n)?);
    for step in 1..=5u64 {
        let g = random(n, 1000 + step);
        cpu::adamw_step(&cfg, step, &mut p_cpu, &g, &mut m_cpu, &mut v_cpu);
        d.gpu
            .adamw_f32(&cfg, step, 1.0, &mut p, &mut m, &mut v, &d.f32(&g)?)?;
    }
    r.compare(
        "adamw_f32, 5 steps: parameters",
        &d.get_f32(&p)?,
        &p_cpu,
        F32_ELEMENTWISE,
    );
    r.compare(
        "adamw_f32, 5 steps: second moments",
        &d.get_f32(&v)?,
        &v_cpu,
        F32_ELEMENTWISE,
    );

    // Mixed precision: f32 master and moments, bf16 gradients in, bf16 copy out.
    let (mut p_cpu, mut m_cpu, mut v_cpu) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
    let (mut master, mut m, mut v) = (d.f32(&p0)?, d.zeros_f32(n)?, d.zeros_f32(n)?);
    let mut param = d.poisoned_bf16(n)?;
    let grad_scale = 0.5f32;
    for step in 1..=5u64 {
        let g = rounded(&random(n, 2000 + step));
        let scaled: Vec<f32> = g.iter().map(|x| x * grad_scale).collect();
        cpu::adamw_step(&cfg, step, &mut p_cpu, &scaled, &mut m_cpu, &mut v_cpu);
        d.gpu.adamw_bf16(
            &cfg,
            step,
            grad_scale,
            &mut master,
            &mut m,
            &mut v,
            &d.bf16(&g)?,
            &mut param,
        )?;
    }
    r.compare(
        "adamw_bf16, 5 steps, grad scale 0.5: master",
        &d.get_f32(&master)?,
        &p_cpu,
        F32_ELEMENTWISE,
    );
    r.compare(
        "adamw_bf16: bf16 parameters",
        &d.get_bf16(&param)?,
        &rounded(&p_cpu),
        BF16,
    );
    Ok(())
}

fn slerp(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    for (i, n) in [1usize, 1000, 1 << 20].into_iter().enumerate() {
        let a = random(n, 20 + i as u64);
        let b = random(n, 40 + i as u64);
        for t in [0.0f32, 0.3, 0.5, 1.0] {
            let (got, _) = d.gpu.slerp_f32(t, &a, &b)?;
            let mut want = vec![0f32; n];
            cpu::slerp(t, &a, &b, &mut want);
            r.compare(
                &format!("slerp f32 n={n} t={t}"),
                &got,
                &want,
                F32_ELEMENTWISE,
            );
        }
    }
    // Nearly parallel tensors take the linear branch, as mergekit's do.
    let a = random(4096, 60);
    let b: Vec<f32> = a.iter().map(|x| x * 1.0001).collect();
    let (got, linear) = d.gpu.slerp_f32(0.4, &a, &b)?;
    let mut want = vec![0f32; a.len()];
    cpu::slerp(0.4, &a, &b, &mut want);
    r.compare(
        &format!("slerp f32 parallel (linear branch: {linear})"),
        &got,
        &want,
        F32_ELEMENTWISE,
    );
    if !linear {
        println!("MISMATCH slerp of parallel tensors did not take the linear branch");
        r.failed += 1;
    }

    let n = 100_003;
    let (a, b) = (rounded(&random(n, 70)), rounded(&random(n, 71)));
    let mut want = vec![0f32; n];
    cpu::slerp(0.3, &a, &b, &mut want);
    let (da, db) = (d.bf16(&a)?, d.bf16(&b)?);
    let mut out = d.poisoned_bf16(n)?;
    d.gpu.slerp(0.3, &da, &db, &mut out)?;
    r.compare("slerp bf16 n=100003 t=0.3", &d.get_bf16(&out)?, &want, BF16);
    Ok(())
}

/// One attention case: batch of `batch` sequences, optional packed
/// documents and sliding window, checked sequence by sequence against the
/// CPU's one-sequence reference.
fn attention_case(
    d: &Device,
    r: &mut Report,
    shape: AttentionShape,
    docs: bool,
    seed: u64,
) -> Result<(), CudaError> {
    let (b, t, s, hq, hkv, hd) = (
        shape.batch,
        shape.t,
        shape.s,
        shape.q_heads,
        shape.kv_heads,
        shape.head_dim,
    );
    let (qn, kn) = (t * hq * hd, s * hkv * hd);
    let q = rounded(&random(b * qn, seed));
    let k = rounded(&random(b * kn, seed + 1));
    let v = rounded(&random(b * kn, seed + 2));
    let dout = rounded(&random(b * qn, seed + 3));
    // Three documents per sequence, boundaries differing between sequences.
    let doc_ids: Vec<u32> = (0..b * s)
        .map(|i| ((i % s) * 3 / s + (i / s)) as u32)
        .collect();
    let p = cpu::AttnParams {
        q_heads: hq,
        kv_heads: hkv,
        head_dim: hd,
        scale: shape.scale,
        window: shape.window,
    };
    let (mut out_w, mut lse_w) = (vec![0f32; b * qn], vec![0f32; b * hq * t]);
    let (mut dq_w, mut dk_w, mut dv_w) =
        (vec![0f32; b * qn], vec![0f32; b * kn], vec![0f32; b * kn]);
    for i in 0..b {
        let (qs, ks) = (i * qn..(i + 1) * qn, i * kn..(i + 1) * kn);
        let ls = i * hq * t..(i + 1) * hq * t;
        let doc = docs.then(|| &doc_ids[i * s..(i + 1) * s]);
        cpu::attention_forward(
            &p,
            t,
            s,
            &q[qs.clone()],
            &k[ks.clone()],
            &v[ks.clone()],
            doc,
            &mut out_w[qs.clone()],
            &mut lse_w[ls.clone()],
        );
        // The backward reads the forward's out as the GPU would see it (bf16).
        let out_r = rounded(&out_w[qs.clone()]);
        cpu::attention_backward(
            &p,
            t,
            s,
            &q[qs.clone()],
            &k[ks.clone()],
            &v[ks.clone()],
            doc,
            &out_r,
            &lse_w[ls],
            &dout[qs.clone()],
            &mut dq_w[qs],
            &mut dk_w[ks.clone()],
            &mut dv_w[ks],
        );
    }
    let label = format!(
        "attention d{hd} b{b} t{t} s{s} hq{hq} hkv{hkv}{}{}",
        if docs { " docs" } else { "" },
        shape
            .window
            .map(|w| format!(" window {w}"))
            .unwrap_or_default()
    );
    let (dq_, dk_, dv_, ddo) = (d.bf16(&q)?, d.bf16(&k)?, d.bf16(&v)?, d.bf16(&dout)?);
    let ddocs = d.i32(&doc_ids.iter().map(|&x| x as i32).collect::<Vec<_>>())?;
    let ddocs = docs.then_some(&ddocs);
    let (mut out, mut lse) = (d.poisoned_bf16(b * qn)?, d.poisoned_f32(b * hq * t)?);
    d.gpu
        .attention_forward(&shape, &dq_, &dk_, &dv_, ddocs, &mut out, &mut lse)?;
    r.compare(
        &format!("{label}: out"),
        &d.get_bf16(&out)?,
        &out_w,
        BF16_DOT,
    );
    r.compare(
        &format!("{label}: lse"),
        &d.get_f32(&lse)?,
        &lse_w,
        F32_REDUCTION,
    );
    let mut delta = d.poisoned_f32(b * hq * t)?;
    let (mut dq, mut dk, mut dv) = (
        d.poisoned_bf16(b * qn)?,
        d.poisoned_bf16(b * kn)?,
        d.poisoned_bf16(b * kn)?,
    );
    d.gpu.attention_backward(
        &shape, &dq_, &dk_, &dv_, ddocs, &out, &ddo, &lse, &mut delta, &mut dq, &mut dk, &mut dv,
    )?;
    r.compare(&format!("{label}: dq"), &d.get_bf16(&dq)?, &dq_w, BF16_DOT);
    r.compare(&format!("{label}: dk"), &d.get_bf16(&dk)?, &dk_w, BF16_DOT);
    r.compare(&format!("{label}: dv"), &d.get_bf16(&dv)?, &dv_w, BF16_DOT);
    Ok(())
}

fn attention(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let shape = |batch, t, s, q_heads, kv_heads, head_dim: usize, window| AttentionShape {
        batch,
        t,
        s,
        q_heads,
        kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window,
    };
    attention_case(d, r, shape(2, 77, 77, 4, 2, 64, None), false, 100)?;
    attention_case(d, r, shape(2, 130, 130, 2, 1, 64, None), true, 110)?;
    attention_case(d, r, shape(1, 33, 50, 4, 1, 128, Some(20)), false, 120)?;
    attention_case(d, r, shape(2, 65, 65, 2, 2, 128, None), true, 130)?;
    Ok(())
}

/// Row-major products through cuBLASLt against the CPU's gemm, every
/// transpose and both betas, on a shape that is no multiple of a tile.
fn matmul(d: &Device, r: &mut Report) -> Result<(), CudaError> {
    let blas = d.gpu.blas()?;
    let (m, n, k) = (67usize, 130usize, 257usize);
    for a_t in [false, true] {
        for b_t in [false, true] {
            for beta in [0.0f32, 1.0] {
                let a = rounded(&random(m * k, 200));
                let b = rounded(&random(k * n, 201));
                let c0 = rounded(&random(m * n, 202));
                let mut want = c0.clone();
                cpu::gemm(m, n, k, &a, a_t, &b, b_t, &mut want, beta);
                let (da, db) = (d.bf16(&a)?, d.bf16(&b)?);
                let mut c = if beta == 0.0 {
                    d.poisoned_bf16(m * n)?
                } else {
                    d.bf16(&c0)?
                };
                blas.gemm_bf16(m, n, k, &da, a_t, &db, b_t, &mut c, beta)?;
                r.compare(
                    &format!("cuBLASLt bf16 {m}x{k}x{n} a_t {a_t} b_t {b_t} beta {beta}"),
                    &d.get_bf16(&c)?,
                    &want,
                    BF16_DOT,
                );
            }
        }
    }
    Ok(())
}

fn main() {
    let info = match cuda::probe() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("no GPU: {e}");
            std::process::exit(2);
        }
    };
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot open GPU 0: {e}");
            std::process::exit(2);
        }
    };
    println!("devices: {}, arch {}", info.devices, gpu.arch());
    let device = Device { gpu: &gpu };
    let mut report = Report::default();
    let checks: [(&str, Check); 12] = [
        ("matmul", matmul),
        ("rmsnorm", rmsnorm),
        ("layernorm", layernorm),
        ("gelu", gelu),
        ("rope", rope),
        ("swiglu", swiglu),
        ("embedding", embedding),
        ("cross_entropy", cross_entropy),
        ("reduce", reduce),
        ("adamw", adamw),
        ("slerp", slerp),
        ("attention", attention),
    ];
    for (family, check) in checks {
        if let Err(e) = check(&device, &mut report) {
            report.error(family, &e);
        }
    }
    println!("{} checks passed, {} failed", report.passed, report.failed);
    if report.failed > 0 {
        std::process::exit(1);
    }
}
