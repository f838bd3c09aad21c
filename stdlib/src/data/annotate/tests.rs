use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use super::super::corpus::testutil::*;
use super::super::corpus::Corpus;
use super::*;

#[test]
fn label_parsing_rules() {
    let labels = vec!["medizinisch".to_string(), "allgemein".to_string()];
    assert_eq!(
        parse_label(r#"{"label": "Medizinisch"}"#, &labels).as_deref(),
        Some("medizinisch")
    );
    assert_eq!(
        parse_label("Antwort: ```json\n{\"label\":\"allgemein\"}\n```", &labels).as_deref(),
        Some("allgemein")
    );
    assert_eq!(parse_label(r#"{"label": "sport"}"#, &labels), None);
    assert_eq!(
        parse_label("Das ist allgemein, nicht medizinisch.", &labels).as_deref(),
        Some("allgemein")
    );
    assert_eq!(
        parse_label("Kategorie: MEDIZINISCH", &labels).as_deref(),
        Some("medizinisch")
    );
    // whole words only
    assert_eq!(parse_label("unmedizinischer Text", &labels), None);
    assert_eq!(parse_label("keine Ahnung", &labels), None);
    let overlapping = vec!["medical".to_string(), "non-medical".to_string()];
    assert_eq!(
        parse_label("non-medical", &overlapping).as_deref(),
        Some("non-medical")
    );
}

#[test]
fn prompt_template_sections() {
    let p = PromptTemplate::parse(
        "### system\nDu bist Annotator.\n### user\nText: {text}\nLabels: {labels}",
    )
    .unwrap();
    assert_eq!(p.system.as_deref(), Some("Du bist Annotator."));
    let m = p.messages("Fieber {labels}", &["a".into(), "b".into()]);
    assert_eq!(m[1].content, "Text: Fieber {labels}\nLabels: a, b");
    assert!(PromptTemplate::parse("no placeholder").is_err());
    let demo = std::fs::read_to_string(demo_dir().join("annotate_prompt.txt")).unwrap();
    let p = PromptTemplate::parse(&demo).unwrap();
    assert!(p.system.is_some() && p.user.contains("{text}"));
}

/// What the test server does for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Answers `{"label": <medizinisch if the text mentions a medical word>}`.
    Normal,
    /// Plain text instead of a chat completion.
    Garbage,
    /// A completion whose content names no label.
    NoLabel,
    /// HTTP 500 on the first request of each document, then normal.
    FailOnce,
    /// Answers after 2 s.
    Slow,
    /// HTTP 401 whose body echoes the key from the Authorization header.
    Unauthorized,
    /// HTTP 500 for every request of the first two documents asked, else normal.
    FailTwoDocuments,
}

/// Each request's body and Authorization header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    url: String,
    requests: Arc<AtomicU32>,
    bodies: Seen,
    _http: crate::http::HttpServer,
}

fn is_medical(text: &str) -> bool {
    [
        "Diagnose",
        "Patient",
        "Therapie",
        "Medikament",
        "Symptom",
        "Fieber",
        "Dosis",
        "Klinik",
        "Krankheit",
        "Nebenwirkung",
        "Behandlung",
        "ärztlich",
        "Station",
        "Überweisung",
        "Pharmakokinetik",
        "Halbwertszeit",
        "Warnzeichen",
        "Rehabilitation",
        "Studie",
        "Stoffwechsel",
        "Wechselwirkung",
    ]
    .iter()
    .any(|w| text.contains(w))
}

fn start_server(mode: Mode) -> Server {
    let failing: Arc<Mutex<Vec<String>>> = Default::default();
    let requests = Arc::new(AtomicU32::new(0));
    let bodies: Seen = Arc::new(Mutex::new(Vec::new()));
    let (r2, b2) = (requests.clone(), bodies.clone());
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    let handler: crate::http::Handler = Arc::new(move |req: &crate::http::Request| {
        r2.fetch_add(1, Ordering::SeqCst);
        let body = String::from_utf8(req.body.clone()).unwrap();
        let auth = req.header("authorization").map(str::to_owned);
        b2.lock().unwrap().push((body.clone(), auth.clone()));
        let v: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        let user = v["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string();
        // the document sits between the demo prompt's triple quotes
        let doc = user.split("\"\"\"").nth(1).unwrap_or("").to_string();
        let completion = |content: String| {
            json!({"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).to_string()
        };
        let label = if is_medical(&doc) {
            "medizinisch"
        } else {
            "allgemein"
        };
        let (status, text) = match mode {
            Mode::Normal => (200, completion(json!({"label": label}).to_string())),
            Mode::Garbage => (200, "<html>502 Bad Gateway</html>".to_string()),
            Mode::NoLabel => (200, completion("Ich kann das nicht beurteilen.".into())),
            Mode::FailOnce => {
                if seen.lock().unwrap().insert(user.clone()) {
                    (500, "{\"error\":\"overloaded\"}".to_string())
                } else {
                    (200, completion(json!({"label": label}).to_string()))
                }
            }
            Mode::Slow => {
                std::thread::sleep(Duration::from_millis(2000));
                (200, completion(json!({"label": label}).to_string()))
            }
            Mode::Unauthorized => {
                let key = auth.unwrap_or_default().replace("Bearer ", "");
                let short = format!("{}...{}", &key[..10], &key[key.len() - 4..]);
                let message = format!("Incorrect API key provided: {key} ({short})");
                (401, json!({"error": {"message": message}}).to_string())
            }
            Mode::FailTwoDocuments => {
                let mut failing = failing.lock().unwrap();
                if failing.len() < 2 && !failing.contains(&doc) {
                    failing.push(doc.clone());
                }
                if failing.contains(&doc) {
                    (500, "{\"error\":\"overloaded\"}".to_string())
                } else {
                    (200, completion(json!({"label": label}).to_string()))
                }
            }
        };
        crate::http::Response {
            status,
            content_type: "application/json",
            body: text.into_bytes(),
        }
    });
    let http = crate::http::HttpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        crate::http::Limits::default(),
        handler,
    )
    .unwrap();
    Server {
        url: format!("http://{}/v1", http.addr()),
        requests,
        bodies,
        _http: http,
    }
}

fn small_corpus(dir: &Path, n: usize) -> PathBuf {
    let lines: Vec<String> = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
        .unwrap()
        .lines()
        .take(n)
        .map(String::from)
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("in.jsonl"), lines.join("\n")).unwrap();
    let out = dir.join("corpus");
    run_op(
        &Corpus,
        &[("input", Value::Path(dir.join("in.jsonl")))],
        &out,
    )
    .unwrap();
    out
}

fn params(corpus: &Path, url: &str, extra: &[(&'static str, Value)]) -> Vec<(&'static str, Value)> {
    let mut p = vec![
        ("corpus", Value::Path(corpus.to_path_buf())),
        (
            "prompt",
            Value::Path(demo_dir().join("annotate_prompt.txt")),
        ),
        (
            "labels",
            Value::List(vec![
                Value::Str("medizinisch".into()),
                Value::Str("allgemein".into()),
            ]),
        ),
        ("model", Value::Str("mixtral-test".into())),
        ("base_url", Value::Str(url.into())),
        ("backoff_s", Value::Float(0.01)),
        ("timeout_s", Value::Float(5.0)),
        ("concurrency", Value::Int(4)),
    ];
    p.extend(extra.iter().cloned());
    p
}

/// The lines of an `annotations.jsonl`, read through [`Annotation`], as
/// JSON values.
fn read_jsonl(p: &Path) -> Vec<Json> {
    Annotation::read_all(p)
        .unwrap()
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect()
}

#[test]
fn annotate_over_http_labels_every_document_and_keeps_the_key_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 40);
    let server = start_server(Mode::Normal);
    let secret = "sk-test-9f8e7d6c5b4a";
    // SAFETY: set before any thread of this test reads it; the name is unique to this test
    unsafe { std::env::set_var("FLOW_TEST_ANNOTATE_KEY", secret) };
    let out = tmp.path().join("a");
    run_op(
        &Annotate,
        &params(
            &corpus,
            &server.url,
            &[("api_key_env", Value::Str("FLOW_TEST_ANNOTATE_KEY".into()))],
        ),
        &out,
    )
    .unwrap();
    let ann = read_jsonl(&out.join("annotations.jsonl"));
    let docs = read_corpus(&corpus);
    assert_eq!(ann.len(), docs.len());
    for (a, d) in ann.iter().zip(&docs) {
        assert_eq!(a["id"], d["id"], "corpus order");
        let expected = if is_medical(d["text"].as_str().unwrap()) {
            "medizinisch"
        } else {
            "allgemein"
        };
        assert_eq!(a["label"], expected);
    }
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["n"], 40);
    assert_eq!(stats["unparseable"], 0);
    assert_eq!(
        stats["labels"]["medizinisch"].as_u64().unwrap()
            + stats["labels"]["allgemein"].as_u64().unwrap(),
        40
    );
    // the request carried the key, the JSON schema and the document
    let bodies = server.bodies.lock().unwrap();
    let (body, auth) = &bodies[0];
    assert_eq!(auth.as_deref(), Some(format!("Bearer {secret}").as_str()));
    let v: Json = serde_json::from_str(body).unwrap();
    assert_eq!(v["model"], "mixtral-test");
    assert_eq!(
        v["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"],
        json!(["medizinisch", "allgemein"])
    );
    assert_eq!(v["messages"][0]["role"], "system");
    // nothing in the artifact holds the key
    for entry in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(secret));
    }
    // a missing key variable is an error naming the variable only
    let err = run_op(
        &Annotate,
        &params(
            &corpus,
            &server.url,
            &[("api_key_env", Value::Str("FLOW_TEST_NO_SUCH_VAR".into()))],
        ),
        &tmp.path().join("b"),
    )
    .unwrap_err();
    assert!(format!("{err}").contains("FLOW_TEST_NO_SUCH_VAR"));
}

