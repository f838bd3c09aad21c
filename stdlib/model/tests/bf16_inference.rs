//! Inference with bf16 weights on the CPU (`CpuBf16Backend`, `dtype:
//! bfloat16`): with the same weights it computes what the f32 model computes
//! (the weights are widened exactly; only summation order differs), and a
//! model rounded to bf16 stays near transformers' f32 logits. It does not
//! train.

mod common;
use common::*;

use flow_model::backend::CpuBf16Backend;
use flow_model::train::{OptimConfig, TrainerOn};
use flow_model::{GenerateOptions, Model, ModelOn, SaveDtype};

/// The golden model of `arch` saved in bf16: its f32 load holds exactly the
/// values the bf16 backend widens.
fn bf16_copy(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = Model::load(&golden_dir(arch)).unwrap();
    m.save(dir.path(), SaveDtype::Bf16).unwrap();
    dir
}

#[test]
fn bf16_weights_compute_what_f32_computes_with_the_same_weights() {
    for arch in ARCHS {
        let dir = bf16_copy(arch);
        assert!(flow_model::weights::stored_in_bf16(dir.path()).unwrap());
        let f32_model = Model::load(dir.path()).unwrap();
        let bf16 = ModelOn::place(CpuBf16Backend, Model::load(dir.path()).unwrap()).unwrap();
        let v = f32_model.config.vocab_size as u32;
        let toks: Vec<u32> = (0..19u32).map(|i| (i * 37 + 5) % v).collect();
        // 19 rows (the widened gemm path) and 5 (the streaming path)
        for n in [19, 5] {
            let want = f32_model.forward_logits(&toks[..n]);
            let got = bf16.try_forward_logits(&toks[..n]).unwrap();
            let err = rel_err(&got, &want);
            assert!(
                err < 1e-5,
                "{arch} logits of {n} tokens: relative error {err}"
            );
        }
        let reqs = vec![
            (toks[..5].to_vec(), toks[5..9].to_vec()),
            (toks[..12].to_vec(), toks[12..].to_vec()),
        ];
        let want = f32_model.loglikelihood(&reqs);
        let got = bf16.try_loglikelihood(&reqs).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.logprob - w.logprob).abs() < 1e-3,
                "{arch} loglikelihood {} vs {}",
                g.logprob,
                w.logprob
            );
            assert_eq!(g.is_greedy, w.is_greedy, "{arch} is_greedy");
        }
        let opts = GenerateOptions {
            max_tokens: 10,
            ..Default::default()
        };
        let prompts = vec![toks[..4].to_vec(), toks[4..15].to_vec()];
        let want = f32_model.generate(&prompts, &opts);
        let got = bf16
            .try_generate_each(&prompts, &opts, &mut |_, _| true)
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.tokens, w.tokens, "{arch} greedy tokens");
        }
    }
}

/// Rounding transformers' f32 weights to bf16 moves the logits by about the
/// precision of bf16 (8 bits of mantissa), no more.
#[test]
fn a_model_rounded_to_bf16_stays_near_transformers_logits() {
    for arch in ARCHS {
        let bf16 = ModelOn::place(CpuBf16Backend, Model::load(&golden_dir(arch)).unwrap()).unwrap();
        let g = golden_json(arch);
        let t = golden_tensors(arch);
        for (i, inp) in g["inputs"].as_array().unwrap().iter().enumerate() {
            let logits = bf16.try_forward_logits(&ids(inp)).unwrap();
            let err = rel_err(&logits, &t[&format!("logits.{i}")]);
            assert!(err < 3e-2, "{arch} input {i}: relative error {err}");
            // and it is not the f32 model itself: the rounding shows
            assert!(err > 1e-6, "{arch} input {i}: no rounding seen ({err})");
        }
    }
}

#[test]
fn an_f32_checkpoint_is_not_taken_for_a_bf16_one() {
    assert!(!flow_model::weights::stored_in_bf16(&golden_dir("qwen2")).unwrap());
}

#[test]
fn bf16_inference_weights_refuse_to_train() {
    let bf16 = ModelOn::place(CpuBf16Backend, Model::load(&golden_dir("llama")).unwrap()).unwrap();
    let err = TrainerOn::open(bf16, OptimConfig::default())
        .err()
        .expect("a trainer over bf16 inference weights");
    assert!(err.to_string().contains("do not train"), "{err}");
}
