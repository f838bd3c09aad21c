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
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::{json, Value as Json};

use crate::llm::{
    ChatBackend, ChatError, ChatMessage, ChatRequest, LocalBackend, OpenAiBackend, OpenAiSettings,
};
use crate::merge::slerp::tensors::{write_atomic, write_json};
use crate::model::generate::read_responses;
use crate::op::{Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value};

/// The built-in template: the judge prompt of the training-dynamics paper
/// (004, Figure 4), verbatim, schema block included. The file is
/// `prompts/judge_pairwise.yaml`; pass it (or an edited copy) as `template`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../prompts/judge_pairwise.yaml");

/// The JSON schema of a judge's answer.
pub fn answer_schema() -> Json {
    json!({
        "type": "object",
        "properties": {"winner": {"type": "string", "enum": ["A", "B", "0"], "description": "The better response: 'A', 'B', or '0' for a tie."}},
        "required": ["winner"],
        "additionalProperties": false
    })
}

/// One line of a `responses.jsonl`.
#[derive(Clone, Debug)]
pub struct ResponseItem {
    pub prompt: String,
    pub response: String,
    /// Earlier messages of the chat (everything before the last user turn).
    pub context: Vec<ChatMessage>,
}

/// A `generate` artifact: responses by id (in file order) and lineage.
pub struct Responses {
    pub ids: Vec<String>,
    pub items: BTreeMap<String, ResponseItem>,
    pub checkpoint: Option<Json>,
    /// The name verdicts use ([`GeneratedResponses::display_name`]).
    pub name: String,
}

/// Reads a generate artifact (or responses file) for judging: every line
/// needs its `prompt`, the query the judge sees.
/// `name` is the op's `name_a`/`name_b` (empty: derived from the artifact).
pub fn load_responses(path: &Path, name: &str) -> OpResult<Responses> {
    let generated = read_responses(path)?;
    let name = generated.display_name(name);
    let mut ids = Vec::with_capacity(generated.records.len());
    let mut items = BTreeMap::new();
    for r in generated.records {
        let prompt = r
            .prompt
            .clone()
            .ok_or_else(|| miette!("{}: missing string `prompt`", r.source))?;
        let context = r
            .context()
            .iter()
            .map(|m| ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        ids.push(r.id.clone());
        items.insert(
            r.id,
            ResponseItem {
                prompt,
                response: r.response,
                context,
            },
        );
    }
    Ok(Responses {
        ids,
        items,
        checkpoint: generated.checkpoint,
        name,
    })
}

/// A parsed judge template.
pub struct JudgeTemplate {
    env: minijinja::Environment<'static>,
    roles: Vec<String>,
}

impl JudgeTemplate {
    /// Parses YAML/JSON text `{messages: [{role, content}]}`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> OpResult<JudgeTemplate> {
        let v: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| miette!("{origin}: not valid YAML: {e}"))?;
        let msgs = v
            .get("messages")
            .and_then(|m| m.as_sequence())
            .ok_or_else(|| miette!(help = "a template is {messages: [{role: system, content: ...}, {role: user, content: ...}]}", "{origin}: no `messages` list"))?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        let mut roles = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let role = m
                .get("role")
                .and_then(|r| r.as_str())
                .ok_or_else(|| miette!("{origin}: message {i} has no string `role`"))?;
            let content = m
                .get("content")
                .and_then(|r| r.as_str())
                .ok_or_else(|| miette!("{origin}: message {i} has no string `content`"))?;
            env.add_template_owned(format!("m{i}"), content.to_owned())
                .map_err(|e| miette!("{origin}: message {i}: template error: {e}"))?;
            roles.push(role.to_owned());
        }
        Ok(JudgeTemplate { env, roles })
    }

    /// The chat for one comparison.
    pub fn render(
        &self,
        item: &ResponseItem,
        response_a: &str,
        response_b: &str,
    ) -> Result<Vec<ChatMessage>, String> {
        let context: Vec<Json> = item
            .context
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let ctx = minijinja::context! {
            query => item.prompt,
            response_a => response_a,
            response_b => response_b,
            context => context,
        };
        self.roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let t = self
                    .env
                    .get_template(&format!("m{i}"))
                    .map_err(|e| e.to_string())?;
                let content = t
                    .render(&ctx)
                    .map_err(|e| format!("rendering message {i}: {e}"))?;
                Ok(ChatMessage {
                    role: role.clone(),
                    content,
                })
            })
            .collect()
    }
}

