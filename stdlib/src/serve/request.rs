//! The request's fields: sampling parameters, prompts and chat messages, checked
//! into typed values (a bad field is a 400 naming it).

use super::*;

// ---------------------------------------------------------------------------
// Parameters

pub(super) struct Sampling {
    pub(super) max_tokens: Option<usize>,
    pub(super) temperature: f32,
    pub(super) top_p: f32,
    pub(super) seed: u64,
    pub(super) stop: Vec<String>,
    pub(super) stream: bool,
}

pub(super) fn opt_number(
    req: &Map<String, Json>,
    name: &'static str,
) -> Result<Option<f64>, ApiError> {
    match req.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ApiError::bad(
            format!("`{name}` must be a number, got {other}"),
            Some(name),
        )),
    }
}

pub(super) fn opt_uint(
    req: &Map<String, Json>,
    name: &'static str,
) -> Result<Option<u64>, ApiError> {
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

pub(super) fn opt_bool(req: &Map<String, Json>, name: &'static str) -> Result<bool, ApiError> {
    match req.get(name) {
        None | Some(Json::Null) => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad(
            format!("`{name}` must be true or false, got {other}"),
            Some(name),
        )),
    }
}

pub(super) fn sampling(
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
// /v1/completions

/// The prompts of a completions request: texts or token ids.
pub(super) enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

pub(super) fn token_list(list: &[Json]) -> Option<Vec<u32>> {
    list.iter()
        .map(|v| v.as_u64().and_then(|u| u32::try_from(u).ok()))
        .collect()
}

pub(super) fn parse_prompts(value: Option<&Json>) -> Result<Vec<Prompt>, ApiError> {
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

pub(super) fn parse_messages(value: Option<&Json>) -> Result<Vec<ChatMessage>, ApiError> {
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
