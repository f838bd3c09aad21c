//! `flow serve`: an OpenAI-compatible HTTP server on loopback over the model
//! runtime.
//!
//! Routes: `GET /v1/models`, `POST /v1/completions`, `POST
//! /v1/chat/completions`, `GET /health`. Completions follow vLLM's
//! behaviour so that lm-evaluation-harness's `local-completions` model can
//! score multiple choice against the server: `prompt` is a text, a list of
//! token ids, or a batch of either; `echo` puts the prompt (text, tokens and
//! log-probabilities, the first token's being `null`) in front of the
//! completion; `logprobs: k` returns `tokens`, `token_logprobs`,
//! `top_logprobs` (the k most likely tokens plus the chosen one) and
//! `text_offset`; `max_tokens` may be 0. Errors come in OpenAI's shape
//! `{"error": {"message", "type", "param", "code"}}` with a 4xx status for
//! bad requests; malformed input never takes the server down.
//!
//! `stream: true` answers with server-sent events in OpenAI's chunk format
//! (`data: {...}` events, then `data: [DONE]`), for one prompt without
//! `echo` or `logprobs`. A request asking for more tokens than the context
//! holds is a 400; generation stops when its client goes away.
//!
//! Not supported: `n > 1` (answered with 400); `response_format` is
//! accepted but not enforced (output is unconstrained).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value as Json};

use crate::http::{self, Client, EventSink, HttpServer, Reply};
use crate::model::runtime::{self, ChatMessage, FinishReason, GenerateOptions, LanguageModel};

/// Largest request body read.
const MAX_BODY: usize = 32 << 20;
/// Most alternatives per position `logprobs` may ask for.
const MAX_LOGPROBS: u64 = 20;
/// Log-probabilities below this are reported as it (vLLM's clamp of -inf).
const MIN_LOGPROB: f64 = -9999.0;

/// Options of [`serve`].
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The name clients use in `model`; default: the model directory's name.
    pub model_name: Option<String>,
    /// Allow an address other than loopback (an explicit `--host`).
    pub allow_non_loopback: bool,
}

/// How a [`Server`] listens.
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    pub limits: http::Limits,
    /// Without it, only loopback addresses may be bound.
    pub allow_non_loopback: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: http::Limits {
                max_body: MAX_BODY,
                ..http::Limits::default()
            },
            allow_non_loopback: false,
        }
    }
}

/// Loads `model_dir` and serves it at `addr` (`127.0.0.1:PORT`; other
/// addresses only with `allow_non_loopback`) until the process ends.
pub fn serve(model_dir: &Path, addr: &str, opts: &ServeOptions) -> Result<(), String> {
    let model = runtime::load(model_dir)?;
    let name = opts.model_name.clone().unwrap_or_else(|| {
        model_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("model")
            .to_string()
    });
    let config = ServerConfig {
        allow_non_loopback: opts.allow_non_loopback,
        ..ServerConfig::default()
    };
    let server = Server::start_with(Arc::from(model), &name, addr, &config)?;
    eprintln!(
        "flow serve: `{name}` at http://{}/v1 (Ctrl-C stops)",
        server.addr()
    );
    server.wait();
    Ok(())
}

/// A running server.
pub struct Server {
    http: HttpServer,
    state: Arc<State>,
}

struct State {
    model: Arc<dyn LanguageModel>,
    name: String,
    /// Model calls run one at a time: the runtime uses every core itself.
    compute: Mutex<()>,
    requests: AtomicU64,
    /// Tokens generated since the start, whether or not a client got them.
    generated_tokens: AtomicU64,
}

impl Server {
    /// Binds `addr` (which must be a loopback address; port 0 picks a free
    /// port) and answers requests.
    pub fn start(model: Arc<dyn LanguageModel>, name: &str, addr: &str) -> Result<Server, String> {
        Server::start_with(model, name, addr, &ServerConfig::default())
    }

    /// [`Server::start`] with the given limits.
    pub fn start_with(
        model: Arc<dyn LanguageModel>,
        name: &str,
        addr: &str,
        config: &ServerConfig,
    ) -> Result<Server, String> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot use address `{addr}`: {e}"))?
            .collect();
        let bind = *addrs
            .first()
            .ok_or_else(|| format!("address `{addr}` resolves to nothing"))?;
        if !config.allow_non_loopback && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(format!(
                "flow serve listens on loopback only (e.g. 127.0.0.1:8000); `{addr}` is not a loopback address"
            ));
        }
        let state = Arc::new(State {
            model,
            name: name.to_string(),
            compute: Mutex::new(()),
            requests: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
        });
        let service: http::Service = {
            let state = Arc::clone(&state);
            Arc::new(move |request: &http::Request, client: &Client| {
                answer(&state, request, client)
            })
        };
        let http = HttpServer::start_service(bind, config.limits, service)
            .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
        Ok(Server { http, state })
    }

    /// Tokens generated since the start, for clients that went away too.
    pub fn generated_tokens(&self) -> u64 {
        self.state.generated_tokens.load(Ordering::Relaxed)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Blocks while the server runs.
    pub fn wait(self) {
        self.http.wait();
    }

    /// Stops accepting connections.
    pub fn shutdown(self) {
        self.http.shutdown();
    }
}

/// An error answer: HTTP status and OpenAI's error object.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            param,
        }
    }
    fn body(&self) -> Json {
        let kind = match self.status {
            404 => "not_found_error",
            405 => "invalid_request_error",
            400..=499 => "invalid_request_error",
            _ => "internal_server_error",
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": null}})
    }
}

/// A successful answer: JSON, or events streamed as they are made.
enum Answer {
    Json(Json),
    Stream(http::EventProducer),
}

type ApiAnswer = Result<Answer, ApiError>;

fn answer(state: &Arc<State>, request: &http::Request, client: &Client) -> Reply {
    // The HTTP layer has read the body within its limit and turns a panic
    // here into a 500.
    match route(
        state,
        &request.method,
        request.path(),
        &request.body,
        client,
    ) {
        Ok(Answer::Json(j)) => Reply::Whole(http::Response::json(200, &j)),
        Ok(Answer::Stream(producer)) => Reply::Events(producer),
        Err(e) => Reply::Whole(http::Response::json(e.status, &e.body())),
    }
}

