//! Part (b) of the device check (`scripts/gpu_check.sh`): a tiny random
//! Qwen2-shaped model (q/k/v biases, GQA, head dim 64) trained 20 AdamW steps
//! on the CPU backend and on the CUDA backend from the same weights and data
//! (two micro-batches, one of them packed, activation checkpointing on the
//! device), comparing every step's loss and the final weights, after first
//! comparing the initial logits and greedy decoding. Then the same for the
//! encoder runtime: a tiny random XLM-RoBERTa-shaped classifier (head dim 64)
//! fine-tuned 20 AdamW steps with dropout on (the masks are drawn on the
//! host, so both backends drop the same elements), comparing the initial
//! logits, every step's loss and the final weights. Before that, the
//! encoder's own device calls (bidirectional attention forward and backward
//! with and without dropout, tanh and its backward, the dropout-mask
//! product) against the CPU backend's on random inputs.
//!
//! Exits 0 when everything is within the bf16 tolerances, 1 when a check
//! fails, 2 (with the reason) when no CUDA device can be opened.

use flow_model::backend::{CpuBackend, CudaBackend, EncoderBackend};
use flow_model::encoder::Dropout;
use flow_model::encoder::{
    params as encoder_params, Batch, Encoder, EncoderConfig, EncoderOn, FineTuneConfig, FineTuner,
    FineTunerOn,
};
use flow_model::train::{OptimConfig, Sequence, Trainer, TrainerOn};
use flow_model::{Backend, Config, GenerateOptions, Model, ModelOn, Params};
use rand::{Rng, SeedableRng};

/// Loss tolerance, relative (bf16 activations and products).
const LOSS_TOL: f64 = 1e-2;
/// Final weights: ‖w_gpu − w_cpu‖ / ‖w_cpu‖ per tensor.
const WEIGHT_TOL: f64 = 2e-2;
/// Initial logits: max |Δ| / max |logit|.
const LOGIT_TOL: f64 = 3e-2;
const STEPS: usize = 20;
const VOCAB: u32 = 512;