#[test]
fn annotate_counts_unparseable_and_reports_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 10);
    let server = start_server(Mode::NoLabel);
    let out = tmp.path().join("a");
    run_op(&Annotate, &params(&corpus, &server.url, &[]), &out).unwrap();
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["unparseable"], 10);
    assert_eq!(
        stats["unparseable_examples"][0]["raw"],
        "Ich kann das nicht beurteilen."
    );
    assert!(read_jsonl(&out.join("annotations.jsonl"))
        .iter()
        .all(|a| a["label"].is_null()));

    let garbage = start_server(Mode::Garbage);
    let first_id = read_corpus(&corpus)[0]["id"].as_str().unwrap().to_string();
    let err = run_op(
        &Annotate,
        &params(&corpus, &garbage.url, &[("concurrency", Value::Int(1))]),
        &tmp.path().join("g"),
    )
    .unwrap_err();
    let msg = format!("{err}");
    assert!(msg.contains(&first_id) && msg.contains("not JSON"), "{msg}");
    // fail stops at once (one worker may have started the next document)
    let after_fail = garbage.requests.load(Ordering::SeqCst);
    assert!((1..=2).contains(&after_fail), "{after_fail}");
    let out = tmp.path().join("g2");
    run_op(
        &Annotate,
        &params(&corpus, &garbage.url, &[("max_failures", Value::Int(10))]),
        &out,
    )
    .unwrap();
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["failed"], 10);
    // garbage is not retried (it is not a transient status)
    assert_eq!(garbage.requests.load(Ordering::SeqCst), after_fail + 10);
}

