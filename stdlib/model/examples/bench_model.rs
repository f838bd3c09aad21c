//! Tokens/s of flow-model's CPU forward and training step on the SmolLM2-135M shape with random
//! weights (run by scripts/bench_model.sh, which runs the PyTorch side beside it).
//!
//! Usage: bench_model [--seq 512] [--fwd-batch 2] [--train-batch 1] [--reps 3] [--layers 30]
//!                    [--decode-prompt 32] [--decode-tokens 64]

use std::time::Instant;

use flow_model::train::{OptimConfig, Sequence, Trainer};
use flow_model::{Config, Model, Params};
use rand::{Rng, SeedableRng};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // as the flow binary does
    flow_model::host_memory::keep_freed_buffers();
    let seq = arg("--seq", 512);
    let fwd_batch = arg("--fwd-batch", 2);
    let train_batch = arg("--train-batch", 1);
    let reps = arg("--reps", 3);
    let layers = arg("--layers", 30);
    let decode_prompt = arg("--decode-prompt", 32);
    let decode_tokens = arg("--decode-tokens", 64);
    let raw = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": layers, "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "max_position_embeddings": 8192, "tie_word_embeddings": true,
        "hidden_act": "silu"
    });
    let config = Config::from_json(
        raw.as_object().unwrap().clone(),
        std::path::Path::new("<bench>"),
    )
    .unwrap();
    let mut params = Params::zeros(&config);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for (d, s) in params.data.iter_mut().zip(&params.shapes) {
        if s.len() == 1 {
            d.fill(1.0);
        } else {
            d.iter_mut()
                .for_each(|x| *x = rng.random_range(-0.02..0.02));
        }
    }
    let model = Model::from_params(config, params).unwrap();
    let seqs: Vec<Vec<u32>> = (0..fwd_batch.max(train_batch))
        .map(|_| (0..seq).map(|_| rng.random_range(0..49152)).collect())
        .collect();
    let threads = rayon::current_num_threads();
    println!("flow-model: SmolLM2-135M shape ({layers} layers), seq {seq}, {threads} threads");

    // forward: logits for every token of `fwd_batch` sequences
    let mut best = f64::MAX;
    for r in 0..=reps {
        let t0 = Instant::now();
        let mut caches: Vec<_> = (0..fwd_batch)
            .map(|_| flow_model::KvCache::new(&model.config))
            .collect();
        let mut segs: Vec<(&[u32], &mut flow_model::KvCache)> = seqs[..fwd_batch]
            .iter()
            .zip(caches.iter_mut())
            .map(|(s, c)| (s.as_slice(), c))
            .collect();
        let hidden = model.forward_segments(&mut segs).unwrap();
        let logits = model.lm_head(&hidden, fwd_batch * seq);
        std::hint::black_box(&logits);
        let dt = t0.elapsed().as_secs_f64();
        if r > 0 {
            best = best.min(dt);
        }
    }
    let fwd_tps = (fwd_batch * seq) as f64 / best;
    println!("RESULT flow forward tokens/s {fwd_tps:.1} (batch {fwd_batch}x{seq}, best of {reps}: {best:.3}s)");

    // greedy decoding of one prompt, as HF `generate` on the PyTorch side:
    // new tokens per second, the prompt's prefill included (the config has
    // no EOS id, so every run makes all of them); with f32 weights, then
    // with the same weights in bf16 (the inference backend of `dtype: bfloat16`)
    if decode_tokens > 0 {
        let prompt = seqs[0][..decode_prompt.min(seq)].to_vec();
        let opts = flow_model::GenerateOptions {
            max_tokens: decode_tokens,
            ..Default::default()
        };
        let time_decode = |generate: &dyn Fn() -> usize| {
            let mut best = f64::MAX;
            for r in 0..=reps {
                let t0 = Instant::now();
                let made = generate();
                let dt = t0.elapsed().as_secs_f64();
                assert_eq!(made, decode_tokens, "decoding stopped early");
                if r > 0 {
                    best = best.min(dt);
                }
            }
            best
        };
        let best = time_decode(&|| {
            model.generate(std::slice::from_ref(&prompt), &opts)[0]
                .tokens
                .len()
        });
        println!(
            "RESULT flow decode tokens/s {:.1} (greedy, f32 weights, prompt {}, {decode_tokens} new tokens, best of {reps}: {best:.3}s)",
            decode_tokens as f64 / best,
            prompt.len()
        );
        let copy = Model::from_params(model.config.clone(), model.params.clone()).unwrap();
        let bf16 = flow_model::ModelOn::place(flow_model::backend::CpuBf16Backend, copy).unwrap();
        let best = time_decode(&|| {
            bf16.try_generate_each(std::slice::from_ref(&prompt), &opts, &mut |_, _| true)
                .unwrap()[0]
                .tokens
                .len()
        });
        println!(
            "RESULT flow decode-bf16 tokens/s {:.1} (greedy, bf16 weights, prompt {}, {decode_tokens} new tokens, best of {reps}: {best:.3}s)",
            decode_tokens as f64 / best,
            prompt.len()
        );
    }

    // training step: forward + backward + AdamW on `train_batch` sequences
    let mut trainer = Trainer::new(
        model,
        OptimConfig {
            lr: 1e-4,
            total_steps: 100,
            ..OptimConfig::default()
        },
    );
    let batch: Vec<Sequence> = seqs[..train_batch]
        .iter()
        .map(|s| Sequence::causal(s))
        .collect();
    let mut best = f64::MAX;
    for r in 0..=reps {
        let t0 = Instant::now();
        let st = trainer.step(std::slice::from_ref(&batch)).unwrap();
        std::hint::black_box(st);
        let dt = t0.elapsed().as_secs_f64();
        if r > 0 {
            best = best.min(dt);
        }
    }
    let train_tps = (train_batch * seq) as f64 / best;
    println!("RESULT flow train tokens/s {train_tps:.1} (batch {train_batch}x{seq}, best of {reps}: {best:.3}s)");
}