fn route(state: &Arc<State>, method: &str, path: &str, body: &[u8], client: &Client) -> ApiAnswer {
    let path = path.trim_end_matches('/');
    let allowed = match path {
        "/v1/models" | "/health" => "GET",
        "/v1/completions" | "/v1/chat/completions" => "POST",
        _ => return Err(ApiError { status: 404, message: format!("no route `{path}`; this server has /v1/models, /v1/completions, /v1/chat/completions"), param: None }),
    };
    if method != allowed {
        return Err(ApiError {
            status: 405,
            message: format!("{path} takes {allowed}, not {method}"),
            param: None,
        });
    }
    match path {
        "/health" => Ok(Answer::Json(json!({"status": "ok"}))),
        "/v1/models" => Ok(Answer::Json(json!({
            "object": "list",
            "data": [{"id": state.name, "object": "model", "created": now(), "owned_by": "flow", "max_model_len": state.model.max_context()}],
        }))),
        _ => {
            let request: Json = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad(format!("the request body is not valid JSON: {e}"), None)
            })?;
            let Json::Object(request) = request else {
                return Err(ApiError::bad(
                    "the request body must be a JSON object",
                    None,
                ));
            };
            if let Some(m) = request.get("model") {
                match m {
                    Json::String(s) if s == &state.name => {}
                    Json::Null => {}
                    other => {
                        return Err(ApiError {
                            status: 404,
                            message: format!(
                                "the model {other} does not exist; this server serves `{}`",
                                state.name
                            ),
                            param: Some("model"),
                        })
                    }
                }
            }
            if path == "/v1/completions" {
                completions(state, &request, client)
            } else {
                chat_completions(state, &request, client)
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Parameters

struct Sampling {
    max_tokens: Option<usize>,
    temperature: f32,
    top_p: f32,
    seed: u64,
    stop: Vec<String>,
    stream: bool,
}

fn opt_number(req: &Map<String, Json>, name: &'static str) -> Result<Option<f64>, ApiError> {
    match req.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ApiError::bad(
            format!("`{name}` must be a number, got {other}"),
            Some(name),
        )),
    }
}

fn opt_uint(req: &Map<String, Json>, name: &'static str) -> Result<Option<u64>, ApiError> {
    match req.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad(
                format!("`{name}` must be a non-negative integer, got {n}"),
                Some(name),
            )
        }),
        Some(other) => Err(ApiError::bad(
            format!("`{name}` must be a non-negative integer, got {other}"),
            Some(name),
        )),
    }
}

fn opt_bool(req: &Map<String, Json>, name: &'static str) -> Result<bool, ApiError> {
    match req.get(name) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad(
            format!("`{name}` must be true or false, got {other}"),
            Some(name),
        )),
    }
}

fn sampling(
    state: &State,
    req: &Map<String, Json>,
    max_tokens_names: &[&'static str],
) -> Result<Sampling, ApiError> {
    let stream = opt_bool(req, "stream")?;
    if let Some(n) = opt_uint(req, "n")? {
        if n != 1 {
            return Err(ApiError::bad(
                format!("`n` = {n}: flow serve returns one choice per prompt"),
                Some("n"),
            ));
        }
    }
    let mut max_tokens = None;
    for &name in max_tokens_names {
        if let Some(v) = opt_uint(req, name)? {
            // Beyond usize it is past any context: check_prompt refuses it.
            max_tokens = Some(usize::try_from(v).unwrap_or(usize::MAX));
        }
    }
    let temperature = opt_number(req, "temperature")?.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&temperature) {
        return Err(ApiError::bad(
            format!("`temperature` must be 0 or more, got {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = opt_number(req, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(
            format!("`top_p` must be in (0, 1], got {top_p}"),
            Some("top_p"),
        ));
    }
    let seed = match req.get("seed") {
        None | Some(Json::Null) => state.requests.fetch_add(1, Ordering::Relaxed) ^ now(),
        Some(Json::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u,
            (None, Some(i)) => i as u64,
            _ => {
                return Err(ApiError::bad(
                    format!("`seed` must be an integer, got {n}"),
                    Some("seed"),
                ))
            }
        },
        Some(other) => {
            return Err(ApiError::bad(
                format!("`seed` must be an integer, got {other}"),
                Some("seed"),
            ))
        }
    };
    let stop = match req.get("stop") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(list)) => list
            .iter()
            .map(|s| match s {
                Json::String(s) => Ok(s.clone()),
                other => Err(ApiError::bad(
                    format!("`stop` must be a string or a list of strings, got {other}"),
                    Some("stop"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::bad(
                format!("`stop` must be a string or a list of strings, got {other}"),
                Some("stop"),
            ))
        }
    };
    Ok(Sampling {
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        stream,
    })
}

// ---------------------------------------------------------------------------
// Generation shared by both endpoints

struct Completion {
    /// Generated tokens shown to the client (no stop token).
    tokens: Vec<u32>,
    text: String,
    finish_reason: &'static str,
}

fn check_prompt(
    state: &State,
    tokens: &[u32],
    max_tokens: usize,
    param: &'static str,
) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Err(ApiError::bad("the prompt is empty", Some(param)));
    }
    let vocab = state.model.vocab_size();
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad(
            format!("token id {bad} is outside the vocabulary (size {vocab})"),
            Some(param),
        ));
    }
    let limit = state.model.max_context();
    // Checked: a max_tokens near 2^64 wrapped the sum past the limit.
    match tokens.len().checked_add(max_tokens) {
        Some(total) if total <= limit => {}
        _ => {
            return Err(ApiError::bad(
                format!(
                    "this model's maximum context length is {limit} tokens; the request asks for {} in the prompt and {max_tokens} in the completion",
                    tokens.len()
                ),
                Some(param),
            ))
        }
    }
    Ok(())
}

