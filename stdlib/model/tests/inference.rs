//! Inference against HF transformers goldens: logits, greedy generation, chat
//! templates, log-likelihoods, hidden states; config layouts; errors.

mod common;
use common::*;

use flow_model::{ChatMessage, ChatTemplate, FinishReason, GenerateOptions, Model, Tokenizer};

/// Logits agree with transformers to 1e-4 relative to the largest logit magnitude.
#[test]
fn logits_match_transformers() {
    for arch in ARCHS {
        let model = Model::load(&golden_dir(arch)).unwrap();
        let g = golden_json(arch);
        let t = golden_tensors(arch);
        for (i, inp) in g["inputs"].as_array().unwrap().iter().enumerate() {
            let logits = model.forward_logits(&ids(inp));
            let err = rel_err(&logits, &t[&format!("logits.{i}")]);
            assert!(err < 1e-4, "{arch} input {i}: relative error {err}");
        }
    }
}

#[test]
fn mean_hidden_state_matches_transformers() {
    for arch in ARCHS {
        let model = Model::load(&golden_dir(arch)).unwrap();
        let g = golden_json(arch);
        let t = golden_tensors(arch);
        for (i, inp) in g["inputs"].as_array().unwrap().iter().enumerate() {
            let m = model.mean_hidden_state(&ids(inp));
            let err = rel_err(&m, &t[&format!("mean_hidden.{i}")]);
            assert!(err < 1e-4, "{arch} input {i}: relative error {err}");
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for arch in ARCHS {
        let model = Model::load(&golden_dir(arch)).unwrap();
        let g = golden_json(arch);
        let prompts: Vec<Vec<u32>> = g["inputs"].as_array().unwrap().iter().map(ids).collect();
        let opts = GenerateOptions {
            max_tokens: 12,
            ..Default::default()
        };
        // batched and one at a time must both equal HF's single-prompt greedy output
        let batched = model.generate(&prompts, &opts);
        for (i, p) in prompts.iter().enumerate() {
            let want = ids(&g["greedy"][i]);
            let single = model.generate(std::slice::from_ref(p), &opts);
            assert_eq!(single[0].tokens, want, "{arch} prompt {i}");
            assert_eq!(batched[i].tokens, want, "{arch} prompt {i} (batched)");
            let eos = g["eos_token_id"].as_u64().unwrap() as u32;
            let expected_reason = if want.last() == Some(&eos) {
                FinishReason::Stop
            } else {
                FinishReason::Length
            };
            assert_eq!(single[0].finish_reason, expected_reason);
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_batch_independent() {
    let model = Model::load(&golden_dir("llama")).unwrap();
    let prompts = vec![vec![5, 6, 7], vec![8, 9, 10, 11]];
    let opts = GenerateOptions {
        max_tokens: 8,
        temperature: 1.5,
        top_p: 0.9,
        seed: 42,
        stop_tokens: vec![],
    };
    let a = model.generate(&prompts, &opts);
    let b = model.generate(&prompts[1..], &opts);
    let c = model.generate(&prompts, &opts);
    assert_eq!(a, c);
    // prompt 1 alone draws from stream 0, so compare prompt 0 alone instead
    let d = model.generate(&prompts[..1], &opts);
    assert_eq!(a[0].tokens, d[0].tokens);
    assert_eq!(b.len(), 1);
    let other_seed = model.generate(
        &prompts,
        &GenerateOptions {
            seed: 43,
            ..opts.clone()
        },
    );
    assert_ne!(
        a, other_seed,
        "a different seed should change at least one sampled token"
    );
}

#[test]
fn loglikelihood_matches_transformers_and_is_batch_independent() {
    for arch in ARCHS {
        let model = Model::load(&golden_dir(arch)).unwrap();
        let g = golden_json(arch);
        let cases = g["loglikelihood"].as_array().unwrap();
        let reqs: Vec<(Vec<u32>, Vec<u32>)> = cases
            .iter()
            .map(|c| (ids(&c["context"]), ids(&c["continuation"])))
            .collect();
        let all = model.loglikelihood(&reqs);
        for (i, c) in cases.iter().enumerate() {
            let want = c["logprob"].as_f64().unwrap();
            assert!(
                (all[i].logprob - want).abs() < 1e-4 * want.abs().max(1.0),
                "{arch} case {i}: {} vs {want}",
                all[i].logprob
            );
            assert_eq!(all[i].is_greedy, c["is_greedy"].as_bool().unwrap());
            let alone = model.loglikelihood(&reqs[i..i + 1]);
            assert_eq!(
                alone[0], all[i],
                "{arch} case {i}: batched and alone differ"
            );
        }
    }
}

#[test]
fn token_logprobs_agree_with_loglikelihood() {
    let model = Model::load(&golden_dir("qwen2")).unwrap();
    let g = golden_json("qwen2");
    let toks = ids(&g["inputs"][1]);
    let lp = model.token_logprobs(&toks, 3);
    assert!(lp[0].is_none());
    let k = toks.len() / 2;
    let sum: f64 = lp[k..]
        .iter()
        .map(|x| x.as_ref().unwrap().logprob as f64)
        .sum();
    let want = g["loglikelihood"][1]["logprob"].as_f64().unwrap();
    assert!((sum - want).abs() < 1e-4 * want.abs().max(1.0));
    for x in lp.iter().flatten() {
        assert_eq!(x.top.len(), 3);
        assert!(x.top[0].1 >= x.top[1].1 && x.top[1].1 >= x.top[2].1);
        assert!(x.logprob <= x.top[0].1 + 1e-6);
    }
}

#[test]
fn chat_template_matches_transformers() {
    // qwen2: string in tokenizer_config.json; llama: list of {name, template}; others: chat_template.jinja
    for arch in ARCHS {
        let tmpl = ChatTemplate::load(&golden_dir(arch)).unwrap();
        let g = golden_json(arch);
        for case in g["chat"].as_array().unwrap() {
            let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
            let got = tmpl
                .render(&msgs, case["add_generation_prompt"].as_bool().unwrap())
                .unwrap();
            assert_eq!(got, case["rendered"].as_str().unwrap(), "{arch}");
        }
    }
}

#[test]
fn tokenizer_roundtrips_and_rejects_bad_ids() {
    let tok = Tokenizer::load(&golden_dir("qwen2")).unwrap();
    let g = golden_json("qwen2");
    let text = "The patient has a fever.";
    assert_eq!(tok.encode(text, false).unwrap(), ids(&g["inputs"][0]));
    assert_eq!(tok.decode(&ids(&g["inputs"][0]), false).unwrap(), text);
    assert_eq!(tok.vocab_size(), 300);
    assert!(tok.token_to_id("<|im_end|>").is_some());
    assert!(tok.decode(&[100_000], false).is_err());
}

#[test]
fn rope_parameters_and_legacy_rope_theta_give_equal_logits() {
    // the goldens are written by transformers 5 (rope_parameters); rewrite to the old top-level layout
    let src = golden_dir("qwen3");
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    assert!(text.contains("rope_parameters"));
    let mut cfg: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let rp = cfg.remove("rope_parameters").unwrap();
    cfg.insert("rope_theta".into(), rp["rope_theta"].clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let a = Model::load(&src).unwrap();
    let b = Model::load(dir.path()).unwrap();
    assert_eq!(b.config.rope_theta, 1_000_000.0);
    let toks = [3, 50, 99, 4, 7];
    assert_eq!(a.forward_logits(&toks), b.forward_logits(&toks));
}

#[test]
fn config_details_are_read() {
    let m = flow_model::Config::load(&golden_dir("mistral")).unwrap();
    assert_eq!(m.sliding_window, Some(4));
    assert_eq!(m.layer_windows, vec![Some(4), Some(4)]);
    let q = flow_model::Config::load(&golden_dir("qwen3")).unwrap();
    assert_eq!(q.head_dim, 16);
    assert!(q.qk_norm && !q.attention_bias && q.tie_word_embeddings);
    let q2 = flow_model::Config::load(&golden_dir("qwen2")).unwrap();
    assert!(q2.attention_bias && q2.sliding_window.is_none());
    assert_eq!(q2.eos_token_ids, vec![2]);
}

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_inputs_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&golden_dir("llama"), dir.path());
    let cfg_path = dir.path().join("config.json");
    let orig = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        orig.replace("LlamaForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    let e = Model::load(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("config.json") && e.contains("GPT2LMHeadModel"),
        "{e}"
    );
    // wrong hidden size: the first tensor whose shape disagrees is named
    std::fs::write(
        &cfg_path,
        orig.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    let e = Model::load(dir.path()).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("mlp.") && e.contains("65"),
        "{e}"
    );
    // Adversarial run, issue 12 item 9: sizes that aborted the process on
    // allocation are errors naming config.json, checked before allocating.
    for (from, to, needle) in [
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1000000000000000",
            "num_hidden_layers",
        ),
        ("\"head_dim\": 8", "\"head_dim\": 1099511627776", "head_dim"),
        // within the bounds, but far more than the weight files hold
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 4000",
            "weight files hold",
        ),
        (
            "\"intermediate_size\": 64",
            "\"intermediate_size\": 1000000",
            "weight files hold",
        ),
    ] {
        std::fs::write(&cfg_path, orig.replace(from, to)).unwrap();
        let e = Model::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("config.json") && e.contains(needle), "{to}: {e}");
    }
    std::fs::write(&cfg_path, "{not json").unwrap();
    assert!(Model::load(dir.path())
        .err()
        .unwrap()
        .to_string()
        .contains("config.json"));
    std::fs::write(&cfg_path, &orig).unwrap();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = Tokenizer::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    // out-of-range tokens: errors or empty results, never a panic
    let m = Model::load(dir.path()).unwrap();
    assert!(m.try_forward_logits(&[1, 300]).is_err());
    assert!(m.forward_logits(&[1, 300]).is_empty());
    assert!(m.loglikelihood(&[(vec![1], vec![999])])[0]
        .logprob
        .is_infinite());
    assert!(m.generate(&[vec![999]], &GenerateOptions::default())[0]
        .tokens
        .is_empty());
    assert!(m.mean_hidden_state(&[]).is_empty());
}

#[test]
fn save_and_reload_roundtrips() {
    let m = Model::load(&golden_dir("qwen2")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), flow_model::SaveDtype::F32).unwrap();
    let r = Model::load(dir.path()).unwrap();
    assert_eq!(m.params.data, r.params.data);
    m.save(dir.path(), flow_model::SaveDtype::Bf16).unwrap();
    let b = Model::load(dir.path()).unwrap();
    for (x, y) in m
        .params
        .data
        .iter()
        .flatten()
        .zip(b.params.data.iter().flatten())
    {
        assert!((x - y).abs() <= x.abs() / 128.0 + 1e-30);
    }
    m.save(dir.path(), flow_model::SaveDtype::F16).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["torch_dtype"], "float16");
    let h = Model::load(dir.path()).unwrap();
    for (x, y) in m
        .params
        .data
        .iter()
        .flatten()
        .zip(h.params.data.iter().flatten())
    {
        assert_eq!(*y, half::f16::from_f32(*x).to_f32());
    }
}

