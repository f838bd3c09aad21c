//! Runs flow's CUDA kernels that have host launchers against their CPU
//! references on fresh random inputs and prints the largest relative error.
//! Exits non-zero on a mismatch. Needs a GPU; run through
//! `scripts/gpu_check.sh` on a device machine.

use flow_kernels::{cpu, cuda};
use rand::{Rng, SeedableRng};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs() as f64)).max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x as f64) - (*y as f64)).abs() / scale)
        .fold(0f64, f64::max)
}

fn main() {
    let info = match cuda::probe() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("no GPU: {e}");
            std::process::exit(2);
        }
    };
    let gpu = cuda::Gpu::new(0).unwrap_or_else(|e| panic!("{e}"));
    println!("devices: {}, arch {}", info.devices, gpu.arch());
    let mut failed = false;

    for (i, n) in [1usize, 1000, 1 << 20].into_iter().enumerate() {
        let a = random(n, 1 + i as u64);
        let b = random(n, 100 + i as u64);
        for t in [0.0f32, 0.3, 0.5, 1.0] {
            let (got, _) = gpu.slerp_f32(t, &a, &b).unwrap_or_else(|e| panic!("{e}"));
            let mut want = vec![0f32; n];
            cpu::slerp(t, &a, &b, &mut want);
            let err = max_rel_err(&got, &want);
            let ok = err < 1e-5 && got.iter().all(|x| x.is_finite());
            failed |= !ok;
            println!(
                "slerp n={n} t={t}: max rel err {err:.2e} {}",
                if ok { "ok" } else { "MISMATCH" }
            );
        }
    }

    let cfg = cpu::AdamW {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let n = 1 << 16;
    let (mut p_gpu, mut m_gpu, mut v_gpu) = (random(n, 7), vec![0f32; n], vec![0f32; n]);
    let (mut p_cpu, mut m_cpu, mut v_cpu) = (p_gpu.clone(), m_gpu.clone(), v_gpu.clone());
    for step in 1..=5u64 {
        let g = random(n, 1000 + step);
        gpu.adamw_f32(&cfg, step, &mut p_gpu, &g, &mut m_gpu, &mut v_gpu)
            .unwrap_or_else(|e| panic!("{e}"));
        cpu::adamw_step(&cfg, step, &mut p_cpu, &g, &mut m_cpu, &mut v_cpu);
    }
    let err = max_rel_err(&p_gpu, &p_cpu);
    let ok = err < 1e-5;
    failed |= !ok;
    println!(
        "adamw 5 steps n={n}: max rel err {err:.2e} {}",
        if ok { "ok" } else { "MISMATCH" }
    );
    if failed {
        std::process::exit(1);
    }
}