fn decode(state: &State, ids: &[u32], skip_special: bool) -> Result<String, ApiError> {
    state.model.decode(ids, skip_special).map_err(|e| ApiError {
        status: 500,
        message: format!("decoding: {e}"),
        param: None,
    })
}

fn generate_options(s: &Sampling, max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        seed: s.seed,
        stop_tokens: Vec::new(),
    }
}

/// Generates for `prompt`, calling `on_token` with each new token; it
/// returns false to stop (its client went away). Model calls take turns.
fn generate_each(
    state: &State,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> runtime::Generation {
    let _turn = state.compute.lock().unwrap_or_else(|e| e.into_inner());
    state.model.generate_each(prompt, opts, &mut |token| {
        state.generated_tokens.fetch_add(1, Ordering::Relaxed);
        on_token(token)
    })
}

fn run_generation(
    state: &State,
    prompt: &[u32],
    s: &Sampling,
    max_tokens: usize,
    client: &Client,
) -> Result<Completion, ApiError> {
    if max_tokens == 0 {
        return Ok(Completion {
            tokens: Vec::new(),
            text: String::new(),
            finish_reason: "length",
        });
    }
    if client.is_gone() {
        return Err(client_gone());
    }
    let opts = generate_options(s, max_tokens);
    let generation = generate_each(state, prompt, &opts, &mut |_| !client.is_gone());
    if client.is_gone() {
        return Err(client_gone());
    }
    let mut tokens = generation.tokens;
    let mut finish_reason = generation.finish_reason.as_str();
    if generation.finish_reason == FinishReason::Stop {
        tokens.pop();
    }
    let mut text = decode(state, &tokens, true)?;
    // Stop strings: cut the text before the earliest one, and keep the
    // tokens up to the one in which it begins.
    if let Some(cut) = s
        .stop
        .iter()
        .filter_map(|stop| text.find(stop.as_str()))
        .min()
    {
        text.truncate(cut);
        finish_reason = "stop";
        let mut keep = tokens.len();
        for k in 0..=tokens.len() {
            if decode(state, &tokens[..k], true)?.len() > cut {
                keep = k;
                break;
            }
        }
        tokens.truncate(keep);
    }
    Ok(Completion {
        tokens,
        text,
        finish_reason,
    })
}

/// Nobody reads this answer; it only ends the work.
fn client_gone() -> ApiError {
    ApiError {
        status: 499,
        message: "the client went away".into(),
        param: None,
    }
}

fn clamp(lp: f32) -> f64 {
    (lp as f64).max(MIN_LOGPROB)
}

/// vLLM's `logprobs` object for `tokens` (the prompt's under `echo`, then the
/// completion's), scored in one pass over `prompt + completion`.
fn logprobs_object(
    state: &State,
    prompt: &[u32],
    completion: &[u32],
    echo: bool,
    k: usize,
) -> Result<Json, ApiError> {
    let mut seq = prompt.to_vec();
    seq.extend_from_slice(completion);
    let scored = {
        let _guard = state.compute.lock().unwrap_or_else(|e| e.into_inner());
        state.model.token_logprobs(&seq, k)
    };
    if scored.len() != seq.len() {
        return Err(ApiError {
            status: 500,
            message: "the model returned log-probabilities of the wrong length".into(),
            param: None,
        });
    }
    let first = if echo { 0 } else { prompt.len() };
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top_logprobs = Vec::new();
    let mut text_offset = Vec::new();
    let mut offset = 0usize;
    for i in first..seq.len() {
        let text = decode(state, &seq[i..=i], false)?;
        match &scored[i] {
            None => {
                token_logprobs.push(Json::Null);
                top_logprobs.push(Json::Null);
            }
            Some(t) => {
                token_logprobs.push(json!(clamp(t.logprob)));
                let mut top = Map::new();
                // Tokens whose texts coincide (e.g. partial UTF-8 bytes) share a
                // key; the more likely one keeps it, as the list is best first.
                for &(id, lp) in t.top.iter().take(k) {
                    top.entry(decode(state, &[id], false)?)
                        .or_insert(json!(clamp(lp)));
                }
                // vLLM lists the chosen token too when it is not among the top k.
                top.entry(text.clone()).or_insert(json!(clamp(t.logprob)));
                top_logprobs.push(Json::Object(top));
            }
        }
        text_offset.push(offset);
        offset += text.chars().count();
        tokens.push(text);
    }
    Ok(json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }))
}

// ---------------------------------------------------------------------------
// /v1/completions

/// The prompts of a completions request: texts or token ids.
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

fn token_list(list: &[Json]) -> Option<Vec<u32>> {
    list.iter()
        .map(|v| v.as_u64().and_then(|u| u32::try_from(u).ok()))
        .collect()
}

fn parse_prompts(value: Option<&Json>) -> Result<Vec<Prompt>, ApiError> {
    let bad = || {
        ApiError::bad(
            "`prompt` must be a string, a list of token ids, or a list of either",
            Some("prompt"),
        )
    };
    match value {
        None | Some(Json::Null) => Err(ApiError::bad("missing field `prompt`", Some("prompt"))),
        Some(Json::String(s)) => Ok(vec![Prompt::Text(s.clone())]),
        Some(Json::Array(list)) if list.is_empty() => {
            Err(ApiError::bad("`prompt` is an empty list", Some("prompt")))
        }
        Some(Json::Array(list)) => {
            if list.iter().all(Json::is_number) {
                return token_list(list)
                    .map(|ids| vec![Prompt::Ids(ids)])
                    .ok_or_else(bad);
            }
            list.iter()
                .map(|item| match item {
                    Json::String(s) => Ok(Prompt::Text(s.clone())),
                    Json::Array(ids) => token_list(ids).map(Prompt::Ids).ok_or_else(bad),
                    _ => Err(bad()),
                })
                .collect()
        }
        Some(_) => Err(bad()),
    }
}

