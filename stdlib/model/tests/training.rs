//! Training against HF transformers goldens (gradients, five AdamW steps,
//! schedules), finite differences, packing, checkpointing, bit-exact resume.

mod common;
use common::*;

use flow_model::train::{
    checkpoint_steps, LossLine, OptimConfig, Schedule, Sequence, TrainConfig, Trainer,
};
use flow_model::{Model, SaveDtype};
use rand::{Rng, SeedableRng};

fn golden_batch(g: &serde_json::Value) -> Vec<Sequence> {
    let rows = g["train_input_ids"].as_array().unwrap();
    let labels = g["train_labels"].as_array().unwrap();
    rows.iter()
        .zip(labels)
        .map(|(r, l)| {
            let l: Vec<i32> = l
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap() as i32)
                .collect();
            Sequence::with_labels(&ids(r), &l)
        })
        .collect()
}

fn adamw_config(g: &serde_json::Value) -> OptimConfig {
    let a = &g["adamw"];
    OptimConfig {
        lr: a["lr"].as_f64().unwrap(),
        weight_decay: a["weight_decay"].as_f64().unwrap(),
        beta1: a["betas"][0].as_f64().unwrap(),
        beta2: a["betas"][1].as_f64().unwrap(),
        eps: a["eps"].as_f64().unwrap(),
        warmup_steps: a["warmup_steps"].as_u64().unwrap() as usize,
        total_steps: a["total_steps"].as_u64().unwrap() as usize,
        schedule: Schedule::Cosine,
        max_grad_norm: a["max_grad_norm"].as_f64().unwrap(),
        activation_checkpointing: false,
    }
}

/// Loss and the gradient of every parameter agree with torch autograd (1e-4 relative to each
/// tensor's largest gradient). The batch is split into two micro-batches to exercise accumulation.
#[test]
fn gradients_match_transformers() {
    for arch in ARCHS {
        let g = golden_json(arch);
        let t = golden_tensors(arch);
        let model = Model::load(&golden_dir(arch)).unwrap();
        let mut tr = Trainer::new(model, adamw_config(&g));
        let batch = golden_batch(&g);
        let (loss, counted) = tr
            .accumulate(&[vec![batch[0].clone()], vec![batch[1].clone()]])
            .unwrap();
        assert_eq!(counted, 15 + 11);
        let want = g["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() < 1e-5 * want,
            "{arch}: loss {loss} vs {want}"
        );
        let grads = tr.grads();
        for (name, gr) in grads.names.iter().zip(&grads.data) {
            let err = rel_err(gr, &t[&format!("grad.{name}")]);
            assert!(err < 1e-4, "{arch} {name}: relative error {err}");
        }
    }
}

#[test]
fn five_adamw_steps_match_transformers() {
    for arch in ARCHS {
        let g = golden_json(arch);
        let model = Model::load(&golden_dir(arch)).unwrap();
        let mut tr = Trainer::new(model, adamw_config(&g));
        let batch = golden_batch(&g);
        let a = &g["adamw"];
        for s in 0..5 {
            let st = tr.step(std::slice::from_ref(&batch)).unwrap();
            let want = a["losses"][s].as_f64().unwrap();
            assert!(
                (st.loss - want).abs() < 1e-4 * want,
                "{arch} step {s}: loss {} vs {want}",
                st.loss
            );
            let lr = a["lrs"][s].as_f64().unwrap();
            assert!(
                (st.lr - lr).abs() < 1e-12,
                "{arch} step {s}: lr {} vs {lr}",
                st.lr
            );
            let norm = a["grad_norms"][s].as_f64().unwrap();
            assert!(
                (st.grad_norm - norm).abs() < 1e-4 * norm,
                "{arch} step {s}: grad norm {} vs {norm}",
                st.grad_norm
            );
        }
    }
}

