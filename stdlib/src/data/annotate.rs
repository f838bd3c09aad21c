//! `annotate`: zero-shot labelling of a corpus by a chat model (the
//! DeFineMed recipe: an instruction prompt, a fixed label set, one answer per
//! document).
//!
//! Answers are appended to a JSONL file as they arrive (fsynced every
//! [`SYNC_EVERY`] answers). With `state_dir` set, that file lives there under
//! a name derived from the configuration (backend, model, prompt, labels), so
//! a run that was interrupted, or that failed on a dead server, resumes where
//! it stopped: documents whose answer (matching id and text hash) is already
//! there are not asked again.
//!
//! Failed calls (connection refused, timeout, an HTTP error status after
//! retries, an answer that is not a chat completion) are never stored as
//! answers: they are counted, left out of every file, and the op fails once
//! more than `max_failures` documents failed, so the engine keeps no
//! artifact and a rerun asks again. A refused key (401/403) fails at once.
//! Files record a failure's class and status code only, never the server's
//! text; the log carries that text with the key redacted.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::corpus::{corpus_shards, for_each_doc, write_bytes_atomic, write_json_atomic};
use crate::llm::{
    ChatBackend, ChatError, ChatMessage, ChatRequest, LocalBackend, OpenAiBackend, OpenAiSettings,
};
use crate::op::{Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Annotate)]
}

/// Answers between two fsyncs of the answer file.
pub const SYNC_EVERY: usize = 32;
/// Documents read from the corpus at a time.
const CHUNK: usize = 1024;

/// A prompt file: an optional system message and the user message template.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTemplate {
    pub system: Option<String>,
    pub user: String,
}

impl PromptTemplate {
    /// Parses a prompt file. Without markers the whole file is the user
    /// message; with a line `### system` and a line `### user`, the text
    /// after each is that message. The user message must contain `{text}`;
    /// `{labels}` becomes the label set joined by ", ".
    pub fn parse(src: &str) -> Result<PromptTemplate, String> {
        let mut system = None;
        let mut user = None;
        let mut current: Option<&str> = None;
        let mut buf = String::new();
        let mut saw_marker = false;
        let mut close = |which: Option<&str>, buf: &mut String| {
            match which {
                Some("system") => system = Some(buf.trim().to_string()),
                Some("user") => user = Some(buf.trim().to_string()),
                _ => {}
            }
            buf.clear();
        };
        for line in src.lines() {
            let t = line.trim().to_lowercase();
            if t == "### system" || t == "### user" {
                saw_marker = true;
                close(current, &mut buf);
                current = Some(if t.ends_with("system") {
                    "system"
                } else {
                    "user"
                });
            } else {
                buf.push_str(line);
                buf.push('\n');
            }
        }
        close(current, &mut buf);
        let user = if saw_marker {
            user.ok_or("the prompt has `### system` but no `### user` section")?
        } else {
            src.trim().to_string()
        };
        if !user.contains("{text}") {
            return Err("the user message has no {text} placeholder".into());
        }
        Ok(PromptTemplate {
            system: system.filter(|s| !s.is_empty()),
            user,
        })
    }

    /// The chat messages for one document.
    pub fn messages(&self, text: &str, labels: &[String]) -> Vec<ChatMessage> {
        let labels_text = labels.join(", ");
        let mut out = Vec::new();
        if let Some(s) = &self.system {
            out.push(ChatMessage {
                role: "system".into(),
                content: s.replace("{labels}", &labels_text),
            });
        }
        // `{text}` last, so a document containing "{labels}" stays as it is
        let user = self
            .user
            .replace("{labels}", &labels_text)
            .replace("{text}", text);
        out.push(ChatMessage {
            role: "user".into(),
            content: user,
        });
        out
    }
}

/// The label an answer names: the `label` field of a JSON object in it (case
/// and surrounding space ignored), else the label found earliest in the text
/// as a whole word (the longer one on a tie); `None` if neither.
pub fn parse_label(answer: &str, labels: &[String]) -> Option<String> {
    let trimmed = answer.trim();
    let json_part = match (trimmed.find('{'), trimmed.rfind('}')) {
        (Some(a), Some(b)) if a < b => Some(&trimmed[a..=b]),
        _ => None,
    };
    if let Some(Ok(Json::Object(o))) = json_part.map(serde_json::from_str::<Json>) {
        if let Some(l) = o.get("label").and_then(|l| l.as_str()) {
            let l = l.trim().to_lowercase();
            return labels.iter().find(|x| x.to_lowercase() == l).cloned();
        }
    }
    let lower = answer.to_lowercase();
    let mut best: Option<(usize, usize, &String)> = None;
    for label in labels {
        let needle = label.to_lowercase();
        if needle.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&needle) {
            let start = from + pos;
            let end = start + needle.len();
            let before_ok = lower[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric());
            let after_ok = lower[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric());
            if before_ok && after_ok {
                let better = match best {
                    None => true,
                    Some((bs, bl, _)) => start < bs || (start == bs && needle.len() > bl),
                };
                if better {
                    best = Some((start, needle.len(), label));
                }
                break;
            }
            from = start + needle.len().max(1);
            while !lower.is_char_boundary(from) {
                from += 1;
            }
        }
    }
    best.map(|b| b.2.clone())
}

/// One answer, as stored in the answer file and in annotations.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    /// blake3 (first 16 hex) of the document text, to reuse only matching answers.
    pub text_hash: String,
    /// The parsed label; `null` if the answer named none.
    pub label: Option<String>,
    /// The model's raw answer.
    pub raw: Option<String>,
    /// Set only in answer files of versions before 4, which stored failed
    /// requests: such lines are not reused. Never written.
    #[serde(default, skip_serializing)]
    pub error: Option<Json>,
}

