//! `generate`: a response from the model for every prompt of a JSONL file,
//! through the model's chat template.
//!
//! Input lines are `{"id": ..., "prompt": "..."}` (sent as one user message,
//! after an optional system message) or `{"id": ..., "messages": [{"role":
//! ..., "content": ...}, ...]}`. Output: `responses.jsonl` with one
//! `{"id", "prompt", "response", "tokens", "prompt_tokens", "finish_reason"}`
//! line (plus `messages` for a chat of more than one message) per input
//! line, in input order, and `generate.json` with token counts.
//! [`read_responses`] reads it back; `judge` and `failure_modes` use it.
//!
//! Greedy decoding is batched. With `temperature > 0` every prompt is sampled
//! on its own with a seed drawn from `(seed, line index)`, so a response does
//! not depend on the batch size or on the other prompts.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::artifacts::model::{FinishReasons, GenerateSummary, ResponseLine};
use crate::artifacts::{read_object_lines, CheckpointLineage, JsonFile, JsonLines, ObjectLine};
use crate::model::runtime::{self, ChatMessage, FinishReason, GenerateOptions, LanguageModel};
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Generate)]
}

/// One prompt of the input file.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptItem {
    pub id: Json,
    /// The prompt text: the `prompt` field, or the last user message.
    pub prompt: String,
    /// The chat to render (the `messages` field, or the prompt as a user message).
    pub messages: Vec<ChatMessage>,
    /// `file:line`, for messages.
    pub source: String,
}

fn message_list(value: &Json, at: &str) -> OpResult<Vec<ChatMessage>> {
    let Json::Array(list) = value else {
        return Err(miette!(
            "{at}: `messages` must be a list of {{\"role\", \"content\"}} objects"
        ));
    };
    if list.is_empty() {
        return Err(miette!("{at}: `messages` is empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Json::as_str);
            let content = m.get("content").and_then(Json::as_str);
            match (role, content) {
                (Some(r), Some(c)) => Ok(ChatMessage {
                    role: r.to_string(),
                    content: c.to_string(),
                }),
                _ => Err(miette!(
                    "{at}: message {i} needs string fields `role` and `content`"
                )),
            }
        })
        .collect()
}

/// Reads the prompt file. `system`, when not empty, opens every chat that
/// has no system message of its own.
pub fn load_prompts(path: &Path, system: &str) -> OpResult<Vec<PromptItem>> {
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ObjectLine {
        at, object: obj, ..
    } in read_object_lines(path)?
    {
        let id = obj
            .get("id")
            .cloned()
            .ok_or_else(|| miette!("{at}: missing field `id`"))?;
        if !seen.insert(id.to_string()) {
            return Err(miette!("{at}: id {id} appears twice; ids must be unique"));
        }
        let mut messages = match (obj.get("prompt"), obj.get("messages")) {
            (Some(Json::String(p)), None) => vec![ChatMessage {
                role: "user".into(),
                content: p.clone(),
            }],
            (Some(other), None) => {
                return Err(miette!("{at}: `prompt` must be a string, found {other}"))
            }
            (None, Some(m)) => message_list(m, &at)?,
            (Some(_), Some(_)) => {
                return Err(miette!(
                    "{at}: give either `prompt` or `messages`, not both"
                ))
            }
            (None, None) => return Err(miette!("{at}: missing field `prompt` (or `messages`)")),
        };
        if !system.is_empty() && messages.first().map(|m| m.role.as_str()) != Some("system") {
            messages.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: system.to_string(),
                },
            );
        }
        let prompt = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default();
        items.push(PromptItem {
            id,
            prompt,
            messages,
            source: at,
        });
    }
    if items.is_empty() {
        return Err(miette!("{}: no prompts", path.display()));
    }
    Ok(items)
}

/// A response as written to `responses.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub text: String,
    pub prompt_tokens: usize,
    /// Generated tokens, the stop token included (it was generated).
    pub tokens: usize,
    pub finish_reason: FinishReason,
}