#[test]
fn schedules_match_transformers() {
    let text = std::fs::read_to_string(golden_dir("schedules.json")).unwrap();
    let s: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(!s.is_empty());
    for (key, vals) in &s {
        let parts: Vec<&str> = key.split('_').collect();
        let kind = if parts[0] == "cosine" {
            Schedule::Cosine
        } else {
            Schedule::Linear
        };
        let (w, total): (usize, usize) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        for (step, v) in vals.as_array().unwrap().iter().enumerate() {
            let want = v.as_f64().unwrap();
            let got = kind.factor(step, w, total);
            assert!(
                (got - want).abs() < 1e-12,
                "{key} step {step}: {got} vs {want}"
            );
        }
    }
}

/// Central differences in f64 of the f32 loss agree with the analytic gradient on random entries.
#[test]
fn finite_differences_agree_with_backward() {
    for arch in ["qwen2", "qwen3"] {
        let g = golden_json(arch);
        let batch = golden_batch(&g);
        let model = Model::load(&golden_dir(arch)).unwrap();
        let mut tr = Trainer::new(model, OptimConfig::default());
        tr.accumulate(std::slice::from_ref(&batch)).unwrap();
        let grads = tr.grads().clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = grads.names.len();
        let mut checked = 0;
        for trial in 0..12 {
            let pi = if trial < n {
                (trial * 7) % n
            } else {
                rng.random_range(0..n)
            };
            let ei = large_gradient_entry(&grads.data[pi], &mut rng);
            let analytic = grads.data[pi][ei] as f64;
            let eps = 1e-2f32;
            let orig = tr.model.params.data[pi][ei];
            tr.model.params.data[pi][ei] = orig + eps;
            let (lp, _) = tr.accumulate(std::slice::from_ref(&batch)).unwrap();
            tr.model.params.data[pi][ei] = orig - eps;
            let (lm, _) = tr.accumulate(std::slice::from_ref(&batch)).unwrap();
            tr.model.params.data[pi][ei] = orig;
            let fd = (lp - lm) / (2.0 * eps as f64);
            assert!(
                (fd - analytic).abs() < 2e-3 + 3e-2 * analytic.abs(),
                "{arch} {}[{ei}]: finite difference {fd} vs backward {analytic}",
                grads.names[pi]
            );
            checked += 1;
        }
        assert_eq!(checked, 12);
    }
}

/// Two documents packed into one sequence (doc ids, positions restarting) give the same loss and
/// gradients as the two documents as separate sequences; checked on Mistral's sliding window too.
#[test]
fn packed_documents_equal_separate_sequences() {
    for arch in ["llama", "mistral"] {
        let a: Vec<u32> = (0..7).map(|i| 10 + i * 13).collect();
        let b: Vec<u32> = (0..9).map(|i| 20 + i * 17).collect();
        let mut tokens = a.clone();
        tokens.extend(&b);
        let mut docs = vec![0u32; 7];
        docs.extend(vec![1u32; 9]);
        let packed = Sequence::packed(&tokens, &docs);
        assert_eq!(packed.counted(), 6 + 8);
        let sep = vec![Sequence::causal(&a), Sequence::causal(&b)];
        let mut t1 = Trainer::new(
            Model::load(&golden_dir(arch)).unwrap(),
            OptimConfig::default(),
        );
        let mut t2 = Trainer::new(
            Model::load(&golden_dir(arch)).unwrap(),
            OptimConfig::default(),
        );
        let (l1, c1) = t1.accumulate(&[vec![packed]]).unwrap();
        let (l2, c2) = t2.accumulate(&[sep]).unwrap();
        assert_eq!(c1, c2);
        assert!((l1 - l2).abs() < 1e-6 * l2, "{arch}: {l1} vs {l2}");
        for (i, name) in t1.grads().names.iter().enumerate() {
            let err = rel_err(&t1.grads().data[i], &t2.grads().data[i]);
            assert!(err < 1e-5, "{arch} {name}: {err}");
        }
    }
}

