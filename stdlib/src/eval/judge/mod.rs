//! `judge(a, b, judge)`: pairwise LLM-as-judge of two models' responses.
//!
//! Inputs are two `generate` artifacts (`responses.jsonl` lines
//! `{id, prompt, response, tokens, messages?}`; `generate.json` may carry the
//! model's `checkpoint`). Every prompt both answered is judged twice, with
//! the responses in both orders; when the two verdicts disagree the pair
//! counts as a tie, and when either answer cannot be parsed the pair is
//! counted as unparseable and has no winner. Every raw answer is saved.
//!
//! The template is a YAML (or JSON) file `{messages: [{role, content}]}`
//! whose contents are minijinja templates over `query`, `response_a`,
//! `response_b` and `context` (earlier chat messages, a list of `{role,
//! content}`). The judge answers with JSON whose `winner` is "A", "B" or
//! "0" (a tie).
//!
//! Backends (`crate::llm`): a model directory runs on flow's runtime; a
//! string names a model of an OpenAI-compatible endpoint
//! (`{endpoint}/chat/completions`), asked for JSON that follows
//! [`answer_schema`] when `json_mode` is on.
//!
//! A failed request (connection, timeout, HTTP error after retries, an
//! answer that is not a chat completion) is never stored as a verdict: the
//! prompt is left out of verdicts.jsonl and counted in judge.json (`failed`),
//! and more than `max_failures` such prompts, or a refused key (401/403),
//! fail the op so that the engine keeps no artifact and a rerun asks again.
//! The server's error text goes only to the log, with the key redacted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use crate::artifacts::eval::{JudgeSummary, OrderVerdict, Verdict};
use crate::artifacts::{CheckpointLineage, JsonFile, JsonLines};
use crate::llm::{
    ChatBackend, ChatError, ChatMessage, ChatRequest, LocalBackend, OpenAiBackend, OpenAiSettings,
};
use crate::model::generate::read_responses;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, PathOrStr, Resources,
    Type, Value,
};

mod judging;
mod responses;
mod template;
#[cfg(test)]
mod tests;
mod verdict;

pub use judging::*;
pub use responses::*;
pub use template::*;
pub use verdict::*;

/// The `judge` op.
pub struct Judge;

/// `judge`'s params (see its spec).
#[derive(Deserialize)]
struct JudgeParams {
    a: PathBuf,
    b: PathBuf,
    /// A model directory (judged locally) or an endpoint's model name.
    judge: PathOrStr,
    /// A template file or its text; empty: the built-in one.
    template: PathOrStr,
    endpoint: String,
    api_key_env: String,
    name_a: String,
    name_b: String,
    max_tokens: usize,
    json_mode: bool,
    concurrency: usize,
    retries: u32,
    backoff_s: f64,
    timeout_s: f64,
    max_failures: usize,
    /// The local judge's weights.
    dtype: crate::model::runtime::WeightDtype,
}