#[test]
fn annotate_retries_a_500_then_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 6);
    let server = start_server(Mode::FailOnce);
    let out = tmp.path().join("a");
    run_op(
        &Annotate,
        &params(&corpus, &server.url, &[("retries", Value::Int(2))]),
        &out,
    )
    .unwrap();
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["failed"], 0);
    assert_eq!(stats["unparseable"], 0);
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        12,
        "each document: a 500, then the answer"
    );
    // without retries every first request fails
    let server = start_server(Mode::FailOnce);
    let out = tmp.path().join("b");
    run_op(
        &Annotate,
        &params(
            &corpus,
            &server.url,
            &[("retries", Value::Int(0)), ("max_failures", Value::Int(6))],
        ),
        &out,
    )
    .unwrap();
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["failed"], 6);
    assert_eq!(stats["failed_examples"][0]["status"], 500);
    assert_eq!(stats["failed_examples"][0]["class"], "http_status");
    assert!(read_jsonl(&out.join("annotations.jsonl")).is_empty());
}

#[test]
fn annotate_times_out_a_slow_server_and_resumes_from_state() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 3);
    let slow = start_server(Mode::Slow);
    let state = tmp.path().join("state");
    let t0 = std::time::Instant::now();
    let err = run_op(
        &Annotate,
        &params(
            &corpus,
            &slow.url,
            &[
                ("timeout_s", Value::Float(0.3)),
                ("retries", Value::Int(1)),
                ("concurrency", Value::Int(1)),
            ],
        ),
        &tmp.path().join("a"),
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("timeout"), "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(1900),
        "the timeout cut the request short"
    );

    // resume: a first run answers, a second run with the same state asks nothing
    let server = start_server(Mode::Normal);
    let state_str = Value::Str(state.display().to_string());
    run_op(
        &Annotate,
        &params(&corpus, &server.url, &[("state_dir", state_str.clone())]),
        &tmp.path().join("b"),
    )
    .unwrap();
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    let again = start_server(Mode::Garbage);
    let out = tmp.path().join("c");
    run_op(
        &Annotate,
        &params(&corpus, &again.url, &[("state_dir", state_str)]),
        &out,
    )
    .unwrap();
    assert_eq!(again.requests.load(Ordering::SeqCst), 0);
    assert_eq!(
        std::fs::read_to_string(out.join("annotations.jsonl")).unwrap(),
        std::fs::read_to_string(tmp.path().join("b/annotations.jsonl")).unwrap()
    );
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["reused_from_state"], 3);
}

