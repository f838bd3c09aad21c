//! Chat backends shared by `annotate` (and usable by `judge`): one trait,
//! [`ChatBackend`], with an OpenAI-compatible HTTP client ([`OpenAiBackend`])
//! and the local model runtime ([`LocalBackend`], greedy generation with the
//! model's chat template).
//!
//! API keys: the HTTP backend takes the NAME of an environment variable and
//! reads the key from it when built; the key is kept in a private field, is
//! never printed by `Debug` or [`ChatBackend::describe`], and never goes into
//! an error message.

use std::time::Duration;

use serde_json::{json, Value as Json};

pub use flow_model::ChatMessage;

use crate::artifacts::FailedRequest;
use crate::model::runtime::LanguageModel;

/// One chat completion request.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// A JSON schema the answer must follow, sent as OpenAI's
    /// `response_format: {type: "json_schema", ...}` where the backend takes it.
    pub json_schema: Option<Json>,
}

/// Why a chat request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatError {
    /// The server could not be reached or did not answer in time (after retries).
    Transport(String),
    /// The server answered with an error status (after retries for 429/5xx).
    Status(u16, String),
    /// The server's answer was not an OpenAI chat completion.
    BadResponse(String),
    /// The local model failed.
    Model(String),
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatError::Transport(e) => write!(f, "request failed: {e}"),
            ChatError::Status(s, body) => write!(f, "server answered HTTP {s}: {body}"),
            ChatError::BadResponse(e) => write!(f, "malformed answer: {e}"),
            ChatError::Model(e) => write!(f, "local model: {e}"),
        }
    }
}

impl std::error::Error for ChatError {}

impl ChatError {
    /// What kind of failure this is, for artifacts: they record the class
    /// and [`ChatError::status`], never the server's text (which may echo a
    /// key or a document).
    pub fn class(&self) -> &'static str {
        match self {
            ChatError::Transport(_) => "transport",
            ChatError::Status(401 | 403, _) => "unauthorized",
            ChatError::Status(..) => "http_status",
            ChatError::BadResponse(_) => "malformed_answer",
            ChatError::Model(_) => "local_model",
        }
    }

    /// The HTTP status the server answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ChatError::Status(s, _) => Some(*s),
            _ => None,
        }
    }

    /// Whether the key was refused (401/403): every further request would
    /// be refused too, so callers stop at once instead of counting failures.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ChatError::Status(401 | 403, _))
    }

    /// What artifacts store about the failed call for item `id`.
    pub fn failed_request(&self, id: &str) -> FailedRequest {
        FailedRequest {
            class: self.class().to_owned(),
            status: self.status(),
            id: id.to_owned(),
        }
    }
}

/// Shortest piece of the key that [`redact_key`] removes: servers often echo
/// a truncated key (`sk-abc...wxyz`), so any run of at least this many
/// characters of the key is a leak; shorter runs are too common in ordinary
/// text to mean anything.
pub const MIN_KEY_FRAGMENT: usize = 8;

