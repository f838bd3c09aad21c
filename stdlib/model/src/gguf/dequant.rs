//! Dequantisation of the GGML tensor types flow imports, following the block
//! layouts of ggml (ggml-common.h / ggml-quants.c).

use half::f16;
use rayon::prelude::*;

/// GGML type ids handled here.
pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;
pub const Q6_K: u32 = 14;
pub const BF16: u32 = 30;

/// The name llama.cpp uses for a type id (also for ones we cannot read).
pub fn type_name(t: u32) -> String {
    let known = [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (30, "BF16"),
    ];
    known
        .iter()
        .find(|k| k.0 == t)
        .map_or_else(|| format!("type {t}"), |k| k.1.to_string())
}

/// (elements per block, bytes per block) of a supported type.
pub fn block_layout(t: u32) -> Option<(usize, usize)> {
    Some(match t {
        F32 => (1, 4),
        F16 | BF16 => (1, 2),
        Q4_0 => (32, 2 + 16),
        Q4_1 => (32, 2 + 2 + 16),
        Q8_0 => (32, 2 + 32),
        Q4_K => (256, 2 + 2 + 12 + 128),
        Q6_K => (256, 128 + 64 + 16 + 2),
        _ => return None,
    })
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0f) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
        *yj = (q as i8) as f32 * d;
    }
}

/// The 6-bit scale and min of sub-block `j` packed in Q4_K's 12 bytes.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let out = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0f) as f32 - min1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Dequantises `data` (exactly the tensor's bytes) of type `t` into `out`.
/// Callers check the type is supported and the sizes agree.
pub fn dequantize(t: u32, data: &[u8], out: &mut [f32]) {
    let (bs, ts) = block_layout(t).expect("dequantize: caller checks the type");
    assert_eq!(data.len() / ts * bs, out.len(), "dequantize: size mismatch");
    let block_fn: fn(&[u8], &mut [f32]) = match t {
        F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        F16 => |b, y| y[0] = f16_at(b, 0),
        BF16 => |b, y| y[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        Q4_0 => block_q4_0,
        Q4_1 => block_q4_1,
        Q8_0 => block_q8_0,
        Q4_K => block_q4_k,
        Q6_K => block_q6_k,
        _ => unreachable!("block_layout accepted the type"),
    };
    // Several thousand elements per task keep rayon's overhead negligible.
    let blocks_per_task = (1usize << 14).div_ceil(bs);
    out.par_chunks_mut(bs * blocks_per_task)
        .zip(data.par_chunks(ts * blocks_per_task))
        .for_each(|(y, b)| {
            for (yb, bb) in y.chunks_exact_mut(bs).zip(b.chunks_exact(ts)) {
                block_fn(bb, yb);
            }
        });
}