/// Batch calibration by hand: raw scores prefer the first label for
/// every document; relative to the label means (-1.5 and -4.5) the
/// second document leans to the second label.
#[test]
fn batch_calibration_decides_relative_to_the_sample() {
    let labels = vec!["medizinisch".to_string(), "allgemein".to_string()];
    let answer = |id: &str, scores: [f64; 2]| Answer {
        id: id.into(),
        text_hash: String::new(),
        label: Some("medizinisch".into()),
        raw: Some(json!({"label": "medizinisch", "scores": scores}).to_string()),
        error: None,
    };
    let mut answers: HashMap<String, Answer> = [
        ("a", [-1.0, -5.0]), // centred: +0.5, -0.5 -> medizinisch
        ("b", [-2.0, -4.0]), // centred: -0.5, +0.5 -> allgemein
    ]
    .into_iter()
    .map(|(id, sc)| (id.to_string(), answer(id, sc)))
    .collect();
    batch_calibrate(&mut answers, &labels);
    assert_eq!(answers["a"].label.as_deref(), Some("medizinisch"));
    assert_eq!(answers["b"].label.as_deref(), Some("allgemein"));
}

#[test]
fn annotate_with_the_local_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 3);
    let mut words = demo_words();
    words.extend(["medizinisch".to_string(), "allgemein".to_string()]);
    let model_dir = tiny_model(&tmp.path().join("m"), &words);
    let out = tmp.path().join("a");
    let labels = vec!["medizinisch".to_string(), "allgemein".to_string()];
    run_op(
        &Annotate,
        &[
            ("corpus", Value::Path(corpus.clone())),
            (
                "prompt",
                Value::Path(demo_dir().join("annotate_prompt.txt")),
            ),
            (
                "labels",
                Value::List(labels.iter().map(|l| Value::Str(l.clone())).collect()),
            ),
            ("model", Value::Path(model_dir.clone())),
            ("backend", Value::Str("local".into())),
            ("max_tokens", Value::Int(6)),
            ("max_chars", Value::Int(200)),
        ],
        &out,
    )
    .unwrap();
    let ann = read_jsonl(&out.join("annotations.jsonl"));
    assert_eq!(ann.len(), 3);
    // The same labels through flow-model's API directly: every label's
    // log-likelihood after each document's rendered prompt, minus that
    // label's mean over the three documents (batch calibration); the
    // highest wins.
    let template = PromptTemplate::parse(
        &std::fs::read_to_string(demo_dir().join("annotate_prompt.txt")).unwrap(),
    )
    .unwrap();
    let chat = flow_model::ChatTemplate::load(&model_dir).unwrap();
    let tok = flow_model::Tokenizer::load(&model_dir).unwrap();
    let model = flow_model::Model::load(&model_dir).unwrap();
    let docs = read_corpus(&corpus);
    let scores: Vec<Vec<f64>> = docs
        .iter()
        .map(|d| {
            let text: String = d["text"].as_str().unwrap().chars().take(200).collect();
            let prompt = chat
                .render(&template.messages(&text, &labels), true)
                .unwrap();
            let context = tok.encode(&prompt, false).unwrap();
            model
                .loglikelihood(
                    &labels
                        .iter()
                        .map(|l| (context.clone(), tok.encode(l, false).unwrap()))
                        .collect::<Vec<_>>(),
                )
                .iter()
                .map(|s| s.logprob)
                .collect()
        })
        .collect();
    let mean = |j: usize| scores.iter().map(|v| v[j]).sum::<f64>() / 3.0;
    for (k, v) in scores.iter().enumerate() {
        let best = if v[1] - mean(1) > v[0] - mean(0) {
            1
        } else {
            0
        };
        let row = ann.iter().find(|a| a["id"] == docs[k]["id"]).unwrap();
        assert_eq!(
            row["label"].as_str(),
            Some(labels[best].as_str()),
            "document {k}"
        );
        let raw: Json = serde_json::from_str(row["raw"].as_str().unwrap()).unwrap();
        let recorded: Vec<f64> = raw["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(recorded, *v, "the raw answer records the scores");
    }
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["backend"]["backend"], "local");
    let labelled = stats["labels"]["medizinisch"].as_u64().unwrap()
        + stats["labels"]["allgemein"].as_u64().unwrap();
    assert_eq!(labelled, 3, "scoring the labels always yields one");
    assert_eq!(stats["unparseable"].as_u64().unwrap(), 0);
}

