//! The encoder runtime against Hugging Face transformers: goldens made by
//! scripts/make_encoder_golden.py (tiny seeded XLM-RoBERTa and BERT
//! classifiers, right-padded batches) hold transformers' logits, every
//! parameter's gradient of the cross-entropy loss, the state dict's tensor
//! names and shapes and tokenizations.

mod common;
use common::encoder_golden::{golden, golden_dir, labels, padded_batch};

use std::collections::BTreeMap;
use std::path::Path;

use flow_model::encoder::{backward, forward, Dropout, Encoder, EncoderTokenizer};
use rand::SeedableRng;
use safetensors::SafeTensors;
use serde_json::Value;

fn read_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let d = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, (v.shape().to_vec(), d))
        })
        .collect()
}

fn check_logits_and_gradients(name: &str) {
    let g = golden(name);
    let (enc, report) = Encoder::load(&golden_dir(name).join("model"), 0).unwrap();
    assert!(report.initialised.is_empty(), "{:?}", report.initialised);
    let batch = padded_batch(&enc, &g);
    let (logits, cache) = forward::forward(&enc.config, &enc.params, &batch, true, None);
    let want: Vec<f32> = g["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let worst = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "{name}: logits differ by {worst}: {logits:?} vs {want:?}"
    );
    let labels = labels(&g);
    let (loss, dlogits) = backward::cross_entropy(&logits, &labels);
    assert!(
        (loss - g["loss"].as_f64().unwrap()).abs() < 1e-5,
        "{name}: loss {loss}"
    );
    eprintln!("{name}: largest logit difference {worst:e}");
    let mut grads = enc.params.zeros_like();
    backward::backward(
        &enc.config,
        &enc.params,
        &batch,
        &cache.unwrap(),
        &dlogits,
        &mut grads,
    );
    let want = read_tensors(&golden_dir(name).join("grads.safetensors"));
    assert_eq!(
        want.len(),
        grads.names.len(),
        "{name}: every parameter has a golden gradient"
    );
    let mut worst_rel = 0.0f32;
    for (i, n) in grads.names.iter().enumerate() {
        let (shape, w) = want
            .get(n)
            .unwrap_or_else(|| panic!("{name}: no golden gradient for {n}"));
        assert_eq!(shape, &grads.shapes[i], "{n}");
        let scale = w.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
        let diff = grads.data[i]
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if n.ends_with("key.bias") {
            // softmax ignores a per-row constant: this gradient is 0 up to rounding in both
            assert!(scale < 1e-6 && diff < 1e-6, "{n}: {diff} {scale}");
            continue;
        }
        worst_rel = worst_rel.max(diff / scale.max(1e-12));
        // 1e-4 of the tensor's largest gradient
        assert!(
            diff <= 1e-4 * scale,
            "{name}: gradient of {n} differs by {diff} (largest {scale})"
        );
    }
    eprintln!("{name}: largest gradient difference / tensor's largest gradient {worst_rel:e}");
}

#[test]
fn xlmr_logits_and_every_gradient_match_transformers() {
    check_logits_and_gradients("xlmr");
}

#[test]
fn bert_logits_and_every_gradient_match_transformers() {
    check_logits_and_gradients("bert");
}

