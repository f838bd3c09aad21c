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

mod completions;
mod request;
mod stream;
#[cfg(test)]
mod tests;

use completions::*;
use request::*;
use stream::*;

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
    /// Where the model computes (a device that does not open: the CPU, said).
    pub device: crate::op::Device,
    /// The weights' type on the CPU.
    pub dtype: runtime::WeightDtype,
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
    let notice = |line: &str| eprintln!("flow serve: {line}");
    let gpu = runtime::cuda_backend(opts.device, &notice);
    let model = runtime::load_on(model_dir, gpu, opts.dtype, &notice)?;
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