/// The winner a judge's answer names ("A", "B" or "0"), if it can be read:
/// the first JSON object with a `winner` field, else a `"winner": "X"` pair.
pub fn parse_winner(answer: &str) -> Option<&'static str> {
    let norm = |s: &str| match s.trim() {
        "A" | "a" => Some("A"),
        "B" | "b" => Some("B"),
        "0" | "tie" | "Tie" | "TIE" => Some("0"),
        _ => None,
    };
    // JSON objects anywhere in the answer (e.g. inside a ```json fence).
    let bytes = answer.as_bytes();
    let mut start = 0;
    while let Some(off) = answer[start..].find('{') {
        let open = start + off;
        let mut depth = 0usize;
        let mut in_str = false;
        let mut escape = false;
        let mut end = None;
        for (k, &c) in bytes[open..].iter().enumerate() {
            if in_str {
                match c {
                    _ if escape => escape = false,
                    b'\\' => escape = true,
                    b'"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + k + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        if let Ok(v) = serde_json::from_str::<Json>(&answer[open..end]) {
            match v.get("winner") {
                Some(Json::String(s)) => return norm(s),
                Some(Json::Number(n)) if n.as_i64() == Some(0) => return Some("0"),
                _ => {}
            }
        }
        start = open + 1;
    }
    let idx = answer.find("\"winner\"")?;
    let rest = answer[idx + 8..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let rest = rest.strip_prefix('"')?;
    let close = rest.find('"')?;
    norm(&rest[..close])
}

/// Combines the verdicts of the two orders into the winner in terms of the
/// models (A = model a): inconsistent verdicts are a tie.
pub fn combine(first: Option<&str>, swapped: Option<&str>) -> (Option<&'static str>, bool) {
    let (Some(x), Some(y)) = (first, swapped) else {
        return (None, false);
    };
    // In the swapped order "A" is model b.
    let y_for_a = match y {
        "A" => "B",
        "B" => "A",
        _ => "0",
    };
    let x: &'static str = match x {
        "A" => "A",
        "B" => "B",
        _ => "0",
    };
    if x == y_for_a {
        (Some(x), true)
    } else {
        (Some("0"), false)
    }
}

/// Failed requests whose message goes into the log (the rest are counted).
const LOGGED_FAILURES: usize = 5;

/// Judges every shared prompt in both orders; returns verdict lines and the
/// summary. Prompts with a failed request are left out of the lines and
/// counted; more than `max_failures` of them, or a refused key, is an error.
#[allow(clippy::too_many_arguments)]
pub fn run_judging(
    ctx: &OpContext,
    backend: &dyn ChatBackend,
    template: &JudgeTemplate,
    a: &Responses,
    b: &Responses,
    names: (&str, &str),
    max_tokens: usize,
    max_failures: usize,
) -> OpResult<(Vec<Json>, Json)> {
    let workers = backend.concurrency().max(1);
    let shared: Vec<&String> = a
        .ids
        .iter()
        .filter(|id| b.items.contains_key(*id))
        .collect();
    let missing = a.ids.len() + b.ids.len() - 2 * shared.len();
    if missing > 0 {
        ctx.log(&format!(
            "warning: {missing} prompts were answered by only one model and are not judged"
        ));
    }
    if shared.is_empty() {
        return Err(miette!(
            help = "both generate nodes must answer the same prompt file",
            "the two response sets share no prompt id"
        ));
    }
    ctx.progress
        .set_total(shared.len() as u64 * 2, "judgements");
    // Work items: (prompt index, swapped?).
    let jobs: Vec<(usize, bool)> = (0..shared.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();
    let answers: Mutex<Vec<Option<Result<String, ChatError>>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    let render_err: Mutex<Option<String>> = Mutex::new(None);
    // prompts with a failed request; past the tolerance the workers stop
    let failed_prompts: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
    let failed_requests = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                if ctx.cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    return;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, swapped)) = jobs.get(k) else {
                    return;
                };
                let id = shared[i];
                let (ra, rb) = (&a.items[id], &b.items[id]);
                let (first, second) = if swapped {
                    (&rb.response, &ra.response)
                } else {
                    (&ra.response, &rb.response)
                };
                let msgs = match template.render(ra, first, second) {
                    Ok(m) => m,
                    Err(e) => {
                        *render_err.lock().expect("lock") = Some(format!("prompt {id}: {e}"));
                        return;
                    }
                };
                let req = ChatRequest {
                    messages: msgs,
                    max_tokens,
                    temperature: 0.0,
                    json_schema: Some(answer_schema()),
                };
                // A backend that can score answers (the local runtime)
                // picks the most likely of the three verdicts: small models
                // rarely write the requested JSON.
                let options: Vec<String> = ["A", "B", "0"]
                    .iter()
                    .map(|w| json!({ "winner": w }).to_string())
                    .collect();
                let ans = match backend.choose(&req.messages, &options) {
                    Some(r) => r,
                    None => backend.chat(&req),
                };
                if let Err(e) = &ans {
                    let n = failed_requests.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= LOGGED_FAILURES {
                        // the backend redacted the key from this text
                        ctx.log(&format!("prompt {id}: judge request failed: {e}"));
                    }
                    let mut failed = failed_prompts.lock().expect("lock");
                    failed.insert(i);
                    if e.is_unauthorized() || failed.len() > max_failures {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                answers.lock().expect("lock")[k] = Some(ans);
                ctx.progress.inc(1);
            });
        }
    });
    ctx.check_cancelled()?;
    if let Some(e) = render_err.into_inner().expect("lock") {
        return Err(miette!("judge template: {e}"));
    }
    let answers = answers.into_inner().expect("lock");
    let errors: Vec<&ChatError> = answers
        .iter()
        .filter_map(|a| a.as_ref().and_then(|r| r.as_ref().err()))
        .collect();
    let failed = failed_prompts.into_inner().expect("lock").len();
    if let Some(refused) = errors.iter().find(|e| e.is_unauthorized()) {
        return Err(miette!(
            help = "nothing is stored; fix the key and run again",
            "judge: {refused}"
        ));
    }
    if failed > max_failures {
        let last = errors.last().map(|e| e.to_string()).unwrap_or_default();
        return Err(miette!(
            help = "nothing is stored; raise max_failures to tolerate some failed prompts",
            "judge: {failed} prompts had a failed request, more than max_failures = {max_failures}; e.g. {last}"
        ));
    }
    let mut failed_examples = Vec::new();
    let mut lines = Vec::new();
    let (mut wins, mut ties, mut losses, mut unparseable, mut inconsistent) = (0, 0, 0, 0, 0);
    for (i, id) in shared.iter().enumerate() {
        let mut orders = Vec::new();
        let mut parsed = Vec::new();
        let mut prompt_failed = false;
        for k in [2 * i, 2 * i + 1] {
            let raw = match &answers[k] {
                Some(Ok(t)) => t.clone(),
                Some(Err(e)) => {
                    // class and status only: the server's text may echo the key
                    if failed_examples.len() < 20 {
                        let mut record = e.to_record();
                        record["id"] = json!(id);
                        failed_examples.push(record);
                    }
                    prompt_failed = true;
                    continue;
                }
                None => {
                    // not asked: the run was cancelled or stopped, both errors above
                    prompt_failed = true;
                    continue;
                }
            };
            let w = parse_winner(&raw);
            parsed.push(w);
            orders.push(json!({"winner": w, "raw": raw}));
        }
        if prompt_failed {
            continue;
        }
        let (winner, consistent) = combine(parsed[0], parsed[1]);
        match winner {
            None => unparseable += 1,
            Some("A") => wins += 1,
            Some("B") => losses += 1,
            Some(_) => {
                ties += 1;
                if !consistent {
                    inconsistent += 1;
                }
            }
        }
        lines.push(json!({
            "id": id,
            "model_a": names.0,
            "model_b": names.1,
            "winner": winner,
            "consistent": consistent,
            "a_first": orders[0],
            "b_first": orders[1],
            "checkpoint_a": a.checkpoint,
            "checkpoint_b": b.checkpoint,
        }));
    }
    if failed > 0 {
        ctx.log(&format!(
            "warning: {failed} prompts ({} requests) failed and are left out of verdicts.jsonl (max_failures = {max_failures})",
            errors.len()
        ));
    }
    let judged = wins + ties + losses;
    let summary = json!({
        "model_a": names.0,
        "model_b": names.1,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unparseable": unparseable,
        "inconsistent": inconsistent,
        "failed": failed,
        "failed_requests": errors.len(),
        "max_failures": max_failures,
        "failed_examples": failed_examples,
        "n": shared.len(),
        "win_rate": if judged > 0 { wins as f64 / judged as f64 } else { f64::NAN },
        "score": if judged > 0 { (wins as f64 + ties as f64 / 2.0) / judged as f64 } else { f64::NAN },
        "judge": backend.describe(),
        "checkpoint_a": a.checkpoint,
        "checkpoint_b": b.checkpoint,
    });
    Ok((lines, summary))
}