fn tiny_model() -> Model {
    let raw = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 256, "intermediate_size": 512,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 512, "tie_word_embeddings": false, "hidden_act": "silu"
    });
    let config = Config::from_json(
        raw.as_object().cloned().unwrap_or_default(),
        std::path::Path::new("<gpu_train_check>"),
    )
    .unwrap_or_else(|e| fail(&format!("the tiny config does not parse: {e}")));
    let mut params = Params::zeros(&config);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for (d, name) in params.data.iter_mut().zip(&params.names) {
        if name.contains("norm") {
            d.fill(1.0);
        } else {
            d.iter_mut()
                .for_each(|x| *x = rng.random_range(-0.05..0.05));
        }
    }
    Model::from_params(config, params)
        .unwrap_or_else(|e| fail(&format!("the tiny model does not build: {e}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("gpu_train_check: {msg}");
    std::process::exit(1)
}

fn batches() -> Vec<Vec<Sequence>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut seq = |n: usize| {
        (0..n)
            .map(|_| rng.random_range(0..VOCAB))
            .collect::<Vec<u32>>()
    };
    let a = seq(96);
    let b = seq(128);
    let c = seq(64);
    let docs: Vec<u32> = (0..128).map(|i| if i < 50 { 0 } else { 1 }).collect();
    vec![
        vec![Sequence::causal(&a), Sequence::packed(&b, &docs)],
        vec![Sequence::causal(&c)],
    ]
}

fn rel_norm(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

fn main() {
    let backend = match CudaBackend::open(0) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gpu_train_check: no usable CUDA device ({e}); nothing was checked");
            std::process::exit(2);
        }
    };
    let mut failures = 0;
    let gpu_model = ModelOn::place(backend, tiny_model())
        .unwrap_or_else(|e| fail(&format!("placing the model on the device: {e}")));
    let cpu_model = tiny_model();

    // (1) logits of the initial model
    let prompt: Vec<u32> = (0..40).map(|i| (i * 13 + 1) % VOCAB).collect();
    let want = cpu_model.forward_logits(&prompt);
    let got = gpu_model
        .try_forward_logits(&prompt)
        .unwrap_or_else(|e| fail(&format!("device forward: {e}")));
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() as f64))
        / scale.max(1e-30);
    let ok = got.len() == want.len() && err < LOGIT_TOL;
    failures += usize::from(!ok);
    println!(
        "{} logits (40 tokens): max |Δ|/max|logit| = {err:.2e} (tolerance {LOGIT_TOL:.0e})",
        if ok { "ok  " } else { "FAIL" }
    );

    // (2) greedy decoding through the device KV cache: reported, not asserted (a bf16 tie can
    // flip an argmax of a random model)
    let opts = GenerateOptions {
        max_tokens: 8,
        ..GenerateOptions::default()
    };
    let cpu_gen = cpu_model.generate(std::slice::from_ref(&prompt), &opts);
    match gpu_model.try_generate_each(std::slice::from_ref(&prompt), &opts, &mut |_, _| true) {
        Ok(g) => println!(
            "info greedy decoding, 8 tokens: cpu {:?} gpu {:?} ({})",
            cpu_gen[0].tokens,
            g[0].tokens,
            if g[0].tokens == cpu_gen[0].tokens {
                "same"
            } else {
                "differ"
            }
        ),
        Err(e) => {
            failures += 1;
            println!("FAIL greedy decoding on the device: {e}");
        }
    }

    // (3) 20 training steps on both
    let cfg = OptimConfig {
        lr: 3e-4,
        warmup_steps: 2,
        total_steps: STEPS,
        weight_decay: 0.1,
        ..OptimConfig::default()
    };
    let mut cpu = Trainer::new(cpu_model, cfg.clone());
    let mut gpu = TrainerOn::open(
        gpu_model,
        OptimConfig {
            activation_checkpointing: true,
            ..cfg
        },
    )
    .unwrap_or_else(|e| fail(&format!("device trainer: {e}")));
    let data = batches();
    let mut worst_loss = 0.0f64;
    for step in 1..=STEPS {
        let c = cpu
            .step(&data)
            .unwrap_or_else(|e| fail(&format!("cpu step {step}: {e}")));
        let g = gpu
            .step(&data)
            .unwrap_or_else(|e| fail(&format!("device step {step}: {e}")));
        let rel = (g.loss - c.loss).abs() / c.loss.abs().max(1e-30);
        worst_loss = worst_loss.max(rel);
        println!(
            "     step {step:2}: loss cpu {:.5} gpu {:.5} (rel {rel:.1e}), grad norm cpu {:.4} gpu {:.4}",
            c.loss, g.loss, c.grad_norm, g.grad_norm
        );
    }
    let ok = worst_loss < LOSS_TOL && worst_loss.is_finite();
    failures += usize::from(!ok);
    println!("{} losses over {STEPS} steps: worst relative difference {worst_loss:.2e} (tolerance {LOSS_TOL:.0e})", if ok { "ok  " } else { "FAIL" });
    let gpu_params = gpu
        .model
        .backend()
        .params_to_host(&gpu.model.params)
        .unwrap_or_else(|e| fail(&format!("downloading the weights: {e}")));
    let mut worst = (0.0f64, String::new());
    for ((name, w_gpu), w_cpu) in gpu_params
        .names
        .iter()
        .zip(&gpu_params.data)
        .zip(&cpu.model.params.data)
    {
        let e = rel_norm(w_gpu, w_cpu);
        // a NaN difference counts as the worst
        if e.is_nan() || e > worst.0 {
            worst = (e, name.clone());
        }
    }
    let ok = worst.0 < WEIGHT_TOL;
    failures += usize::from(!ok);
    println!(
        "{} final weights: worst ‖Δ‖/‖w‖ = {:.2e} in {} (tolerance {WEIGHT_TOL:.0e})",
        if ok { "ok  " } else { "FAIL" },
        worst.0,
        worst.1
    );
    failures += check_encoder();
    if failures > 0 {
        fail(&format!("{failures} check(s) failed"));
    }
    println!("gpu_train_check: all checks passed");
}

