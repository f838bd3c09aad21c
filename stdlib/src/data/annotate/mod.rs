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
use crate::artifacts::data::{AnnotateStats, Annotation, UnparseableAnswer};
use crate::artifacts::{FailedRequest, JsonFile, JsonLines};
use crate::llm::{
    ChatBackend, ChatError, ChatMessage, ChatRequest, LocalBackend, OpenAiBackend, OpenAiSettings,
};
use crate::op::{
    run_in_parts, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources,
    Sharded, Type, Value,
};

mod answers;
mod backend;
mod calibrate;
mod prompt;
#[cfg(test)]
mod tests;

use answers::*;
use backend::*;
use calibrate::*;
pub use prompt::*;

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Annotate)]
}

/// Answers between two fsyncs of the answer file.
pub const SYNC_EVERY: usize = 32;
/// Documents read from the corpus at a time.
const CHUNK: usize = 1024;

/// The `annotate` op.
pub struct Annotate;

impl Op for Annotate {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "annotate",
            version: 11,
            doc: "Zero-shot labelling of every document of a corpus by a chat model (OpenAI-compatible endpoint or the local runtime); writes annotations.jsonl (id, label or null when the answer named none, raw answer) and annotate.json (counts per label, unparseable, failed). Documents whose request failed are left out and counted; more than max_failures of them, or a refused key (401/403), fail the op.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact (usually a sample)"),
                Param::required("prompt", Type::File, "prompt template: user message with {text} (and optionally {labels}); optional `### system` / `### user` sections"),
                Param::required("labels", Type::List(Box::new(Type::Str)), "the label set"),
                Param::required("model", Type::Any, "openai: the model name; local: the model directory"),
                Param::optional("backend", Type::enum_of::<Backend>(), Value::Str("openai".into()), "openai: any OpenAI-compatible /chat/completions endpoint; local: flow's model runtime, which picks the label with the highest log-likelihood after the prompt"),
                Param::optional("base_url", Type::Str, Value::Str("http://127.0.0.1:8000/v1".into()), "endpoint base URL (…/v1)"),
                Param::optional("api_key_env", Type::Str, Value::Str(String::new()), "NAME of the environment variable holding the API key (the key itself never goes into a parameter)"),
                Param::optional("concurrency", Type::Int, Value::Int(8), "requests in flight").within(1.0, 256.0),
                Param::optional("retries", Type::Int, Value::Int(3), "retries on timeouts, connection errors, 429 and 5xx, with exponential backoff").within(0.0, 20.0),
                Param::optional("backoff_s", Type::Float, Value::Float(1.0), "first backoff; doubles per retry").at_least(0.0),
                Param::optional("timeout_s", Type::Float, Value::Float(120.0), "limit per request").at_least(0.0),
                Param::optional("json_schema", Type::Bool, Value::Bool(true), "send response_format with a JSON schema {label: enum of labels}"),
                Param::optional("max_tokens", Type::Int, Value::Int(32), "answer length limit").at_least(1.0),
                Param::optional("max_chars", Type::Int, Value::Int(8000), "document characters put into the prompt").at_least(1.0),
                Param::optional("state_dir", Type::Str, Value::Str(String::new()), "a directory keeping answers across runs (resume); empty: only the output directory"),
                Param::optional("max_failures", Type::Int, Value::Int(0), "documents whose request may fail (connection, timeout, HTTP error after retries, malformed answer) before the op fails; they are left out of annotations.jsonl and counted in annotate.json. A refused key (401/403) always fails").at_least(0.0),
                crate::model::runtime::WeightDtype::param(),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "annotations", ty: Type::File, doc: "annotations.jsonl" },
                Output { name: "stats", ty: Type::File, doc: "annotate.json" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<AnnotateParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        run_in_parts(self, ctx, None)
    }

    fn sharding(&self) -> Option<&dyn Sharded> {
        Some(self)
    }
}