/// Settings of [`generate_all`].
#[derive(Clone, Debug)]
pub struct GenerateSettings {
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub batch_size: usize,
    /// Render prompts with the chat template (else the prompt text is
    /// encoded as it is, with the tokenizer's special tokens).
    pub chat: bool,
}

/// A per-prompt seed from the run's seed and the prompt's index (splitmix64).
pub fn item_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The token ids of an item's prompt.
pub fn prompt_tokens(
    model: &dyn LanguageModel,
    item: &PromptItem,
    chat: bool,
) -> OpResult<Vec<u32>> {
    let ids = if chat {
        let text = model
            .render_chat(&item.messages, true)
            .map_err(|e| miette!("{}: {e}", item.source))?;
        // transformers' apply_chat_template(tokenize=True) adds no special
        // tokens: the template writes them.
        model.encode(&text, false)
    } else {
        let text: Vec<&str> = item.messages.iter().map(|m| m.content.as_str()).collect();
        model.encode(&text.join("\n"), true)
    }
    .map_err(|e| miette!("{}: {e}", item.source))?;
    if ids.is_empty() {
        return Err(miette!("{}: the prompt encodes to no tokens", item.source));
    }
    if ids.len() >= model.max_context() {
        return Err(miette!(
            "{}: the prompt has {} tokens; the model takes at most {} (prompt and response)",
            item.source,
            ids.len(),
            model.max_context()
        ));
    }
    Ok(ids)
}

/// Generates a response for every item, in order; `on_done` hears how many
/// finished and may stop the run by returning an error.
pub fn generate_all(
    model: &dyn LanguageModel,
    items: &[PromptItem],
    settings: &GenerateSettings,
    on_done: &mut dyn FnMut(usize) -> OpResult<()>,
) -> OpResult<Vec<Response>> {
    let prompts = items
        .iter()
        .map(|it| prompt_tokens(model, it, settings.chat))
        .collect::<OpResult<Vec<_>>>()?;
    let mut out = Vec::with_capacity(items.len());
    let greedy = settings.temperature <= 0.0;
    // Sampling goes one prompt a call so that each has its own seed.
    let batch = if greedy {
        settings.batch_size.max(1)
    } else {
        1
    };
    let mut start = 0;
    while start < prompts.len() {
        let end = (start + batch).min(prompts.len());
        let longest = prompts[start..end].iter().map(Vec::len).max().unwrap_or(0);
        let opts = GenerateOptions {
            max_tokens: settings
                .max_tokens
                .min(model.max_context().saturating_sub(longest)),
            temperature: settings.temperature,
            top_p: settings.top_p,
            seed: if greedy {
                settings.seed
            } else {
                item_seed(settings.seed, start)
            },
            stop_tokens: Vec::new(),
        };
        let gens = model
            .generate(&prompts[start..end], &opts)
            .map_err(|e| miette!("generate: {e}"))?;
        if gens.len() != end - start {
            return Err(miette!(
                "internal: the model returned {} generations for {} prompts",
                gens.len(),
                end - start
            ));
        }
        for (g, p) in gens.iter().zip(&prompts[start..end]) {
            let mut shown = g.tokens.as_slice();
            if g.finish_reason == FinishReason::Stop {
                shown = shown.split_last().map(|(_, rest)| rest).unwrap_or(shown);
            }
            let text = model
                .decode(shown, true)
                .map_err(|e| miette!("decoding a response: {e}"))?;
            out.push(Response {
                text,
                prompt_tokens: p.len(),
                tokens: g.tokens.len(),
                finish_reason: g.finish_reason,
            });
        }
        on_done(end - start)?;
        start = end;
    }
    Ok(out)
}

