//! Forward kernels against naive f64 references written here (explicit
//! loops, explicit score matrices) on seeded random inputs.

mod common;

use common::*;
use flow_kernels::cpu::{self, AttnParams, RopeTable};

// The matrix product itself is checked in cpu_gemm.rs.

#[test]
fn linear_forward_matches_naive_with_and_without_bias() {
    let mut r = rng(2);
    let (t, in_f, out_f) = (11, 24, 17);
    let x = randn(&mut r, t * in_f, 1.0);
    let w = randn(&mut r, out_f * in_f, 0.5);
    let b = randn(&mut r, out_f, 1.0);
    for bias in [None, Some(&b[..])] {
        let mut want = vec![0.0f64; t * out_f];
        for i in 0..t {
            for o in 0..out_f {
                let mut acc = bias.map_or(0.0, |b| b[o] as f64);
                for c in 0..in_f {
                    acc += x[i * in_f + c] as f64 * w[o * in_f + c] as f64;
                }
                want[i * out_f + o] = acc;
            }
        }
        let mut y = vec![f32::NAN; t * out_f];
        cpu::linear_forward(&x, &w, bias, t, in_f, out_f, &mut y);
        assert_close("linear_forward", &y, &want, 1e-5);
    }
}

#[test]
fn rmsnorm_forward_matches_hf_formula() {
    let mut r = rng(3);
    let (rows, dim, eps) = (9, 67, 1e-5f32);
    let x = randn(&mut r, rows * dim, 2.0);
    let w = randn(&mut r, dim, 1.5);
    let mut y = vec![0.0; rows * dim];
    let mut rstd = vec![0.0; rows];
    cpu::rmsnorm_forward(&x, &w, eps, rows, dim, &mut y, &mut rstd);
    let mut want = vec![0.0f64; rows * dim];
    let mut want_r = vec![0.0f64; rows];
    for i in 0..rows {
        let row = &x[i * dim..(i + 1) * dim];
        let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
        let rs = 1.0 / (ms + eps as f64).sqrt();
        want_r[i] = rs;
        for c in 0..dim {
            want[i * dim + c] = w[c] as f64 * row[c] as f64 * rs;
        }
    }
    assert_close("rmsnorm y", &y, &want, 1e-6);
    assert_close("rmsnorm rstd", &rstd, &want_r, 1e-6);
}

/// Rotate-half RoPE computed from scratch in f64.
fn naive_rope(
    x: &[f32],
    positions: &[u32],
    heads: usize,
    d: usize,
    theta: f64,
    sign: f64,
) -> Vec<f64> {
    let mut out = to64(x);
    let half = d / 2;
    for (ti, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (ti * heads + h) * d;
            for i in 0..half {
                let ang = pos as f64 * theta.powf(-(2.0 * i as f64) / d as f64);
                let (c, s) = (ang.cos(), sign * ang.sin());
                let (a, b) = (x[base + i] as f64, x[base + i + half] as f64);
                out[base + i] = a * c - b * s;
                out[base + i + half] = b * c + a * s;
            }
        }
    }
    out
}

#[test]
fn rope_matches_rotate_half_formula_and_backward_inverts_it() {
    let mut r = rng(4);
    let (heads, d, theta) = (3, 16, 10000.0);
    let positions: Vec<u32> = vec![0, 1, 2, 7, 31, 100, 5];
    let table = RopeTable::new(d, theta, 128);
    assert_eq!(table.head_dim(), d);
    let x = randn(&mut r, positions.len() * heads * d, 1.0);
    let mut y = x.clone();
    cpu::rope_forward(&mut y, &positions, heads, &table);
    // HF rounds angles in f32; at position 100 that is ~1e-5 rad.
    assert_close(
        "rope forward",
        &y,
        &naive_rope(&x, &positions, heads, d, theta, 1.0),
        1e-4,
    );
    let mut back = x.clone();
    cpu::rope_backward(&mut back, &positions, heads, &table);
    assert_close(
        "rope backward",
        &back,
        &naive_rope(&x, &positions, heads, d, theta, -1.0),
        1e-4,
    );
    cpu::rope_backward(&mut y, &positions, heads, &table);
    assert_close("rope round trip", &y, &to64(&x), 1e-6);
}

struct AttnCase {
    name: &'static str,
    hq: usize,
    hkv: usize,
    d: usize,
    t: usize,
    s: usize,
    window: Option<usize>,
    doc: Option<Vec<u32>>,
}

