//! Softmax cross-entropy, per-token log-probabilities and log-softmax.

use rayon::prelude::*;

use super::par::rows_per_task;

/// Target value that marks a row as not counted (PyTorch's default).
pub const IGNORE_INDEX: i32 = -100;

/// (max, log Σ exp(x − max)) of a row; exponentials in f32, the sum in f64.
#[inline]
fn row_max_logsum(row: &[f32]) -> (f32, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut acc = [0.0f64; 4];
    let chunks = row.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..4 {
            acc[l] += (c[l] - max).exp() as f64;
        }
    }
    let tail: f64 = rest.iter().map(|&v| (v - max).exp() as f64).sum();
    (max, (acc.iter().sum::<f64>() + tail).ln())
}

/// Softmax cross-entropy over rows of logits [rows, vocab] against targets (IGNORE_INDEX skipped), computed stably in f64 accumulators.
/// Returns (sum of token losses, number of counted tokens). If dlogits is Some((buf, scale)), writes buf = scale·(softmax − onehot) for counted rows and 0 for ignored rows.
pub fn cross_entropy(
    logits: &[f32],
    targets: &[i32],
    rows: usize,
    vocab: usize,
    dlogits: Option<(&mut [f32], f32)>,
) -> (f64, usize) {
    assert_eq!(logits.len(), rows * vocab, "cross_entropy: logits");
    assert_eq!(targets.len(), rows, "cross_entropy: targets");
    if rows == 0 || vocab == 0 {
        return (0.0, 0);
    }
    let check = |tg: i32| -> Option<usize> {
        if tg == IGNORE_INDEX {
            return None;
        }
        assert!(
            tg >= 0 && (tg as usize) < vocab,
            "cross_entropy: target {tg} outside vocab {vocab}"
        );
        Some(tg as usize)
    };
    let rpt = rows_per_task(vocab, 1 << 15);
    match dlogits {
        None => logits
            .par_chunks(rpt * vocab)
            .zip(targets.par_chunks(rpt))
            .map(|(lb, tb)| {
                let mut loss = 0.0f64;
                let mut count = 0usize;
                for (row, &tg) in lb.chunks_exact(vocab).zip(tb) {
                    if let Some(tg) = check(tg) {
                        let (max, logsum) = row_max_logsum(row);
                        loss += max as f64 + logsum - row[tg] as f64;
                        count += 1;
                    }
                }
                (loss, count)
            })
            .collect::<Vec<(f64, usize)>>()
            .into_iter()
            .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
        Some((grad, scale)) => {
            assert_eq!(grad.len(), rows * vocab, "cross_entropy: dlogits");
            grad.par_chunks_mut(rpt * vocab)
                .zip(logits.par_chunks(rpt * vocab))
                .zip(targets.par_chunks(rpt))
                .map(|((gb, lb), tb)| {
                    let mut loss = 0.0f64;
                    let mut count = 0usize;
                    for ((grow, row), &tg) in gb
                        .chunks_exact_mut(vocab)
                        .zip(lb.chunks_exact(vocab))
                        .zip(tb)
                    {
                        let Some(tg) = check(tg) else {
                            grow.fill(0.0);
                            continue;
                        };
                        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0.0f64;
                        for (g, &x) in grow.iter_mut().zip(row) {
                            let e = (x - max).exp();
                            *g = e;
                            sum += e as f64;
                        }
                        loss += max as f64 + sum.ln() - row[tg] as f64;
                        count += 1;
                        let k = (scale as f64 / sum) as f32;
                        for g in grow.iter_mut() {
                            *g *= k;
                        }
                        grow[tg] -= scale;
                    }
                    (loss, count)
                })
                .collect::<Vec<(f64, usize)>>()
                .into_iter()
                .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        }
    }
}

/// log p(target) per row, and whether target is the argmax (lm-eval's
/// is_greedy; ties resolve to the first maximal index, like torch.argmax).
pub fn token_logprobs(
    logits: &[f32],
    targets: &[u32],
    rows: usize,
    vocab: usize,
) -> Vec<(f32, bool)> {
    assert_eq!(logits.len(), rows * vocab, "token_logprobs: logits");
    assert_eq!(targets.len(), rows, "token_logprobs: targets");
    if rows == 0 {
        return Vec::new();
    }
    assert!(vocab > 0, "token_logprobs: empty vocabulary");
    logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .with_min_len(rows_per_task(vocab, 1 << 15))
        .map(|(row, &tg)| {
            let tg = tg as usize;
            assert!(
                tg < vocab,
                "token_logprobs: target {tg} outside vocab {vocab}"
            );
            let (max, logsum) = row_max_logsum(row);
            let mut argmax = 0;
            for (i, &x) in row.iter().enumerate() {
                if x > row[argmax] {
                    argmax = i;
                }
            }
            let lp = (row[tg] as f64 - max as f64 - logsum) as f32;
            (lp, argmax == tg)
        })
        .collect()
}

/// In place log-softmax of each row.
pub fn log_softmax_rows(x: &mut [f32], rows: usize, cols: usize) {
    assert_eq!(x.len(), rows * cols, "log_softmax_rows: x");
    if rows == 0 || cols == 0 {
        return;
    }
    x.par_chunks_mut(cols)
        .with_min_len(rows_per_task(cols, 1 << 15))
        .for_each(|row| {
            let (max, logsum) = row_max_logsum(row);
            let shift = (max as f64 + logsum) as f32;
            for v in row.iter_mut() {
                *v -= shift;
            }
        });
}