const ENCODER_VOCAB: u32 = 512;

fn tiny_encoder() -> Encoder {
    let raw = serde_json::json!({
        "architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta",
        "vocab_size": ENCODER_VOCAB, "hidden_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 512, "max_position_embeddings": 160,
        "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1
    });
    let config = EncoderConfig::from_raw(
        raw.as_object().cloned().unwrap_or_default(),
        std::path::Path::new("<gpu_train_check encoder>"),
    )
    .unwrap_or_else(|e| fail(&format!("the tiny encoder config does not parse: {e}")));
    let mut params = encoder_params::zeros(&config);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    for (d, name) in params.data.iter_mut().zip(&params.names) {
        if name.contains("LayerNorm.weight") {
            d.fill(1.0);
        } else {
            // biases too, so that no tensor's norm is only its few updates
            d.iter_mut()
                .for_each(|x| *x = rng.random_range(-0.05..0.05));
        }
    }
    Encoder::from_params(config, params)
        .unwrap_or_else(|e| fail(&format!("the tiny encoder does not build: {e}")))
}

/// Two batches of ragged sequences (each starting with `<s>` = 0) and their labels.
fn encoder_batches(c: &EncoderConfig) -> Vec<(Batch, Vec<u32>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    [[37usize, 64, 12, 100], [128, 5, 77, 50]]
        .iter()
        .map(|lens| {
            let seqs: Vec<Vec<u32>> = lens
                .iter()
                .map(|&n| {
                    std::iter::once(0)
                        .chain((1..n).map(|_| rng.random_range(3..ENCODER_VOCAB)))
                        .collect()
                })
                .collect();
            let labels = lens.iter().map(|_| rng.random_range(0..2u32)).collect();
            let batch =
                Batch::new(c, &seqs).unwrap_or_else(|e| fail(&format!("the encoder batch: {e}")));
            (batch, labels)
        })
        .collect()
}

/// bf16 outputs of dot products over up to a few hundred terms.
const KERNEL_TOL: f64 = 2e-2;

/// max |Δ| / max |reference|.
fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() as f64))
        / scale.max(1e-30)
}

fn report(what: &str, err: f64) -> usize {
    let ok = err < KERNEL_TOL;
    println!(
        "{} {what}: max |Δ|/max|ref| = {err:.2e} (tolerance {KERNEL_TOL:.0e})",
        if ok { "ok  " } else { "FAIL" }
    );
    usize::from(!ok)
}