/// Every file under `dir`, as text.
fn all_files_text(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files_text(&path));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            out.push((path, text));
        }
    }
    out
}

#[test]
fn annotate_fails_on_a_refused_key_and_stores_nothing_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 10);
    let server = start_server(Mode::Unauthorized);
    let secret = "sk-live-0123456789abcdefXYZ";
    // SAFETY: set before any thread of this test reads it; the name is unique to this test
    unsafe { std::env::set_var("FLOW_TEST_ANNOTATE_401_KEY", secret) };
    let out = tmp.path().join("a");
    let state = tmp.path().join("state");
    let (res, log) = crate::op::testing::run_op_logged(
        &Annotate,
        &params(
            &corpus,
            &server.url,
            &[
                (
                    "api_key_env",
                    Value::Str("FLOW_TEST_ANNOTATE_401_KEY".into()),
                ),
                ("max_failures", Value::Int(100)),
                ("state_dir", Value::Str(state.display().to_string())),
            ],
        ),
        &out,
    );
    let msg = format!("{:?}", res.unwrap_err());
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("FLOW_TEST_ANNOTATE_401_KEY"), "{msg}");
    assert!(msg.contains(&server.url), "{msg}");
    assert!(
        !msg.contains(&secret[..12]) && !msg.contains(&secret[secret.len() - 8..]),
        "{msg}"
    );
    // fail fast: no retries of a 401, the workers stop at once
    assert!(server.requests.load(Ordering::SeqCst) <= 4);
    for line in &log {
        assert!(!line.contains(&secret[..10]), "{line}");
    }
    for (path, text) in all_files_text(&out)
        .into_iter()
        .chain(all_files_text(&state))
    {
        assert!(!text.contains(&secret[..10]), "{}: {text}", path.display());
        assert!(
            !text.contains("Incorrect API key"),
            "{}: {text}",
            path.display()
        );
    }
}

#[test]
fn annotate_fails_on_a_closed_port() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 3);
    // a port that was just free: nothing listens there
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let err = run_op(
        &Annotate,
        &params(&corpus, &url, &[("retries", Value::Int(1))]),
        &tmp.path().join("a"),
    )
    .unwrap_err();
    let msg = format!("{err:?}");
    assert!(msg.contains("max_failures") && msg.contains(&url), "{msg}");
}

