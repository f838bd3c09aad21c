//! The setup of the tiny DeFineMed runs (tests/e2e_definemed.rs locally,
//! tests/cli_slurm.rs on Slurm): `pipelines/definemed.flow` imported as a
//! module instance `demo` whose source model is a tiny random Qwen2
//! (tests/golden/qwen2) and whose params are shrunk, with an annotator that
//! is an OpenAI-compatible endpoint on loopback (as vLLM would serve
//! Mixtral) labelling by medical keywords, since a random model would give
//! every document the same label.

use std::path::Path;
use std::sync::Arc;

use flow_stdlib::http;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The nodes a run of the tiny pipeline targets: the report and the two
/// results it does not read.
pub const TARGETS: [&str; 3] = ["demo.summary", "demo.gain", "demo.agree"];

/// The shrunk training and evaluation params of the tiny runs, as
/// bindings of an instance of `definemed.flow` or `training-dynamics.flow`.
pub const TINY_PARAMS: &str = "    seq_len: 32,
    effective_batch: 2,
    micro_batch: 2,
    max_steps: 3,
    checkpoints: 2,
    max_new_tokens: 8,
    judge_tokens: 8,
";

/// A copy of a tiny golden model (`qwen2`, `llama`, ...) with a context
/// long enough for the one-shot prompts (its positions are rotary, so only
/// the limit changes).
pub fn tiny_model(golden: &str, to: &Path) {
    let from = Path::new(ROOT).join("tests/golden").join(golden);
    std::fs::create_dir_all(to).unwrap();
    for f in [
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(from.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = Value::from(4096);
    std::fs::write(to.join("config.json"), config.to_string()).unwrap();
}

/// Serves `/v1/chat/completions` on loopback, answering `{"label": ..}`:
/// "medizinisch" when the document (between the demo prompt's triple
/// quotes) names a medical word, else "allgemein". Returns the
/// server (it stops when dropped) and its base URL.
pub fn keyword_annotator() -> (http::HttpServer, String) {
    const MEDICAL: [&str; 10] = [
        "Patient",
        "Therapie",
        "Diagnose",
        "Medikament",
        "Symptom",
        "Krankheit",
        "Klinik",
        "Behandlung",
        "Dosis",
        "Fieber",
    ];
    let handler: http::Handler = Arc::new(|req: &http::Request| {
        let request: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let user = request["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let doc = user.split("\"\"\"").nth(1).unwrap_or("");
        let label = if MEDICAL.iter().any(|w| doc.contains(w)) {
            "medizinisch"
        } else {
            "allgemein"
        };
        let content = serde_json::json!({ "label": label }).to_string();
        http::Response::json(
            200,
            &serde_json::json!({
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            }),
        )
    });
    let server = http::HttpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        http::Limits::default(),
        handler,
    )
    .unwrap();
    let url = format!("http://{}/v1", server.addr());
    (server, url)
}

/// The tiny pipeline: the tiny model in `tiny/` (see [`tiny_model`]) as
/// the source, the annotator at `annotator_url`.
pub fn pipeline(annotator_url: &str) -> String {
    pipeline_with(annotator_url, "", "")
}

/// [`pipeline`] with more definitions in the importing file (`defs`, whole
/// lines) and more bindings of the instance (`bindings`, `name: value,`
/// lines).
pub fn pipeline_with(annotator_url: &str, defs: &str, bindings: &str) -> String {
    format!(
        r#"# definemed.flow with a tiny model and tiny settings
tiny = dir("tiny")
param keyword_annotator = "keyword-annotator"
{defs}import "{ROOT}/pipelines/definemed.flow" as demo with {{
    source: tiny,
    annotator: keyword_annotator,
    annotate_backend: "openai",
    annotate_url: "{annotator_url}",
    sample_size: 40,
{TINY_PARAMS}{bindings}}}
"#
    )
}