fn attn_cases() -> Vec<AttnCase> {
    let packed: Vec<u32> = (0..150u32)
        .map(|j| {
            if j < 40 {
                0
            } else if j < 41 {
                1
            } else if j < 110 {
                2
            } else {
                3
            }
        })
        .collect();
    let shuffled: Vec<u32> = (0..70u32).map(|j| (j * 7 + j / 3) % 3).collect();
    vec![
        AttnCase {
            name: "mha t=s",
            hq: 2,
            hkv: 2,
            d: 8,
            t: 5,
            s: 5,
            window: None,
            doc: None,
        },
        AttnCase {
            name: "gqa multi-block",
            hq: 6,
            hkv: 2,
            d: 16,
            t: 100,
            s: 100,
            window: None,
            doc: None,
        },
        AttnCase {
            name: "kv cache offset",
            hq: 4,
            hkv: 1,
            d: 8,
            t: 37,
            s: 150,
            window: None,
            doc: None,
        },
        AttnCase {
            name: "decode t=1",
            hq: 3,
            hkv: 3,
            d: 32,
            t: 1,
            s: 200,
            window: None,
            doc: None,
        },
        AttnCase {
            name: "sliding window",
            hq: 4,
            hkv: 2,
            d: 8,
            t: 90,
            s: 130,
            window: Some(17),
            doc: None,
        },
        AttnCase {
            name: "packed docs",
            hq: 4,
            hkv: 2,
            d: 8,
            t: 150,
            s: 150,
            window: None,
            doc: Some(packed.clone()),
        },
        AttnCase {
            name: "docs + window",
            hq: 2,
            hkv: 1,
            d: 8,
            t: 150,
            s: 150,
            window: Some(30),
            doc: Some(packed),
        },
        AttnCase {
            name: "non-monotonic doc ids",
            hq: 2,
            hkv: 2,
            d: 8,
            t: 60,
            s: 70,
            window: None,
            doc: Some(shuffled),
        },
    ]
}

#[test]
fn attention_forward_matches_explicit_score_matrix() {
    let mut r = rng(5);
    for c in attn_cases() {
        let q = randn(&mut r, c.t * c.hq * c.d, 1.5);
        let k = randn(&mut r, c.s * c.hkv * c.d, 1.5);
        let v = randn(&mut r, c.s * c.hkv * c.d, 1.0);
        let scale = 1.0 / (c.d as f32).sqrt();
        let p = AttnParams {
            q_heads: c.hq,
            kv_heads: c.hkv,
            head_dim: c.d,
            scale,
            window: c.window,
        };
        let mut out = vec![f32::NAN; q.len()];
        let mut lse = vec![f32::NAN; c.hq * c.t];
        cpu::attention_forward(
            &p,
            c.t,
            c.s,
            &q,
            &k,
            &v,
            c.doc.as_deref(),
            &mut out,
            &mut lse,
        );
        let (want, want_lse) = naive_attention(
            c.hq,
            c.hkv,
            c.d,
            scale as f64,
            c.window,
            c.t,
            c.s,
            &to64(&q),
            &to64(&k),
            &to64(&v),
            c.doc.as_deref(),
        );
        assert_close(&format!("attention out ({})", c.name), &out, &want, 1e-5);
        assert_close(
            &format!("attention lse ({})", c.name),
            &lse,
            &want_lse,
            1e-5,
        );
    }
}

#[test]
fn swiglu_forward_matches_formula() {
    let mut r = rng(6);
    let g = randn(&mut r, 1000, 6.0);
    let u = randn(&mut r, 1000, 2.0);
    let mut out = vec![0.0; 1000];
    cpu::swiglu_forward(&g, &u, &mut out);
    let want: Vec<f64> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64)
        .collect();
    assert_close("swiglu", &out, &want, 1e-6);
}

#[test]
fn embedding_forward_copies_rows() {
    let mut r = rng(7);
    let (vocab, dim) = (10, 6);
    let table = randn(&mut r, vocab * dim, 1.0);
    let ids = [3u32, 0, 9, 3];
    let mut out = vec![0.0; ids.len() * dim];
    cpu::embedding_forward(&ids, &table, dim, &mut out);
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            &out[i * dim..(i + 1) * dim],
            &table[id as usize * dim..(id as usize + 1) * dim]
        );
    }
}

fn naive_log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    row.iter().map(|&v| v as f64 - m - z.ln()).collect()
}