#[test]
fn annotate_leaves_out_failed_documents_within_max_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = small_corpus(tmp.path(), 10);
    let server = start_server(Mode::FailTwoDocuments);
    let out = tmp.path().join("a");
    let (res, log) = crate::op::testing::run_op_logged(
        &Annotate,
        &params(
            &corpus,
            &server.url,
            &[("retries", Value::Int(0)), ("max_failures", Value::Int(2))],
        ),
        &out,
    );
    res.unwrap();
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("annotate.json")).unwrap()).unwrap();
    assert_eq!(stats["failed"], 2);
    let ann = read_jsonl(&out.join("annotations.jsonl"));
    assert_eq!(ann.len(), 8);
    assert!(ann.iter().all(|a| a["label"].is_string()));
    let failed_ids: Vec<&Json> = stats["failed_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| &f["id"])
        .collect();
    assert_eq!(failed_ids.len(), 2);
    assert!(ann.iter().all(|a| !failed_ids.contains(&&a["id"])));
    assert!(log.iter().any(|l| l.contains("2 failed")), "{log:?}");

    // one tolerated failure is not enough
    let server = start_server(Mode::FailTwoDocuments);
    let err = run_op(
        &Annotate,
        &params(
            &corpus,
            &server.url,
            &[("retries", Value::Int(0)), ("max_failures", Value::Int(1))],
        ),
        &tmp.path().join("b"),
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("max_failures = 1"), "{err:?}");
}

/// The labels batch calibration gives `docs`, through flow-model's API
/// directly: every label's log-likelihood after each document's rendered
/// prompt (text clipped to `max_chars`), minus that label's mean over all
/// the documents; the highest wins.
fn calibrated_labels(
    model_dir: &Path,
    docs: &[Json],
    labels: &[String],
    max_chars: usize,
) -> Vec<String> {
    let template = PromptTemplate::parse(
        &std::fs::read_to_string(demo_dir().join("annotate_prompt.txt")).unwrap(),
    )
    .unwrap();
    let chat = flow_model::ChatTemplate::load(model_dir).unwrap();
    let tok = flow_model::Tokenizer::load(model_dir).unwrap();
    let model = flow_model::Model::load(model_dir).unwrap();
    let scores: Vec<Vec<f64>> = docs
        .iter()
        .map(|d| {
            let text: String = d["text"]
                .as_str()
                .unwrap()
                .chars()
                .take(max_chars)
                .collect();
            let prompt = chat
                .render(&template.messages(&text, labels), true)
                .unwrap();
            let context = tok.encode(&prompt, false).unwrap();
            model
                .loglikelihood(
                    &labels
                        .iter()
                        .map(|l| (context.clone(), tok.encode(l, false).unwrap()))
                        .collect::<Vec<_>>(),
                )
                .iter()
                .map(|s| s.logprob)
                .collect()
        })
        .collect();
    let n = scores.len() as f64;
    let mean = |j: usize| scores.iter().map(|v| v[j]).sum::<f64>() / n;
    scores
        .iter()
        .map(|v| {
            let centred: Vec<f64> = (0..labels.len()).map(|j| v[j] - mean(j)).collect();
            let mut best = 0;
            for j in 1..labels.len() {
                if centred[j] > centred[best] {
                    best = j;
                }
            }
            labels[best].clone()
        })
        .collect()
}

/// A corpus of the first 8 demo documents in 4 shards, a tiny local model
/// and annotate's params for it.
fn sharded_local_setup(dir: &Path) -> (PathBuf, PathBuf, Vec<(&'static str, Value)>) {
    let lines: Vec<String> = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
        .unwrap()
        .lines()
        .take(8)
        .map(String::from)
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("in.jsonl"), lines.join("\n")).unwrap();
    let corpus = dir.join("corpus");
    run_op(
        &Corpus,
        &[
            ("input", Value::Path(dir.join("in.jsonl"))),
            ("docs_per_shard", Value::Int(2)),
        ],
        &corpus,
    )
    .unwrap();
    let mut words = demo_words();
    words.extend(["medizinisch".to_string(), "allgemein".to_string()]);
    let model_dir = tiny_model(&dir.join("m"), &words);
    let params = vec![
        ("corpus", Value::Path(corpus.clone())),
        (
            "prompt",
            Value::Path(demo_dir().join("annotate_prompt.txt")),
        ),
        (
            "labels",
            Value::List(vec![
                Value::Str("medizinisch".into()),
                Value::Str("allgemein".into()),
            ]),
        ),
        ("model", Value::Path(model_dir.clone())),
        ("backend", Value::Str("local".into())),
        ("max_chars", Value::Int(200)),
    ];
    (corpus, model_dir, params)
}