/// The encoder's device calls against the CPU backend's; the number of failed checks.
fn check_encoder_kernels(gpu: &CudaBackend) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let dev = |r: Result<Vec<f32>, flow_model::ModelError>, what: &str| {
        r.unwrap_or_else(|e| fail(&format!("{what} on the device: {e}")))
    };
    let mut failures = 0;
    for (heads, head_dim) in [(4usize, 64usize), (3, 32)] {
        let offsets = [0usize, 37, 101, 113, 240];
        let t = offsets[offsets.len() - 1];
        let width = heads * head_dim;
        let (q, k, v, dctx) = (
            random(t * width),
            random(t * width),
            random(t * width),
            random(t * width),
        );
        for dropout in [
            None,
            Some(Dropout {
                hidden: 0.1,
                attention: 0.2,
                classifier: 0.1,
                seed: 9,
            }),
        ] {
            let d = dropout.as_ref().map(|d| (d, 1));
            let mut ctx = vec![0.0; t * width];
            let probs = CpuBackend
                .bidirectional_attention_forward(
                    &q, &k, &v, &offsets, heads, head_dim, &mut ctx, true, d,
                )
                .unwrap_or_else(|e| match e {});
            let (mut dq, mut dk, mut dv) = (
                vec![0.0; t * width],
                vec![0.0; t * width],
                vec![0.0; t * width],
            );
            CpuBackend
                .bidirectional_attention_backward(
                    &dctx, &q, &k, &v, &probs, &offsets, heads, head_dim, &mut dq, &mut dk, &mut dv,
                )
                .unwrap_or_else(|e| match e {});
            let on_device = || -> Result<[Vec<f32>; 4], flow_model::ModelError> {
                let (gq, gk, gv, gd) = (
                    gpu.upload(&q)?,
                    gpu.upload(&k)?,
                    gpu.upload(&v)?,
                    gpu.upload(&dctx)?,
                );
                let mut gctx = gpu.zeros(t * width)?;
                let gprobs = gpu.bidirectional_attention_forward(
                    &gq, &gk, &gv, &offsets, heads, head_dim, &mut gctx, true, d,
                )?;
                let (mut gdq, mut gdk, mut gdv) = (
                    gpu.zeros(t * width)?,
                    gpu.zeros(t * width)?,
                    gpu.zeros(t * width)?,
                );
                gpu.bidirectional_attention_backward(
                    &gd, &gq, &gk, &gv, &gprobs, &offsets, heads, head_dim, &mut gdq, &mut gdk,
                    &mut gdv,
                )?;
                Ok([
                    gpu.download(gctx)?,
                    gpu.download(gdq)?,
                    gpu.download(gdk)?,
                    gpu.download(gdv)?,
                ])
            };
            let [gctx, gdq, gdk, gdv] = on_device()
                .unwrap_or_else(|e| fail(&format!("bidirectional attention on the device: {e}")));
            let tag = format!(
                "bidirectional attention, {heads} heads of {head_dim}, dropout {}",
                if dropout.is_some() { "on" } else { "off" }
            );
            failures += report(&format!("{tag}: ctx"), max_rel(&gctx, &ctx));
            failures += report(&format!("{tag}: dq"), max_rel(&gdq, &dq));
            failures += report(&format!("{tag}: dk"), max_rel(&gdk, &dk));
            failures += report(&format!("{tag}: dv"), max_rel(&gdv, &dv));
        }
    }
    let n = 10_000;
    let (x, g) = (random(n), random(n));
    let mask: Vec<f32> = random(n)
        .iter()
        .map(|&u| if u < -0.6 { 0.0 } else { 1.0 / 0.8 })
        .collect();
    let mut y = x.clone();
    CpuBackend
        .tanh_in_place(&mut y)
        .unwrap_or_else(|e| match e {});
    let mut dy = g.clone();
    CpuBackend
        .tanh_backward_in_place(&mut dy, &y)
        .unwrap_or_else(|e| match e {});
    let mut m = x.clone();
    CpuBackend
        .scale_by_mask(&mut m, &mask)
        .unwrap_or_else(|e| match e {});
    let gy = dev(
        (|| {
            let mut b = gpu.upload(&x)?;
            gpu.tanh_in_place(&mut b)?;
            gpu.download(b)
        })(),
        "tanh",
    );
    let gdy = dev(
        (|| {
            let mut b = gpu.upload(&g)?;
            gpu.tanh_backward_in_place(&mut b, &gpu.upload(&y)?)?;
            gpu.download(b)
        })(),
        "tanh backward",
    );
    let gm = dev(
        (|| {
            let mut b = gpu.upload(&x)?;
            gpu.scale_by_mask(&mut b, &gpu.upload_stats(&mask)?)?;
            gpu.download(b)
        })(),
        "dropout mask",
    );
    failures += report("tanh", max_rel(&gy, &y));
    failures += report("tanh backward", max_rel(&gdy, &dy));
    failures += report("dropout mask product", max_rel(&gm, &m));
    failures
}