/// Writes `responses.jsonl` and `generate.json`.
pub fn write_outputs(
    out_dir: &Path,
    items: &[PromptItem],
    responses: &[Response],
    settings: &GenerateSettings,
    checkpoint: Option<CheckpointLineage>,
    model_name: &str,
) -> OpResult<Outputs> {
    let lines: Vec<ResponseLine> = items
        .iter()
        .zip(responses)
        .map(|(item, r)| ResponseLine {
            id: item.id.clone(),
            prompt: Some(item.prompt.clone()),
            response: r.text.clone(),
            tokens: Some(r.tokens),
            prompt_tokens: Some(r.prompt_tokens),
            finish_reason: Some(r.finish_reason.as_str().to_owned()),
            messages: if item.messages.len() > 1 {
                item.messages.clone()
            } else {
                Vec::new()
            },
            source: String::new(),
        })
        .collect();
    ResponseLine::write_all(&lines, out_dir)?;
    let prompt_tokens: usize = responses.iter().map(|r| r.prompt_tokens).sum();
    let completion_tokens: usize = responses.iter().map(|r| r.tokens).sum();
    let stopped = responses
        .iter()
        .filter(|r| r.finish_reason == FinishReason::Stop)
        .count();
    GenerateSummary {
        n: responses.len(),
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        finish_reasons: FinishReasons {
            stop: stopped,
            length: responses.len() - stopped,
        },
        max_tokens: settings.max_tokens,
        temperature: f64::from(settings.temperature),
        top_p: f64::from(settings.top_p),
        seed: settings.seed,
        chat_template: settings.chat,
        model: model_name.to_owned(),
        checkpoint,
    }
    .write(out_dir)?;
    let mut out = Outputs::new();
    out.insert("responses".into(), Value::Path(ResponseLine::NAME.into()));
    out.insert("summary".into(), Value::Path(GenerateSummary::NAME.into()));
    Ok(out)
}

/// A `generate` artifact read back: its responses in file order and the
/// lineage from `generate.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedResponses {
    /// What was given: an artifact directory or a responses file.
    pub path: PathBuf,
    /// The `responses.jsonl` that was read.
    pub file: PathBuf,
    pub records: Vec<ResponseLine>,
    /// `checkpoint` of `generate.json` (absent, or the file given directly: `None`).
    pub checkpoint: Option<CheckpointLineage>,
    /// `model` of `generate.json`.
    pub model: Option<String>,
}

impl GeneratedResponses {
    /// What verdicts, rankings and reports call this model: `given` when
    /// not empty; `step-N` for a checkpoint (or a merge of one); else the
    /// [`short_model_name`] of the model `generate.json` names (of the
    /// responses' own path when it names none).
    pub fn display_name(&self, given: &str) -> String {
        if !given.is_empty() {
            return given.to_owned();
        }
        if let Some(step) = self.checkpoint.as_ref().and_then(|c| c.step) {
            return format!("step-{step}");
        }
        match &self.model {
            Some(model) => short_model_name(model),
            None => short_model_name(&self.path.to_string_lossy()),
        }
    }
}

/// A short name for a model a result names (an input identity such as
/// `artifact:HASH` or `artifact:HASH/checkpoints/step-4`, or a path): the
/// last component (its parent's for an artifact's `out/`), a bare identity
/// cut to its first 12 hex digits, anything else to 16 characters.
pub fn short_model_name(name: &str) -> String {
    let path = Path::new(name);
    let named = if path.file_name().is_some_and(|n| n == "out") {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    let Some(last) = named.file_name().map(|s| s.to_string_lossy()) else {
        return name.to_owned();
    };
    match last.split_once(':') {
        Some((_, hash)) if hash.len() >= 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            hash[..12].to_owned()
        }
        _ => last.chars().take(16).collect(),
    }
}