#[test]
fn local_annotate_writes_the_same_bytes_for_any_number_of_shard_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let (corpus, model_dir, params) = sharded_local_setup(tmp.path());
    assert_eq!(corpus_shards(&corpus).unwrap().len(), 4);
    let out = assert_same_bytes_for_task_counts(
        &Annotate,
        &params,
        &tmp.path().join("a"),
        &[2, 3, 4, 64],
    );
    // Calibrated over all 8 documents, not per shard task.
    let docs = read_corpus(&corpus);
    let labels = ["medizinisch".to_string(), "allgemein".to_string()];
    let expected = calibrated_labels(&model_dir, &docs, &labels, 200);
    let ann = read_jsonl(&out.join("annotations.jsonl"));
    let got: Vec<&str> = ann.iter().map(|a| a["label"].as_str().unwrap()).collect();
    let ids: Vec<&Json> = ann.iter().map(|a| &a["id"]).collect();
    assert_eq!(got, expected);
    assert_eq!(ids, docs.iter().map(|d| &d["id"]).collect::<Vec<_>>());
}

#[test]
fn sharded_local_annotate_resumes_from_state_whatever_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, mut params) = sharded_local_setup(tmp.path());
    let state = tmp.path().join("state");
    params.push(("state_dir", Value::Str(state.display().to_string())));
    run_sharded(&Annotate, &params, &tmp.path().join("a4"), 4).unwrap();
    // one answer file a shard task
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 4);
    run_sharded(&Annotate, &params, &tmp.path().join("a1"), 1).unwrap();
    let stats: Json = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("a1/annotate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stats["reused_from_state"], 8);
    assert_eq!(
        std::fs::read(tmp.path().join("a1/annotations.jsonl")).unwrap(),
        std::fs::read(tmp.path().join("a4/annotations.jsonl")).unwrap()
    );
}

#[test]
fn a_failing_shard_task_fails_annotate_with_its_shard_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model_dir, mut params) = sharded_local_setup(tmp.path());
    let bad = write_corpus_shards(
        &tmp.path().join("bad"),
        &[
            "{\"id\":\"a\",\"text\":\"Fieber und Husten\"}\n",
            "{\"id\":\"b\",\"text\":\"Fussball am Sonntag\"}\n",
            "{\"id\":\"c\",\"text\":\"Kopfschmerzen\"}\n{\"id\":\"d\"}\n",
        ],
    );
    params[0] = ("corpus", Value::Path(bad));
    params[3] = ("model", Value::Path(model_dir));
    let out = tmp.path().join("o");
    let err = run_sharded(&Annotate, &params, &out, 3).unwrap_err();
    assert_third_shard_task_failed(&err, "docs-00002.jsonl.zst:2", &out, "annotate.json");
}

#[test]
fn partial_answers_are_written_in_corpus_order_whatever_order_requests_finished_in() {
    // As a task with concurrent requests appends them: d3 finished first.
    let written = concat!(
        r#"{"id":"d3","answer":"c"}"#,
        "\n",
        r#"{"id":"x9","answer":"not in this sample"}"#,
        "\n",
        r#"{"id":"d1","answer":"a"}"#,
        "\n",
        r#"{"id":"d2","answer":"b"}"#,
        "\n"
    );
    let order = ["d1", "d2", "d3"].map(String::from);
    let sorted = in_corpus_order(written.as_bytes(), &order);
    assert_eq!(
        String::from_utf8(sorted).unwrap(),
        concat!(
            r#"{"id":"d1","answer":"a"}"#,
            "\n",
            r#"{"id":"d2","answer":"b"}"#,
            "\n",
            r#"{"id":"d3","answer":"c"}"#,
            "\n",
            r#"{"id":"x9","answer":"not in this sample"}"#,
            "\n"
        )
    );
}