/// What a worker hands the collector for one document.
enum Outcome {
    Answered(Answer),
    Failed { id: String, error: ChatError },
}

fn text_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// Appends answers, fsyncing every [`SYNC_EVERY`].
struct AnswerLog {
    file: File,
    unsynced: usize,
}

impl AnswerLog {
    fn append(&mut self, a: &Answer) -> OpResult<()> {
        let mut line = serde_json::to_string(a).into_diagnostic()?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .into_diagnostic()
            .wrap_err("cannot append to the answer file")?;
        self.unsynced += 1;
        if self.unsynced >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }
    fn sync(&mut self) -> OpResult<()> {
        self.file.sync_data().into_diagnostic()?;
        self.unsynced = 0;
        Ok(())
    }
}

/// Reads the answers of a previous run; a torn last line is ignored.
fn load_previous(path: &Path) -> HashMap<String, Answer> {
    let mut out = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Ok(a) = serde_json::from_str::<Answer>(line) {
                if a.error.is_none() {
                    out.insert(a.id.clone(), a);
                }
            }
        }
    }
    out
}

fn backend_from(ctx: &OpContext) -> OpResult<Box<dyn ChatBackend>> {
    let model = ctx.value("model")?;
    match ctx.str("backend")? {
        "openai" => {
            let name = match model {
                Value::Str(s) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(miette!(
                        "parameter `model`: the openai backend needs the model's name as a string"
                    ))
                }
            };
            let timeout = ctx.float("timeout_s")?;
            let backoff = ctx.float("backoff_s")?;
            if timeout <= 0.0 || backoff < 0.0 {
                return Err(miette!(
                    "parameters `timeout_s` (> 0) and `backoff_s` (>= 0) are out of range"
                ));
            }
            let settings = OpenAiSettings {
                base_url: ctx.str("base_url")?.to_string(),
                model: name,
                api_key_env: ctx.str("api_key_env")?.to_string(),
                concurrency: ctx.int("concurrency")?.clamp(1, 256) as usize,
                retries: ctx.int("retries")?.clamp(0, 20) as u32,
                backoff: Duration::from_secs_f64(backoff),
                timeout: Duration::from_secs_f64(timeout),
                json_schema: ctx.bool("json_schema")?,
            };
            Ok(Box::new(
                OpenAiBackend::new(settings).map_err(|e| miette!("annotate: {e}"))?,
            ))
        }
        "local" => {
            let dir = match model {
                Value::Path(p) => p.clone(),
                Value::Str(s) if !s.is_empty() => PathBuf::from(s),
                _ => {
                    return Err(miette!(
                        "parameter `model`: the local backend needs a model directory"
                    ))
                }
            };
            Ok(Box::new(LocalBackend::load(&dir).map_err(|e| {
                miette!("annotate: cannot load the local model: {e}")
            })?))
        }
        other => Err(miette!(
            "parameter `backend`: expected \"openai\" or \"local\", got {other:?}"
        )),
    }
}

/// Documents whose request failed.
#[derive(Default)]
struct Failures {
    count: u64,
    /// Up to 20 `{id, class, status}`: no server text, which may echo the
    /// key or the document.
    examples: Vec<Json>,
}

/// Failed requests whose message goes into the log (the rest are counted).
const LOGGED_FAILURES: u64 = 5;

impl Failures {
    /// Counts one failed document and logs it (the first few); returns why
    /// the run must stop, if it must.
    fn record(
        &mut self,
        ctx: &OpContext,
        id: &str,
        error: &ChatError,
        max_failures: u64,
    ) -> Option<String> {
        self.count += 1;
        if self.examples.len() < 20 {
            let mut record = error.to_record();
            record["id"] = json!(id);
            self.examples.push(record);
        }
        if self.count <= LOGGED_FAILURES {
            // the backend redacted the key from this text
            ctx.log(&format!("document {id}: {error}"));
        }
        if error.is_unauthorized() {
            Some(format!("document {id}: {error}"))
        } else if self.count > max_failures {
            Some(format!(
                "{} documents failed, more than max_failures = {max_failures}; the last, document {id}: {error}",
                self.count
            ))
        } else {
            None
        }
    }
}

/// The `annotate` op.
pub struct Annotate;

