//! Backward kernels against central finite differences (f64, step 1e-5) of
//! a scalar loss L = Σ dout·f(x), where f is a naive f64 reference forward
//! written here. Tolerance: max-norm error relative to the largest
//! reference gradient ≤ 1e-4 (the kernels compute in f32).

mod common;

use common::*;
use flow_kernels::cpu::{self, AttnParams, RopeTable};

const H: f64 = 1e-5;
const TOL: f64 = 1e-4;

#[test]
fn linear_backward_matches_finite_differences() {
    let mut r = rng(20);
    let (t, in_f, out_f) = (6, 9, 5);
    let x = randn(&mut r, t * in_f, 1.0);
    let w = randn(&mut r, out_f * in_f, 1.0);
    let b = randn(&mut r, out_f, 1.0);
    let dy = randn(&mut r, t * out_f, 1.0);
    let dy64 = to64(&dy);
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
        let mut l = 0.0;
        for i in 0..t {
            for o in 0..out_f {
                let mut y = b[o];
                for c in 0..in_f {
                    y += x[i * in_f + c] * w[o * in_f + c];
                }
                l += dy64[i * out_f + o] * y;
            }
        }
        l
    };
    let (x64, w64, b64) = (to64(&x), to64(&w), to64(&b));
    let gx = fd_grad(&x64, H, |x| fwd(x, &w64, &b64));
    let gw = fd_grad(&w64, H, |w| fwd(&x64, w, &b64));
    let gb = fd_grad(&b64, H, |b| fwd(&x64, &w64, b));
    // dw and dbias accumulate into what is already there
    let dw0 = randn(&mut r, out_f * in_f, 1.0);
    let db0 = randn(&mut r, out_f, 1.0);
    let mut dx = vec![f32::NAN; t * in_f];
    let (mut dw, mut db) = (dw0.clone(), db0.clone());
    cpu::linear_backward(
        &dy,
        &x,
        &w,
        t,
        in_f,
        out_f,
        Some(&mut dx),
        &mut dw,
        Some(&mut db),
    );
    assert_close("linear dx", &dx, &gx, TOL);
    let want_dw: Vec<f64> = gw.iter().zip(&dw0).map(|(g, a)| g + *a as f64).collect();
    let want_db: Vec<f64> = gb.iter().zip(&db0).map(|(g, a)| g + *a as f64).collect();
    assert_close("linear dw (acc)", &dw, &want_dw, TOL);
    assert_close("linear dbias (acc)", &db, &want_db, TOL);
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let mut r = rng(21);
    let (rows, dim, eps) = (5, 13, 1e-6f32);
    let x = randn(&mut r, rows * dim, 2.0);
    let w = randn(&mut r, dim, 1.5);
    let dy = randn(&mut r, rows * dim, 1.0);
    let dy64 = to64(&dy);
    let fwd = |x: &[f64], w: &[f64]| -> f64 {
        let mut l = 0.0;
        for i in 0..rows {
            let row = &x[i * dim..(i + 1) * dim];
            let rs =
                1.0 / (row.iter().map(|v| v * v).sum::<f64>() / dim as f64 + eps as f64).sqrt();
            for c in 0..dim {
                l += dy64[i * dim + c] * w[c] * row[c] * rs;
            }
        }
        l
    };
    let (x64, w64) = (to64(&x), to64(&w));
    let gx = fd_grad(&x64, H, |x| fwd(x, &w64));
    let gw = fd_grad(&w64, H, |w| fwd(&x64, w));
    let mut y = vec![0.0; rows * dim];
    let mut rstd = vec![0.0; rows];
    cpu::rmsnorm_forward(&x, &w, eps, rows, dim, &mut y, &mut rstd);
    let mut dx = vec![f32::NAN; rows * dim];
    let dw0 = randn(&mut r, dim, 1.0);
    let mut dw = dw0.clone();
    cpu::rmsnorm_backward(&dy, &x, &w, &rstd, rows, dim, &mut dx, &mut dw);
    assert_close("rmsnorm dx", &dx, &gx, TOL);
    let want_dw: Vec<f64> = gw.iter().zip(&dw0).map(|(g, a)| g + *a as f64).collect();
    assert_close("rmsnorm dw (acc)", &dw, &want_dw, TOL);
}

