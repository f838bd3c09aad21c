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
        .map(|(id, r)| {
            format!(
                "{}\n",
                json!({"id": id, "prompt": format!("question {id}"), "response": r, "tokens": 3})
            )
        })
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
    counting_server(|req| {
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
    })
}

/// A server answering each request with `respond`, counting the requests.
fn counting_server(
    respond: impl Fn(&crate::http::Request) -> crate::http::Response + Send + Sync + 'static,
) -> (crate::http::HttpServer, Arc<std::sync::atomic::AtomicUsize>) {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&served);
    let handler: crate::http::Handler = Arc::new(move |req: &crate::http::Request| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        respond(req)
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
        serde_json::from_str(&std::fs::read_to_string(out.join("judge.json")).unwrap()).unwrap();
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
    counting_server(move |req| {
        let v: Json = serde_json::from_slice(&req.body).unwrap_or(Json::Null);
        let user = v["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        answer(&user, req.header("authorization").unwrap_or(""))
    })
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
        serde_json::from_str(&std::fs::read_to_string(out.join("judge.json")).unwrap()).unwrap();
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
