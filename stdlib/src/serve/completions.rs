//! The two endpoints, `/v1/completions` and `/v1/chat/completions`, and the
//! generation they share.

use super::*;

// ---------------------------------------------------------------------------
// Generation shared by both endpoints

pub(super) struct Completion {
    /// Generated tokens shown to the client (no stop token).
    pub(super) tokens: Vec<u32>,
    pub(super) text: String,
    pub(super) finish_reason: &'static str,
}

pub(super) fn check_prompt(
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

pub(super) fn decode(state: &State, ids: &[u32], skip_special: bool) -> Result<String, ApiError> {
    state.model.decode(ids, skip_special).map_err(|e| ApiError {
        status: 500,
        message: format!("decoding: {e}"),
        param: None,
    })
}

pub(super) fn generate_options(s: &Sampling, max_tokens: usize) -> GenerateOptions {
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
pub(super) fn generate_each(
    state: &State,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<runtime::Generation, ApiError> {
    let _turn = state.compute.lock().unwrap_or_else(|e| e.into_inner());
    state
        .model
        .generate_each(prompt, opts, &mut |token| {
            state.generated_tokens.fetch_add(1, Ordering::Relaxed);
            on_token(token)
        })
        .map_err(model_failed)
}

/// A model call that failed (the device did): the server's fault, said.
pub(super) fn model_failed(e: String) -> ApiError {
    ApiError {
        status: 500,
        message: format!("the model failed: {e}"),
        param: None,
    }
}

pub(super) fn run_generation(
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
    let generation = generate_each(state, prompt, &opts, &mut |_| !client.is_gone())?;
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
pub(super) fn client_gone() -> ApiError {
    ApiError {
        status: 499,
        message: "the client went away".into(),
        param: None,
    }
}

pub(super) fn clamp(lp: f32) -> f64 {
    (lp as f64).max(MIN_LOGPROB)
}

/// vLLM's `logprobs` object for `tokens` (the prompt's under `echo`, then the
/// completion's), scored in one pass over `prompt + completion`.
pub(super) fn logprobs_object(
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
        state.model.token_logprobs(&seq, k).map_err(model_failed)?
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

pub(super) fn completions(
    state: &Arc<State>,
    req: &Map<String, Json>,
    client: &Client,
) -> ApiAnswer {
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

pub(super) fn chat_completions(
    state: &Arc<State>,
    req: &Map<String, Json>,
    client: &Client,
) -> ApiAnswer {
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