/// Training mode's dropout (every site at p = 0.3, fixed masks): central
/// differences of the loss agree with the backward for the largest of a few
/// random entries of every tensor, so each dropped site's gradient is right.
fn check_dropout_gradients_by_finite_differences(name: &str) {
    let g = golden(name);
    let (mut enc, _) = Encoder::load(&golden_dir(name).join("model"), 0).unwrap();
    let batch = padded_batch(&enc, &g);
    let labels = labels(&g);
    let d = Dropout {
        hidden: 0.3,
        attention: 0.3,
        classifier: 0.3,
        seed: 7,
    };
    let loss_of = |enc: &Encoder, d: Option<&Dropout>| {
        let (logits, _) = forward::forward(&enc.config, &enc.params, &batch, false, d);
        backward::cross_entropy(&logits, &labels).0
    };
    let (logits, cache) = forward::forward(&enc.config, &enc.params, &batch, true, Some(&d));
    let (loss, dlogits) = backward::cross_entropy(&logits, &labels);
    assert!(
        (loss - loss_of(&enc, None)).abs() > 1e-4,
        "{name}: dropout changed nothing ({loss})"
    );
    let mut grads = enc.params.zeros_like();
    backward::backward(
        &enc.config,
        &enc.params,
        &batch,
        &cache.unwrap(),
        &dlogits,
        &mut grads,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (pi, n) in grads.names.iter().enumerate() {
        if n.ends_with("key.bias") {
            continue; // 0 up to rounding: softmax ignores a per-row constant
        }
        let ei = common::large_gradient_entry(&grads.data[pi], &mut rng);
        let analytic = grads.data[pi][ei] as f64;
        let eps = 1e-2f32;
        let orig = enc.params.data[pi][ei];
        enc.params.data[pi][ei] = orig + eps;
        let lp = loss_of(&enc, Some(&d));
        enc.params.data[pi][ei] = orig - eps;
        let lm = loss_of(&enc, Some(&d));
        enc.params.data[pi][ei] = orig;
        let fd = (lp - lm) / (2.0 * eps as f64);
        assert!(
            (fd - analytic).abs() < 2e-4 + 3e-2 * analytic.abs(),
            "{name} {n}[{ei}]: finite difference {fd} vs backward {analytic}"
        );
    }
}

#[test]
fn xlmr_dropout_gradients_match_finite_differences() {
    check_dropout_gradients_by_finite_differences("xlmr");
}

#[test]
fn bert_dropout_gradients_match_finite_differences() {
    check_dropout_gradients_by_finite_differences("bert");
}

#[test]
fn tokenization_with_truncation_matches_transformers() {
    for name in ["xlmr", "bert"] {
        let g = golden(name);
        let tok = EncoderTokenizer::load(&golden_dir(name).join("model")).unwrap();
        for case in g["tokenizer_cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let got = tok
                .encode(text, case["max_length"].as_u64().unwrap() as usize)
                .unwrap();
            assert_eq!(got, want, "{name}: {text:?}");
        }
    }
}

/// A base checkpoint (encoder only, names without the `roberta.`/`bert.`
/// prefix, no labels) fine-tuned and saved must give the tensor names and
/// shapes of transformers' *ForSequenceClassification state dict and the
/// config keys it writes.
#[test]
fn saved_classifier_has_the_state_dict_and_config_of_transformers() {
    for name in ["xlmr", "bert"] {
        let g = golden(name);
        let src = golden_dir(name).join("model");
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        let mut cfg: serde_json::Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                .unwrap();
        for k in ["architectures", "id2label", "label2id", "problem_type"] {
            cfg.remove(k);
        }
        std::fs::write(base.join("config.json"), Value::Object(cfg).to_string()).unwrap();
        let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let prefix = if name == "bert" { "bert." } else { "roberta." };
        let kept: Vec<(String, safetensors::tensor::TensorView)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n.starts_with(prefix) && !n.contains("pooler"))
            .map(|(n, v)| (n[prefix.len()..].to_string(), v))
            .collect();
        std::fs::write(
            base.join("model.safetensors"),
            safetensors::serialize(kept, None).unwrap(),
        )
        .unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(src.join(f), base.join(f)).unwrap();
        }
        let (enc, report) = Encoder::load(&base, 7).unwrap();
        assert_eq!(
            report.initialised.len(),
            4,
            "{name}: the head is new: {:?}",
            report.initialised
        );
        let out = tmp.path().join("clf");
        enc.save_classifier(&out, ["allgemein", "medizinisch"], &base)
            .unwrap();
        let saved = read_tensors(&out.join("model.safetensors"));
        let mut got: Vec<(String, Vec<usize>)> =
            saved.into_iter().map(|(n, (s, _))| (n, s)).collect();
        got.sort();
        let mut want: Vec<(String, Vec<usize>)> = g["state_dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_str().unwrap().to_string(),
                    e[1].as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as usize)
                        .collect(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "{name}");
        let cfg: serde_json::Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        for k in g["config_keys"].as_array().unwrap() {
            assert!(
                cfg.contains_key(k.as_str().unwrap()),
                "{name}: config.json lacks {k}"
            );
        }
        assert_eq!(cfg["architectures"][0], g["architecture"]);
        assert_eq!(cfg["id2label"]["1"], "medizinisch");
        assert_eq!(cfg["label2id"]["allgemein"], 0);
        assert!(out.join("tokenizer.json").is_file());
        // and the saved directory loads back with the same head
        let (again, r2) = Encoder::load(&out, 99).unwrap();
        assert!(r2.initialised.is_empty());
        assert_eq!(again.params.data, enc.params.data);
    }
}
