//! The passes are written once over `Backend`: a second backend (here one
//! that forwards every call to the CPU backend and counts them) runs the same
//! forward, scoring, generation, training and checkpoint code, and gives the
//! CPU model's results bit for bit.

mod common;
use common::counting::Counting;
use common::*;

use flow_model::backend::Backend;
use flow_model::train::{OptimConfig, Sequence, Trainer, TrainerOn};
use flow_model::{GenerateOptions, Model, ModelOn};

#[test]
fn a_second_backend_runs_the_same_passes_bit_for_bit() {
    for arch in ARCHS {
        let cpu = Model::load(&golden_dir(arch)).unwrap();
        let other =
            ModelOn::place(Counting::default(), Model::load(&golden_dir(arch)).unwrap()).unwrap();
        let toks: Vec<u32> = (0..19u32)
            .map(|i| (i * 37 + 5) % cpu.config.vocab_size as u32)
            .collect();
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&cpu.forward_logits(&toks)),
            bits(&other.forward_logits(&toks)),
            "{arch} logits"
        );
        let reqs = vec![
            (toks[..5].to_vec(), toks[5..9].to_vec()),
            (toks[..5].to_vec(), toks[9..].to_vec()),
        ];
        assert_eq!(
            cpu.loglikelihood(&reqs),
            other.try_loglikelihood(&reqs).unwrap(),
            "{arch} loglikelihood"
        );
        assert_eq!(
            cpu.token_logprobs(&toks, 2),
            other.try_token_logprobs(&toks, 2).unwrap(),
            "{arch} logprobs"
        );
        let opts = GenerateOptions {
            max_tokens: 6,
            temperature: 0.8,
            top_p: 0.9,
            seed: 3,
            ..Default::default()
        };
        let prompts = vec![toks[..4].to_vec(), toks[4..11].to_vec()];
        assert_eq!(
            cpu.generate(&prompts, &opts),
            other
                .try_generate_each(&prompts, &opts, &mut |_, _| true)
                .unwrap(),
            "{arch} generate"
        );
        let before = other.backend().total();
        assert!(
            before > 0,
            "{arch}: no compute call went through the backend"
        );

        let cfg = OptimConfig {
            lr: 1e-3,
            total_steps: 3,
            activation_checkpointing: true,
            ..OptimConfig::default()
        };
        let docs: Vec<u32> = (0..19).map(|i| (i / 7) as u32).collect();
        let batch = vec![
            vec![Sequence::causal(&toks)],
            vec![Sequence::packed(&toks, &docs)],
        ];
        let mut a = Trainer::new(cpu, cfg.clone());
        let mut b = TrainerOn::open(other, cfg).unwrap();
        for _ in 0..3 {
            let (sa, sb) = (a.step(&batch).unwrap(), b.step(&batch).unwrap());
            assert_eq!(sa, sb, "{arch} step");
        }
        let host = b.model.backend().params_to_host(&b.model.params).unwrap();
        for (x, y) in a.model.params.data.iter().zip(&host.data) {
            assert_eq!(bits(x), bits(y), "{arch} weights after 3 steps");
        }
        assert!(b.model.backend().total() > before);
    }
}