/// `annotate`'s params (see its spec).
#[derive(Deserialize)]
pub(super) struct AnnotateParams {
    corpus: PathBuf,
    prompt: PathBuf,
    labels: Vec<String>,
    /// openai: the model's name; local: its directory.
    model: String,
    backend: Backend,
    base_url: String,
    api_key_env: String,
    concurrency: usize,
    retries: u32,
    backoff_s: f64,
    timeout_s: f64,
    json_schema: bool,
    max_tokens: usize,
    max_chars: usize,
    state_dir: String,
    max_failures: u64,
    dtype: crate::model::runtime::WeightDtype,
}

/// Who answers: an OpenAI-compatible endpoint or flow's model runtime.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Backend {
    Openai,
    Local,
}

/// The checked labels every shard task and the merge read.
fn labels_of(p: &AnnotateParams) -> OpResult<Vec<String>> {
    let labels: Vec<String> = p
        .labels
        .iter()
        .map(|s| match s.trim() {
            "" => Err(miette!("parameter `labels`: expected non-empty strings")),
            t => Ok(t.to_string()),
        })
        .collect::<OpResult<_>>()?;
    if labels.len() < 2 {
        return Err(miette!("parameter `labels`: give at least two labels"));
    }
    Ok(labels)
}

/// What a shard task leaves in its part besides `answers.jsonl` (its
/// answers, raw: labels are decided by the merge's batch calibration over
/// the whole sample) and, without `state_dir`, `answers.partial.jsonl`.
#[derive(Serialize, Deserialize)]
struct AnnotatePart {
    /// The ids of its documents, in corpus order.
    order: Vec<String>,
    reused: u64,
    failed: u64,
    failed_examples: Vec<FailedRequest>,
    backend: Json,
    json_schema: bool,
    config_hash: String,
}

/// Sharded (`Op::sharding`): with the local backend a piece is a corpus
/// shard (each shard task loads the model once and scores its documents);
/// with a chat endpoint the whole corpus is one piece, since the
/// endpoint's `concurrency` is the parallelism. The merge calibrates over
/// all scored documents and writes the files in corpus order: the bytes of
/// one task.
impl Sharded for Annotate {
    fn pieces(&self, ctx: &OpContext) -> OpResult<usize> {
        let p: AnnotateParams = ctx.params()?;
        Ok(match p.backend {
            Backend::Local => corpus_shards(&p.corpus)?.len(),
            Backend::Openai => 1,
        })
    }