/// Reads a `generate` artifact directory (`responses.jsonl` and, when
/// present, `generate.json`) or a responses file. Ids must be unique.
pub fn read_responses(path: &Path) -> OpResult<GeneratedResponses> {
    let (file, summary) = if path.is_dir() {
        (
            path.join(ResponseLine::NAME),
            GenerateSummary::read_if_present(path)?,
        )
    } else {
        (path.to_owned(), None)
    };
    let mut records = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for ObjectLine { line, at, object } in read_object_lines(&file)? {
        if matches!(object.get("messages"), Some(Json::Array(m)) if m.is_empty()) {
            return Err(miette!("{at}: `messages` is empty"));
        }
        let mut record: ResponseLine = serde_json::from_value(Json::Object(object))
            .map_err(|e| miette!("{at}: not {} ({e})", ResponseLine::WHAT))?;
        if record.id.is_null() {
            return Err(miette!("{at}: `id` is null; every response needs an id"));
        }
        let id = record.id_text();
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(miette!(
                "{at}: id {id} appears twice (first on line {first})"
            ));
        }
        record.source = at;
        records.push(record);
    }
    let (checkpoint, model) = match summary {
        Some(s) => (s.checkpoint, Some(s.model).filter(|m| !m.is_empty())),
        None => (None, None),
    };
    Ok(GeneratedResponses {
        path: path.to_owned(),
        file,
        records,
        checkpoint,
        model,
    })
}

/// The `generate` op.
pub struct Generate;

impl Op for Generate {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "generate",
            version: 5,
            doc: "A response from the model for every prompt of a JSONL file ({id, prompt} or {id, messages}), through the model's chat template.",
            params: vec![
                Param::required("model", Type::Model, "the model"),
                Param::required("prompts", Type::File, "JSONL: {\"id\", \"prompt\"} or {\"id\", \"messages\"} a line"),
                Param::optional("max_tokens", Type::Int, Value::Int(512), "most tokens per response").at_least(1.0),
                Param::optional("temperature", Type::Float, Value::Float(0.0), "0: greedy; otherwise sampling temperature").at_least(0.0),
                Param::optional("top_p", Type::Float, Value::Float(1.0), "nucleus sampling mass").within(0.0, 1.0),
                Param::optional("seed", Type::Int, Value::Int(0), "sampling seed"),
                Param::optional("batch_size", Type::Int, Value::Int(8), "prompts decoded together (greedy only; results do not depend on it)").at_least(1.0),
                Param::optional("chat", Type::Bool, Value::Bool(true), "render prompts with the model's chat template"),
                Param::optional("system", Type::Str, Value::Str(String::new()), "a system message for chats without one"),
                runtime::WeightDtype::param(),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "responses", ty: Type::File, doc: "responses.jsonl" },
                Output { name: "summary", ty: Type::File, doc: "generate.json: token counts" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<GenerateParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: GenerateParams = ctx.params()?;
        let model_dir = p.model.as_path();
        let settings = settings_from(&p)?;
        let items = load_prompts(&p.prompts, &p.system)?;
        let checkpoint =
            runtime::read_checkpoint(model_dir).map_err(|e| miette!("generate: {e}"))?;
        let model =
            runtime::load_for(ctx, model_dir, p.dtype).map_err(|e| miette!("generate: {e}"))?;
        ctx.progress.set_total(items.len() as u64, "prompts");
        let responses = generate_all(model.as_ref(), &items, &settings, &mut |n| {
            ctx.progress.inc(n as u64);
            ctx.check_cancelled()
        })?;
        ctx.log(&format!("generate: {} responses", responses.len()));
        write_outputs(
            &ctx.out_dir,
            &items,
            &responses,
            &settings,
            checkpoint,
            &ctx.input_name(model_dir),
        )
    }
}

/// `generate`'s params (see its spec). Counts that must be positive are
/// `NonZeroUsize`: 0 fails here even when no literal was checked.
#[derive(Deserialize)]
struct GenerateParams {
    model: PathBuf,
    prompts: PathBuf,
    max_tokens: NonZeroUsize,
    temperature: f64,
    top_p: f64,
    seed: i64,
    batch_size: NonZeroUsize,
    chat: bool,
    system: String,
    dtype: runtime::WeightDtype,
}