/// `text` with every run of [`MIN_KEY_FRAGMENT`] or more characters that is
/// a substring of `key` (the whole key included) replaced by `[REDACTED]`.
pub fn redact_key(text: &str, key: &str) -> String {
    if key.chars().count() < MIN_KEY_FRAGMENT {
        // A key this short cannot be told from ordinary text; only the
        // whole key is removed.
        return if key.is_empty() {
            text.to_string()
        } else {
            text.replace(key, "[REDACTED]")
        };
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // the longest run starting at i that occurs in the key
        let mut longest = 0;
        let mut end = i + MIN_KEY_FRAGMENT;
        while end <= chars.len() {
            let piece: String = chars[i..end].iter().collect();
            if !key.contains(&piece) {
                break;
            }
            longest = end - i;
            end += 1;
        }
        if longest >= MIN_KEY_FRAGMENT {
            out.push_str("[REDACTED]");
            i += longest;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A chat model: a request in, the assistant's text out.
pub trait ChatBackend: Send + Sync {
    /// The assistant message's content.
    fn chat(&self, req: &ChatRequest) -> Result<String, ChatError>;
    /// The most likely of `options` as the assistant's answer (returned
    /// as it is), where the backend can score them (the local runtime, by
    /// log-likelihood); `None` where it cannot.
    fn choose(
        &self,
        _messages: &[ChatMessage],
        _options: &[String],
    ) -> Option<Result<String, ChatError>> {
        None
    }
    /// The log-likelihood of each of `options` as the assistant's answer,
    /// where the backend can score them (the local runtime); `None` where
    /// it cannot.
    fn scores(
        &self,
        _messages: &[ChatMessage],
        _options: &[String],
    ) -> Option<Result<Vec<f64>, ChatError>> {
        None
    }
    /// What to record in artifacts (backend, model, endpoint; never a key).
    fn describe(&self) -> Json;
    /// Requests worth running at once.
    fn concurrency(&self) -> usize;
    /// Whether `json_schema` is honoured (constrained output).
    fn supports_json_schema(&self) -> bool;
}

/// Settings of [`OpenAiBackend`].
#[derive(Clone, Debug)]
pub struct OpenAiSettings {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`;
    /// requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable holding the API key; empty: no key.
    pub api_key_env: String,
    pub concurrency: usize,
    /// Retries after the first attempt, on transport errors, 429 and 5xx.
    pub retries: u32,
    /// Wait before retry `k` (0-based) is `backoff × 2^k`.
    pub backoff: Duration,
    /// Limit for one whole request.
    pub timeout: Duration,
    /// Whether to send `response_format` with the JSON schema.
    pub json_schema: bool,
}

/// An OpenAI-compatible `/chat/completions` client (vLLM, llama.cpp server,
/// TGI, OpenAI, `flow serve`...).
pub struct OpenAiBackend {
    settings: OpenAiSettings,
    api_key: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("settings", &self.settings)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiBackend {
    /// Builds the client; reads the key from `settings.api_key_env`. Errors
    /// name the variable, never its value.
    pub fn new(settings: OpenAiSettings) -> Result<OpenAiBackend, String> {
        let api_key = if settings.api_key_env.is_empty() {
            None
        } else {
            match std::env::var(&settings.api_key_env) {
                Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
                _ => {
                    return Err(format!(
                        "environment variable {} (api_key_env) is not set or empty",
                        settings.api_key_env
                    ))
                }
            }
        };
        if !(settings.base_url.starts_with("http://") || settings.base_url.starts_with("https://"))
        {
            return Err(format!(
                "base_url {:?} must start with http:// or https://",
                settings.base_url
            ));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(settings.concurrency.max(1))
            .build()
            .into();
        Ok(OpenAiBackend {
            settings,
            api_key,
            agent,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.settings.base_url.trim_end_matches('/')
        )
    }

    /// The first `max_chars` characters of a server's text with the key
    /// redacted: error messages are logged, and a server may echo the key.
    fn excerpt(&self, text: &str, max_chars: usize) -> String {
        // Redact before cutting, with room for a key straddling the cut.
        let room = max_chars + self.api_key.as_ref().map_or(0, |k| k.chars().count());
        let head: String = text.chars().take(room).collect();
        let clean = match &self.api_key {
            Some(key) => redact_key(&head, key),
            None => head,
        };
        clean.chars().take(max_chars).collect()
    }

    fn once(&self, body: &str) -> Result<String, (bool, ChatError)> {
        let mut req = self
            .agent
            .post(self.url())
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let resp = req.send(body).map_err(|e| {
            (
                true,
                ChatError::Transport(format!(
                    "{}: {}",
                    self.url(),
                    self.excerpt(&e.to_string(), 300)
                )),
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| {
                (
                    true,
                    ChatError::Transport(format!("reading the answer: {e}")),
                )
            })?;
        if status != 200 {
            let retry = status == 429 || status >= 500;
            let short = self.excerpt(&text, 300);
            if status == 401 || status == 403 {
                let key = if self.settings.api_key_env.is_empty() {
                    "no key was sent (api_key_env is empty)".to_string()
                } else {
                    format!("check the key in ${}", self.settings.api_key_env)
                };
                return Err((
                    false,
                    ChatError::Status(
                        status,
                        format!("{short} ({} refused the request; {key})", self.url()),
                    ),
                ));
            }
            return Err((retry, ChatError::Status(status, short)));
        }
        let v: Json = serde_json::from_str(&text).map_err(|e| {
            let short = self.excerpt(&text, 200);
            (
                false,
                ChatError::BadResponse(format!("not JSON ({e}): {short:?}")),
            )
        })?;
        match v["choices"][0]["message"]["content"].as_str() {
            Some(c) => Ok(c.to_string()),
            None => {
                let short = self.excerpt(&text, 200);
                Err((
                    false,
                    ChatError::BadResponse(format!("no choices[0].message.content in {short:?}")),
                ))
            }
        }
    }
}

impl ChatBackend for OpenAiBackend {
    fn chat(&self, req: &ChatRequest) -> Result<String, ChatError> {
        let mut body = json!({
            "model": self.settings.model,
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
        });
        if let (Some(schema), true) = (&req.json_schema, self.settings.json_schema) {
            body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": true}});
        }
        let body = body.to_string();
        let mut attempt = 0u32;
        loop {
            match self.once(&body) {
                Ok(c) => return Ok(c),
                Err((retry, e)) => {
                    if !retry || attempt >= self.settings.retries {
                        return Err(e);
                    }
                    std::thread::sleep(self.settings.backoff * 2u32.saturating_pow(attempt));
                    attempt += 1;
                }
            }
        }
    }

    fn describe(&self) -> Json {
        json!({
            "backend": "openai",
            "base_url": self.settings.base_url,
            "model": self.settings.model,
            "api_key_env": self.settings.api_key_env,
            "json_schema": self.settings.json_schema,
            "retries": self.settings.retries,
            "timeout_s": self.settings.timeout.as_secs_f64(),
        })
    }

    fn concurrency(&self) -> usize {
        self.settings.concurrency.max(1)
    }

    fn supports_json_schema(&self) -> bool {
        self.settings.json_schema
    }
}

/// The local model runtime: the model's chat template, then greedy
/// generation (temperature from the request) until EOS or `max_tokens`.
pub struct LocalBackend {
    /// The model on the node's device (`runtime::load_for`).
    model: Box<dyn LanguageModel>,
    /// How results name the model (see `OpContext::input_name`).
    name: String,
    /// Log-likelihoods of the options after a content-free prompt, by that
    /// prompt's text: the same for every document of a run.
    content_free: std::sync::Mutex<std::collections::HashMap<String, Vec<f64>>>,
}

/// A log-likelihood request: the context's tokens, then the continuation's.
type ContinuationRequest = (Vec<u32>, Vec<u32>);

impl LocalBackend {
    /// `model`, which results call `name` (its identity,
    /// `OpContext::input_name`, never its place in the cache). A model
    /// without a chat template cannot be asked: an error here.
    pub fn new(model: Box<dyn LanguageModel>, name: String) -> Result<LocalBackend, String> {
        let probe = [ChatMessage {
            role: "user".into(),
            content: String::new(),
        }];
        model.render_chat(&probe, true)?;
        Ok(LocalBackend {
            model,
            name,
            content_free: Default::default(),
        })
    }

    /// One log-likelihood request per option: the rendered prompt's tokens,
    /// then the option's.
    fn option_requests(
        &self,
        messages: &[ChatMessage],
        options: &[String],
    ) -> Result<Vec<ContinuationRequest>, ChatError> {
        let prompt = self
            .model
            .render_chat(messages, true)
            .map_err(ChatError::Model)?;
        let context = self
            .model
            .encode(&prompt, false)
            .map_err(ChatError::Model)?;
        options
            .iter()
            .map(|o| {
                Ok((
                    context.clone(),
                    self.model.encode(o, false).map_err(ChatError::Model)?,
                ))
            })
            .collect()
    }

    /// The summed log-probability of each request's continuation.
    fn logprobs(&self, requests: &[ContinuationRequest]) -> Result<Vec<f64>, ChatError> {
        let scored = self
            .model
            .loglikelihood(requests)
            .map_err(ChatError::Model)?;
        Ok(scored.iter().map(|s| s.logprob).collect())
    }
}

impl ChatBackend for LocalBackend {
    fn chat(&self, req: &ChatRequest) -> Result<String, ChatError> {
        let prompt = self
            .model
            .render_chat(&req.messages, true)
            .map_err(ChatError::Model)?;
        // the template already holds the special tokens (BOS etc.)
        let ids = self
            .model
            .encode(&prompt, false)
            .map_err(ChatError::Model)?;
        let opts = flow_model::GenerateOptions {
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            ..Default::default()
        };
        let out = self
            .model
            .generate(&[ids], &opts)
            .map_err(ChatError::Model)?;
        let generation = out
            .into_iter()
            .next()
            .ok_or_else(|| ChatError::Model("no generation".into()))?;
        self.model
            .decode(&generation.tokens, true)
            .map_err(ChatError::Model)
    }

    fn choose(
        &self,
        messages: &[ChatMessage],
        options: &[String],
    ) -> Option<Result<String, ChatError>> {
        let scored = (|| {
            let requests = self.option_requests(messages, options)?;
            let scores = self.logprobs(&requests)?;
            // Calibrated against a content-free prompt (the same messages
            // with every user message emptied): log P(option | prompt) −
            // log P(option | content-free prompt), the domain-conditional
            // PMI of Holtzman et al. (2021). A small model's raw scores
            // prefer one label for every text (SmolLM2-135M labelled all
            // 40 demo documents alike); the difference measures what the
            // text itself adds. Length effects cancel in the difference.
            let empty: Vec<ChatMessage> = messages
                .iter()
                .map(|m| ChatMessage {
                    role: m.role.clone(),
                    content: if m.role == "user" {
                        String::new()
                    } else {
                        m.content.clone()
                    },
                })
                .collect();
            let free_prompt = self
                .model
                .render_chat(&empty, true)
                .map_err(ChatError::Model)?;
            let cache_key = format!("{free_prompt}\u{0}{}", options.join("\u{0}"));
            let cached = self
                .content_free
                .lock()
                .ok()
                .and_then(|c| c.get(&cache_key).cloned());
            let baseline = match cached {
                Some(b) => b,
                None => {
                    let free = self
                        .model
                        .encode(&free_prompt, false)
                        .map_err(ChatError::Model)?;
                    let free_requests: Vec<_> = requests
                        .iter()
                        .map(|(_, option)| (free.clone(), option.clone()))
                        .collect();
                    let b = self.logprobs(&free_requests)?;
                    if let Ok(mut c) = self.content_free.lock() {
                        c.insert(cache_key, b.clone());
                    }
                    b
                }
            };
            // The first option wins ties.
            let best = scores
                .iter()
                .zip(&baseline)
                .map(|(s, b)| s - b)
                .enumerate()
                .fold(None::<(usize, f64)>, |best, (i, s)| match best {
                    Some((_, b)) if b >= s || s.is_nan() => best,
                    _ => Some((i, s)),
                })
                .map(|(i, _)| i)
                .ok_or_else(|| ChatError::Model("no options to choose from".into()))?;
            Ok(options[best].clone())
        })();
        Some(scored)
    }

    fn scores(
        &self,
        messages: &[ChatMessage],
        options: &[String],
    ) -> Option<Result<Vec<f64>, ChatError>> {
        let scored = self
            .option_requests(messages, options)
            .and_then(|requests| self.logprobs(&requests));
        Some(scored)
    }

    fn describe(&self) -> Json {
        json!({"backend": "local", "model": self.name, "decoding": "greedy; choices by log-likelihood calibrated against a content-free prompt (domain-conditional PMI); annotate's labels by batch calibration"})
    }

    fn concurrency(&self) -> usize {
        1
    }

    fn supports_json_schema(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A server answering every chat completion with `ok`.
    fn server() -> crate::http::HttpServer {
        let handler: crate::http::Handler = Arc::new(|_: &crate::http::Request| {
            let answer = json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}]});
            crate::http::Response::json(200, &answer)
        });
        crate::http::HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            crate::http::Limits::default(),
            handler,
        )
        .unwrap()
    }

    #[test]
    fn key_fragments_are_redacted() {
        let key = "sk-proj-abcdefghijklmnop1234";
        let echoed =
            format!("Incorrect API key provided: {key}. Also sk-proj-ab...op1234 and abcdefgh.");
        let clean = redact_key(&echoed, key);
        assert!(!clean.contains(key), "{clean}");
        assert!(!clean.contains("abcdefgh"), "{clean}");
        assert!(
            clean.contains("Incorrect API key provided: [REDACTED]"),
            "{clean}"
        );
        // ordinary text and short overlaps stay
        assert_eq!(redact_key("the sk- prefix", key), "the sk- prefix");
        assert_eq!(redact_key("x", ""), "x");
    }

    #[test]
    fn concurrent_requests_over_pooled_connections_all_complete() {
        let server = server();
        let backend = OpenAiBackend::new(OpenAiSettings {
            base_url: format!("http://{}/v1", server.addr()),
            model: "m".into(),
            api_key_env: String::new(),
            concurrency: 8,
            retries: 0,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            json_schema: false,
        })
        .unwrap();
        let req = ChatRequest {
            messages: vec![ChatMessage {
                role: "user".into(),
                // A request of the size and alphabet of an annotation
                // prompt: tiny_http stalled on these now and then.
                content: "Ärztliche Überweisung an die Station. ".repeat(45),
            }],
            max_tokens: 4,
            temperature: 0.0,
            json_schema: None,
        };
        // Eight workers sharing one agent, as `annotate` and `judge` run it;
        // without retries, a request stalled on a pooled connection would
        // surface as a timeout error here.
        let answers: Vec<Result<String, ChatError>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..5).map(|_| backend.chat(&req)).collect::<Vec<_>>()))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert_eq!(answers.len(), 40);
        for a in answers {
            assert_eq!(a, Ok("ok".to_string()));
        }
        server.shutdown();
    }
}