impl Op for Annotate {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "annotate",
            version: 7,
            doc: "Zero-shot labelling of every document of a corpus by a chat model (OpenAI-compatible endpoint or the local runtime); writes annotations.jsonl (id, label or null when the answer named none, raw answer) and annotate.json (counts per label, unparseable, failed). Documents whose request failed are left out and counted; more than max_failures of them, or a refused key (401/403), fail the op.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact (usually a sample)"),
                Param::required("prompt", Type::File, "prompt template: user message with {text} (and optionally {labels}); optional `### system` / `### user` sections"),
                Param::required("labels", Type::List(Box::new(Type::Str)), "the label set"),
                Param::required("model", Type::Any, "openai: the model name; local: the model directory"),
                Param::optional("backend", Type::Enum(vec!["openai".into(), "local".into()]), Value::Str("openai".into()), "openai: any OpenAI-compatible /chat/completions endpoint; local: flow's model runtime, which picks the label with the highest log-likelihood after the prompt"),
                Param::optional("base_url", Type::Str, Value::Str("http://127.0.0.1:8000/v1".into()), "endpoint base URL (…/v1)"),
                Param::optional("api_key_env", Type::Str, Value::Str(String::new()), "NAME of the environment variable holding the API key (the key itself never goes into a parameter)"),
                Param::optional("concurrency", Type::Int, Value::Int(8), "requests in flight"),
                Param::optional("retries", Type::Int, Value::Int(3), "retries on timeouts, connection errors, 429 and 5xx, with exponential backoff"),
                Param::optional("backoff_s", Type::Float, Value::Float(1.0), "first backoff; doubles per retry"),
                Param::optional("timeout_s", Type::Float, Value::Float(120.0), "limit per request"),
                Param::optional("json_schema", Type::Bool, Value::Bool(true), "send response_format with a JSON schema {label: enum of labels}"),
                Param::optional("max_tokens", Type::Int, Value::Int(32), "answer length limit"),
                Param::optional("max_chars", Type::Int, Value::Int(8000), "document characters put into the prompt"),
                Param::optional("state_dir", Type::Str, Value::Str(String::new()), "a directory keeping answers across runs (resume); empty: only the output directory"),
                Param::optional("max_failures", Type::Int, Value::Int(0), "documents whose request may fail (connection, timeout, HTTP error after retries, malformed answer) before the op fails; they are left out of annotations.jsonl and counted in annotate.json. A refused key (401/403) always fails"),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "annotations", ty: Type::File, doc: "annotations.jsonl" },
                Output { name: "stats", ty: Type::File, doc: "annotate.json" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let max_failures = u64::try_from(ctx.int("max_failures")?)
            .map_err(|_| miette!("parameter `max_failures`: must be >= 0"))?;
        let labels: Vec<String> = ctx
            .list("labels")?
            .iter()
            .map(|v| match v {
                Value::Str(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                _ => Err(miette!("parameter `labels`: expected non-empty strings")),
            })
            .collect::<OpResult<_>>()?;
        if labels.len() < 2 {
            return Err(miette!("parameter `labels`: give at least two labels"));
        }
        let prompt_path = ctx.path("prompt")?;
        let prompt_src = std::fs::read_to_string(prompt_path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {}", prompt_path.display()))?;
        let template = PromptTemplate::parse(&prompt_src)
            .map_err(|e| miette!("{}: {e}", prompt_path.display()))?;
        let backend = backend_from(ctx)?;
        let max_chars = ctx.int("max_chars")?.max(1) as usize;
        let schema = json!({"type": "object", "properties": {"label": {"type": "string", "enum": labels}}, "required": ["label"], "additionalProperties": false});
        let use_schema = ctx.bool("json_schema")? && backend.supports_json_schema();
        let max_tokens = ctx.int("max_tokens")?.max(1) as usize;

        // the answer file: in state_dir under a configuration hash, or in out_dir
        let mut desc = backend.describe();
        // where and how patiently it is asked does not change an answer
        for k in ["retries", "timeout_s", "base_url"] {
            if let Some(o) = desc.as_object_mut() {
                o.remove(k);
            }
        }
        let config = json!({"backend": desc, "prompt": prompt_src, "labels": labels, "schema": use_schema, "max_tokens": max_tokens, "max_chars": max_chars});
        let config_hash = blake3::hash(config.to_string().as_bytes()).to_hex()[..16].to_string();
        let state_dir = ctx.str("state_dir")?;
        let answer_path = if state_dir.is_empty() {
            ctx.out_dir.join("answers.partial.jsonl")
        } else {
            std::fs::create_dir_all(state_dir)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create state_dir {state_dir}"))?;
            Path::new(state_dir).join(format!("annotate-{config_hash}.jsonl"))
        };
        let previous = load_previous(&answer_path);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&answer_path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot open {}", answer_path.display()))?;
        let mut log = AnswerLog { file, unsynced: 0 };

        let shards = corpus_shards(ctx.path("corpus")?)?;
        let mut order: Vec<String> = Vec::new();
        let mut answers: HashMap<String, Answer> = HashMap::new();
        let mut reused = 0u64;
        let stop = AtomicBool::new(false);
        let mut fatal: Option<miette::Report> = None;
        let mut chunk: Vec<(String, String)> = Vec::with_capacity(CHUNK);
        // documents whose request failed: count and `{id, class, status}` examples
        let mut failures = Failures::default();

        let process = |chunk: &mut Vec<(String, String)>,
                       answers: &mut HashMap<String, Answer>,
                       log: &mut AnswerLog,
                       failures: &mut Failures|
         -> OpResult<()> {
            let todo: Vec<&(String, String)> = chunk.iter().collect();
            let next = AtomicUsize::new(0);
            let (tx, rx) = mpsc::channel::<Outcome>();
            let workers = backend.concurrency().min(todo.len().max(1));
            let mut first_error: Option<String> = None;
            std::thread::scope(|s| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    let (todo, next, backend, template, labels, schema, stop) =
                        (&todo, &next, &backend, &template, &labels, &schema, &stop);
                    s.spawn(move || loop {
                        if stop.load(Ordering::Relaxed) || ctx.cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((id, text)) = todo.get(i) else {
                            return;
                        };
                        let clipped: String = text.chars().take(max_chars).collect();
                        let req = ChatRequest {
                            messages: template.messages(&clipped, labels),
                            max_tokens,
                            temperature: 0.0,
                            json_schema: use_schema.then(|| schema.clone()),
                        };
                        // A backend that can score the labels (the local
                        // runtime) picks the most likely one: small models
                        // rarely answer in the requested format.
                        // Its raw answer holds every label's score; the
                        // labels are decided once all are scored (below).
                        let reply = match backend.scores(&req.messages, labels) {
                            Some(r) => r.map(|scores| {
                                let best = argmax(&scores);
                                json!({ "label": labels[best], "scores": scores }).to_string()
                            }),
                            None => backend.chat(&req),
                        };
                        let outcome = match reply {
                            Ok(raw) => Outcome::Answered(Answer {
                                id: id.clone(),
                                text_hash: text_hash(text),
                                label: parse_label(&raw, labels),
                                raw: Some(raw),
                                error: None,
                            }),
                            Err(error) => {
                                // Stop the other workers before they take
                                // another document: a refused key refuses
                                // every request.
                                if error.is_unauthorized() {
                                    stop.store(true, Ordering::Relaxed);
                                }
                                Outcome::Failed {
                                    id: id.clone(),
                                    error,
                                }
                            }
                        };
                        if tx.send(outcome).is_err() {
                            return;
                        }
                    });
                }
                drop(tx);
                for outcome in rx {
                    ctx.progress.inc(1);
                    let a = match outcome {
                        Outcome::Answered(a) => a,
                        Outcome::Failed { id, error } => {
                            if let Some(e) = failures.record(ctx, &id, &error, max_failures) {
                                stop.store(true, Ordering::Relaxed);
                                first_error.get_or_insert(e);
                            }
                            continue;
                        }
                    };
                    if let Err(e) = log.append(&a) {
                        stop.store(true, Ordering::Relaxed);
                        first_error.get_or_insert(format!("{e:?}"));
                        continue;
                    }
                    answers.insert(a.id.clone(), a);
                }
            });
            log.sync()?;
            chunk.clear();
            ctx.check_cancelled()?;
            if let Some(e) = first_error {
                return Err(miette!(
                    help = "answers so far are kept; with state_dir set, a rerun resumes after them (max_failures tolerates some failed documents)",
                    "annotate stopped: {e}"
                ));
            }
            Ok(())
        };

        for shard in &shards {
            if fatal.is_some() {
                break;
            }
            let r = for_each_doc(shard, |doc, _| {
                order.push(doc.id.to_string());
                if let Some(prev) = previous.get(doc.id.as_ref()) {
                    if prev.text_hash == text_hash(&doc.text) {
                        answers.insert(prev.id.clone(), prev.clone());
                        reused += 1;
                        return Ok(());
                    }
                }
                chunk.push((doc.id.to_string(), doc.text.to_string()));
                if chunk.len() >= CHUNK {
                    process(&mut chunk, &mut answers, &mut log, &mut failures)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                fatal = Some(e);
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        process(&mut chunk, &mut answers, &mut log, &mut failures)?;
        drop(log);

        batch_calibrate(&mut answers, &labels);
        // annotations.jsonl in corpus order
        let mut per_label: BTreeMap<String, u64> = labels.iter().map(|l| (l.clone(), 0)).collect();
        let mut unparseable = 0u64;
        let failed = failures.count;
        let mut unparseable_examples = Vec::new();
        let mut text = String::new();
        for id in &order {
            // a failed document has no answer: left out, counted in `failed`
            let Some(a) = answers.get(id) else { continue };
            match &a.label {
                Some(l) => *per_label.entry(l.clone()).or_default() += 1,
                None => {
                    unparseable += 1;
                    if unparseable_examples.len() < 20 {
                        unparseable_examples.push(json!({"id": id, "raw": a.raw}));
                    }
                }
            }
            text += &serde_json::to_string(&json!({"id": a.id, "label": a.label, "raw": a.raw}))
                .into_diagnostic()?;
            text.push('\n');
        }
        write_bytes_atomic(&ctx.out_dir.join("annotations.jsonl"), text.as_bytes())?;
        let stats = json!({
            "n": order.len(),
            "labels": per_label,
            "unparseable": unparseable,
            "failed": failed,
            "reused_from_state": reused,
            "backend": backend.describe(),
            "json_schema": use_schema,
            "config_hash": config_hash,
            "unparseable_examples": unparseable_examples,
            "max_failures": max_failures,
            "failed_examples": failures.examples,
        });
        write_json_atomic(&ctx.out_dir.join("annotate.json"), &stats)?;
        ctx.log(&format!(
            "annotated {} documents: {} unparseable, {} failed, {} reused",
            order.len(),
            unparseable,
            failed,
            reused
        ));
        Ok(BTreeMap::from([
            (
                "annotations".to_string(),
                Value::Path("annotations.jsonl".into()),
            ),
            ("stats".to_string(), Value::Path("annotate.json".into())),
        ]))
    }
}

/// Index of the largest score (the first on ties; NaN never wins).
fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] || scores[best].is_nan() && !s.is_nan() {
            best = i;
        }
    }
    best
}