/// The encoder on both backends; returns the number of failed checks.
fn check_encoder() -> usize {
    let backend = match CudaBackend::open(0) {
        Ok(b) => b,
        Err(e) => fail(&format!("reopening the device for the encoder: {e}")),
    };
    let mut failures = check_encoder_kernels(&backend);
    let cpu_encoder = tiny_encoder();
    let gpu_encoder = EncoderOn::place(backend, tiny_encoder())
        .unwrap_or_else(|e| fail(&format!("placing the encoder on the device: {e}")));
    let data = encoder_batches(&cpu_encoder.config);

    // (4) logits of the initial encoder (eval, no dropout)
    let want = cpu_encoder.logits(&data[0].0);
    let got = gpu_encoder
        .try_logits(&data[0].0)
        .unwrap_or_else(|e| fail(&format!("device encoder forward: {e}")));
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() as f64))
        / scale.max(1e-30);
    let ok = got.len() == want.len() && err < LOGIT_TOL;
    failures += usize::from(!ok);
    println!(
        "{} encoder logits (4 sequences): max |Δ|/max|logit| = {err:.2e} (tolerance {LOGIT_TOL:.0e})",
        if ok { "ok  " } else { "FAIL" }
    );

    // (5) 20 fine-tuning steps on both, dropout on
    let cfg = FineTuneConfig {
        lr: 1e-4,
        warmup_steps: 2,
        total_steps: STEPS,
        dropout_seed: Some(3),
        ..FineTuneConfig::default()
    };
    let mut cpu = FineTuner::new(cpu_encoder, cfg.clone());
    let mut gpu = FineTunerOn::open(gpu_encoder, cfg)
        .unwrap_or_else(|e| fail(&format!("device fine-tuner: {e}")));
    let mut worst_loss = 0.0f64;
    for step in 1..=STEPS {
        let (batch, labels) = &data[(step - 1) % data.len()];
        let c = cpu.step(batch, labels);
        let g = gpu
            .try_step(batch, labels)
            .unwrap_or_else(|e| fail(&format!("device encoder step {step}: {e}")));
        let rel = (g.loss - c.loss).abs() / c.loss.abs().max(1e-30);
        worst_loss = worst_loss.max(rel);
        println!(
            "     encoder step {step:2}: loss cpu {:.5} gpu {:.5} (rel {rel:.1e}), grad norm cpu {:.4} gpu {:.4}",
            c.loss, g.loss, c.grad_norm, g.grad_norm
        );
    }
    let ok = worst_loss < LOSS_TOL && worst_loss.is_finite();
    failures += usize::from(!ok);
    println!("{} encoder losses over {STEPS} steps: worst relative difference {worst_loss:.2e} (tolerance {LOSS_TOL:.0e})", if ok { "ok  " } else { "FAIL" });
    let host = gpu
        .encoder
        .to_cpu()
        .unwrap_or_else(|e| fail(&format!("downloading the encoder's weights: {e}")));
    let mut worst = (0.0f64, String::new());
    for ((name, w_gpu), w_cpu) in host
        .params
        .names
        .iter()
        .zip(&host.params.data)
        .zip(&cpu.encoder.params.data)
    {
        if name.ends_with("key.bias") {
            // softmax ignores a per-row constant: this gradient is rounding
            // noise on both backends, which AdamW turns into lr-sized steps
            continue;
        }
        let e = rel_norm(w_gpu, w_cpu);
        if e.is_nan() || e > worst.0 {
            worst = (e, name.clone());
        }
    }
    let ok = worst.0 < WEIGHT_TOL;
    failures += usize::from(!ok);
    println!(
        "{} encoder final weights: worst ‖Δ‖/‖w‖ = {:.2e} in {} (tolerance {WEIGHT_TOL:.0e})",
        if ok { "ok  " } else { "FAIL" },
        worst.0,
        worst.1
    );
    failures
}
