use std::path::{Path, PathBuf};

use crate::op::Value;

/// The repository's data/demo directory.
pub fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo")
}

pub use crate::op::testing::run_op;

/// The demo corpus (JSONL) read by `corpus` into `out`.
pub fn demo_corpus(out: &Path) -> PathBuf {
    run_op(
        &super::Corpus,
        &[("input", Value::Path(demo_dir().join("fineweb2-demo.jsonl")))],
        out,
    )
    .unwrap();
    out.to_path_buf()
}

/// The demo corpus at `out` in shards of `docs_per_shard` documents.
pub fn demo_corpus_in_shards(out: &Path, docs_per_shard: i64) -> PathBuf {
    run_op(
        &super::Corpus,
        &[
            ("input", Value::Path(demo_dir().join("fineweb2-demo.jsonl"))),
            ("docs_per_shard", Value::Int(docs_per_shard)),
        ],
        out,
    )
    .unwrap();
    out.to_path_buf()
}

/// A corpus directory `dir` of one zstd JSONL shard a text (`docs-00000.jsonl.zst`, ...),
/// written as the corpus op names its shards; for tests of malformed lines.
pub fn write_corpus_shards(dir: &Path, shards: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (i, text) in shards.iter().enumerate() {
        std::fs::write(
            dir.join(format!("docs-{i:05}.jsonl.zst")),
            zstd::encode_all(text.as_bytes(), 1).unwrap(),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

/// Checks the error of a sharded run whose third of three shard tasks
/// failed at `location` (`file:line`): the error names the task and the
/// location, and neither the parts nor the artifact file `artifact` are
/// left behind.
pub fn assert_third_shard_task_failed(
    err: &impl std::fmt::Debug,
    location: &str,
    out: &Path,
    artifact: &str,
) {
    let text = format!("{err:?}");
    assert!(
        text.contains("shard task 2 of 3 (pieces 2..3) failed"),
        "{text}"
    );
    assert!(text.contains(location), "{text}");
    let name = out.file_name().unwrap().to_string_lossy();
    assert!(
        !out.with_file_name(format!("{name}.parts")).exists(),
        "parts are removed"
    );
    assert!(!out.join(artifact).exists());
}

/// A tiny random Qwen2 model (hidden 32, 2 layers) with a whitespace
/// word-level tokenizer over `words` (id 0 `</s>` = EOS, 1 `<unk>`) and a
/// plain chat template, for tests of the model-backed paths.
pub fn tiny_model(dir: &Path, words: &[String]) -> PathBuf {
    use rand::{Rng, SeedableRng};
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab = serde_json::Map::new();
    vocab.insert("</s>".into(), 0.into());
    vocab.insert("<unk>".into(), 1.into());
    for w in words {
        let next = vocab.len();
        vocab.entry(w.clone()).or_insert(next.into());
    }
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "vocab_size": vocab.len(), "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 4096, "tie_word_embeddings": true, "eos_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let config = flow_model::Config::load(dir).unwrap();
    let mut params = flow_model::Params::zeros(&config);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (name, data) in params.names.iter().zip(params.data.iter_mut()) {
        for x in data.iter_mut() {
            *x = if name.contains("norm") {
                1.0
            } else {
                rng.random_range(-0.2..0.2)
            };
        }
    }
    let model = flow_model::Model::from_params(config, params).unwrap();
    model.save(dir, flow_model::SaveDtype::F32).unwrap();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let tc = serde_json::json!({"eos_token": "</s>", "chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}"});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    dir.to_path_buf()
}

/// The distinct whitespace-separated words of the demo corpus.
pub fn demo_words() -> Vec<String> {
    let text = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl")).unwrap();
    let mut words: Vec<String> = text
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    words.sort();
    words.dedup();
    words
}

/// All records of a corpus artifact.
pub fn read_corpus(dir: &Path) -> Vec<serde_json::Value> {
    let mut docs = Vec::new();
    for shard in super::corpus_shards(dir).unwrap() {
        super::for_each_line(&shard, |_, l| {
            docs.push(serde_json::from_str(l).unwrap());
            Ok(())
        })
        .unwrap();
    }
    docs
}

/// Runs a sharded op (`Op::sharding`) with its pieces cut into at most
/// `tasks` shard tasks, as the engine does.
pub fn run_sharded(
    op: &dyn crate::op::Op,
    params: &[(&str, Value)],
    out: &Path,
    tasks: usize,
) -> crate::op::OpResult<crate::op::Outputs> {
    use crate::op::testing::{full_params, with_context, RunOptions};
    let sharded = op.sharding().expect("a sharded op");
    with_context(full_params(op, params), out, RunOptions::default(), |ctx| {
        crate::op::run_in_parts(sharded, ctx, Some(tasks))
    })
    .0
}

/// Every file under `dir` (relative path) with its bytes.
pub fn tree_bytes(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Runs a sharded op with every task count in `tasks` and asserts that
/// all outputs are byte-identical to the one-task run (the unsharded
/// output); returns that output's directory. No parts are left beside it.
pub fn assert_same_bytes_for_task_counts(
    op: &dyn crate::op::Op,
    params: &[(&str, Value)],
    root: &Path,
    tasks: &[usize],
) -> PathBuf {
    let one = root.join("tasks-1");
    run_sharded(op, params, &one, 1).unwrap();
    let reference = tree_bytes(&one);
    assert!(!reference.is_empty());
    for &t in tasks {
        let out = root.join(format!("tasks-{t}"));
        run_sharded(op, params, &out, t).unwrap();
        let got = tree_bytes(&out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>(),
            "files with {t} tasks"
        );
        for (name, bytes) in &reference {
            assert!(got[name] == *bytes, "{name} differs with {t} shard tasks");
        }
        assert!(!root.join(format!("tasks-{t}.parts")).exists());
    }
    one
}