/// Batch calibration (Zhou et al., "Batch Calibration", ICLR 2024) of
/// scored answers: each label's log-likelihood minus its mean over the
/// sample's scored documents, and the highest wins. A small model's raw
/// scores prefer one label for every text (SmolLM2-135M gave all 40 demo
/// documents one label, raw or calibrated against a content-free prompt);
/// relative to the sample, what each text adds decides. Answers without
/// scores (a chat backend's) are left as they are.
fn batch_calibrate(answers: &mut HashMap<String, Answer>, labels: &[String]) {
    let scores_of = |a: &Answer| -> Option<Vec<f64>> {
        let raw: Json = serde_json::from_str(a.raw.as_deref()?).ok()?;
        let v: Vec<f64> = raw
            .get("scores")?
            .as_array()?
            .iter()
            .filter_map(Json::as_f64)
            .collect();
        (v.len() == labels.len()).then_some(v)
    };
    let scored: Vec<(String, Vec<f64>)> = answers
        .values()
        .filter_map(|a| Some((a.id.clone(), scores_of(a)?)))
        .filter(|(_, v)| v.iter().all(|x| x.is_finite()))
        .collect();
    if scored.len() < 2 {
        return;
    }
    let n = scored.len() as f64;
    let means: Vec<f64> = (0..labels.len())
        .map(|j| scored.iter().map(|(_, v)| v[j]).sum::<f64>() / n)
        .collect();
    for (id, v) in scored {
        let centred: Vec<f64> = v.iter().zip(&means).map(|(x, m)| x - m).collect();
        if let Some(a) = answers.get_mut(&id) {
            a.label = Some(labels[argmax(&centred)].clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    use super::super::corpus::testutil::*;
    use super::super::corpus::Corpus;
    use super::*;

    #[test]
    fn label_parsing_rules() {
        let labels = vec!["medizinisch".to_string(), "allgemein".to_string()];
        assert_eq!(
            parse_label(r#"{"label": "Medizinisch"}"#, &labels).as_deref(),
            Some("medizinisch")
        );
        assert_eq!(
            parse_label("Antwort: ```json\n{\"label\":\"allgemein\"}\n```", &labels).as_deref(),
            Some("allgemein")
        );
        assert_eq!(parse_label(r#"{"label": "sport"}"#, &labels), None);
        assert_eq!(
            parse_label("Das ist allgemein, nicht medizinisch.", &labels).as_deref(),
            Some("allgemein")
        );
        assert_eq!(
            parse_label("Kategorie: MEDIZINISCH", &labels).as_deref(),
            Some("medizinisch")
        );
        // whole words only
        assert_eq!(parse_label("unmedizinischer Text", &labels), None);
        assert_eq!(parse_label("keine Ahnung", &labels), None);
        let overlapping = vec!["medical".to_string(), "non-medical".to_string()];
        assert_eq!(
            parse_label("non-medical", &overlapping).as_deref(),
            Some("non-medical")
        );
    }

    #[test]
    fn prompt_template_sections() {
        let p = PromptTemplate::parse(
            "### system\nDu bist Annotator.\n### user\nText: {text}\nLabels: {labels}",
        )
        .unwrap();
        assert_eq!(p.system.as_deref(), Some("Du bist Annotator."));
        let m = p.messages("Fieber {labels}", &["a".into(), "b".into()]);
        assert_eq!(m[1].content, "Text: Fieber {labels}\nLabels: a, b");
        assert!(PromptTemplate::parse("no placeholder").is_err());
        let demo = std::fs::read_to_string(demo_dir().join("annotate_prompt.txt")).unwrap();
        let p = PromptTemplate::parse(&demo).unwrap();
        assert!(p.system.is_some() && p.user.contains("{text}"));
    }

    /// What the test server does for one request.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Mode {
        /// Answers `{"label": <medizinisch if the text mentions a medical word>}`.
        Normal,
        /// Plain text instead of a chat completion.
        Garbage,
        /// A completion whose content names no label.
        NoLabel,
        /// HTTP 500 on the first request of each document, then normal.
        FailOnce,
        /// Answers after 2 s.
        Slow,
        /// HTTP 401 whose body echoes the key from the Authorization header.
        Unauthorized,
        /// HTTP 500 for every request of the first two documents asked, else normal.
        FailTwoDocuments,
    }

    /// Each request's body and Authorization header.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    struct Server {
        url: String,
        requests: Arc<AtomicU32>,
        bodies: Seen,
        _http: crate::http::HttpServer,
    }

    fn is_medical(text: &str) -> bool {
        [
            "Diagnose",
            "Patient",
            "Therapie",
            "Medikament",
            "Symptom",
            "Fieber",
            "Dosis",
            "Klinik",
            "Krankheit",
            "Nebenwirkung",
            "Behandlung",
            "ärztlich",
            "Station",
            "Überweisung",
            "Pharmakokinetik",
            "Halbwertszeit",
            "Warnzeichen",
            "Rehabilitation",
            "Studie",
            "Stoffwechsel",
            "Wechselwirkung",
        ]
        .iter()
        .any(|w| text.contains(w))
    }

    fn start_server(mode: Mode) -> Server {
        let failing: Arc<Mutex<Vec<String>>> = Default::default();
        let requests = Arc::new(AtomicU32::new(0));
        let bodies: Seen = Arc::new(Mutex::new(Vec::new()));
        let (r2, b2) = (requests.clone(), bodies.clone());
        let seen: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
        let handler: crate::http::Handler = Arc::new(move |req: &crate::http::Request| {
            r2.fetch_add(1, Ordering::SeqCst);
            let body = String::from_utf8(req.body.clone()).unwrap();
            let auth = req.header("authorization").map(str::to_owned);
            b2.lock().unwrap().push((body.clone(), auth.clone()));
            let v: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
            let user = v["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
            // the document sits between the demo prompt's triple quotes
            let doc = user.split("\"\"\"").nth(1).unwrap_or("").to_string();
            let completion = |content: String| {
                json!({"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
            };
            let label = if is_medical(&doc) {
                "medizinisch"
            } else {
                "allgemein"
            };
            let (status, text) = match mode {
                Mode::Normal => (200, completion(json!({"label": label}).to_string())),
                Mode::Garbage => (200, "<html>502 Bad Gateway</html>".to_string()),
                Mode::NoLabel => (200, completion("Ich kann das nicht beurteilen.".into())),
                Mode::FailOnce => {
                    if seen.lock().unwrap().insert(user.clone()) {
                        (500, "{\"error\":\"overloaded\"}".to_string())
                    } else {
                        (200, completion(json!({"label": label}).to_string()))
                    }
                }
                Mode::Slow => {
                    std::thread::sleep(Duration::from_millis(2000));
                    (200, completion(json!({"label": label}).to_string()))
                }
                Mode::Unauthorized => {
                    let key = auth.unwrap_or_default().replace("Bearer ", "");
                    let short = format!("{}...{}", &key[..10], &key[key.len() - 4..]);
                    let message = format!("Incorrect API key provided: {key} ({short})");
                    (401, json!({"error": {"message": message}}).to_string())
                }
                Mode::FailTwoDocuments => {
                    let mut failing = failing.lock().unwrap();
                    if failing.len() < 2 && !failing.contains(&doc) {
                        failing.push(doc.clone());
                    }
                    if failing.contains(&doc) {
                        (500, "{\"error\":\"overloaded\"}".to_string())
                    } else {
                        (200, completion(json!({"label": label}).to_string()))
                    }
                }
            };
            crate::http::Response {
                status,
                content_type: "application/json",
                body: text.into_bytes(),
            }
        });
        let http = crate::http::HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            crate::http::Limits::default(),
            handler,
        )
        .unwrap();
        Server {
            url: format!("http://{}/v1", http.addr()),
            requests,
            bodies,
            _http: http,
        }
    }

    fn small_corpus(dir: &Path, n: usize) -> PathBuf {
        let lines: Vec<String> = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
            .unwrap()
            .lines()
            .take(n)
            .map(String::from)
            .collect();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("in.jsonl"), lines.join("\n")).unwrap();
        let out = dir.join("corpus");
        run_op(
            &Corpus,
            &[("input", Value::Path(dir.join("in.jsonl")))],
            &out,
        )
        .unwrap();
        out
    }

    fn params(
        corpus: &Path,
        url: &str,
        extra: &[(&'static str, Value)],
    ) -> Vec<(&'static str, Value)> {
        let mut p = vec![
            ("corpus", Value::Path(corpus.to_path_buf())),
            (
                "prompt",
                Value::Path(demo_dir().join("annotate_prompt.txt")),
            ),
            (
                "labels",
                Value::List(vec![
                    Value::Str("medizinisch".into()),
                    Value::Str("allgemein".into()),
                ]),
            ),
            ("model", Value::Str("mixtral-test".into())),
            ("base_url", Value::Str(url.into())),
            ("backoff_s", Value::Float(0.01)),
            ("timeout_s", Value::Float(5.0)),
            ("concurrency", Value::Int(4)),
        ];
        p.extend(extra.iter().cloned());
        p
    }

    fn read_jsonl(p: &Path) -> Vec<Json> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn annotate_over_http_labels_every_document_and_keeps_the_key_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 40);
        let server = start_server(Mode::Normal);
        let secret = "sk-test-9f8e7d6c5b4a";
        // SAFETY: set before any thread of this test reads it; the name is unique to this test
        unsafe { std::env::set_var("FLOW_TEST_ANNOTATE_KEY", secret) };
        let out = tmp.path().join("a");
        run_op(
            &Annotate,
            &params(
                &corpus,
                &server.url,
                &[("api_key_env", Value::Str("FLOW_TEST_ANNOTATE_KEY".into()))],
            ),
            &out,
        )
        .unwrap();
        let ann = read_jsonl(&out.join("annotations.jsonl"));
        let docs = read_corpus(&corpus);
        assert_eq!(ann.len(), docs.len());
        for (a, d) in ann.iter().zip(&docs) {
            assert_eq!(a["id"], d["id"], "corpus order");
            let expected = if is_medical(d["text"].as_str().unwrap()) {
                "medizinisch"
            } else {
                "allgemein"
            };
            assert_eq!(a["label"], expected);
        }
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["n"], 40);
        assert_eq!(stats["unparseable"], 0);
        assert_eq!(
            stats["labels"]["medizinisch"].as_u64().unwrap()
                + stats["labels"]["allgemein"].as_u64().unwrap(),
            40
        );
        // the request carried the key, the JSON schema and the document
        let bodies = server.bodies.lock().unwrap();
        let (body, auth) = &bodies[0];
        assert_eq!(auth.as_deref(), Some(format!("Bearer {secret}").as_str()));
        let v: Json = serde_json::from_str(body).unwrap();
        assert_eq!(v["model"], "mixtral-test");
        assert_eq!(
            v["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"],
            json!(["medizinisch", "allgemein"])
        );
        assert_eq!(v["messages"][0]["role"], "system");
        // nothing in the artifact holds the key
        for entry in std::fs::read_dir(&out).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(secret));
        }
        // a missing key variable is an error naming the variable only
        let err = run_op(
            &Annotate,
            &params(
                &corpus,
                &server.url,
                &[("api_key_env", Value::Str("FLOW_TEST_NO_SUCH_VAR".into()))],
            ),
            &tmp.path().join("b"),
        )
        .unwrap_err();
        assert!(format!("{err}").contains("FLOW_TEST_NO_SUCH_VAR"));
    }

    #[test]
    fn annotate_counts_unparseable_and_reports_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 10);
        let server = start_server(Mode::NoLabel);
        let out = tmp.path().join("a");
        run_op(&Annotate, &params(&corpus, &server.url, &[]), &out).unwrap();
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["unparseable"], 10);
        assert_eq!(
            stats["unparseable_examples"][0]["raw"],
            "Ich kann das nicht beurteilen."
        );
        assert!(read_jsonl(&out.join("annotations.jsonl"))
            .iter()
            .all(|a| a["label"].is_null()));

        let garbage = start_server(Mode::Garbage);
        let first_id = read_corpus(&corpus)[0]["id"].as_str().unwrap().to_string();
        let err = run_op(
            &Annotate,
            &params(&corpus, &garbage.url, &[("concurrency", Value::Int(1))]),
            &tmp.path().join("g"),
        )
        .unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains(&first_id) && msg.contains("not JSON"), "{msg}");
        // fail stops at once (one worker may have started the next document)
        let after_fail = garbage.requests.load(Ordering::SeqCst);
        assert!((1..=2).contains(&after_fail), "{after_fail}");
        let out = tmp.path().join("g2");
        run_op(
            &Annotate,
            &params(&corpus, &garbage.url, &[("max_failures", Value::Int(10))]),
            &out,
        )
        .unwrap();
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["failed"], 10);
        // garbage is not retried (it is not a transient status)
        assert_eq!(garbage.requests.load(Ordering::SeqCst), after_fail + 10);
    }

    #[test]
    fn annotate_retries_a_500_then_succeeds() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 6);
        let server = start_server(Mode::FailOnce);
        let out = tmp.path().join("a");
        run_op(
            &Annotate,
            &params(&corpus, &server.url, &[("retries", Value::Int(2))]),
            &out,
        )
        .unwrap();
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["failed"], 0);
        assert_eq!(stats["unparseable"], 0);
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            12,
            "each document: a 500, then the answer"
        );
        // without retries every first request fails
        let server = start_server(Mode::FailOnce);
        let out = tmp.path().join("b");
        run_op(
            &Annotate,
            &params(
                &corpus,
                &server.url,
                &[("retries", Value::Int(0)), ("max_failures", Value::Int(6))],
            ),
            &out,
        )
        .unwrap();
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["failed"], 6);
        assert_eq!(stats["failed_examples"][0]["status"], 500);
        assert_eq!(stats["failed_examples"][0]["class"], "http_status");
        assert!(read_jsonl(&out.join("annotations.jsonl")).is_empty());
    }

    #[test]
    fn annotate_times_out_a_slow_server_and_resumes_from_state() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 3);
        let slow = start_server(Mode::Slow);
        let state = tmp.path().join("state");
        let t0 = std::time::Instant::now();
        let err = run_op(
            &Annotate,
            &params(
                &corpus,
                &slow.url,
                &[
                    ("timeout_s", Value::Float(0.3)),
                    ("retries", Value::Int(1)),
                    ("concurrency", Value::Int(1)),
                ],
            ),
            &tmp.path().join("a"),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("timeout"), "{err:?}");
        assert!(
            t0.elapsed() < Duration::from_millis(1900),
            "the timeout cut the request short"
        );

        // resume: a first run answers, a second run with the same state asks nothing
        let server = start_server(Mode::Normal);
        let state_str = Value::Str(state.display().to_string());
        run_op(
            &Annotate,
            &params(&corpus, &server.url, &[("state_dir", state_str.clone())]),
            &tmp.path().join("b"),
        )
        .unwrap();
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
        let again = start_server(Mode::Garbage);
        let out = tmp.path().join("c");
        run_op(
            &Annotate,
            &params(&corpus, &again.url, &[("state_dir", state_str)]),
            &out,
        )
        .unwrap();
        assert_eq!(again.requests.load(Ordering::SeqCst), 0);
        assert_eq!(
            std::fs::read_to_string(out.join("annotations.jsonl")).unwrap(),
            std::fs::read_to_string(tmp.path().join("b/annotations.jsonl")).unwrap()
        );
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["reused_from_state"], 3);
    }

    /// Batch calibration by hand: raw scores prefer the first label for
    /// every document; relative to the label means (-1.5 and -4.5) the
    /// second document leans to the second label.
    #[test]
    fn batch_calibration_decides_relative_to_the_sample() {
        let labels = vec!["medizinisch".to_string(), "allgemein".to_string()];
        let answer = |id: &str, scores: [f64; 2]| Answer {
            id: id.into(),
            text_hash: String::new(),
            label: Some("medizinisch".into()),
            raw: Some(json!({"label": "medizinisch", "scores": scores}).to_string()),
            error: None,
        };
        let mut answers: HashMap<String, Answer> = [
            ("a", [-1.0, -5.0]), // centred: +0.5, -0.5 -> medizinisch
            ("b", [-2.0, -4.0]), // centred: -0.5, +0.5 -> allgemein
        ]
        .into_iter()
        .map(|(id, sc)| (id.to_string(), answer(id, sc)))
        .collect();
        batch_calibrate(&mut answers, &labels);
        assert_eq!(answers["a"].label.as_deref(), Some("medizinisch"));
        assert_eq!(answers["b"].label.as_deref(), Some("allgemein"));
    }

    #[test]
    fn annotate_with_the_local_backend() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 3);
        let mut words = demo_words();
        words.extend(["medizinisch".to_string(), "allgemein".to_string()]);
        let model_dir = tiny_model(&tmp.path().join("m"), &words);
        let out = tmp.path().join("a");
        let labels = vec!["medizinisch".to_string(), "allgemein".to_string()];
        run_op(
            &Annotate,
            &[
                ("corpus", Value::Path(corpus.clone())),
                (
                    "prompt",
                    Value::Path(demo_dir().join("annotate_prompt.txt")),
                ),
                (
                    "labels",
                    Value::List(labels.iter().map(|l| Value::Str(l.clone())).collect()),
                ),
                ("model", Value::Path(model_dir.clone())),
                ("backend", Value::Str("local".into())),
                ("max_tokens", Value::Int(6)),
                ("max_chars", Value::Int(200)),
            ],
            &out,
        )
        .unwrap();
        let ann = read_jsonl(&out.join("annotations.jsonl"));
        assert_eq!(ann.len(), 3);
        // The same labels through flow-model's API directly: every label's
        // log-likelihood after each document's rendered prompt, minus that
        // label's mean over the three documents (batch calibration); the
        // highest wins.
        let template = PromptTemplate::parse(
            &std::fs::read_to_string(demo_dir().join("annotate_prompt.txt")).unwrap(),
        )
        .unwrap();
        let chat = flow_model::ChatTemplate::load(&model_dir).unwrap();
        let tok = flow_model::Tokenizer::load(&model_dir).unwrap();
        let model = flow_model::Model::load(&model_dir).unwrap();
        let docs = read_corpus(&corpus);
        let scores: Vec<Vec<f64>> = docs
            .iter()
            .map(|d| {
                let text: String = d["text"].as_str().unwrap().chars().take(200).collect();
                let prompt = chat
                    .render(&template.messages(&text, &labels), true)
                    .unwrap();
                let context = tok.encode(&prompt, false).unwrap();
                model
                    .loglikelihood(
                        &labels
                            .iter()
                            .map(|l| (context.clone(), tok.encode(l, false).unwrap()))
                            .collect::<Vec<_>>(),
                    )
                    .iter()
                    .map(|s| s.logprob)
                    .collect()
            })
            .collect();
        let mean = |j: usize| scores.iter().map(|v| v[j]).sum::<f64>() / 3.0;
        for (k, v) in scores.iter().enumerate() {
            let best = if v[1] - mean(1) > v[0] - mean(0) {
                1
            } else {
                0
            };
            let row = ann.iter().find(|a| a["id"] == docs[k]["id"]).unwrap();
            assert_eq!(
                row["label"].as_str(),
                Some(labels[best].as_str()),
                "document {k}"
            );
            let raw: Json = serde_json::from_str(row["raw"].as_str().unwrap()).unwrap();
            let recorded: Vec<f64> = raw["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(recorded, *v, "the raw answer records the scores");
        }
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["backend"]["backend"], "local");
        let labelled = stats["labels"]["medizinisch"].as_u64().unwrap()
            + stats["labels"]["allgemein"].as_u64().unwrap();
        assert_eq!(labelled, 3, "scoring the labels always yields one");
        assert_eq!(stats["unparseable"].as_u64().unwrap(), 0);
    }

    /// Every file under `dir`, as text.
    fn all_files_text(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_files_text(&path));
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                out.push((path, text));
            }
        }
        out
    }

    #[test]
    fn annotate_fails_on_a_refused_key_and_stores_nothing_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 10);
        let server = start_server(Mode::Unauthorized);
        let secret = "sk-live-0123456789abcdefXYZ";
        // SAFETY: set before any thread of this test reads it; the name is unique to this test
        unsafe { std::env::set_var("FLOW_TEST_ANNOTATE_401_KEY", secret) };
        let out = tmp.path().join("a");
        let state = tmp.path().join("state");
        let (res, log) = crate::op::testing::run_op_logged(
            &Annotate,
            &params(
                &corpus,
                &server.url,
                &[
                    (
                        "api_key_env",
                        Value::Str("FLOW_TEST_ANNOTATE_401_KEY".into()),
                    ),
                    ("max_failures", Value::Int(100)),
                    ("state_dir", Value::Str(state.display().to_string())),
                ],
            ),
            &out,
        );
        let msg = format!("{:?}", res.unwrap_err());
        assert!(msg.contains("401"), "{msg}");
        assert!(msg.contains("FLOW_TEST_ANNOTATE_401_KEY"), "{msg}");
        assert!(msg.contains(&server.url), "{msg}");
        assert!(
            !msg.contains(&secret[..12]) && !msg.contains(&secret[secret.len() - 8..]),
            "{msg}"
        );
        // fail fast: no retries of a 401, the workers stop at once
        assert!(server.requests.load(Ordering::SeqCst) <= 4);
        for line in &log {
            assert!(!line.contains(&secret[..10]), "{line}");
        }
        for (path, text) in all_files_text(&out)
            .into_iter()
            .chain(all_files_text(&state))
        {
            assert!(!text.contains(&secret[..10]), "{}: {text}", path.display());
            assert!(
                !text.contains("Incorrect API key"),
                "{}: {text}",
                path.display()
            );
        }
    }

    #[test]
    fn annotate_fails_on_a_closed_port() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 3);
        // a port that was just free: nothing listens there
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/v1");
        let err = run_op(
            &Annotate,
            &params(&corpus, &url, &[("retries", Value::Int(1))]),
            &tmp.path().join("a"),
        )
        .unwrap_err();
        let msg = format!("{err:?}");
        assert!(msg.contains("max_failures") && msg.contains(&url), "{msg}");
    }

    #[test]
    fn annotate_leaves_out_failed_documents_within_max_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = small_corpus(tmp.path(), 10);
        let server = start_server(Mode::FailTwoDocuments);
        let out = tmp.path().join("a");
        let (res, log) = crate::op::testing::run_op_logged(
            &Annotate,
            &params(
                &corpus,
                &server.url,
                &[("retries", Value::Int(0)), ("max_failures", Value::Int(2))],
            ),
            &out,
        );
        res.unwrap();
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap())
                .unwrap();
        assert_eq!(stats["failed"], 2);
        let ann = read_jsonl(&out.join("annotations.jsonl"));
        assert_eq!(ann.len(), 8);
        assert!(ann.iter().all(|a| a["label"].is_string()));
        let failed_ids: Vec<&Json> = stats["failed_examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| &f["id"])
            .collect();
        assert_eq!(failed_ids.len(), 2);
        assert!(ann.iter().all(|a| !failed_ids.contains(&&a["id"])));
        assert!(log.iter().any(|l| l.contains("2 failed")), "{log:?}");

        // one tolerated failure is not enough
        let server = start_server(Mode::FailTwoDocuments);
        let err = run_op(
            &Annotate,
            &params(
                &corpus,
                &server.url,
                &[("retries", Value::Int(0)), ("max_failures", Value::Int(1))],
            ),
            &tmp.path().join("b"),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("max_failures = 1"), "{err:?}");
    }
}
