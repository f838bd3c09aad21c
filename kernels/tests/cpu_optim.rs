//! AdamW against torch.optim.AdamW (golden made by
//! scripts/make_kernel_golden.py), SLERP against mergekit's rules with
//! known answers, and the clipping reductions against naive sums.

mod common;

use common::*;
use flow_kernels::cpu::{self, AdamW};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

#[test]
fn adamw_matches_torch_over_five_steps() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/golden/kernels/adamw.json"
    );
    let text = std::fs::read_to_string(path)
        .expect("golden adamw.json (run scripts/make_kernel_golden.py)");
    let doc: Value = serde_json::from_str(&text).expect("golden json");
    let configs = doc["configs"].as_array().expect("configs");
    assert_eq!(configs.len(), 2);
    for c in configs {
        let name = c["name"].as_str().unwrap_or("?");
        let cfg = AdamW {
            lr: c["lr"].as_f64().unwrap() as f32,
            beta1: c["beta1"].as_f64().unwrap() as f32,
            beta2: c["beta2"].as_f64().unwrap() as f32,
            eps: c["eps"].as_f64().unwrap() as f32,
            weight_decay: c["weight_decay"].as_f64().unwrap() as f32,
        };
        let mut p = floats(&c["init"]);
        let mut m = vec![0.0f32; p.len()];
        let mut v = vec![0.0f32; p.len()];
        let steps = c["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 5);
        for s in steps {
            let step = s["step"].as_u64().unwrap();
            let g = floats(&s["grad"]);
            cpu::adamw_step(&cfg, step, &mut p, &g, &mut m, &mut v);
            let want = |k: &str| to64(&floats(&s[k]));
            assert_close(
                &format!("{name} step {step} exp_avg"),
                &m,
                &want("exp_avg"),
                1e-6,
            );
            assert_close(
                &format!("{name} step {step} exp_avg_sq"),
                &v,
                &want("exp_avg_sq"),
                1e-6,
            );
            // parameters: compare the update relative to its own size too
            let want_p = want("param");
            assert_close(&format!("{name} step {step} param"), &p, &want_p, 1e-6);
        }
    }
}

fn norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn slerp_of_identical_tensors_is_the_tensor() {
    let mut r = rng(30);
    let a = randn(&mut r, 1000, 1.0);
    let mut out = vec![f32::NAN; a.len()];
    cpu::slerp(0.3, &a, &a, &mut out);
    assert_close("slerp(a, a)", &out, &to64(&a), 1e-6);
}

#[test]
fn slerp_of_orthogonal_unit_vectors_at_half_is_the_normalised_sum() {
    let a = [1.0f32, 0.0, 0.0, 0.0];
    let b = [0.0f32, 0.0, 1.0, 0.0];
    let mut out = [0.0f32; 4];
    cpu::slerp(0.5, &a, &b, &mut out);
    let h = std::f64::consts::FRAC_1_SQRT_2;
    assert_close("slerp orthogonal", &out, &[h, 0.0, h, 0.0], 1e-6);
    assert!((norm(&out) - 1.0).abs() < 1e-6, "stays on the unit sphere");
    // t = 0.25 on the same pair: angle π/8 from a
    cpu::slerp(0.25, &a, &b, &mut out);
    let ang = std::f64::consts::PI / 8.0;
    assert_close(
        "slerp orthogonal t=0.25",
        &out,
        &[ang.cos(), 0.0, ang.sin(), 0.0],
        1e-6,
    );
}

/// Two vectors with the given cosine and different norms (3 and 0.5).
fn pair_with_cos(cos: f64) -> (Vec<f32>, Vec<f32>) {
    let sin = (1.0 - cos * cos).sqrt();
    let a = vec![3.0f32, 0.0, 0.0];
    let b = vec![(0.5 * cos) as f32, (0.5 * sin) as f32, 0.0];
    (a, b)
}

#[test]
fn slerp_above_dot_threshold_is_linear_in_the_original_tensors() {
    let t = 0.3f32;
    let (a, b) = pair_with_cos(0.9997);
    let mut out = vec![0.0f32; 3];
    cpu::slerp(t, &a, &b, &mut out);
    assert_close("slerp near-colinear → lerp", &out, &lerp64(t, &a, &b), 1e-6);
    // antipodal: |dot| = 1 also falls back to lerp
    let neg: Vec<f32> = a.iter().map(|x| -x / 2.0).collect();
    cpu::slerp(t, &a, &neg, &mut out);
    assert_close("slerp antipodal → lerp", &out, &lerp64(t, &a, &neg), 1e-6);
}

/// (1 − t)·a + t·b in f64.
fn lerp64(t: f32, a: &[f32], b: &[f32]) -> Vec<f64> {
    let t = t as f64;
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (1.0 - t) * x as f64 + t * y as f64)
        .collect()
}

#[test]
fn slerp_below_dot_threshold_uses_the_spherical_formula_on_original_tensors() {
    let t = 0.3f64;
    let (a, b) = pair_with_cos(0.9990);
    let mut out = vec![0.0f32; 3];
    cpu::slerp(t as f32, &a, &b, &mut out);
    let theta = 0.9990f64.acos();
    let (ca, cb) = (
        ((1.0 - t) * theta).sin() / theta.sin(),
        (t * theta).sin() / theta.sin(),
    );
    let want: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| ca * x as f64 + cb * y as f64)
        .collect();
    assert_close("slerp spherical", &out, &want, 1e-6);
    let lerp: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (1.0 - t) * x as f64 + t * y as f64)
        .collect();
    assert!(
        rel_err(&out, &lerp) > 5e-5,
        "must differ from the linear fallback"
    );
}

#[test]
fn slerp_with_a_zero_side_gives_no_nan() {
    let mut r = rng(31);
    let b = randn(&mut r, 50, 1.0);
    let a = vec![0.0f32; 50];
    let t = 0.4f64;
    let mut out = vec![f32::NAN; 50];
    cpu::slerp(t as f32, &a, &b, &mut out);
    assert!(out.iter().all(|v| v.is_finite()));
    // dot = 0 → θ = π/2: out = sin(t·π/2)·b
    let cb = (t * std::f64::consts::FRAC_PI_2).sin();
    let want: Vec<f64> = b.iter().map(|&y| cb * y as f64).collect();
    assert_close("slerp zero side", &out, &want, 1e-6);
    cpu::slerp(t as f32, &a, &a, &mut out);
    assert!(out.iter().all(|&v| v == 0.0), "both zero → zero");
}

#[test]
fn sum_of_squares_and_scale_match_naive() {
    let mut r = rng(32);
    let x = randn(&mut r, 100_003, 3.0);
    let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let got = cpu::sum_of_squares(&x);
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    let mut y = x.clone();
    cpu::scale_in_place(&mut y, 0.37);
    let want: Vec<f64> = x.iter().map(|&v| (v * 0.37) as f64).collect();
    assert_close("scale_in_place", &y, &want, 0.0);
}
