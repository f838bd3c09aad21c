//! The encoder is written once over `EncoderBackend`: a second backend (the
//! CPU backend behind a wrapper that counts every compute call by name) runs
//! the same forward, backward and AdamW step, the calls go through it, and
//! the results are the CPU encoder's bit for bit: logits, every gradient,
//! the steps' losses, norms and rates, and the weights after 3 steps, with
//! dropout off and on.

mod common;
use common::counting::Counting;
use common::encoder_golden::{golden, golden_dir, labels, padded_batch};

use flow_model::encoder::{Batch, Encoder, EncoderOn, FineTuneConfig, FineTuner, FineTunerOn};

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The golden's batch and labels (right-padded rows, as transformers saw them).
fn golden_batch(enc: &Encoder, name: &str) -> (Batch, Vec<u32>) {
    let g = golden(name);
    (padded_batch(enc, &g), labels(&g))
}

#[test]
fn the_encoders_passes_run_through_a_second_backend_bit_for_bit() {
    for name in ["xlmr", "bert"] {
        let (mut cpu, _) = Encoder::load(&golden_dir(name).join("model"), 0).unwrap();
        // every dropout site active, so the masks go through the backend too
        cpu.config.hidden_dropout = 0.1;
        cpu.config.attention_dropout = 0.2;
        cpu.config.classifier_dropout = Some(0.3);
        let layers = cpu.config.num_hidden_layers;
        let (batch, labels) = golden_batch(&cpu, name);
        let other = EncoderOn::place(Counting::default(), cpu.clone()).unwrap();

        // the eval forward
        assert_eq!(
            bits(&cpu.logits(&batch)),
            bits(&other.try_logits(&batch).unwrap()),
            "{name} logits"
        );
        let calls = other.backend().calls();
        assert_eq!(calls["bidirectional_attention_forward"], layers, "{name}");
        assert_eq!(calls["layernorm_forward"], 1 + 2 * layers, "{name}");
        assert_eq!(calls["gelu_forward"], layers, "{name}");
        assert_eq!(calls["tanh_in_place"], 1, "{name}");
        // q, k, v, attention output, intermediate, output; dense and out_proj of the head
        assert_eq!(calls["linear_forward"], 6 * layers + 2, "{name}");
        assert_eq!(calls["embedding_forward"], 3, "{name}");
        assert!(
            !calls.contains_key("scale_by_mask"),
            "{name}: no dropout in eval"
        );

        for dropout_seed in [None, Some(5)] {
            let cfg = FineTuneConfig {
                lr: 1e-3,
                warmup_steps: 1,
                total_steps: 4,
                max_grad_norm: 0.1,
                dropout_seed,
                ..FineTuneConfig::default()
            };
            let place = |e: &Encoder| EncoderOn::place(Counting::default(), e.clone()).unwrap();
            let mut a = FineTuner::new(cpu.clone(), cfg.clone());
            let mut b = FineTunerOn::open(place(&cpu), cfg).unwrap();
            let (la, lb) = (
                a.gradients(&batch, &labels),
                b.try_gradients(&batch, &labels).unwrap(),
            );
            assert_eq!(la.to_bits(), lb.to_bits(), "{name} {dropout_seed:?} loss");
            let gb = b.grads_to_host().unwrap();
            for ((n, x), y) in a.grads().names.iter().zip(&a.grads().data).zip(&gb.data) {
                assert_eq!(bits(x), bits(y), "{name} {dropout_seed:?} gradient of {n}");
            }
            let calls = b.encoder.backend().calls();
            assert_eq!(calls["bidirectional_attention_backward"], layers, "{name}");
            assert_eq!(calls["layernorm_backward"], 1 + 2 * layers, "{name}");
            assert_eq!(calls["gelu_backward"], layers, "{name}");
            assert_eq!(calls["tanh_backward_in_place"], 1, "{name}");
            assert_eq!(calls["linear_backward"], 6 * layers + 2, "{name}");
            assert_eq!(calls["embedding_backward"], 3, "{name}");
            assert_eq!(calls["zero_grads"], 1, "{name}");
            // embeddings, 2 a layer, the head's dropout(s); the attention's masks are its own
            let dropped = dropout_seed.map_or(0, |_| match name {
                "xlmr" => 1 + 2 * layers + 2,
                _ => 1 + 2 * layers + 1,
            });
            assert_eq!(
                calls.get("upload_stats").copied().unwrap_or(0),
                dropped,
                "{name}"
            );
            for step in 1..=3 {
                let (sa, sb) = (
                    a.step(&batch, &labels),
                    b.try_step(&batch, &labels).unwrap(),
                );
                assert_eq!(sa, sb, "{name} {dropout_seed:?} step {step}");
            }
            let calls = b.encoder.backend().calls();
            assert_eq!(calls["adamw"], 3, "{name}");
            assert_eq!(calls["grad_norm_in_element_order"], 3, "{name}");
            let host = b.encoder.to_cpu().unwrap();
            for ((n, x), y) in a
                .encoder
                .params
                .names
                .iter()
                .zip(&a.encoder.params.data)
                .zip(&host.params.data)
            {
                assert_eq!(
                    bits(x),
                    bits(y),
                    "{name} {dropout_seed:?} {n} after 3 steps"
                );
            }
            assert_eq!(
                bits(&a.encoder.logits(&batch)),
                bits(&b.encoder.try_logits(&batch).unwrap()),
                "{name} {dropout_seed:?} logits after 3 steps"
            );
        }
    }
}
