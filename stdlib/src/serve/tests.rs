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
    let generated = model
        .generate(
            std::slice::from_ref(&whole),
            &GenerateOptions {
                max_tokens: 1,
                ..Default::default()
            },
        )
        .unwrap();
    full.extend(&generated[0].tokens);
    let expected = model.token_logprobs(&full, 1).unwrap();
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
    let ll = model.loglikelihood(&[(ctx.clone(), cont.clone())]).unwrap()[0];
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
    let expected = model.token_logprobs(&ids, 2).unwrap();
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
    let greedy = model
        .generate(
            std::slice::from_ref(&ids),
            &GenerateOptions {
                max_tokens: 8,
                ..Default::default()
            },
        )
        .unwrap();
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
    let g = model
        .generate(
            std::slice::from_ref(&ids),
            &GenerateOptions {
                max_tokens: 6,
                ..Default::default()
            },
        )
        .unwrap();
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
    fn loglikelihood(
        &self,
        r: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<runtime::LogLikelihood>, String> {
        self.0.loglikelihood(r)
    }
    fn token_logprobs(
        &self,
        t: &[u32],
        k: usize,
    ) -> Result<Vec<Option<runtime::TokenLogprob>>, String> {
        self.0.token_logprobs(t, k)
    }
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
    ) -> Result<Vec<runtime::Generation>, String> {
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
    ) -> Result<runtime::Generation, String> {
        let mut tokens = Vec::new();
        while tokens.len() < opts.max_tokens {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tokens.push(u32::from(b'a'));
            if !on_token(u32::from(b'a')) {
                break;
            }
        }
        Ok(runtime::Generation {
            logprobs: vec![0.0; tokens.len()],
            tokens,
            finish_reason: FinishReason::Length,
        })
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

/// The transformers goldens of the tiny Qwen2 model (tests/golden/make_golden.py):
/// `golden.json` (inputs, continuation log-likelihoods, greedy tokens) and
/// the logits of each input in `golden.safetensors`.
struct Golden {
    json: Json,
    logits: std::collections::HashMap<String, Vec<f32>>,
}

fn qwen2_golden(dir: &Path) -> Golden {
    let json: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n.starts_with("logits."))
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32, "{n}");
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, data)
        })
        .collect();
    Golden { json, logits }
}

fn token_ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// log_softmax(row)[token] in f64.
fn log_softmax_at(row: &[f32], token: u32) -> f64 {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row[token as usize] as f64 - lse
}

/// The server against transformers: the echoed log-probability of every
/// prompt token, the top-3 alternatives, the summed continuation
/// log-likelihood lm-eval takes from them, and the greedy completion.
#[test]
fn golden_model_serves_the_log_probabilities_and_greedy_tokens_of_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/qwen2");
    let golden = qwen2_golden(&dir);
    let model: Arc<dyn LanguageModel> = Arc::from(runtime::load(&dir).unwrap());
    let server = Server::start(model.clone(), "qwen2", "127.0.0.1:0").unwrap();
    let inputs = golden.json["inputs"].as_array().unwrap();
    for (i, input) in inputs.iter().enumerate() {
        let ids = token_ids(input);
        let logits = &golden.logits[&format!("logits.{i}")];
        let vocab = logits.len() / ids.len();
        assert_eq!(logits.len(), ids.len() * vocab, "input {i}");
        let body = json!({"prompt": [ids], "max_tokens": 0, "logprobs": 3, "echo": true});
        let (status, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{resp}");
        let lp = &resp["choices"][0]["logprobs"];
        assert!(lp["token_logprobs"][0].is_null());
        for j in 1..ids.len() {
            let row = &logits[(j - 1) * vocab..j * vocab];
            let want = log_softmax_at(row, ids[j]);
            let got = lp["token_logprobs"][j].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "input {i}, position {j}: {got} vs {want}"
            );
            // The three most likely next tokens by transformers' logits,
            // and the prompt's own token (OpenAI's format adds it).
            let mut order: Vec<u32> = (0..vocab as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
            let mut top: Vec<u32> = order[..3].to_vec();
            if !top.contains(&ids[j]) {
                top.push(ids[j]);
            }
            let want_top: Vec<f64> = top.iter().map(|&t| log_softmax_at(row, t)).collect();
            let got_top: Vec<f64> = lp["top_logprobs"][j]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_f64().unwrap())
                .collect();
            // Keys are token texts: tokens that decode alike share one
            // entry, so each served value is one of transformers'.
            assert!(
                !got_top.is_empty() && got_top.len() <= want_top.len(),
                "input {i}, position {j}"
            );
            for g in &got_top {
                assert!(
                    want_top.iter().any(|w| (g - w).abs() < 1e-4),
                    "input {i}, position {j}: top {g} not among {want_top:?}"
                );
            }
            let best = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!(
                (best(&got_top) - best(&want_top)).abs() < 1e-4,
                "input {i}, position {j}"
            );
        }
        // lm-eval's loglikelihood: the sum over the continuation's tokens.
        let ll = &golden.json["loglikelihood"][i];
        let ctxlen = ll["context"].as_array().unwrap().len();
        assert_eq!(token_ids(&ll["continuation"]), ids[ctxlen..]);
        let summed: f64 = (ctxlen..ids.len())
            .map(|j| lp["token_logprobs"][j].as_f64().unwrap())
            .sum();
        let want = ll["logprob"].as_f64().unwrap();
        assert!(
            (summed - want).abs() < 1e-3,
            "input {i}: {summed} vs {want}"
        );

        // Greedy decoding: transformers' 12 new tokens, as text.
        let greedy = token_ids(&golden.json["greedy"][i]);
        let body = json!({"prompt": [ids], "max_tokens": greedy.len(), "temperature": 0});
        let (status, resp) = http(server.addr(), "POST", "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{resp}");
        assert_eq!(
            resp["choices"][0]["text"].as_str().unwrap(),
            model.decode(&greedy, false).unwrap(),
            "input {i}"
        );
        assert_eq!(
            resp["usage"]["completion_tokens"],
            greedy.len(),
            "input {i}"
        );
    }
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