#[test]
fn activation_checkpointing_gives_identical_gradients() {
    let g = golden_json("qwen3");
    let batch = golden_batch(&g);
    let mut t1 = Trainer::new(
        Model::load(&golden_dir("qwen3")).unwrap(),
        OptimConfig::default(),
    );
    let cfg = OptimConfig {
        activation_checkpointing: true,
        ..OptimConfig::default()
    };
    let mut t2 = Trainer::new(Model::load(&golden_dir("qwen3")).unwrap(), cfg);
    let (l1, _) = t1.accumulate(std::slice::from_ref(&batch)).unwrap();
    let (l2, _) = t2.accumulate(std::slice::from_ref(&batch)).unwrap();
    assert_eq!(l1, l2);
    assert_eq!(t1.grads().data, t2.grads().data);
}

/// Issue 13, item 9: 18 checkpoints of one epoch of FineMed-de (9.5B tokens
/// at 128 × 4096 tokens a step: about 18,000 steps, warmup ratio 0.1 = 1,800
/// steps). The old log spacing put step 1 (trained at lr 0: a copy of the
/// source) first, 14 of 18 inside warmup and 3 between 1B and 9.5B tokens.
#[test]
fn checkpoint_steps_cover_every_decade_and_never_copy_the_source() {
    let (total, n, warmup) = (18_000, 18, 1_800);
    let tokens_per_step = 128.0 * 4096.0;
    let s = checkpoint_steps(total, n, warmup);
    assert_eq!(s.len(), n, "{s:?}");
    assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
    assert_eq!(*s.last().unwrap(), total);
    // Step 1's update ran at warmup factor 0/1800: it is the source model.
    assert!(s[0] >= 2, "{s:?}");
    // Every decade of tokens seen, from the first step's 0.5M to 9.4B, holds one.
    for decade in 5..10 {
        let (lo, hi) = (10f64.powi(decade), 10f64.powi(decade + 1));
        let lo = lo.max(2.0 * tokens_per_step);
        let hi = hi.min(total as f64 * tokens_per_step + 1.0);
        if lo >= hi {
            continue;
        }
        assert!(
            s.iter()
                .any(|&x| (lo..hi).contains(&(x as f64 * tokens_per_step))),
            "no checkpoint between {lo:.1e} and {hi:.1e} tokens: {s:?}"
        );
    }
    // Where the seeds' findings sit: most checkpoints after 1B tokens.
    let after_1b = s
        .iter()
        .filter(|&&x| x as f64 * tokens_per_step >= 1e9)
        .count();
    assert!(after_1b >= 12, "{after_1b} after 1B tokens: {s:?}");
    let in_warmup = s.iter().filter(|&&x| x < warmup).count();
    assert!(in_warmup <= 4, "{in_warmup} inside warmup: {s:?}");
    // The documented example.
    assert_eq!(&s[..5], &[2, 18, 180, 1286, 1800]);

    // Without warmup step 1 already moved the weights and may be a checkpoint.
    assert_eq!(checkpoint_steps(3, 18, 0), vec![1, 2, 3]);
    assert_eq!(checkpoint_steps(3, 18, 1), vec![2, 3]);
    assert_eq!(checkpoint_steps(4, 3, 1), vec![2, 3, 4]);
    assert_eq!(checkpoint_steps(5, 1, 1), vec![5]);
    assert_eq!(checkpoint_steps(1, 4, 1), Vec::<usize>::new());
    // Always n distinct steps in range when that many are allowed.
    for total in 1..200 {
        for n in 1..20 {
            for warmup in [0, 1, total / 10] {
                let s = checkpoint_steps(total, n, warmup);
                let first = if warmup > 0 { 2 } else { 1 };
                let allowed = (total + 1).saturating_sub(first);
                assert_eq!(s.len(), n.min(allowed), "{total} {n} {warmup}: {s:?}");
                assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
                assert!(s.iter().all(|&x| x >= first && x <= total), "{s:?}");
                if !s.is_empty() {
                    assert_eq!(*s.last().unwrap(), total);
                }
            }
        }
    }
}