#[test]
fn cross_entropy_matches_naive_and_skips_ignored_rows() {
    let mut r = rng(8);
    let (rows, vocab) = (7, 300);
    let mut logits = randn(&mut r, rows * vocab, 8.0);
    logits[5] = 60.0; // a large logit to exercise the max shift
    let targets = [3i32, cpu::IGNORE_INDEX, 299, 0, cpu::IGNORE_INDEX, 150, 7];
    let mut want_loss = 0.0f64;
    let mut want_grad = vec![0.0f64; rows * vocab];
    let scale = 0.25f32;
    for i in 0..rows {
        if targets[i] == cpu::IGNORE_INDEX {
            continue;
        }
        let ls = naive_log_softmax(&logits[i * vocab..(i + 1) * vocab]);
        want_loss -= ls[targets[i] as usize];
        for c in 0..vocab {
            let onehot = if c == targets[i] as usize { 1.0 } else { 0.0 };
            want_grad[i * vocab + c] = scale as f64 * (ls[c].exp() - onehot);
        }
    }
    let (loss, count) = cpu::cross_entropy(&logits, &targets, rows, vocab, None);
    assert_eq!(count, 5);
    assert!(
        (loss - want_loss).abs() <= 1e-9 * want_loss.abs().max(1.0) + 1e-5,
        "loss {loss} vs {want_loss}"
    );
    let mut grad = vec![f32::NAN; rows * vocab];
    let (loss2, count2) =
        cpu::cross_entropy(&logits, &targets, rows, vocab, Some((&mut grad, scale)));
    assert_eq!(count2, 5);
    assert!(
        (loss2 - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0),
        "loss {loss2} vs {want_loss}"
    );
    assert_close("cross_entropy dlogits", &grad, &want_grad, 1e-6);
    assert!(
        grad[vocab..2 * vocab].iter().all(|&g| g == 0.0),
        "ignored row must get zero gradient"
    );
}

#[test]
fn token_logprobs_and_greedy_flag() {
    let mut r = rng(9);
    let (rows, vocab) = (4, 50);
    let mut logits = randn(&mut r, rows * vocab, 3.0);
    // row 2: a tie for the max between index 10 and 20; the first wins (torch.argmax)
    logits[2 * vocab + 10] = 9.0;
    logits[2 * vocab + 20] = 9.0;
    let row0_argmax = (0..vocab)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap() as u32;
    let targets = [row0_argmax, (row0_argmax + 1) % vocab as u32, 20, 10];
    let got = cpu::token_logprobs(&logits, &targets, rows, vocab);
    for i in 0..rows {
        let ls = naive_log_softmax(&logits[i * vocab..(i + 1) * vocab]);
        assert!(
            (got[i].0 as f64 - ls[targets[i] as usize]).abs() < 1e-5,
            "row {i}"
        );
    }
    assert!(got[0].1, "argmax target is greedy");
    assert!(!got[1].1, "non-argmax target is not greedy");
    assert!(!got[2].1, "tied later index is not torch's argmax");
    let row3_argmax = (0..vocab)
        .rev()
        .max_by(|&a, &b| logits[3 * vocab + a].total_cmp(&logits[3 * vocab + b]))
        .unwrap();
    assert_eq!(got[3].1, row3_argmax == 10);
}

#[test]
fn log_softmax_rows_matches_naive() {
    let mut r = rng(10);
    let (rows, cols) = (5, 123);
    let x = randn(&mut r, rows * cols, 20.0);
    let mut y = x.clone();
    cpu::log_softmax_rows(&mut y, rows, cols);
    let want: Vec<f64> = x.chunks(cols).flat_map(naive_log_softmax).collect();
    assert_close("log_softmax", &y, &want, 1e-6);
}

#[test]
fn bf16_and_f16_conversions_follow_ieee_rounding() {
    use half::{bf16, f16};
    // bf16 keeps the top 16 bits, rounding to nearest, ties to even.
    let cases: [(u32, u16); 5] = [
        (0x3F80_0000, 0x3F80), // 1.0
        (0x3F80_8000, 0x3F80), // halfway, even below
        (0x3F81_8000, 0x3F82), // halfway, even above
        (0x3F80_8001, 0x3F81), // just above halfway
        (0xC049_0FDB, 0xC049), // -pi
    ];
    let src: Vec<f32> = cases.iter().map(|c| f32::from_bits(c.0)).collect();
    let mut dst = vec![bf16::ZERO; src.len()];
    cpu::f32_to_bf16(&src, &mut dst);
    for (c, b) in cases.iter().zip(&dst) {
        assert_eq!(b.to_bits(), c.1, "f32 {:#x}", c.0);
    }
    let mut back = vec![0.0f32; dst.len()];
    cpu::bf16_to_f32(&dst, &mut back);
    for (b, v) in dst.iter().zip(&back) {
        assert_eq!(v.to_bits(), (b.to_bits() as u32) << 16);
    }
    // f16: 0x3C00 = 1.0, 0xC000 = -2.0, 0x0001 = 2^-24, 0x7BFF = 65504
    let h: Vec<f16> = [0x3C00u16, 0xC000, 0x0001, 0x7BFF]
        .iter()
        .map(|&b| f16::from_bits(b))
        .collect();
    let mut f = vec![0.0f32; 4];
    cpu::f16_to_f32(&h, &mut f);
    assert_eq!(f, vec![1.0, -2.0, 2f32.powi(-24), 65504.0]);
}