impl Op for Judge {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "judge",
            version: 10,
            doc: "Pairwise LLM-as-judge of two generate artifacts: every shared prompt judged in both orders (disagreement counts as a tie), raw answers saved in verdicts.jsonl ({model_a, model_b, winner: A|B|0|null, ...}), win/tie/loss counts of model a in judge.json. A prompt with a failed request is left out and counted (failed); more than max_failures of them, or a refused key (401/403), fail the op.",
            params: vec![
                Param::required("a", Type::Either(Box::new(Type::Dir), Box::new(Type::File)), "generate node (or responses.jsonl) of model A, e.g. a checkpoint"),
                Param::required("b", Type::Either(Box::new(Type::Dir), Box::new(Type::File)), "generate node (or responses.jsonl) of model B, e.g. the baseline"),
                Param::required("judge", Type::Either(Box::new(Type::Model), Box::new(Type::Str)), "a model (runs locally) or the model name at an OpenAI-compatible `endpoint`"),
                Param::optional("template", Type::Either(Box::new(Type::File), Box::new(Type::Str)), Value::Str(String::new()), "YAML {messages: [{role, content}]} with minijinja over query, response_a, response_b, context; empty: built-in (prompts/judge_pairwise.yaml, 004 Figure 4 verbatim)"),
                Param::optional("endpoint", Type::Str, Value::Str("https://api.openai.com/v1".into()), "base URL of the OpenAI-compatible API"),
                Param::optional("api_key_env", Type::Str, Value::Str("OPENAI_API_KEY".into()), "environment variable holding the API key; empty: no key is sent"),
                Param::optional("name_a", Type::Str, Value::Str(String::new()), "name of model A in the verdicts; empty: `step-N` for a checkpoint, else the model directory's name"),
                Param::optional("name_b", Type::Str, Value::Str(String::new()), "name of model B in the verdicts; empty: the model directory's name"),
                Param::optional("max_tokens", Type::Int, Value::Int(256), "longest judge answer").at_least(0.0),
                Param::optional("json_mode", Type::Bool, Value::Bool(true), "ask the endpoint for JSON following the answer schema (response_format json_schema)"),
                Param::optional("concurrency", Type::Int, Value::Int(8), "requests in flight (OpenAI backend)").within(1.0, 256.0),
                Param::optional("retries", Type::Int, Value::Int(3), "retries on timeouts, connection errors, 429 and 5xx, with exponential backoff (OpenAI backend)").within(0.0, 20.0),
                Param::optional("backoff_s", Type::Float, Value::Float(1.0), "first backoff; doubles per retry").at_least(0.0),
                Param::optional("timeout_s", Type::Float, Value::Float(180.0), "limit per request").at_least(0.0),
                Param::optional("max_failures", Type::Int, Value::Int(0), "prompts with a failed request (connection, timeout, HTTP error after retries, malformed answer) tolerated before the op fails; they are left out of verdicts.jsonl and counted in judge.json. A refused key (401/403) always fails").at_least(0.0),
                crate::model::runtime::WeightDtype::param(),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "verdicts", ty: Type::File, doc: "verdicts.jsonl" },
                Output { name: "summary", ty: Type::File, doc: "judge.json" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<JudgeParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: JudgeParams = ctx.params()?;
        let a = load_responses(&p.a, &p.name_a)?;
        let b = load_responses(&p.b, &p.name_b)?;
        let (mut name_a, mut name_b) = (a.name.clone(), b.name.clone());
        if name_a == name_b {
            name_a.push_str("#a");
            name_b.push_str("#b");
            ctx.log(&format!("warning: both models are named the same; using {name_a} and {name_b} (set name_a / name_b)"));
        }
        let template = match &p.template {
            PathOrStr::Path(path) => {
                let text = std::fs::read_to_string(path)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("reading {}", path.display()))?;
                JudgeTemplate::parse(&text, &path.display().to_string())?
            }
            PathOrStr::Str(s) if s.is_empty() => {
                JudgeTemplate::parse(DEFAULT_TEMPLATE, "built-in template")?
            }
            PathOrStr::Str(s) => JudgeTemplate::parse(s, "template")?,
        };
        let (max_failures, max_tokens) = (p.max_failures, p.max_tokens);
        let backend: Box<dyn ChatBackend> = match &p.judge {
            PathOrStr::Path(dir) => Box::new(
                crate::model::runtime::load_for(ctx, dir, p.dtype)
                    .and_then(|model| LocalBackend::new(model, ctx.input_name(dir)))
                    .map_err(|e| miette!("judge model {}: {e}", dir.display()))?,
            ),
            PathOrStr::Str(name) if !name.is_empty() => {
                // The declared range allows 0; a request needs some time.
                if p.timeout_s <= 0.0 {
                    return Err(miette!("parameter `timeout_s`: must be > 0"));
                }
                let settings = OpenAiSettings {
                    base_url: p.endpoint.clone(),
                    model: name.clone(),
                    api_key_env: p.api_key_env.clone(),
                    concurrency: p.concurrency,
                    retries: p.retries,
                    backoff: std::time::Duration::from_secs_f64(p.backoff_s),
                    timeout: std::time::Duration::from_secs_f64(p.timeout_s),
                    json_schema: p.json_mode,
                };
                Box::new(OpenAiBackend::new(settings).map_err(|e| {
                    miette!(
                        help = "set api_key_env to \"\" for endpoints without a key",
                        "judge endpoint: {e}"
                    )
                })?)
            }
            PathOrStr::Str(_) => {
                return Err(miette!(
                    help = "pass a model node or the name of an endpoint's model",
                    "parameter `judge`: expected a model or a model name, got an empty string"
                ))
            }
        };
        let (lines, summary) = run_judging(
            ctx,
            backend.as_ref(),
            &template,
            &a,
            &b,
            (&name_a, &name_b),
            max_tokens,
            max_failures,
        )?;
        Verdict::write_all(&lines, &ctx.out_dir)?;
        summary.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "{name_a} vs {name_b}: {} wins, {} ties, {} losses, {} unparseable",
            summary.wins, summary.ties, summary.losses, summary.unparseable
        ));
        Ok(BTreeMap::from([
            ("verdicts".to_owned(), Value::Path("verdicts.jsonl".into())),
            ("summary".to_owned(), Value::Path("judge.json".into())),
        ]))
    }
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Judge)]
}