/// Writes a packed dataset of random documents (the `pack` op's format).
fn write_packed(dir: &std::path::Path, sequences: usize, seq_len: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut tokens = Vec::new();
    let mut docs = Vec::new();
    for _ in 0..sequences {
        let mut d = 0u32;
        for i in 0..seq_len {
            let t = rng.random_range(3..300u32);
            tokens.push(t);
            docs.push(d);
            if i > 0 && rng.random_range(0..6) == 0 {
                d += 1;
            }
        }
    }
    let bytes = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("tokens.bin"), bytes(&tokens)).unwrap();
    std::fs::write(dir.join("doc_ids.bin"), bytes(&docs)).unwrap();
    let meta = serde_json::json!({"seq_len": seq_len, "sequences": sequences, "tokens": tokens.len(), "documents": 0, "eos_id": 2, "pad_id": 0, "tokenizer_hash": ""});
    std::fs::write(dir.join("pack.json"), meta.to_string()).unwrap();
}

/// Resuming from the step-2 checkpoint (stored in bf16, optimizer state alongside) reproduces the
/// uninterrupted run's losses and final weights bit for bit.
#[test]
fn resume_is_bit_exact() {
    let data = tempfile::tempdir().unwrap();
    write_packed(data.path(), 8, 16);
    let cfg = TrainConfig {
        lr: 1e-3,
        effective_batch: 2,
        micro_batch: 1,
        checkpoints: 3,
        save_dtype: SaveDtype::Bf16,
        seed: 5,
        ..TrainConfig::default()
    };
    let model_dir = golden_dir("qwen3");
    let full = tempfile::tempdir().unwrap();
    let a = flow_model::train::train_on(
        flow_model::CpuBackend,
        &model_dir,
        data.path(),
        full.path(),
        &cfg,
        None,
        &flow_model::train::NoMonitor,
    )
    .unwrap();
    assert_eq!(a.total_steps, 4);
    assert_eq!(a.checkpoints.len(), 3);
    assert!(a.losses.windows(2).any(|w| w[0] != w[1]));
    let resumed = tempfile::tempdir().unwrap();
    let ck = full.path().join("checkpoints/step-000002");
    let lineage: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("flow_checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(lineage["step"], 2);
    assert!(ck.join("tokenizer.json").is_file());
    let b = flow_model::train::train_on(
        flow_model::CpuBackend,
        &model_dir,
        data.path(),
        resumed.path(),
        &cfg,
        Some(&ck),
        &flow_model::train::NoMonitor,
    )
    .unwrap();
    assert_eq!(
        a.losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.losses.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let wa = std::fs::read(full.path().join("optimizer.safetensors")).ok();
    assert!(
        wa.is_none(),
        "the final model directory carries no optimizer state"
    );
    let fa = std::fs::read(
        full.path()
            .join("checkpoints/step-000004/optimizer.safetensors"),
    )
    .unwrap();
    let fb = std::fs::read(
        resumed
            .path()
            .join("checkpoints/step-000004/optimizer.safetensors"),
    )
    .unwrap();
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&fa).unwrap(),
        safetensors::SafeTensors::deserialize(&fb).unwrap(),
    );
    assert_eq!(sa.len(), sb.len());
    for (name, va) in sa.tensors() {
        assert!(
            va.data() == sb.tensor(&name).unwrap().data(),
            "{name} (m, v or f32 master weights) differs after resume"
        );
    }
    let ma = std::fs::read(full.path().join("model.safetensors")).unwrap();
    let mb = std::fs::read(resumed.path().join("model.safetensors")).unwrap();
    assert!(ma == mb, "final weights differ after resume");
    let losses = std::fs::read_to_string(full.path().join(LossLine::FILE)).unwrap();
    let lines: Vec<LossLine> = losses
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|l| l.step).collect::<Vec<_>>(),
        [1, 2, 3, 4].map(Some)
    );
    assert_eq!(
        lines.iter().map(|l| l.loss).collect::<Vec<_>>(),
        a.losses.iter().map(|&x| Some(x)).collect::<Vec<_>>()
    );
}