fn completions(state: &Arc<State>, req: &Map<String, Json>, client: &Client) -> ApiAnswer {
    let prompts = parse_prompts(req.get("prompt"))?;
    let s = sampling(state, req, &["max_tokens"])?;
    let max_tokens = s.max_tokens.unwrap_or(16);
    let echo = opt_bool(req, "echo")?;
    let logprobs = match opt_uint(req, "logprobs")? {
        Some(k) if k > MAX_LOGPROBS => {
            return Err(ApiError::bad(
                format!("`logprobs` must be at most {MAX_LOGPROBS}, got {k}"),
                Some("logprobs"),
            ))
        }
        other => other.map(|k| k as usize),
    };
    let add_special = match req.get("add_special_tokens") {
        Some(Json::Bool(b)) => *b,
        _ => true,
    };
    let mut encoded = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let ids = match p {
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Text(t) => state.model.encode(t, add_special).map_err(|e| {
                ApiError::bad(format!("cannot tokenise the prompt: {e}"), Some("prompt"))
            })?,
        };
        check_prompt(state, &ids, max_tokens, "prompt")?;
        encoded.push(ids);
    }
    if s.stream {
        if encoded.len() != 1 || echo || logprobs.is_some() {
            return Err(ApiError::bad(
                "`stream` takes one prompt, without `echo` or `logprobs`",
                Some("stream"),
            ));
        }
        let id = format!(
            "cmpl-{:x}{:x}",
            now(),
            state.requests.fetch_add(1, Ordering::Relaxed)
        );
        let chunk_of = stream_chunk_maker(
            state,
            id,
            "text_completion",
            |text| json!({"text": text, "logprobs": null}),
        );
        return Ok(stream_answer(
            state,
            encoded.remove(0),
            s,
            max_tokens,
            None,
            chunk_of,
        ));
    }
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (index, (p, ids)) in prompts.iter().zip(&encoded).enumerate() {
        let c = run_generation(state, ids, &s, max_tokens, client)?;
        let text = if echo {
            let prompt_text = match p {
                Prompt::Text(t) => t.clone(),
                Prompt::Ids(ids) => decode(state, ids, false)?,
            };
            prompt_text + &c.text
        } else {
            c.text.clone()
        };
        let lp = match logprobs {
            Some(k) => logprobs_object(state, ids, &c.tokens, echo, k)?,
            None => Json::Null,
        };
        prompt_tokens += ids.len();
        completion_tokens += c.tokens.len();
        choices.push(
            json!({"index": index, "text": text, "logprobs": lp, "finish_reason": c.finish_reason}),
        );
    }
    Ok(Answer::Json(json!({
        "id": format!("cmpl-{:x}{:x}", now(), state.requests.fetch_add(1, Ordering::Relaxed)),
        "object": "text_completion",
        "created": now(),
        "model": state.name,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    })))
}

// ---------------------------------------------------------------------------
// /v1/chat/completions

