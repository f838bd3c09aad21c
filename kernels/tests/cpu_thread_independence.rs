//! A kernel's result must not depend on how many threads computed it: the
//! engine keeps thread counts out of cache keys, so a unit built on a
//! 2-core laptop and on a 64-core Slurm node must give the same bytes.
//! Every kernel that reduces across rayon tasks is run here in pools of
//! 1, 2, 3 and 8 threads on inputs large enough for many tasks, and its
//! outputs compared bit for bit.

use flow_kernels::cpu::{
    cross_entropy, layernorm_backward, rmsnorm_backward, slerp, sum_of_squares,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

/// `f`'s output in a pool of each size; panics unless all are identical.
fn same_in_every_pool<T: PartialEq + std::fmt::Debug + Send>(what: &str, f: impl Fn() -> T + Sync) {
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(&f)
    };
    let one = run(1);
    for threads in [2, 3, 8] {
        // several times: work stealing differs between runs too
        for _ in 0..3 {
            assert!(
                run(threads) == one,
                "{what}: {threads} threads differ from 1"
            );
        }
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn sum_of_squares_is_the_same_on_any_number_of_threads() {
    let x = random(3_000_017, 1);
    same_in_every_pool("sum_of_squares", || sum_of_squares(&x).to_bits());
}

#[test]
fn cross_entropy_loss_and_gradient_are_the_same_on_any_number_of_threads() {
    let (rows, vocab) = (1024, 1031);
    let logits = random(rows * vocab, 2);
    let targets: Vec<i32> = (0..rows).map(|i| ((i * 7919) % vocab) as i32).collect();
    same_in_every_pool("cross_entropy", || {
        let (loss, n) = cross_entropy(&logits, &targets, rows, vocab, None);
        (loss.to_bits(), n)
    });
    same_in_every_pool("cross_entropy with gradient", || {
        let mut d = vec![0.0f32; rows * vocab];
        let (loss, n) = cross_entropy(&logits, &targets, rows, vocab, Some((&mut d, 0.5)));
        (loss.to_bits(), n, bits(&d))
    });
}

#[test]
fn norm_weight_gradients_are_the_same_on_any_number_of_threads() {
    let (rows, dim) = (8192, 64);
    let dy = random(rows * dim, 3);
    let x = random(rows * dim, 4);
    let w = random(dim, 5);
    let stat: Vec<f32> = random(rows, 6).iter().map(|v| v.abs() + 0.5).collect();
    let mean = random(rows, 7);
    same_in_every_pool("rmsnorm_backward", || {
        let (mut dx, mut dw) = (vec![0.0f32; rows * dim], vec![0.0f32; dim]);
        rmsnorm_backward(&dy, &x, &w, &stat, rows, dim, &mut dx, &mut dw);
        (bits(&dx), bits(&dw))
    });
    same_in_every_pool("layernorm_backward", || {
        let (mut dx, mut dw, mut db) = (
            vec![0.0f32; rows * dim],
            vec![0.0f32; dim],
            vec![0.0f32; dim],
        );
        layernorm_backward(
            &dy, &x, &w, &mean, &stat, rows, dim, &mut dx, &mut dw, &mut db,
        );
        (bits(&dx), bits(&dw), bits(&db))
    });
}

#[test]
fn slerp_is_the_same_on_any_number_of_threads() {
    let a = random(2_000_003, 8);
    let b = random(2_000_003, 9);
    same_in_every_pool("slerp", || {
        let mut out = vec![0.0f32; a.len()];
        slerp(0.3, &a, &b, &mut out);
        bits(&out)
    });
}