#[test]
fn rope_backward_matches_finite_differences() {
    let mut r = rng(22);
    let (heads, d, theta) = (2, 8, 500.0);
    let positions = [4u32, 0, 9];
    let table = RopeTable::new(d, theta, 16);
    let x = randn(&mut r, positions.len() * heads * d, 1.0);
    let dout = randn(&mut r, x.len(), 1.0);
    let dout64 = to64(&dout);
    let fwd = |x: &[f64]| -> f64 {
        let half = d / 2;
        let mut l = 0.0;
        for (ti, &pos) in positions.iter().enumerate() {
            for h in 0..heads {
                let base = (ti * heads + h) * d;
                for i in 0..half {
                    let ang = pos as f64 * theta.powf(-(2.0 * i as f64) / d as f64);
                    let (a, b) = (x[base + i], x[base + i + half]);
                    l += dout64[base + i] * (a * ang.cos() - b * ang.sin());
                    l += dout64[base + i + half] * (b * ang.cos() + a * ang.sin());
                }
            }
        }
        l
    };
    let g = fd_grad(&to64(&x), H, fwd);
    let mut dx = dout.clone();
    cpu::rope_backward(&mut dx, &positions, heads, &table);
    assert_close("rope dx", &dx, &g, TOL);
}

/// (name, q heads, kv heads, head dim, t, s, window, doc ids)
type AttnCase = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    Option<usize>,
    Option<Vec<u32>>,
);

#[test]
fn attention_backward_matches_finite_differences() {
    let mut r = rng(23);
    let packed: Vec<u32> = (0..70u32)
        .map(|j| {
            if j < 20 {
                0
            } else if j < 45 {
                1
            } else {
                2
            }
        })
        .collect();
    let shuffled: Vec<u32> = (0..40u32).map(|j| (j * 5 + j / 4) % 3).collect();
    // (name, hq, hkv, d, t, s, window, doc)
    let cases: Vec<AttnCase> = vec![
        (
            "gqa, kv offset, several key blocks",
            4,
            2,
            4,
            35,
            70,
            None,
            None,
        ),
        ("sliding window", 2, 1, 4, 40, 40, Some(9), None),
        ("packed docs", 2, 2, 4, 70, 70, None, Some(packed)),
        ("non-monotonic docs", 2, 1, 4, 33, 40, None, Some(shuffled)),
    ];
    for (name, hq, hkv, d, t, s, window, doc) in cases {
        let q = randn(&mut r, t * hq * d, 1.5);
        let k = randn(&mut r, s * hkv * d, 1.5);
        let v = randn(&mut r, s * hkv * d, 1.0);
        let dout = randn(&mut r, t * hq * d, 1.0);
        let scale = 1.0 / (d as f32).sqrt();
        let p = AttnParams {
            q_heads: hq,
            kv_heads: hkv,
            head_dim: d,
            scale,
            window,
        };
        let mut out = vec![0.0; q.len()];
        let mut lse = vec![0.0; hq * t];
        cpu::attention_forward(&p, t, s, &q, &k, &v, doc.as_deref(), &mut out, &mut lse);
        let (mut dq, mut dk, mut dv) = (
            vec![f32::NAN; q.len()],
            vec![f32::NAN; k.len()],
            vec![f32::NAN; v.len()],
        );
        cpu::attention_backward(
            &p,
            t,
            s,
            &q,
            &k,
            &v,
            doc.as_deref(),
            &out,
            &lse,
            &dout,
            &mut dq,
            &mut dk,
            &mut dv,
        );
        let (q64, k64, v64, d64) = (to64(&q), to64(&k), to64(&v), to64(&dout));
        let loss = |q: &[f64], k: &[f64], v: &[f64]| {
            let (o, _) = naive_attention(
                hq,
                hkv,
                d,
                scale as f64,
                window,
                t,
                s,
                q,
                k,
                v,
                doc.as_deref(),
            );
            dot64(&o, &d64)
        };
        let gq = fd_grad(&q64, H, |q| loss(q, &k64, &v64));
        let gk = fd_grad(&k64, H, |k| loss(&q64, k, &v64));
        let gv = fd_grad(&v64, H, |v| loss(&q64, &k64, v));
        assert_close(&format!("attention dq ({name})"), &dq, &gq, TOL);
        assert_close(&format!("attention dk ({name})"), &dk, &gk, TOL);
        assert_close(&format!("attention dv ({name})"), &dv, &gv, TOL);
    }
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let mut r = rng(24);
    let n = 200;
    let g = randn(&mut r, n, 5.0);
    let u = randn(&mut r, n, 2.0);
    let dout = randn(&mut r, n, 1.0);
    let d64 = to64(&dout);
    let fwd = |g: &[f64], u: &[f64]| -> f64 {
        (0..n)
            .map(|i| d64[i] * g[i] / (1.0 + (-g[i]).exp()) * u[i])
            .sum()
    };
    let (g64, u64) = (to64(&g), to64(&u));
    let gg = fd_grad(&g64, H, |g| fwd(g, &u64));
    let gu = fd_grad(&u64, H, |u| fwd(&g64, u));
    let (mut dg, mut du) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    cpu::swiglu_backward(&g, &u, &dout, &mut dg, &mut du);
    assert_close("swiglu dgate", &dg, &gg, TOL);
    assert_close("swiglu dup", &du, &gu, TOL);
}