fn parse_messages(value: Option<&Json>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(Json::Array(list)) = value else {
        return Err(ApiError::bad(
            "`messages` must be a list of {\"role\", \"content\"} objects",
            Some("messages"),
        ));
    };
    if list.is_empty() {
        return Err(ApiError::bad("`messages` is empty", Some("messages")));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Json::as_str).ok_or_else(|| {
                ApiError::bad(
                    format!("message {i} has no string `role`"),
                    Some("messages"),
                )
            })?;
            let content = match m.get("content") {
                None | Some(Json::Null) => String::new(),
                Some(Json::String(s)) => s.clone(),
                // Content parts: the text parts, joined.
                Some(Json::Array(parts)) => parts
                    .iter()
                    .map(|p| {
                        match (
                            p.get("type").and_then(Json::as_str),
                            p.get("text").and_then(Json::as_str),
                        ) {
                            (Some("text"), Some(t)) => Ok(t.to_string()),
                            _ => Err(ApiError::bad(
                                format!("message {i}: only text content parts are supported"),
                                Some("messages"),
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(""),
                Some(other) => {
                    return Err(ApiError::bad(
                        format!("message {i}: `content` must be a string, got {other}"),
                        Some("messages"),
                    ))
                }
            };
            Ok(ChatMessage {
                role: role.to_string(),
                content,
            })
        })
        .collect()
}

fn chat_completions(state: &Arc<State>, req: &Map<String, Json>, client: &Client) -> ApiAnswer {
    let messages = parse_messages(req.get("messages"))?;
    let s = sampling(state, req, &["max_tokens", "max_completion_tokens"])?;
    match req.get("response_format") {
        None | Some(Json::Null) => {}
        Some(Json::Object(f)) if matches!(f.get("type").and_then(Json::as_str), Some("text" | "json_object" | "json_schema")) => {}
        Some(other) => {
            return Err(ApiError::bad(
                format!("`response_format` must be {{\"type\": \"text\" | \"json_object\" | \"json_schema\"}}, got {other}"),
                Some("response_format"),
            ))
        }
    }
    let want_logprobs = opt_bool(req, "logprobs")?;
    let top_k = opt_uint(req, "top_logprobs")?.unwrap_or(0);
    if top_k > MAX_LOGPROBS {
        return Err(ApiError::bad(
            format!("`top_logprobs` must be at most {MAX_LOGPROBS}"),
            Some("top_logprobs"),
        ));
    }
    let text = state.model.render_chat(&messages, true).map_err(|e| {
        ApiError::bad(
            format!("cannot apply the chat template: {e}"),
            Some("messages"),
        )
    })?;
    let ids = state
        .model
        .encode(&text, false)
        .map_err(|e| ApiError::bad(format!("cannot tokenise the chat: {e}"), Some("messages")))?;
    let max_tokens = s
        .max_tokens
        .unwrap_or_else(|| state.model.max_context().saturating_sub(ids.len()));
    check_prompt(state, &ids, max_tokens, "messages")?;
    if s.stream {
        if want_logprobs {
            return Err(ApiError::bad(
                "`stream` does not take `logprobs`",
                Some("stream"),
            ));
        }
        let id = format!(
            "chatcmpl-{:x}{:x}",
            now(),
            state.requests.fetch_add(1, Ordering::Relaxed)
        );
        let chunk_of = stream_chunk_maker(
            state,
            id,
            "chat.completion.chunk",
            |text| json!({"delta": {"content": text}}),
        );
        let opening = chunk_of_choice(
            &chunk_of,
            json!({"delta": {"role": "assistant", "content": ""}}),
            Json::Null,
        );
        return Ok(stream_answer(
            state,
            ids,
            s,
            max_tokens,
            Some(opening),
            chunk_of,
        ));
    }
    let c = run_generation(state, &ids, &s, max_tokens, client)?;
    let logprobs = if want_logprobs {
        let lp = logprobs_object(state, &ids, &c.tokens, false, top_k as usize)?;
        let content: Vec<Json> = (0..c.tokens.len())
            .map(|i| {
                let top: Vec<Json> = lp["top_logprobs"][i]
                    .as_object()
                    .map(|m| m.iter().take(top_k as usize).map(|(t, l)| json!({"token": t, "logprob": l, "bytes": t.as_bytes()})).collect())
                    .unwrap_or_default();
                let token = lp["tokens"][i].as_str().unwrap_or_default();
                json!({"token": token, "logprob": lp["token_logprobs"][i], "bytes": token.as_bytes(), "top_logprobs": top})
            })
            .collect();
        json!({"content": content})
    } else {
        Json::Null
    };
    Ok(Answer::Json(json!({
        "id": format!("chatcmpl-{:x}{:x}", now(), state.requests.fetch_add(1, Ordering::Relaxed)),
        "object": "chat.completion",
        "created": now(),
        "model": state.name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": logprobs,
            "finish_reason": c.finish_reason,
        }],
        "usage": {"prompt_tokens": ids.len(), "completion_tokens": c.tokens.len(), "total_tokens": ids.len() + c.tokens.len()},
    })))
}

// ---------------------------------------------------------------------------
// Streaming (server-sent events)

/// Makes one chunk object around a choice: `(choice fields, finish_reason)`.
type ChunkMaker = Box<dyn Fn(Json, Json) -> Json + Send>;

/// The chunk maker of one streamed answer, and how its text goes in a choice.
fn stream_chunk_maker(
    state: &State,
    id: String,
    object: &'static str,
    text_choice: fn(&str) -> Json,
) -> (ChunkMaker, fn(&str) -> Json) {
    let (name, created) = (state.name.clone(), now());
    let make: ChunkMaker = Box::new(move |mut choice, finish_reason| {
        if let Json::Object(c) = &mut choice {
            c.insert("index".into(), json!(0));
            c.insert("finish_reason".into(), finish_reason);
        }
        json!({"id": id, "object": object, "created": created, "model": name, "choices": [choice]})
    });
    (make, text_choice)
}

fn chunk_of_choice(maker: &(ChunkMaker, fn(&str) -> Json), choice: Json, finish: Json) -> Json {
    (maker.0)(choice, finish)
}

fn sse(chunk: &Json) -> String {
    format!("data: {chunk}\n\n")
}

/// Streams the generation for `prompt`: `opening` first (the chat role),
/// then the text as it is made, held back while it might be the start of a
/// stop string or ends in a partial character, then the finish reason and
/// `[DONE]`. Generation stops when the client goes away.
fn stream_answer(
    state: &Arc<State>,
    prompt: Vec<u32>,
    s: Sampling,
    max_tokens: usize,
    opening: Option<Json>,
    maker: (ChunkMaker, fn(&str) -> Json),
) -> Answer {
    let state = Arc::clone(state);
    Answer::Stream(Box::new(move |sink: &EventSink| {
        if let Some(opening) = opening {
            if !sink.send(sse(&opening)) {
                return;
            }
        }
        let send_text = |text: &str| -> bool {
            text.is_empty() || sink.send(sse(&chunk_of_choice(&maker, (maker.1)(text), Json::Null)))
        };
        let hold_back = s
            .stop
            .iter()
            .map(|stop| stop.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let mut tokens = Vec::new();
        let mut sent = 0usize; // bytes of the text sent so far
        let mut stopped_by_string = false;
        let mut client_left = false;
        let opts = generate_options(&s, max_tokens);
        let eos = state.model.eos_token_ids();
        let generation = if max_tokens == 0 {
            None
        } else {
            Some(generate_each(&state, &prompt, &opts, &mut |token| {
                if eos.contains(&token) {
                    return true; // the last token; not shown
                }
                tokens.push(token);
                let Ok(text) = state.model.decode(&tokens, true) else {
                    return true;
                };
                if let Some(cut) = s
                    .stop
                    .iter()
                    .filter_map(|stop| text.find(stop.as_str()))
                    .min()
                {
                    stopped_by_string = true;
                    client_left = !send_text(text.get(sent..cut).unwrap_or(""));
                    return false;
                }
                // Send what cannot be part of a stop string or of a character
                // still being decoded.
                let mut ready = text.len().saturating_sub(hold_back);
                if text.ends_with('\u{FFFD}') {
                    ready = ready.min(text.len() - '\u{FFFD}'.len_utf8());
                }
                while ready > sent && !text.is_char_boundary(ready) {
                    ready -= 1;
                }
                if ready > sent {
                    if !send_text(&text[sent..ready]) {
                        client_left = true;
                        return false;
                    }
                    sent = ready;
                }
                true
            }))
        };
        if client_left {
            return;
        }
        let finish_reason = match &generation {
            _ if stopped_by_string => "stop",
            Some(g) => g.finish_reason.as_str(),
            None => "length",
        };
        if !stopped_by_string {
            let text = state.model.decode(&tokens, true).unwrap_or_default();
            if !send_text(text.get(sent..).unwrap_or("")) {
                return;
            }
        }
        let last = chunk_of_choice(&maker, (maker.1)(""), json!(finish_reason));
        // The last chunk carries no text: chat's delta is empty.
        let last = match last {
            Json::Object(mut chunk) => {
                if let Some(Json::Array(choices)) = chunk.get_mut("choices") {
                    if let Some(Json::Object(c)) = choices.first_mut() {
                        if c.contains_key("delta") {
                            c.insert("delta".into(), json!({}));
                        }
                    }
                }
                Json::Object(chunk)
            }
            other => other,
        };
        if sink.send(sse(&last)) {
            sink.send("data: [DONE]\n\n");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::runtime::ToyModel;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Sends one HTTP/1.1 request and returns the status and the JSON body.
    fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Json) {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
        let (head, payload) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        (
            status,
            serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload}")),
        )
    }

    fn toy_server() -> (Server, Arc<ToyModel>) {
        let model = Arc::new(ToyModel::new(42));
        let server = Server::start(model.clone(), "toy", "127.0.0.1:0").unwrap();
        (server, model)
    }

    #[test]
    fn lists_the_model() {
        let (server, _) = toy_server();
        let (status, body) = http(server.addr(), "GET", "/v1/models", "");
        assert_eq!(status, 200);
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][0]["id"], "toy");
        assert_eq!(body["data"][0]["object"], "model");
        server.shutdown();
    }

    /// lm-eval's local-completions loglikelihood request: token ids of
    /// context + continuation, echo, logprobs 1, max_tokens 1; it sums
    /// token_logprobs[ctxlen:-1] and checks each against max(top_logprobs).
    #[test]
    fn echo_logprobs_equal_the_model_and_give_lm_eval_loglikelihoods() {
        let (server, model) = toy_server();
        let ctx: Vec<u32> = "Answer:".bytes().map(u32::from).collect();
        let cont: Vec<u32> = " B".bytes().map(u32::from).collect();
        let whole: Vec<u32> = ctx.iter().chain(&cont).copied().collect();
        let other: Vec<u32> = "Hi".bytes().map(u32::from).collect();
        let body = json!({"model": "toy", "prompt": [whole, other], "max_tokens": 1, "logprobs": 1, "echo": true, "temperature": 0, "seed": 1234});
        let (status, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["object"], "text_completion");
        assert_eq!(resp["choices"].as_array().unwrap().len(), 2);
        let lp = &resp["choices"][0]["logprobs"];
        let token_logprobs = lp["token_logprobs"].as_array().unwrap();
        // The prompt's tokens and the one generated token.
        assert_eq!(token_logprobs.len(), whole.len() + 1);
        assert!(token_logprobs[0].is_null());
        assert!(lp["top_logprobs"][0].is_null());
        let mut full = whole.clone();
        let generated = model.generate(
            std::slice::from_ref(&whole),
            &GenerateOptions {
                max_tokens: 1,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                stop_tokens: vec![],
            },
        );
        full.extend(&generated[0].tokens);
        let expected = model.token_logprobs(&full, 1);
        for i in 1..full.len() {
            let want = expected[i].as_ref().unwrap().logprob as f64;
            assert!(
                (token_logprobs[i].as_f64().unwrap() - want).abs() < 1e-6,
                "position {i}"
            );
        }
        // lm-eval's parse_logprobs.
        let ctxlen = ctx.len();
        let summed: f64 = token_logprobs[ctxlen..token_logprobs.len() - 1]
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        let ll = model.loglikelihood(&[(ctx.clone(), cont.clone())])[0];
        assert!(
            (summed - ll.logprob).abs() < 1e-5,
            "{summed} vs {}",
            ll.logprob
        );
        let greedy = (ctxlen..token_logprobs.len() - 1).all(|i| {
            let top = lp["top_logprobs"][i].as_object().unwrap();
            let best = top
                .values()
                .map(|v| v.as_f64().unwrap())
                .fold(f64::NEG_INFINITY, f64::max);
            token_logprobs[i].as_f64().unwrap() == best
        });
        assert_eq!(greedy, ll.is_greedy);
        // Text and offsets: the echoed prompt, then the completion.
        let text = resp["choices"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("Answer: B"), "{text}");
        let tokens = lp["tokens"].as_array().unwrap();
        let offsets = lp["text_offset"].as_array().unwrap();
        assert_eq!(offsets[0], 0);
        for i in 1..tokens.len() {
            let step = offsets[i].as_u64().unwrap() - offsets[i - 1].as_u64().unwrap();
            assert_eq!(
                step as usize,
                tokens[i - 1].as_str().unwrap().chars().count()
            );
        }
        assert_eq!(resp["usage"]["prompt_tokens"], whole.len() + other.len());
        server.shutdown();
    }

    #[test]
    fn max_tokens_zero_echoes_only_the_prompt() {
        let (server, model) = toy_server();
        let body = json!({"prompt": "Hallo Welt", "max_tokens": 0, "logprobs": 2, "echo": true});
        let (status, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{resp}");
        let choice = &resp["choices"][0];
        assert_eq!(choice["text"], "Hallo Welt");
        assert_eq!(choice["finish_reason"], "length");
        let ids = LanguageModel::encode(model.as_ref(), "Hallo Welt", true).unwrap();
        let expected = model.token_logprobs(&ids, 2);
        let lp = &choice["logprobs"];
        assert_eq!(lp["tokens"].as_array().unwrap().len(), ids.len());
        for i in 1..ids.len() {
            let e = expected[i].as_ref().unwrap();
            assert!((lp["token_logprobs"][i].as_f64().unwrap() - e.logprob as f64).abs() < 1e-6);
            let top = lp["top_logprobs"][i].as_object().unwrap();
            // The two most likely tokens, plus the actual one when it is not among them.
            assert!(!top.is_empty() && top.len() <= 3, "{top:?}");
            for &(id, l) in &e.top {
                let key = model.decode(&[id], false).unwrap();
                if key.contains('\u{FFFD}') {
                    continue; // a lone byte of a multi-byte character: texts coincide
                }
                assert!((top[&key].as_f64().unwrap() - l as f64).abs() < 1e-6);
            }
        }
        assert_eq!(resp["usage"]["completion_tokens"], 0);
        server.shutdown();
    }

    #[test]
    fn completion_without_echo_and_with_stop_string() {
        let (server, model) = toy_server();
        let prompt = "abc";
        let ids = LanguageModel::encode(model.as_ref(), prompt, true).unwrap();
        let greedy = model.generate(
            std::slice::from_ref(&ids),
            &GenerateOptions {
                max_tokens: 8,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                stop_tokens: vec![],
            },
        );
        let mut shown = greedy[0].tokens.clone();
        if greedy[0].finish_reason == FinishReason::Stop {
            shown.pop();
        }
        let full = model.decode(&shown, true).unwrap();
        let body = json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 0});
        let (status, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["choices"][0]["text"], full.as_str());
        assert_eq!(
            resp["choices"][0]["logprobs"]["tokens"]
                .as_array()
                .unwrap()
                .len(),
            shown.len()
        );
        // A stop string cuts the text before it.
        if full.chars().count() >= 3 {
            let stop: String = full.chars().skip(2).take(1).collect();
            let cut = full.find(&stop).unwrap();
            let body = json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "stop": [stop]});
            let (_, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
            assert_eq!(resp["choices"][0]["text"], &full[..cut]);
            assert_eq!(resp["choices"][0]["finish_reason"], "stop");
        }
        server.shutdown();
    }

    #[test]
    fn chat_completion_renders_the_template_and_generates() {
        let (server, model) = toy_server();
        let body = json!({"model": "toy", "messages": [{"role": "user", "content": "Wie geht's?"}], "max_tokens": 6, "temperature": 0, "response_format": {"type": "text"}, "seed": 3, "top_p": 0.5, "stop": []});
        let (status, resp) = http(
            server.addr(),
            "POST",
            "/v1/chat/completions",
            &body.to_string(),
        );
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["object"], "chat.completion");
        assert_eq!(resp["choices"][0]["message"]["role"], "assistant");
        let text = model
            .render_chat(
                &[ChatMessage {
                    role: "user".into(),
                    content: "Wie geht's?".into(),
                }],
                true,
            )
            .unwrap();
        let ids = LanguageModel::encode(model.as_ref(), &text, false).unwrap();
        let g = model.generate(
            std::slice::from_ref(&ids),
            &GenerateOptions {
                max_tokens: 6,
                temperature: 0.0,
                top_p: 1.0,
                seed: 0,
                stop_tokens: vec![],
            },
        );
        let mut shown = g[0].tokens.clone();
        if g[0].finish_reason == FinishReason::Stop {
            shown.pop();
        }
        assert_eq!(
            resp["choices"][0]["message"]["content"],
            model.decode(&shown, true).unwrap().as_str()
        );
        assert_eq!(resp["usage"]["prompt_tokens"], ids.len());
        server.shutdown();
    }

    #[test]
    fn bad_requests_get_openai_errors() {
        let (server, _) = toy_server();
        let cases: Vec<(&str, &str, String, u16, &str)> = vec![
            (
                "POST",
                "/v1/completions",
                "{not json".into(),
                400,
                "not valid JSON",
            ),
            (
                "POST",
                "/v1/completions",
                "[1, 2]".into(),
                400,
                "must be a JSON object",
            ),
            (
                "POST",
                "/v1/completions",
                "{}".into(),
                400,
                "missing field `prompt`",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": [[1, 99999]]}).to_string(),
                400,
                "outside the vocabulary",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": [1.5]}).to_string(),
                400,
                "`prompt` must be",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": "x", "max_tokens": -1}).to_string(),
                400,
                "`max_tokens` must be",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": "x", "max_tokens": 10000}).to_string(),
                400,
                "maximum context length",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": "x", "stream": true, "echo": true}).to_string(),
                400,
                "`stream` takes one prompt",
            ),
            // Adversarial run, failure 2: these wrapped the context check.
            (
                "POST",
                "/v1/completions",
                json!({"prompt": [1], "max_tokens": u64::MAX}).to_string(),
                400,
                "maximum context length",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": [1], "max_tokens": u64::MAX - 1}).to_string(),
                400,
                "maximum context length",
            ),
            (
                "POST",
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": u64::MAX, "stream": true}).to_string(),
                400,
                "maximum context length",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": "x", "logprobs": 50}).to_string(),
                400,
                "`logprobs` must be at most",
            ),
            (
                "POST",
                "/v1/completions",
                json!({"prompt": "x", "model": "gpt-4"}).to_string(),
                404,
                "does not exist",
            ),
            (
                "POST",
                "/v1/chat/completions",
                json!({"messages": []}).to_string(),
                400,
                "`messages` is empty",
            ),
            (
                "POST",
                "/v1/chat/completions",
                json!({"messages": [{"content": "x"}]}).to_string(),
                400,
                "no string `role`",
            ),
            (
                "POST",
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "x"}], "response_format": "json"})
                    .to_string(),
                400,
                "`response_format`",
            ),
            ("GET", "/v1/completions", String::new(), 405, "takes POST"),
            ("GET", "/v2/whatever", String::new(), 404, "no route"),
        ];
        for (method, path, body, status, want) in cases {
            let (got, resp) = http(server.addr(), method, path, &body);
            assert_eq!(got, status, "{method} {path} {body}: {resp}");
            let message = resp["error"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{resp}"));
            assert!(message.contains(want), "{message} should contain {want}");
            assert!(resp["error"]["type"].is_string());
        }
        // The server still answers after all that.
        assert_eq!(http(server.addr(), "GET", "/health", "").0, 200);
        server.shutdown();
    }

    /// Reads an SSE answer to its end: the `data:` payloads.
    fn sse_events(addr: SocketAddr, path: &str, body: &Json) -> Vec<String> {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let body = body.to_string();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, payload) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(head.contains("text/event-stream"), "{head}");
        // Chunked transfer coding: size lines, then data.
        let mut data = String::new();
        let mut rest = payload;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            data.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        assert!(data.ends_with("\n\n"), "{data:?}");
        data.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("{e:?}"))
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn streamed_completions_concatenate_to_the_whole_answer() {
        let (server, _) = toy_server();
        let request = json!({"prompt": "abc", "max_tokens": 12, "temperature": 0});
        let (status, whole) = http(
            server.addr(),
            "POST",
            "/v1/completions",
            &request.to_string(),
        );
        assert_eq!(status, 200, "{whole}");
        let mut streamed = request.clone();
        streamed["stream"] = json!(true);
        let events = sse_events(server.addr(), "/v1/completions", &streamed);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Json> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            whole["choices"][0]["finish_reason"]
        );

        let chat = json!({"messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 10, "temperature": 0});
        let (status, whole) = http(
            server.addr(),
            "POST",
            "/v1/chat/completions",
            &chat.to_string(),
        );
        assert_eq!(status, 200, "{whole}");
        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        let events = sse_events(server.addr(), "/v1/chat/completions", &streamed);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Json> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            text,
            whole["choices"][0]["message"]["content"].as_str().unwrap()
        );
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            whole["choices"][0]["finish_reason"]
        );
        server.shutdown();
    }

    /// The toy model, 20 ms per generated token, stopping when asked to:
    /// slow enough to see a generation stop when its client leaves.
    struct SlowModel(ToyModel);

    impl LanguageModel for SlowModel {
        fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
            LanguageModel::encode(&self.0, text, add_special_tokens)
        }
        fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
            self.0.decode(ids, skip_special_tokens)
        }
        fn vocab_size(&self) -> usize {
            self.0.vocab_size()
        }
        fn eos_token_ids(&self) -> Vec<u32> {
            Vec::new()
        }
        fn max_context(&self) -> usize {
            1 << 20
        }
        fn loglikelihood(&self, r: &[(Vec<u32>, Vec<u32>)]) -> Vec<runtime::LogLikelihood> {
            self.0.loglikelihood(r)
        }
        fn token_logprobs(&self, t: &[u32], k: usize) -> Vec<Option<runtime::TokenLogprob>> {
            self.0.token_logprobs(t, k)
        }
        fn generate(
            &self,
            prompts: &[Vec<u32>],
            opts: &GenerateOptions,
        ) -> Vec<runtime::Generation> {
            prompts
                .iter()
                .map(|p| self.generate_each(p, opts, &mut |_| true))
                .collect()
        }
        fn generate_each(
            &self,
            _prompt: &[u32],
            opts: &GenerateOptions,
            on_token: &mut dyn FnMut(u32) -> bool,
        ) -> runtime::Generation {
            let mut tokens = Vec::new();
            while tokens.len() < opts.max_tokens {
                std::thread::sleep(std::time::Duration::from_millis(20));
                tokens.push(u32::from(b'a'));
                if !on_token(u32::from(b'a')) {
                    break;
                }
            }
            runtime::Generation {
                logprobs: vec![0.0; tokens.len()],
                tokens,
                finish_reason: FinishReason::Length,
            }
        }
        fn render_chat(&self, m: &[ChatMessage], add: bool) -> Result<String, String> {
            self.0.render_chat(m, add)
        }
    }

    /// Adversarial run, failure 2: a generation went on after its client
    /// disconnected and blocked every other completion.
    #[test]
    fn generation_stops_when_the_client_goes_away() {
        let server =
            Server::start(Arc::new(SlowModel(ToyModel::new(7))), "slow", "127.0.0.1:0").unwrap();
        let addr = server.addr();
        // 2,000 tokens would take 40 s; each client leaves after 300 ms.
        for stream in [false, true] {
            let before = server.generated_tokens();
            let body = json!({"prompt": "x", "max_tokens": 2000, "stream": stream}).to_string();
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "POST /v1/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(s);
            // The next completion is answered promptly.
            let started = std::time::Instant::now();
            let (status, resp) = http(
                addr,
                "POST",
                "/v1/completions",
                &json!({"prompt": "x", "max_tokens": 2}).to_string(),
            );
            assert_eq!(status, 200, "{resp}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "stream {stream}: {:?}",
                started.elapsed()
            );
            let generated = server.generated_tokens() - before;
            assert!(
                generated < 200,
                "stream {stream}: {generated} tokens generated"
            );
        }
        server.shutdown();
    }

    #[test]
    fn binds_only_to_loopback() {
        let err = Server::start(Arc::new(ToyModel::new(1)), "toy", "0.0.0.0:0")
            .err()
            .unwrap();
        assert!(err.contains("loopback"), "{err}");
    }

    /// The golden tiny Qwen2 model of tests/golden (made with transformers):
    /// the server's echo log-probabilities are the runtime's.
    #[test]
    fn golden_model_logprobs_equal_token_logprobs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/qwen2");
        let model: Arc<dyn LanguageModel> = Arc::from(runtime::load(&dir).unwrap());
        let server = Server::start(model.clone(), "qwen2", "127.0.0.1:0").unwrap();
        let ids = model
            .encode("The patient presented with fever.", false)
            .unwrap();
        let body = json!({"prompt": [ids], "max_tokens": 0, "logprobs": 3, "echo": true});
        let (status, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{resp}");
        let flow = runtime::load(&dir).unwrap();
        let expected = flow.token_logprobs(&ids, 3);
        let lp = &resp["choices"][0]["logprobs"];
        assert!(lp["token_logprobs"][0].is_null());
        for i in 1..ids.len() {
            let e = expected[i].as_ref().unwrap();
            assert!(
                (lp["token_logprobs"][i].as_f64().unwrap() - e.logprob as f64).abs() < 1e-6,
                "position {i}"
            );
        }
        let ctxlen = 3;
        let summed: f64 = (ctxlen..ids.len())
            .map(|i| lp["token_logprobs"][i].as_f64().unwrap())
            .sum();
        let ll = flow.loglikelihood(&[(ids[..ctxlen].to_vec(), ids[ctxlen..].to_vec())])[0];
        assert!(
            (summed - ll.logprob).abs() < 1e-3,
            "{summed} vs {}",
            ll.logprob
        );
        let (status, resp) = http(
            server.addr(),
            "POST",
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0}).to_string(),
        );
        assert_eq!(status, 200, "{resp}");
        assert!(resp["choices"][0]["message"]["content"].is_string());
        server.shutdown();
    }
}