/// Save dtypes go by their Hugging Face names only; anything else names the allowed ones.
#[test]
fn save_dtypes_parse_by_their_hf_names() {
    use flow_model::SaveDtype;
    assert_eq!(SaveDtype::parse("float32"), Ok(SaveDtype::F32));
    assert_eq!(SaveDtype::parse("bfloat16"), Ok(SaveDtype::Bf16));
    assert_eq!(SaveDtype::parse("float16"), Ok(SaveDtype::F16));
    for bad in ["f32", "bf16", "auto", "Float32"] {
        let err = SaveDtype::parse(bad).unwrap_err();
        assert!(
            err.contains(bad) && err.contains("float32, bfloat16, float16"),
            "{err}"
        );
    }
}

/// A model split over two f16 shards with an index loads to the same logits (to f16 precision)
/// as the single-file f32 original.
#[test]
fn sharded_f16_checkpoint_loads() {
    use safetensors::tensor::{Dtype, TensorView};
    let src = golden_dir("llama");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let encoded: Vec<(String, Vec<u8>, Vec<usize>)> = names
        .iter()
        .map(|n| {
            let v = st.tensor(n).unwrap();
            let data: Vec<u8> = v
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                })
                .collect();
            (n.clone(), data, v.shape().to_vec())
        })
        .collect();
    let mut weight_map = serde_json::Map::new();
    for (s, part) in encoded.chunks(encoded.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", s + 1);
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|(n, d, sh)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F16, sh.clone(), d).unwrap(),
                )
            })
            .collect();
        std::fs::write(
            dir.path().join(&file),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        for (n, _, _) in part {
            weight_map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let a = Model::load(&src).unwrap();
    let b = Model::load(dir.path()).unwrap();
    let toks = [5, 9, 200, 17];
    let err = rel_err(&b.forward_logits(&toks), &a.forward_logits(&toks));
    assert!(err < 5e-3, "f16 shards: relative error {err}");
    assert!(err > 0.0, "the f16 copy should not be bit-identical");
}

/// A template using namespace, loop controls, Python string methods, slicing, bos/eos tokens,
/// whitespace control and a raise_exception guard renders as transformers renders it.
#[test]
fn chat_template_features_match_transformers() {
    let g = golden_json("qwen3");
    let source = g["template_extra"].as_str().unwrap().to_string();
    let tmpl =
        ChatTemplate::from_source(source, String::new(), "<|im_end|>".into(), "extra".into())
            .unwrap();
    for case in g["chat"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let got = tmpl
            .render(&msgs, case["add_generation_prompt"].as_bool().unwrap())
            .unwrap();
        assert_eq!(got, case["rendered_extra"].as_str().unwrap());
    }
    let bad = vec![ChatMessage {
        role: "tool".into(),
        content: "x".into(),
    }];
    let e = tmpl.render(&bad, false).unwrap_err().to_string();
    assert!(e.contains("bad role"), "{e}");
}

/// Adversarial run, issue 12 item 10: malformed `tokenizer.json` files
/// that panicked (or aborted on a huge allocation) inside the tokenizers
/// crate. Each now loads with lengths left to the runtime, or fails with an
/// error naming the file.
#[test]
fn malformed_tokenizer_json_is_an_error_naming_the_file_never_a_panic() {
    let src = golden_dir("qwen2");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    let cases: [(&str, serde_json::Value); 3] = [
        // assert!(stride < max_len) inside encode
        (
            "truncation",
            serde_json::json!({"direction": "Right", "max_length": 1, "strategy": "LongestFirst", "stride": 5}),
        ),
        // padding to 10^12 tokens: an allocation abort inside encode
        (
            "padding",
            serde_json::json!({"strategy": {"Fixed": 1_000_000_000_000u64}, "direction": "Right",
                               "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "x"}),
        ),
        // a template naming a special token it does not define: a map lookup panics
        (
            "post_processor",
            serde_json::json!({"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                               "pair": [], "special_tokens": {}}),
        ),
    ];
    let text = "Hallo Welt, wie geht's? Äpfel";
    let reference = Tokenizer::load(&src).unwrap().encode(text, false).unwrap();
    for (field, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut broken = original.clone();
        broken[field] = value;
        std::fs::write(dir.path().join("tokenizer.json"), broken.to_string()).unwrap();
        let tokenizer = Tokenizer::load(dir.path()).unwrap();
        match field {
            // truncation and padding are ignored: the text is encoded whole
            "truncation" | "padding" => {
                assert_eq!(tokenizer.encode(text, true).unwrap(), reference, "{field}")
            }
            _ => {
                let e = tokenizer.encode(text, true).unwrap_err().to_string();
                assert!(e.contains("tokenizer.json"), "{field}: {e}");
            }
        }
    }
}