/// The `judge` op.
pub struct Judge;

impl Op for Judge {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "judge",
            version: 7,
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
                Param::optional("max_tokens", Type::Int, Value::Int(256), "longest judge answer"),
                Param::optional("json_mode", Type::Bool, Value::Bool(true), "ask the endpoint for JSON following the answer schema (response_format json_schema)"),
                Param::optional("concurrency", Type::Int, Value::Int(8), "requests in flight (OpenAI backend)"),
                Param::optional("retries", Type::Int, Value::Int(3), "retries on timeouts, connection errors, 429 and 5xx, with exponential backoff (OpenAI backend)"),
                Param::optional("backoff_s", Type::Float, Value::Float(1.0), "first backoff; doubles per retry"),
                Param::optional("timeout_s", Type::Float, Value::Float(180.0), "limit per request"),
                Param::optional("max_failures", Type::Int, Value::Int(0), "prompts with a failed request (connection, timeout, HTTP error after retries, malformed answer) tolerated before the op fails; they are left out of verdicts.jsonl and counted in judge.json. A refused key (401/403) always fails"),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "verdicts", ty: Type::File, doc: "verdicts.jsonl" },
                Output { name: "summary", ty: Type::File, doc: "judge.json" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let pa = ctx.path("a")?.to_owned();
        let pb = ctx.path("b")?.to_owned();
        let a = load_responses(&pa, ctx.str("name_a")?)?;
        let b = load_responses(&pb, ctx.str("name_b")?)?;
        let (mut name_a, mut name_b) = (a.name.clone(), b.name.clone());
        if name_a == name_b {
            name_a.push_str("#a");
            name_b.push_str("#b");
            ctx.log(&format!("warning: both models are named the same; using {name_a} and {name_b} (set name_a / name_b)"));
        }
        let template = match ctx.value("template")? {
            Value::Path(p) => {
                let text = std::fs::read_to_string(p)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("reading {}", p.display()))?;
                JudgeTemplate::parse(&text, &p.display().to_string())?
            }
            Value::Str(s) if s.is_empty() => {
                JudgeTemplate::parse(DEFAULT_TEMPLATE, "built-in template")?
            }
            Value::Str(s) => JudgeTemplate::parse(s, "template")?,
            other => {
                return Err(miette!(
                    "parameter `template`: expected a file or a string, got {}",
                    other.kind()
                ))
            }
        };
        let max_failures = usize::try_from(ctx.int("max_failures")?)
            .map_err(|_| miette!("parameter `max_failures`: must be >= 0"))?;
        let max_tokens = usize::try_from(ctx.int("max_tokens")?)
            .map_err(|_| miette!("parameter `max_tokens`: must be positive"))?;
        let backend: Box<dyn ChatBackend> = match ctx.value("judge")? {
            Value::Path(dir) => Box::new(
                LocalBackend::load(dir)
                    .map_err(|e| miette!("judge model {}: {e}", dir.display()))?,
            ),
            Value::Str(name) if !name.is_empty() => {
                let concurrency = usize::try_from(ctx.int("concurrency")?)
                    .unwrap_or(1)
                    .clamp(1, 256);
                let (timeout, backoff) = (ctx.float("timeout_s")?, ctx.float("backoff_s")?);
                if !(timeout > 0.0 && backoff >= 0.0) {
                    return Err(miette!(
                        "parameters `timeout_s` (> 0) and `backoff_s` (>= 0) are out of range"
                    ));
                }
                let settings = OpenAiSettings {
                    base_url: ctx.str("endpoint")?.to_owned(),
                    model: name.clone(),
                    api_key_env: ctx.str("api_key_env")?.to_owned(),
                    concurrency,
                    retries: ctx.int("retries")?.clamp(0, 20) as u32,
                    backoff: std::time::Duration::from_secs_f64(backoff),
                    timeout: std::time::Duration::from_secs_f64(timeout),
                    json_schema: ctx.bool("json_mode")?,
                };
                Box::new(OpenAiBackend::new(settings).map_err(|e| {
                    miette!(
                        help = "set api_key_env to \"\" for endpoints without a key",
                        "judge endpoint: {e}"
                    )
                })?)
            }
            other => {
                return Err(miette!(
                    help = "pass a model node or the name of an endpoint's model",
                    "parameter `judge`: expected a model or a model name, got {}",
                    other.kind()
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
        let mut text = String::new();
        for l in &lines {
            text.push_str(&l.to_string());
            text.push('\n');
        }
        write_atomic(&ctx.out_dir.join("verdicts.jsonl"), text.as_bytes())?;
        write_json(&ctx.out_dir.join("judge.json"), &summary)?;
        ctx.log(&format!(
            "{name_a} vs {name_b}: {} wins, {} ties, {} losses, {} unparseable",
            summary["wins"], summary["ties"], summary["losses"], summary["unparseable"]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::{run_op, run_op_logged};

    #[test]
    fn judging_needs_the_prompt_and_takes_the_chat_before_it_as_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("responses.jsonl");
        let chat = json!({"id": "c", "prompt": "Und jetzt?", "response": "r", "messages": [
            {"role": "user", "content": "Ich habe Fieber."},
            {"role": "assistant", "content": "Seit wann?"},
            {"role": "user", "content": "Und jetzt?"}]});
        std::fs::write(&p, format!("{chat}\n")).unwrap();
        let r = load_responses(&p, "").unwrap();
        assert_eq!(r.ids, ["c"]);
        let item = &r.items["c"];
        assert_eq!(item.prompt, "Und jetzt?");
        let ctx: Vec<(&str, &str)> = item
            .context
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            ctx,
            [("user", "Ich habe Fieber."), ("assistant", "Seit wann?")]
        );
        std::fs::write(
            &p,
            format!("{chat}\n{{\"id\": \"d\", \"response\": \"r\"}}\n"),
        )
        .unwrap();
        let err = format!("{}", load_responses(&p, "").err().unwrap());
        assert!(
            err.contains("responses.jsonl:2: missing string `prompt`"),
            "{err}"
        );
    }

    #[test]
    fn winners_are_read_from_json_or_pairs() {
        assert_eq!(parse_winner(r#"{"winner": "A"}"#), Some("A"));
        assert_eq!(
            parse_winner("Sure!\n```json\n{\"reason\": \"x {y}\", \"winner\": \"B\"}\n```"),
            Some("B")
        );
        assert_eq!(parse_winner(r#"{"winner": "0"}"#), Some("0"));
        assert_eq!(parse_winner(r#"{"winner": 0}"#), Some("0"));
        assert_eq!(parse_winner(r#"the "winner": "A" because"#), Some("A"));
        assert_eq!(parse_winner(r#"{"winner": "C"}"#), None);
        assert_eq!(parse_winner("I cannot decide."), None);
        assert_eq!(parse_winner("{unclosed"), None);
    }

    #[test]
    fn both_orders_are_combined() {
        assert_eq!(combine(Some("A"), Some("B")), (Some("A"), true)); // a wins twice
        assert_eq!(combine(Some("B"), Some("A")), (Some("B"), true)); // b wins twice
        assert_eq!(combine(Some("A"), Some("A")), (Some("0"), false)); // position bias: tie
        assert_eq!(combine(Some("0"), Some("0")), (Some("0"), true));
        assert_eq!(combine(Some("0"), Some("B")), (Some("0"), false));
        assert_eq!(combine(None, Some("A")), (None, false));
    }

    #[test]
    fn template_renders_context_query_and_responses() {
        let t = JudgeTemplate::parse(DEFAULT_TEMPLATE, "built-in").unwrap();
        let item = ResponseItem {
            prompt: "What is\nfever?".into(),
            response: String::new(),
            context: vec![ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            }],
        };
        let msgs = t.render(&item, "first", "second").unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, "system");
        let u = &msgs[1].content;
        assert!(
            u.contains("Context:") && u.contains("System:") && u.contains("Be brief."),
            "{u}"
        );
        assert!(u.contains("What is\n        fever?"), "{u}");
        let (ia, ib) = (
            u.find("Response A:\n  first").unwrap(),
            u.find("Response B:\n  second").unwrap(),
        );
        assert!(ia < ib);
        let no_ctx = ResponseItem {
            prompt: "q".into(),
            response: String::new(),
            context: vec![],
        };
        assert!(!t.render(&no_ctx, "x", "y").unwrap()[1]
            .content
            .contains("Context:"));
        assert!(JudgeTemplate::parse("messages: 3", "t").is_err());
    }

    /// Issue 13, item 10: the default prompt is 004's Figure 4 word for word.
    /// The expected lines are typed from the figure.
    #[test]
    fn default_template_is_figure_4_of_the_training_dynamics_paper() {
        let t = JudgeTemplate::parse(DEFAULT_TEMPLATE, "built-in").unwrap();
        let item = ResponseItem {
            prompt: "Was ist Fieber?".into(),
            response: String::new(),
            context: vec![],
        };
        let msgs = t.render(&item, "Antwort eins", "Antwort zwei").unwrap();
        assert_eq!(msgs[0].role, "system");
        assert_eq!(
            msgs[0].content.trim_end(),
            "You are an AI assistant that evaluates pairs of responses\n\
             to a given query. Your goal is to determine which response\n\
             is better based on correctness, clarity, completeness,\n\
             and relevance."
        );
        assert_eq!(msgs[1].role, "user");
        let u = &msgs[1].content;
        for line in [
            "Compare the following two responses. Your answer needs\nto follow this JSON schema:",
            "```json\n{\n  \"type\": \"object\",\n  \"properties\": {\n    \"winner\": {\n      \"type\": \"string\",\n      \"enum\": [\"A\", \"B\", \"0\"],",
            "\"description\": \"The winning response, i.e. 'A', 'B' or '0' indicating a tie.\"",
            "Query:\n  Was ist Fieber?",
            "Response A:\n  Antwort eins",
            "Response B:\n  Antwort zwei",
            "Based on the query and context above,\nwhich response is better?",
        ] {
            assert!(u.contains(line), "missing {line:?} in\n{u}");
        }
    }

    fn write_responses(dir: &Path, rows: &[(&str, &str)], checkpoint: Json) {
        std::fs::create_dir_all(dir).unwrap();
        let text: String = rows
            .iter()
            .map(|(id, r)| format!("{}\n", json!({"id": id, "prompt": format!("question {id}"), "response": r, "tokens": 3})))
            .collect();
        std::fs::write(dir.join("responses.jsonl"), text).unwrap();
        std::fs::write(
            dir.join("generate.json"),
            json!({"checkpoint": checkpoint, "model": "/x/y/model"}).to_string(),
        )
        .unwrap();
    }

    /// An OpenAI-compatible endpoint whose "judge" prefers a response that
    /// contains "good", answers "A" when both or neither do (position bias),
    /// and answers nonsense for question q4.
    fn mock_endpoint() -> (crate::http::HttpServer, Arc<std::sync::atomic::AtomicUsize>) {
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&served);
        let handler: crate::http::Handler = Arc::new(move |req: &crate::http::Request| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let v: Json = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(v["model"], "judge-model");
            let user = v["messages"][1]["content"].as_str().unwrap().to_owned();
            let a = &user[user.find("Response A:").unwrap()..user.find("Response B:").unwrap()];
            let b = &user[user.find("Response B:").unwrap()..];
            let answer = if user.contains("question q4") {
                "no idea".to_owned()
            } else if b.contains("good") && !a.contains("good") {
                r#"{"winner": "B"}"#.to_owned()
            } else {
                // A is better, or they are alike and the judge picks the first.
                r#"{"winner": "A"}"#.to_owned()
            };
            let resp = json!({"choices": [{"message": {"role": "assistant", "content": answer}}]});
            crate::http::Response::json(200, &resp)
        });
        let server = crate::http::HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            crate::http::Limits::default(),
            handler,
        )
        .unwrap();
        (server, served)
    }

    #[test]
    fn judges_both_orders_through_an_openai_endpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let (ga, gb) = (tmp.path().join("ga"), tmp.path().join("gb"));
        write_responses(
            &ga,
            &[
                ("q1", "good"),
                ("q2", "bad"),
                ("q3", "same"),
                ("q4", "good"),
                ("q5", "good"),
            ],
            json!({"tokens_seen": 1000}),
        );
        write_responses(
            &gb,
            &[
                ("q1", "bad"),
                ("q2", "good"),
                ("q3", "same"),
                ("q4", "bad"),
                ("q5", "meh"),
            ],
            Json::Null,
        );
        let (server, served) = mock_endpoint();
        let url = format!("http://{}/v1", server.addr());
        let out = tmp.path().join("out");
        let (res, log) = run_op_logged(
            &Judge,
            &[
                ("a", Value::Path(ga)),
                ("b", Value::Path(gb)),
                ("judge", Value::Str("judge-model".into())),
                ("endpoint", Value::Str(url)),
                ("name_a", Value::Str("ckpt".into())),
                ("name_b", Value::Str("source".into())),
                ("api_key_env", Value::Str(String::new())),
                ("concurrency", Value::Int(2)),
            ],
            &out,
        );
        res.unwrap();
        assert_eq!(
            served.load(std::sync::atomic::Ordering::SeqCst),
            10,
            "every prompt judged in both orders"
        );
        server.shutdown();
        let summary: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("judge.json")).unwrap())
                .unwrap();
        assert_eq!(
            (
                summary["wins"].as_u64(),
                summary["ties"].as_u64(),
                summary["losses"].as_u64()
            ),
            (Some(2), Some(1), Some(1)),
            "{summary}"
        );
        assert_eq!(summary["unparseable"], 1);
        assert_eq!(summary["inconsistent"], 1);
        let lines: Vec<Json> = std::fs::read_to_string(out.join("verdicts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        let q3 = lines.iter().find(|l| l["id"] == "q3").unwrap();
        assert_eq!(q3["winner"], "0");
        assert_eq!(q3["consistent"], false);
        assert_eq!(q3["a_first"]["raw"], r#"{"winner": "A"}"#);
        let q4 = lines.iter().find(|l| l["id"] == "q4").unwrap();
        assert!(q4["winner"].is_null());
        assert_eq!(q4["b_first"]["raw"], "no idea");
        assert_eq!(lines[0]["model_a"], "ckpt");
        assert_eq!(lines[0]["checkpoint_a"]["tokens_seen"], 1000);
        assert!(log.iter().any(|l| l.contains("2 wins")), "{log:?}");
        // The verdicts feed `davidson`: 2 wins, 1 tie, 1 loss give π = 2:1 and ν = 1/√2.
        let res = run_op(
            &crate::eval::davidson::Davidson,
            &[
                ("verdicts", Value::List(vec![Value::Path(out.clone())])),
                ("bootstrap", Value::Int(0)),
            ],
            &tmp.path().join("dav"),
        );
        res.unwrap();
        let d: Json = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join("dav/davidson.json")).unwrap(),
        )
        .unwrap();
        assert!(
            (d["strengths"]["ckpt"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
            "{d}"
        );
        assert!((d["tie"].as_f64().unwrap() - 0.5f64.sqrt()).abs() < 1e-9);
        assert_eq!(d["skipped"], 1);
        assert_eq!(d["checkpoints"]["ckpt"]["tokens_seen"], 1000);
    }

    /// Ten prompts q0..q9 answered by both models.
    fn ten_prompts(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (ga, gb) = (tmp.join("ga"), tmp.join("gb"));
        let ids: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
        let rows_a: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "good")).collect();
        let rows_b: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "bad")).collect();
        write_responses(&ga, &rows_a, Json::Null);
        write_responses(&gb, &rows_b, Json::Null);
        (ga, gb)
    }

    /// A server answering with `answer(user message, Authorization header)`.
    fn endpoint(
        answer: impl Fn(&str, &str) -> crate::http::Response + Send + Sync + 'static,
    ) -> (crate::http::HttpServer, Arc<std::sync::atomic::AtomicUsize>) {
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&served);
        let handler: crate::http::Handler = Arc::new(move |req: &crate::http::Request| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let v: Json = serde_json::from_slice(&req.body).unwrap_or(Json::Null);
            let user = v["messages"][1]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            answer(&user, req.header("authorization").unwrap_or(""))
        });
        let server = crate::http::HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            crate::http::Limits::default(),
            handler,
        )
        .unwrap();
        (server, served)
    }

    fn judge_params(
        ga: &Path,
        gb: &Path,
        url: &str,
        extra: &[(&'static str, Value)],
    ) -> Vec<(&'static str, Value)> {
        let mut p = vec![
            ("a", Value::Path(ga.to_path_buf())),
            ("b", Value::Path(gb.to_path_buf())),
            ("judge", Value::Str("judge-model".into())),
            ("endpoint", Value::Str(url.into())),
            ("name_a", Value::Str("a".into())),
            ("name_b", Value::Str("b".into())),
            ("api_key_env", Value::Str(String::new())),
            ("concurrency", Value::Int(2)),
            ("retries", Value::Int(0)),
            ("backoff_s", Value::Float(0.01)),
            ("timeout_s", Value::Float(5.0)),
        ];
        p.extend(extra.iter().cloned());
        p
    }

    fn files_text(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.extend(files_text(&path));
                } else {
                    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                    out.push((path, text));
                }
            }
        }
        out
    }

    #[test]
    fn a_refused_key_fails_the_judge_and_is_stored_nowhere() {
        let tmp = tempfile::tempdir().unwrap();
        let (ga, gb) = ten_prompts(tmp.path());
        let secret = "sk-judge-0123456789abcdefXYZ";
        // SAFETY: set before any thread of this test reads it; the name is unique to this test
        unsafe { std::env::set_var("FLOW_TEST_JUDGE_401_KEY", secret) };
        let (server, served) = endpoint(|_, auth| {
            let key = auth.replace("Bearer ", "");
            let message = format!(
                "Incorrect API key provided: {key} ({}...{})",
                &key[..10],
                &key[key.len() - 4..]
            );
            crate::http::Response::json(401, &json!({"error": {"message": message}}))
        });
        let url = format!("http://{}/v1", server.addr());
        let out = tmp.path().join("out");
        let (res, log) = run_op_logged(
            &Judge,
            &judge_params(
                &ga,
                &gb,
                &url,
                &[
                    ("api_key_env", Value::Str("FLOW_TEST_JUDGE_401_KEY".into())),
                    ("max_failures", Value::Int(100)),
                    ("retries", Value::Int(3)),
                ],
            ),
            &out,
        );
        let msg = format!("{:?}", res.unwrap_err());
        assert!(
            msg.contains("401") && msg.contains("FLOW_TEST_JUDGE_401_KEY"),
            "{msg}"
        );
        assert!(
            !msg.contains(&secret[..10]) && !msg.contains(&secret[secret.len() - 8..]),
            "{msg}"
        );
        // no retries of a 401, and the workers stop at once
        assert!(served.load(std::sync::atomic::Ordering::SeqCst) <= 4);
        for line in &log {
            assert!(!line.contains(&secret[..10]), "{line}");
        }
        for (path, text) in files_text(&out) {
            assert!(!text.contains(&secret[..10]), "{}: {text}", path.display());
        }
        assert!(!out.join("verdicts.jsonl").exists());
    }

    #[test]
    fn an_unreachable_endpoint_fails_the_judge() {
        let tmp = tempfile::tempdir().unwrap();
        let (ga, gb) = ten_prompts(tmp.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/v1");
        let res = run_op(
            &Judge,
            &judge_params(&ga, &gb, &url, &[("retries", Value::Int(1))]),
            &tmp.path().join("out"),
        );
        let msg = format!("{:?}", res.unwrap_err());
        assert!(
            msg.contains("max_failures = 0") && msg.contains(&url),
            "{msg}"
        );
    }

    #[test]
    fn failed_prompts_are_left_out_within_max_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let (ga, gb) = ten_prompts(tmp.path());
        let answer = |user: &str, _: &str| {
            if user.contains("question q3") || user.contains("question q7") {
                crate::http::Response::json(500, &json!({"error": "overloaded"}))
            } else {
                let resp = json!({"choices": [{"message": {"role": "assistant", "content": r#"{"winner": "A"}"#}}]});
                crate::http::Response::json(200, &resp)
            }
        };
        let (server, _) = endpoint(answer);
        let url = format!("http://{}/v1", server.addr());
        let out = tmp.path().join("out");
        let (res, log) = run_op_logged(
            &Judge,
            &judge_params(&ga, &gb, &url, &[("max_failures", Value::Int(2))]),
            &out,
        );
        res.unwrap();
        let summary: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("judge.json")).unwrap())
                .unwrap();
        assert_eq!(summary["failed"], 2, "{summary}");
        assert_eq!(summary["failed_requests"], 4, "{summary}");
        assert_eq!(summary["failed_examples"][0]["status"], 500);
        let lines: Vec<Json> = std::fs::read_to_string(out.join("verdicts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 8);
        assert!(lines.iter().all(|l| l["id"] != "q3" && l["id"] != "q7"));
        assert!(lines.iter().all(|l| l["winner"].is_string()));
        assert!(log.iter().any(|l| l.contains("2 prompts")), "{log:?}");

        let res = run_op(
            &Judge,
            &judge_params(&ga, &gb, &url, &[("max_failures", Value::Int(1))]),
            &tmp.path().join("out1"),
        );
        let msg = format!("{:?}", res.unwrap_err());
        assert!(msg.contains("max_failures = 1"), "{msg}");
    }
}