#[test]
fn embedding_backward_accumulates_repeated_ids() {
    let mut r = rng(25);
    let (vocab, dim) = (6, 4);
    let ids = [2u32, 5, 2, 0];
    let dout = randn(&mut r, ids.len() * dim, 1.0);
    let d64 = to64(&dout);
    let table = randn(&mut r, vocab * dim, 1.0);
    let fwd = |tab: &[f64]| -> f64 {
        let mut l = 0.0;
        for (i, &id) in ids.iter().enumerate() {
            for c in 0..dim {
                l += d64[i * dim + c] * tab[id as usize * dim + c];
            }
        }
        l
    };
    let g = fd_grad(&to64(&table), H, fwd);
    let d0 = randn(&mut r, vocab * dim, 1.0);
    let mut dt = d0.clone();
    cpu::embedding_backward(&ids, &dout, dim, &mut dt);
    let want: Vec<f64> = g.iter().zip(&d0).map(|(g, a)| g + *a as f64).collect();
    assert_close("embedding dtable (acc)", &dt, &want, TOL);
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let mut r = rng(26);
    let (rows, vocab) = (4, 11);
    let logits = randn(&mut r, rows * vocab, 4.0);
    let targets = [3i32, cpu::IGNORE_INDEX, 10, 0];
    let scale = 0.5f32;
    let fwd = |x: &[f64]| -> f64 {
        let mut l = 0.0;
        for i in 0..rows {
            if targets[i] == cpu::IGNORE_INDEX {
                continue;
            }
            let row = &x[i * vocab..(i + 1) * vocab];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            l += m + z.ln() - row[targets[i] as usize];
        }
        scale as f64 * l
    };
    let g = fd_grad(&to64(&logits), H, fwd);
    let mut grad = vec![f32::NAN; rows * vocab];
    cpu::cross_entropy(&logits, &targets, rows, vocab, Some((&mut grad, scale)));
    assert_close("cross_entropy dlogits", &grad, &g, TOL);
}