    fn run_part(&self, ctx: &OpContext, range: std::ops::Range<usize>) -> OpResult<()> {
        let p: AnnotateParams = ctx.params()?;
        let (max_failures, labels) = (p.max_failures, labels_of(&p)?);
        let prompt_path = &p.prompt;
        let prompt_src = std::fs::read_to_string(prompt_path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {}", prompt_path.display()))?;
        let template = PromptTemplate::parse(&prompt_src)
            .map_err(|e| miette!("{}: {e}", prompt_path.display()))?;
        let backend = backend_from(&p, ctx)?;
        let max_chars = p.max_chars;
        let schema = json!({"type": "object", "properties": {"label": {"type": "string", "enum": labels}}, "required": ["label"], "additionalProperties": false});
        let use_schema = p.json_schema && backend.supports_json_schema();
        let max_tokens = p.max_tokens;

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
        let all_shards = corpus_shards(&p.corpus)?;
        // With the local backend a task takes its range of shards; one
        // piece is the whole corpus.
        let whole = range.len() == self.pieces(ctx)?;
        let shards: &[PathBuf] = if p.backend == Backend::Local {
            &all_shards[range.clone()]
        } else {
            &all_shards
        };
        let state_dir = p.state_dir.as_str();
        let (answer_path, previous) = if state_dir.is_empty() {
            let path = ctx.out_dir.join("answers.partial.jsonl");
            let previous = load_previous(&path);
            (path, previous)
        } else {
            std::fs::create_dir_all(state_dir)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create state_dir {state_dir}"))?;
            // Shard tasks append to files of their own (never one file
            // from several machines); a rerun reuses the answers of all of
            // the configuration's files, however the shards were cut.
            let name = if whole {
                format!("annotate-{config_hash}.jsonl")
            } else {
                format!(
                    "annotate-{config_hash}.shards-{:05}-{:05}.jsonl",
                    range.start, range.end
                )
            };
            (
                Path::new(state_dir).join(name),
                load_state(Path::new(state_dir), &config_hash),
            )
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&answer_path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot open {}", answer_path.display()))?;
        let mut log = AnswerLog { file, unsynced: 0 };

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
            let workers = backend.concurrency().min(todo.len().max(1));
            let mut first_error: Option<String> = None;
            let ask = |id: &String, text: &String| -> Outcome {
                let clipped: String = text.chars().take(max_chars).collect();
                let req = ChatRequest {
                    messages: template.messages(&clipped, &labels),
                    max_tokens,
                    temperature: 0.0,
                    json_schema: use_schema.then(|| schema.clone()),
                };
                // A backend that can score the labels (the local
                // runtime) picks the most likely one: small models
                // rarely answer in the requested format.
                // Its raw answer holds every label's score; the
                // labels are decided once all are scored (the merge).
                let reply = match backend.scores(&req.messages, &labels) {
                    Some(r) => r.map(|scores| {
                        let best = argmax(&scores);
                        json!({ "label": labels[best], "scores": scores }).to_string()
                    }),
                    None => backend.chat(&req),
                };
                match reply {
                    Ok(raw) => Outcome::Answered(Answer {
                        id: id.clone(),
                        text_hash: text_hash(text),
                        label: parse_label(&raw, &labels),
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
                }
            };
            let take = |outcome: Outcome,
                        answers: &mut HashMap<String, Answer>,
                        log: &mut AnswerLog,
                        failures: &mut Failures,
                        first_error: &mut Option<String>| {
                let a = match outcome {
                    Outcome::Answered(a) => a,
                    Outcome::Failed { id, error } => {
                        if let Some(e) = failures.record(ctx, &id, &error, max_failures) {
                            stop.store(true, Ordering::Relaxed);
                            first_error.get_or_insert(e);
                        }
                        return;
                    }
                };
                if let Err(e) = log.append(&a) {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(format!("{e:?}"));
                    return;
                }
                answers.insert(a.id.clone(), a);
            };
            let stopped = || stop.load(Ordering::Relaxed) || ctx.cancel.load(Ordering::Relaxed);
            if workers == 1 {
                // On this thread: a shard task runs on a rayon worker,
                // which the local model's own parallel loops then join
                // rather than wait for from outside the pool.
                for (id, text) in &todo {
                    if stopped() {
                        break;
                    }
                    let outcome = ask(id, text);
                    take(outcome, answers, log, failures, &mut first_error);
                }
            } else {
                let (tx, rx) = mpsc::channel::<Outcome>();
                std::thread::scope(|s| {
                    for _ in 0..workers {
                        let tx = tx.clone();
                        let (todo, next, ask, stopped) = (&todo, &next, &ask, &stopped);
                        s.spawn(move || loop {
                            if stopped() {
                                return;
                            }
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((id, text)) = todo.get(i) else {
                                return;
                            };
                            if tx.send(ask(id, text)).is_err() {
                                return;
                            }
                        });
                    }
                    drop(tx);
                    for outcome in rx {
                        take(outcome, answers, log, failures, &mut first_error);
                    }
                });
            }
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

        for shard in shards {
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
            ctx.progress.inc(1);
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        process(&mut chunk, &mut answers, &mut log, &mut failures)?;
        drop(log);

        let mut text = String::new();
        for id in &order {
            if let Some(a) = answers.get(id) {
                text += &serde_json::to_string(a).into_diagnostic()?;
                text.push('\n');
            }
        }
        write_bytes_atomic(&ctx.out_dir.join("answers.jsonl"), text.as_bytes())?;
        write_json_atomic(
            &ctx.out_dir.join("part.json"),
            &AnnotatePart {
                order,
                reused,
                failed: failures.count,
                failed_examples: failures.examples,
                backend: backend.describe(),
                json_schema: use_schema,
                config_hash,
            },
        )
    }

    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs> {
        let params: AnnotateParams = ctx.params()?;
        let (max_failures, labels) = (params.max_failures, labels_of(&params)?);
        let mut order: Vec<String> = Vec::new();
        let mut answers: HashMap<String, Answer> = HashMap::new();
        let (mut reused, mut failed) = (0u64, 0u64);
        let mut failed_examples: Vec<FailedRequest> = Vec::new();
        let mut partial: Vec<u8> = Vec::new();
        let mut head: Option<(Json, bool, String)> = None;
        for part in parts {
            let p: AnnotatePart = super::corpus::read_json_file(&part.join("part.json"))?;
            let path = part.join("answers.jsonl");
            let text = std::fs::read_to_string(&path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read {}", path.display()))?;
            for line in text.lines() {
                let a: Answer = serde_json::from_str(line)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("{} is not what annotate wrote", path.display()))?;
                answers.insert(a.id.clone(), a);
            }
            if let Ok(bytes) = std::fs::read(part.join("answers.partial.jsonl")) {
                partial.extend(bytes);
            }
            order.extend(p.order);
            reused += p.reused;
            failed += p.failed;
            let room = 20usize.saturating_sub(failed_examples.len());
            failed_examples.extend(p.failed_examples.into_iter().take(room));
            head.get_or_insert((p.backend, p.json_schema, p.config_hash));
        }
        let (backend, use_schema, config_hash) =
            head.ok_or_else(|| miette!("internal: annotate merged no parts"))?;
        if failed > max_failures {
            return Err(miette!(
                help = "answers so far are kept; with state_dir set, a rerun resumes after them (max_failures tolerates some failed documents)",
                "annotate stopped: {failed} documents failed, more than max_failures = {max_failures}"
            ));
        }
        if parts
            .iter()
            .any(|p| p.join("answers.partial.jsonl").exists())
        {
            let partial = in_corpus_order(&partial, &order);
            write_bytes_atomic(&ctx.out_dir.join("answers.partial.jsonl"), &partial)?;
        }

        batch_calibrate(&mut answers, &labels);
        // annotations.jsonl in corpus order
        let mut per_label: BTreeMap<String, u64> = labels.iter().map(|l| (l.clone(), 0)).collect();
        let mut unparseable = 0u64;
        let mut unparseable_examples = Vec::new();
        let mut lines = Vec::with_capacity(order.len());
        for id in &order {
            // a failed document has no answer: left out, counted in `failed`
            let Some(a) = answers.get(id) else { continue };
            match &a.label {
                Some(l) => *per_label.entry(l.clone()).or_default() += 1,
                None => {
                    unparseable += 1;
                    if unparseable_examples.len() < 20 {
                        unparseable_examples.push(UnparseableAnswer {
                            id: id.clone(),
                            raw: a.raw.clone(),
                        });
                    }
                }
            }
            lines.push(Annotation {
                id: a.id.clone(),
                label: a.label.clone(),
                raw: a.raw.clone(),
                annotator: None,
            });
        }
        Annotation::write_all(&lines, &ctx.out_dir)?;
        let stats = AnnotateStats {
            n: order.len(),
            labels: per_label.into_iter().collect(),
            unparseable,
            failed,
            reused_from_state: reused,
            backend,
            json_schema: use_schema,
            config_hash,
            unparseable_examples,
            max_failures,
            failed_examples,
        };
        stats.write(&ctx.out_dir)?;
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
                Value::Path(Annotation::NAME.into()),
            ),
            ("stats".to_string(), Value::Path("annotate.json".into())),
        ]))
    }
}

/// The answer lines of `partial` sorted by their document's place in
/// `order` (the corpus order): a task appends answers as requests finish,
/// so the order it wrote them in differs between two runs. Lines whose id
/// is not in `order` keep their place after the others.
fn in_corpus_order(partial: &[u8], order: &[String]) -> Vec<u8> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut lines: Vec<(usize, &[u8])> = partial
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let at = serde_json::from_slice::<Id>(l)
                .ok()
                .and_then(|a| rank.get(a.id.as_ref()).copied())
                .unwrap_or(usize::MAX);
            (at, l)
        })
        .collect();
    lines.sort_by_key(|(at, _)| *at);
    let mut out = Vec::with_capacity(partial.len() + 1);
    for (_, l) in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}