fn settings_from(p: &GenerateParams) -> OpResult<GenerateSettings> {
    // The declared range is [0, 1]; 0 would keep no token.
    if p.top_p <= 0.0 {
        return Err(miette!(
            "generate: `top_p` must be in (0, 1], got {}",
            p.top_p
        ));
    }
    Ok(GenerateSettings {
        max_tokens: p.max_tokens.get(),
        temperature: p.temperature as f32,
        top_p: p.top_p as f32,
        // A negative seed is its two's-complement bits, as it always was.
        seed: p.seed as u64,
        batch_size: p.batch_size.get(),
        chat: p.chat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::runtime::ToyModel;
    use crate::op::testing::{full_params, with_context, RunOptions};
    use serde_json::json;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let p = dir.join("prompts.jsonl");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn settings(temperature: f32, batch_size: usize) -> GenerateSettings {
        GenerateSettings {
            max_tokens: 12,
            temperature,
            top_p: 0.9,
            seed: 5,
            batch_size,
            chat: true,
        }
    }

    #[test]
    fn reads_prompts_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "{\"id\": 1, \"prompt\": \"Hallo\"}\n\n{\"id\": \"b\", \"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Frage\"}]}\n",
        );
        let items = load_prompts(&p, "Sei kurz.").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].messages[0],
            ChatMessage {
                role: "system".into(),
                content: "Sei kurz.".into()
            }
        );
        assert_eq!(items[0].prompt, "Hallo");
        // A chat with its own system message keeps it.
        assert_eq!(items[1].messages[0].content, "S");
        assert_eq!(items[1].prompt, "Frage");
        assert!(items[1].source.ends_with("prompts.jsonl:3"));
    }

    #[test]
    fn bad_prompt_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in [
            (
                "{\"prompt\": \"x\"}\n",
                "prompts.jsonl:1: missing field `id`",
            ),
            (
                "{\"id\": 1, \"prompt\": \"x\"}\n{\"id\": 1, \"prompt\": \"y\"}\n",
                "prompts.jsonl:2: id 1 appears twice",
            ),
            ("{\"id\": 1}\n", "prompts.jsonl:1: missing field `prompt`"),
            (
                "{\"id\": 1, \"messages\": [{\"role\": \"user\"}]}\n",
                "prompts.jsonl:1: message 0 needs",
            ),
            (
                "{\"id\": 1, \"prompt\": 3}\n",
                "prompts.jsonl:1: `prompt` must be a string",
            ),
        ] {
            let p = write(dir.path(), text);
            let err = format!("{}", load_prompts(&p, "").unwrap_err());
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn greedy_responses_follow_the_model_and_do_not_depend_on_batching() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "{\"id\": 1, \"prompt\": \"abc\"}\n{\"id\": 2, \"prompt\": \"xyz\"}\n{\"id\": 3, \"prompt\": \"q\"}\n");
        let items = load_prompts(&p, "").unwrap();
        let model = ToyModel::new(3);
        let one = generate_all(&model, &items, &settings(0.0, 1), &mut |_| Ok(())).unwrap();
        let all = generate_all(&model, &items, &settings(0.0, 8), &mut |_| Ok(())).unwrap();
        assert_eq!(one, all);
        // Independent check: greedy decoding of the toy bigram model is the
        // argmax chain from the last prompt token ('>' of "<assistant>").
        let mut prev = b'>' as u32;
        let mut expected = Vec::new();
        for _ in 0..12 {
            let row = model.row(prev);
            let next = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
            expected.push(next);
            if next == ToyModel::EOS {
                break;
            }
            prev = next;
        }
        let shown: Vec<u32> = expected
            .iter()
            .copied()
            .filter(|&t| t != ToyModel::EOS)
            .collect();
        assert_eq!(one[0].text, model.decode(&shown, true).unwrap());
        assert_eq!(one[0].tokens, expected.len());
        assert_eq!(one[0].prompt_tokens, "<user>abc</user>\n<assistant>".len());
    }

    #[test]
    fn sampled_responses_depend_on_seed_not_on_batch_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "{\"id\": 1, \"prompt\": \"abc\"}\n{\"id\": 2, \"prompt\": \"abc\"}\n",
        );
        let items = load_prompts(&p, "").unwrap();
        let model = ToyModel::new(3);
        let a = generate_all(&model, &items, &settings(1.0, 1), &mut |_| Ok(())).unwrap();
        let b = generate_all(&model, &items, &settings(1.0, 2), &mut |_| Ok(())).unwrap();
        assert_eq!(a, b);
        // Two identical prompts get different seeds.
        assert_ne!(a[0].text, a[1].text);
    }

    /// The op end to end on the golden tiny Qwen2 model: the response is
    /// the runtime's greedy continuation of the chat-templated prompt.
    #[test]
    fn generate_op_on_the_golden_model() {
        let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/qwen2");
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "{\"id\": 7, \"prompt\": \"The patient\"}\n");
        let out_dir = dir.path().join("out");
        let params = full_params(
            &Generate,
            &[
                ("model", Value::Path(model_dir.clone())),
                ("prompts", Value::Path(p)),
                ("max_tokens", Value::Int(6)),
                ("temperature", Value::Float(0.0)),
                ("top_p", Value::Float(1.0)),
                ("seed", Value::Int(0)),
                ("batch_size", Value::Int(4)),
                ("chat", Value::Bool(true)),
                ("system", Value::Str(String::new())),
            ],
        );
        let options = RunOptions {
            threads: 1,
            ..RunOptions::default()
        };
        with_context(params, &out_dir, options, |ctx| Generate.run(ctx))
            .0
            .unwrap();
        let line: Json = serde_json::from_str(
            std::fs::read_to_string(out_dir.join("responses.jsonl"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        let model = runtime::load(&model_dir).unwrap();
        let text = model
            .render_chat(
                &[ChatMessage {
                    role: "user".into(),
                    content: "The patient".into(),
                }],
                true,
            )
            .unwrap();
        assert!(text.contains("<|im_start|>user"), "{text}");
        let ids = model.encode(&text, false).unwrap();
        let g = &model
            .generate(
                std::slice::from_ref(&ids),
                &GenerateOptions {
                    max_tokens: 6,
                    ..Default::default()
                },
            )
            .unwrap()[0];
        assert_eq!(line["id"], 7);
        assert_eq!(line["tokens"], g.tokens.len());
        assert_eq!(line["prompt_tokens"], ids.len());
        let mut shown = g.tokens.clone();
        if g.finish_reason == FinishReason::Stop {
            shown.pop();
        }
        assert_eq!(
            line["response"],
            model.decode(&shown, true).unwrap().as_str()
        );
    }

    /// `dtype` picks the weights the op runs with, and the node's log says
    /// which: `auto` keeps an f32 checkpoint f32 and a bf16 one bf16;
    /// `bfloat16` rounds f32 weights. On a bf16 checkpoint the bf16 weights
    /// answer what the f32 runtime answers with the same weights.
    #[test]
    fn generate_op_runs_with_the_weights_dtype_names() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/qwen2");
        let dir = tempfile::tempdir().unwrap();
        let bf16_dir = dir.path().join("bf16-model");
        flow_model::Model::load(&golden)
            .unwrap()
            .save(&bf16_dir, flow_model::SaveDtype::Bf16)
            .unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            if golden.join(f).is_file() {
                std::fs::copy(golden.join(f), bf16_dir.join(f)).unwrap();
            }
        }
        let p = write(
            dir.path(),
            "{\"id\": 1, \"prompt\": \"The patient\"}\n{\"id\": 2, \"prompt\": \"Der Arzt\"}\n",
        );
        let run = |model: &Path, dtype: &str, out: &str| {
            let out_dir = dir.path().join(out);
            let params = full_params(
                &Generate,
                &[
                    ("model", Value::Path(model.to_path_buf())),
                    ("prompts", Value::Path(p.clone())),
                    ("max_tokens", Value::Int(8)),
                    ("dtype", Value::Str(dtype.into())),
                ],
            );
            let (result, log) = with_context(params, &out_dir, RunOptions::default(), |ctx| {
                Generate.run(ctx)
            });
            result.unwrap();
            let lines = std::fs::read_to_string(out_dir.join("responses.jsonl")).unwrap();
            (lines, log.join("\n"))
        };
        let (_, log) = run(&golden, "auto", "f32-auto");
        assert!(log.contains("weights: f32 on the CPU"), "{log}");
        let (_, log) = run(&golden, "bfloat16", "f32-rounded");
        assert!(log.contains("weights: bf16 on the CPU"), "{log}");
        let (bf16_answers, log) = run(&bf16_dir, "auto", "bf16-auto");
        assert!(log.contains("weights: bf16 on the CPU"), "{log}");
        let (f32_answers, log) = run(&bf16_dir, "float32", "bf16-widened");
        assert!(log.contains("weights: f32 on the CPU"), "{log}");
        assert_eq!(bf16_answers, f32_answers);
    }

    /// Writes `responses` into `<dir>/out` as the generate node of the model
    /// `model` at checkpoint `step`; returns the node's directory.
    fn write_node(
        dir: &Path,
        items: &[PromptItem],
        responses: &[Response],
        step: u64,
        model: &str,
    ) -> PathBuf {
        let out_dir = dir.join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let lineage = CheckpointLineage {
            step: Some(step),
            ..Default::default()
        };
        let settings = settings(0.0, 1);
        write_outputs(&out_dir, items, responses, &settings, Some(lineage), model).unwrap();
        out_dir
    }

    #[test]
    fn writes_responses_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "{\"id\": \"a\", \"prompt\": \"abc\"}\n");
        let items = load_prompts(&p, "").unwrap();
        let responses = vec![Response {
            text: "Antwort".into(),
            prompt_tokens: 7,
            tokens: 3,
            finish_reason: FinishReason::Stop,
        }];
        let out_dir = write_node(dir.path(), &items, &responses, 3, "m");
        let line: Json = serde_json::from_str(
            std::fs::read_to_string(out_dir.join("responses.jsonl"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(
            line,
            json!({"id": "a", "prompt": "abc", "response": "Antwort", "tokens": 3, "prompt_tokens": 7, "finish_reason": "stop"})
        );
        let summary: Json =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("generate.json")).unwrap())
                .unwrap();
        assert_eq!(summary["total_tokens"], 10);
        assert_eq!(summary["finish_reasons"]["stop"], 1);
        assert_eq!(summary["checkpoint"]["step"], 3);
    }

    #[test]
    fn a_model_named_by_identity_gets_a_short_name() {
        let hash = "0123456789abcdef".repeat(4);
        assert_eq!(
            short_model_name(&format!("artifact:{hash}")),
            "0123456789ab"
        );
        assert_eq!(short_model_name(&format!("path:{hash}")), "0123456789ab");
        assert_eq!(
            short_model_name(&format!("artifact:{hash}/checkpoints/step-4")),
            "step-4"
        );
        assert_eq!(
            short_model_name(&format!("/cache/artifacts/{hash}/out")),
            "0123456789abcdef"
        );
        assert_eq!(
            short_model_name("/models/Qwen2.5-0.5B-Instruct"),
            "Qwen2.5-0.5B-Ins"
        );
        assert_eq!(short_model_name("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn read_responses_reads_back_what_write_outputs_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "{\"id\": 7, \"prompt\": \"Was ist Fieber?\"}\n\
             {\"id\": \"b\", \"messages\": [{\"role\": \"user\", \"content\": \"Hallo\"}, \
             {\"role\": \"assistant\", \"content\": \"Guten Tag\"}, {\"role\": \"user\", \"content\": \"Und?\"}]}\n",
        );
        let items = load_prompts(&p, "Sei knapp.").unwrap();
        let responses = vec![
            Response {
                text: "Erhöhte Temperatur.".into(),
                prompt_tokens: 11,
                tokens: 4,
                finish_reason: FinishReason::Stop,
            },
            Response {
                text: "Nun".into(),
                prompt_tokens: 20,
                tokens: 2,
                finish_reason: FinishReason::Length,
            },
        ];
        let out_dir = write_node(dir.path(), &items, &responses, 5, "/models/m");
        let got = read_responses(&out_dir).unwrap();
        assert_eq!(got.file, out_dir.join("responses.jsonl"));
        assert_eq!(got.checkpoint.as_ref().and_then(|c| c.step), Some(5));
        assert_eq!(got.model.as_deref(), Some("/models/m"));
        assert_eq!(got.records.len(), 2);
        let (a, b) = (&got.records[0], &got.records[1]);
        assert_eq!(a.id_text(), "7");
        assert_eq!(a.prompt.as_deref(), Some("Was ist Fieber?"));
        assert_eq!(a.response, "Erhöhte Temperatur.");
        assert_eq!((a.tokens, a.prompt_tokens), (Some(4), Some(11)));
        assert_eq!(a.finish_reason.as_deref(), Some("stop"));
        // The system message makes it a chat of two messages.
        assert_eq!(a.messages, items[0].messages);
        assert_eq!(a.context().len(), 1);
        assert_eq!(a.source, format!("{}:1", got.file.display()));
        assert_eq!(b.id_text(), "b");
        assert_eq!(b.prompt.as_deref(), Some("Und?"));
        assert_eq!(b.finish_reason.as_deref(), Some("length"));
        assert_eq!(b.messages, items[1].messages);
        let roles: Vec<&str> = b.context().iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        // A file given directly has no generate.json beside it to read.
        let direct = read_responses(&got.file).unwrap();
        assert_eq!(direct.records, got.records);
        assert_eq!(direct.checkpoint, None);
    }

    #[test]
    fn read_responses_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = "{\"id\": \"a\", \"prompt\": \"p\", \"response\": \"r\"}\n";
        // What was wrong, after the file and line.
        let cases = [
            ("{not json\n", ":2: not valid JSON"),
            (
                "{\"prompt\": \"p\", \"response\": \"r\"}\n",
                "missing field `id`",
            ),
            ("{\"id\": null, \"response\": \"r\"}\n", ":2: `id` is null"),
            (
                "{\"id\": \"b\", \"prompt\": \"p\"}\n",
                "missing field `response`",
            ),
            (
                "{\"id\": \"a\", \"response\": \"r\"}\n",
                ":2: id a appears twice (first on line 1)",
            ),
            (
                "{\"id\": \"b\", \"response\": \"r\", \"tokens\": 2.5}\n",
                "invalid type: floating point `2.5`",
            ),
            (
                "{\"id\": \"b\", \"response\": \"r\", \"prompt\": 3}\n",
                "invalid type: integer `3`, expected a string",
            ),
            (
                "{\"id\": \"b\", \"response\": \"r\", \"messages\": [{\"role\": \"user\"}]}\n",
                "missing field `content`",
            ),
            (
                "{\"id\": \"b\", \"response\": \"r\", \"messages\": []}\n",
                ":2: `messages` is empty",
            ),
            ("[1, 2]\n", ":2: each line must be a JSON object"),
        ];
        for (second, want) in cases {
            let p = dir.path().join("responses.jsonl");
            std::fs::write(&p, format!("{good}{second}")).unwrap();
            let err = format!("{}", read_responses(&p).unwrap_err());
            assert!(err.contains("responses.jsonl:2: "), "{err}");
            assert!(err.contains(want), "{err}");
        }
        let err = format!(
            "{:?}",
            read_responses(&dir.path().join("none")).unwrap_err()
        );
        assert!(err.contains("reading") && err.contains("none"), "{err}");
        // Lines without a prompt are read (the field is optional here).
        let p = dir.path().join("responses.jsonl");
        std::fs::write(&p, "{\"id\": 1, \"response\": \"r\"}\n").unwrap();
        assert_eq!(read_responses(&p).unwrap().records[0].prompt, None);
    }
}
