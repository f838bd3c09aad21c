//! `stream: true`: the answer as server-sent events in OpenAI's chunk format.

use super::*;

/// Makes one chunk object around a choice: `(choice fields, finish_reason)`.
pub(super) type ChunkMaker = Box<dyn Fn(Json, Json) -> Json + Send>;

/// The chunk maker of one streamed answer, and how its text goes in a choice.
pub(super) fn stream_chunk_maker(
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

pub(super) fn chunk_of_choice(
    maker: &(ChunkMaker, fn(&str) -> Json),
    choice: Json,
    finish: Json,
) -> Json {
    (maker.0)(choice, finish)
}

pub(super) fn sse(chunk: &Json) -> String {
    format!("data: {chunk}\n\n")
}

/// Streams the generation for `prompt`: `opening` first (the chat role),
/// then the text as it is made, held back while it might be the start of a
/// stop string or ends in a partial character, then the finish reason and
/// `[DONE]`. Generation stops when the client goes away.
pub(super) fn stream_answer(
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
        // A model that failed mid-stream: an error event, as OpenAI-compatible
        // servers send, and no `[DONE]`, so the client cannot take the text
        // sent so far for a whole answer.
        let generation = match generation.transpose() {
            Ok(g) => g,
            Err(e) => {
                let error = json!({"error": {"message": e.message, "type": "server_error", "code": e.status}});
                sink.send(sse(&error));
                return;
            }
        };
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
