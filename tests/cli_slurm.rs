//! `flow run --executor slurm` against a real Slurm: the single-machine
//! cluster of `scripts/slurm_cluster.sh` (started by `scripts/test.sh`,
//! which sets FLOW_SLURM_TESTS=1 and SLURM_CONF). Without FLOW_SLURM_TESTS
//! (or with FLOW_SLURM_TESTS=0) every test here prints that it was skipped
//! and passes.

mod cli_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cli_common::definemed::{keyword_annotator, pipeline_with, tiny_model, TARGETS};
use cli_common::{assert_same_units, content_hash, Project};
use flow_stdlib::artifacts::data::CorpusStats;
use flow_stdlib::artifacts::JsonFile;

fn enabled() -> bool {
    if std::env::var("FLOW_SLURM_TESTS").is_ok_and(|v| v != "0") {
        // The cluster must really be there: a broken one fails the test.
        let out = Command::new("sinfo").arg("-h").output();
        match out {
            Ok(o) if o.status.success() => return true,
            Ok(o) => panic!(
                "FLOW_SLURM_TESTS is set but sinfo fails: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("FLOW_SLURM_TESTS is set but sinfo cannot run: {e}"),
        }
    }
    eprintln!(
        "\n********************************************************************\n\
         SKIPPED: the Slurm tests need a cluster: run scripts/test.sh, or\n\
         scripts/slurm_cluster.sh start && eval \"$(scripts/slurm_cluster.sh env)\"\n\
         && FLOW_SLURM_TESTS=1 cargo test --test cli_slurm\n\
         ********************************************************************\n"
    );
    false
}

/// The JSON events of a run (node, submitted, done).
#[derive(Default, Debug)]
struct Events {
    status: BTreeMap<String, String>,
    keys: BTreeMap<String, String>,
    /// Node display name -> job id of its `ran`/`failed` event.
    job_of: BTreeMap<String, String>,
    /// (node, job, attempt, adopted, shard task) per `submitted` event.
    submitted: Vec<(String, String, u64, bool, Option<u64>)>,
    done: Option<(u64, u64, u64, u64)>,
}

fn parse(stdout: &str) -> Events {
    let mut ev = Events::default();
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        let s = |f: &str| v[f].as_str().map(str::to_string);
        match v["event"].as_str() {
            Some("node") => {
                let name = s("node").unwrap();
                ev.status.insert(name.clone(), s("status").unwrap());
                if let Some(k) = s("key") {
                    ev.keys.insert(name.clone(), k);
                }
                if let Some(j) = s("job") {
                    ev.job_of.insert(name, j);
                }
            }
            Some("submitted") => ev.submitted.push((
                s("node").unwrap(),
                s("job").unwrap(),
                v["attempt"].as_u64().unwrap(),
                v["adopted"].as_bool().unwrap(),
                v["shard"].as_u64(),
            )),
            Some("done") => {
                let n = |f: &str| v[f].as_u64().unwrap();
                ev.done = Some((n("ran"), n("cached"), n("failed"), n("skipped")));
            }
            other => panic!("unknown event {other:?} in {line}"),
        }
    }
    ev
}

fn slurm_cmd(p: &Project, extra: &[&str]) -> Command {
    let mut args = vec!["run", "p.flow", "--json", "--executor", "slurm"];
    args.extend_from_slice(extra);
    let mut c = p.cmd(&args);
    c.env("FLOW_SLURM_POLL_MS", "200");
    c
}

fn run_code(c: &mut Command, code: i32) -> (Events, String) {
    let out: Output = c.output().expect("run flow");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (parse(&stdout), stderr)
}

/// The state squeue shows for a job (`None`: not known any more).
fn job_state(job: &str) -> Option<String> {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", job])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `submitted` events from a running driver's stdout until one
/// arrives; returns the job id. The rest of stdout is drained on a thread.
fn first_submitted(child: &mut std::process::Child) -> (String, std::thread::JoinHandle<String>) {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut seen = String::new();
    let job = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the driver ended before submitting: {seen}");
        seen.push_str(&line);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "submitted" {
            break v["job"].as_str().unwrap().to_string();
        }
    };
    let rest = std::thread::spawn(move || {
        let mut all = seen;
        for l in reader.lines().map_while(Result::ok) {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    (job, rest)
}

const PIPELINE: &str = r#"
param x = "Hello"
a = exec(cmd: "echo {x} | tr A-Z a-z > {out}/f")
b = exec(cmd: "cat {a}/f {a}/f > {out}/f; mkdir {out}/d; echo deep > {out}/d/g", resources: {cpus: 1, mem: "200M", time: "0:05:00"})
m = [exec(cmd: "echo {v} > {out}/f") for v in ["p", "q", "r"]]
d = exec(cmd: "cat {b}/f > {out}/f; for e in {m}; do cat $e/f >> {out}/f; done")
"#;

#[test]
fn slurm_run_gives_the_local_keys_and_hashes_and_a_noop_rerun_submits_nothing() {
    if !enabled() {
        return;
    }
    let local = Project::new(PIPELINE);
    let out = local.flow(&["run", "p.flow", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let l = parse(&String::from_utf8_lossy(&out.stdout));

    let s = Project::new(PIPELINE);
    let (ev, stderr) = run_code(&mut slurm_cmd(&s, &[]), 0);
    assert_eq!(ev.done, Some((6, 0, 0, 0)), "{stderr}");
    assert_eq!(
        ev.keys, l.keys,
        "a unit's key does not depend on where it ran"
    );
    // Every unit ran as its own job, named in its event.
    assert_eq!(ev.submitted.len(), 6);
    let jobs: std::collections::BTreeSet<&String> = ev.job_of.values().collect();
    assert_eq!(jobs.len(), 6, "{:?}", ev.job_of);
    assert!(stderr.contains("submitted b (slurm job"), "{stderr}");
    // The map node's three elements went as one job array, in order.
    let array = ev.job_of["m[0]"].split('_').next().unwrap().to_string();
    for i in 0..3 {
        assert_eq!(ev.job_of[&format!("m[{i}]")], format!("{array}_{i}"));
    }
    assert!(!ev.job_of["a"].contains('_'), "a lone unit is a plain job");
    for (node, key) in &ev.keys {
        assert_eq!(
            content_hash(&s.cache(), key),
            content_hash(&local.cache(), key),
            "content hash of {node}"
        );
    }
    let d = std::fs::read_to_string(
        s.cache()
            .join("artifacts")
            .join(&ev.keys["d"])
            .join("out/f"),
    )
    .unwrap();
    assert_eq!(d, "hello\nhello\np\nq\nr\n");

    // A no-op rerun submits nothing.
    let (again, _) = run_code(&mut slurm_cmd(&s, &[]), 0);
    assert_eq!(again.done, Some((0, 6, 0, 0)));
    assert!(again.submitted.is_empty(), "{:?}", again.submitted);

    // Part locally, part on Slurm, one cache: the same artifacts.
    let mixed = Project::new(PIPELINE);
    let out = mixed.flow(&["run", "p.flow", "--json", "b"]);
    assert_eq!(out.status.code(), Some(0));
    let (ev, _) = run_code(&mut slurm_cmd(&mixed, &[]), 0);
    assert_eq!(ev.status["a"], "cached");
    assert_eq!(ev.status["b"], "cached");
    assert_eq!(ev.status["d"], "ran");
    assert_eq!(ev.keys, l.keys);
    assert_eq!(
        content_hash(&mixed.cache(), &ev.keys["d"]),
        content_hash(&local.cache(), &ev.keys["d"])
    );
    // And back: a local run of the Slurm-built cache has nothing to do.
    let out = s.flow(&["run", "p.flow", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        parse(&String::from_utf8_lossy(&out.stdout)).done,
        Some((0, 6, 0, 0))
    );
}

#[test]
fn a_job_killed_with_scancel_is_retried() {
    if !enabled() {
        return;
    }
    let p = Project::new(
        r#"
flaky = exec(cmd: "if [ -e started ]; then echo second > {out}/f; else touch started; sleep 300; fi")
"#,
    );
    let mut child = slurm_cmd(&p, &["--retries", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (job, rest) = first_submitted(&mut child);
    wait_until(
        "the first attempt to start",
        Duration::from_secs(60),
        || p.path().join("started").exists(),
    );
    assert!(Command::new("scancel")
        .arg(&job)
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let stdout = rest.join().unwrap();
    let ev = parse(&stdout);
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert_eq!(ev.status["flaky"], "ran");
    assert_eq!(ev.submitted.len(), 2, "{:?}", ev.submitted);
    assert_eq!(ev.submitted[0].1, job);
    assert_eq!(ev.submitted[1].2, 2, "the second submission is attempt 2");
    assert_eq!(ev.job_of["flaky"], ev.submitted[1].1);
    wait_until("the job to be cancelled", Duration::from_secs(30), || {
        job_state(&job).as_deref() == Some("CANCELLED")
    });
    let f = std::fs::read_to_string(
        p.cache()
            .join("artifacts")
            .join(&ev.keys["flaky"])
            .join("out/f"),
    )
    .unwrap();
    assert_eq!(f, "second\n");
}

#[test]
fn a_failing_node_reports_its_job_log_after_the_retries() {
    if !enabled() {
        return;
    }
    let p = Project::new(
        r#"
bad = exec(cmd: "echo some-diagnostic-line; exit 7")
after = exec(cmd: "cat {bad}/f > {out}/f")
good = exec(cmd: "echo ok > {out}/f")
"#,
    );
    let (ev, stderr) = run_code(&mut slurm_cmd(&p, &["--retries", "1"]), 1);
    assert_eq!(ev.status["bad"], "failed");
    assert_eq!(ev.status["after"], "skipped");
    assert_eq!(ev.status["good"], "ran");
    let bad: Vec<_> = ev.submitted.iter().filter(|s| s.0 == "bad").collect();
    assert_eq!(bad.len(), 2, "one retry: {:?}", ev.submitted);
    let last = &bad[1].1;
    assert_eq!(&ev.job_of["bad"], last);
    assert!(
        stderr.contains(&format!(
            "node `bad` failed on Slurm: job {last} ended FAILED"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("exit code 1:0"), "{stderr}");
    assert!(
        stderr.contains("some-diagnostic-line"),
        "the log tail: {stderr}"
    );
    assert_eq!(job_state(last).as_deref(), Some("FAILED"));
    // `flow show` finds the job's log as the failed attempt's.
    let out = p.flow(&["show", "p.flow", "bad"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("some-diagnostic-line"));
}

#[test]
fn a_restarted_driver_follows_the_running_job_instead_of_resubmitting() {
    if !enabled() {
        return;
    }
    let p = Project::new(
        r#"
slow = exec(cmd: "sleep 3; echo slow > {out}/f")
after = exec(cmd: "cat {slow}/f {slow}/f > {out}/f")
"#,
    );
    let mut child = slurm_cmd(&p, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (job, rest) = first_submitted(&mut child);
    child.kill().unwrap(); // SIGKILL: the driver leaves its job behind
    child.wait().unwrap();
    let _ = rest.join();
    let state = job_state(&job).unwrap_or_default();
    assert!(
        ["PENDING", "CONFIGURING", "RUNNING"].contains(&state.as_str()),
        "the job runs on after its driver died: {state}"
    );
    let (ev, stderr) = run_code(&mut slurm_cmd(&p, &[]), 0);
    assert_eq!(ev.status["slow"], "ran");
    assert_eq!(ev.status["after"], "ran");
    let slow: Vec<_> = ev.submitted.iter().filter(|s| s.0 == "slow").collect();
    assert_eq!(slow.len(), 1, "{:?}", ev.submitted);
    assert_eq!(slow[0].1, job, "the earlier job is followed");
    assert!(slow[0].3, "marked as adopted");
    assert_eq!(ev.job_of["slow"], job);
    assert!(stderr.contains("submitted by an earlier run"), "{stderr}");
    let f = std::fs::read_to_string(
        p.cache()
            .join("artifacts")
            .join(&ev.keys["after"])
            .join("out/f"),
    )
    .unwrap();
    assert_eq!(f, "slow\nslow\n");
}

#[test]
fn ctrl_c_cancels_the_jobs() {
    if !enabled() {
        return;
    }
    let p = Project::new(
        r#"
long = exec(cmd: "touch started; sleep 300; echo never > {out}/f")
"#,
    );
    let mut child = slurm_cmd(&p, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (job, rest) = first_submitted(&mut child);
    wait_until("the job to start", Duration::from_secs(60), || {
        p.path().join("started").exists()
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    let stdout = rest.join().unwrap();
    assert_eq!(code, Some(130), "{stdout}");
    // scancel was sent; the job passes through COMPLETING.
    wait_until("the job to be cancelled", Duration::from_secs(30), || {
        job_state(&job).as_deref() == Some("CANCELLED")
    });
    let jobs = std::fs::read_to_string(p.cache().join("slurm/jobs.json")).unwrap();
    assert!(
        !jobs.contains(&job),
        "a cancelled job is not followed again: {jobs}"
    );
}

#[test]
fn a_failing_array_task_is_retried_alone_and_reports_its_log() {
    if !enabled() {
        return;
    }
    let p = Project::new(
        r#"
arr = [exec(cmd: "if [ {v} = 2 ]; then echo task-two-broke; exit 3; fi; echo {v} > {out}/f") for v in [1, 2, 3]]
"#,
    );
    let (ev, stderr) = run_code(&mut slurm_cmd(&p, &["--retries", "1"]), 1);
    assert_eq!(ev.status["arr[0]"], "ran");
    assert_eq!(ev.status["arr[1]"], "failed");
    assert_eq!(ev.status["arr[2]"], "ran");
    let array = ev.job_of["arr[0]"].split('_').next().unwrap().to_string();
    assert_eq!(ev.job_of["arr[2]"], format!("{array}_2"));
    let tries: Vec<_> = ev.submitted.iter().filter(|s| s.0 == "arr[1]").collect();
    assert_eq!(tries.len(), 2, "{:?}", ev.submitted);
    assert_eq!(tries[0].1, format!("{array}_1"));
    assert!(!tries[1].1.contains('_'), "the retry is a job of its own");
    assert!(
        stderr.contains(&format!("job {array}_1 ended FAILED")),
        "{stderr}"
    );
    assert!(stderr.contains("task-two-broke"), "{stderr}");
    // The local result is the same for the elements that ran.
    let local = Project::new(&std::fs::read_to_string(p.file()).unwrap());
    let out = local.flow(&["run", "p.flow", "--json"]);
    let l = parse(&String::from_utf8_lossy(&out.stdout));
    for e in ["arr[0]", "arr[2]"] {
        assert_eq!(ev.keys[e], l.keys[e]);
        assert_eq!(
            content_hash(&p.cache(), &ev.keys[e]),
            content_hash(&local.cache(), &l.keys[e])
        );
    }
}

/// The tasks of a job array squeue still shows, with their states.
fn array_tasks(array: &str) -> BTreeMap<String, String> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-t", "all", "-o", "%i|%T", "-j", array])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .map(|(i, s)| (i.to_string(), s.to_string()))
        .collect()
}

fn sharded_pipeline(shards: usize) -> String {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
    format!(
        r#"
c = corpus(input: file("{d}/fineweb2-demo.jsonl"), docs_per_shard: 60)
clf = train_classifier(corpus: c, labels: file("{d}/labels.csv"), positive: "medizinisch")
f = filter(corpus: c, classifier: clf, score_field: "s", resources: {{shards: {shards}, cpus: 1}})
"#,
        d = demo.display()
    )
}

/// Runs `pipeline(local_tasks)` locally and `pipeline(slurm_tasks)` on
/// Slurm, and checks what every sharded stage must give: the same keys, the
/// same content hash of `node`, and `node` run as `slurm_tasks` shard tasks
/// of one job array (task i is job ARRAY_i). The task count is a resource,
/// so it is not in the key. Returns the Slurm project, its events, its
/// stderr and the array's job id.
fn sharded_run_matches_local(
    pipeline: impl Fn(usize) -> String,
    node: &str,
    local_tasks: usize,
    slurm_tasks: usize,
) -> (Project, Events, String, String) {
    let local = Project::new(&pipeline(local_tasks));
    let out = local.flow(&["run", "p.flow", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = parse(&String::from_utf8_lossy(&out.stdout));
    let s = Project::new(&pipeline(slurm_tasks));
    let (ev, stderr) = run_code(&mut slurm_cmd(&s, &[]), 0);
    assert_eq!(ev.keys, l.keys, "{stderr}");
    let key = &ev.keys[node];
    assert_eq!(
        content_hash(&s.cache(), key),
        content_hash(&local.cache(), key)
    );
    let array = one_array_of_shard_tasks(&ev, node, slurm_tasks);
    (s, ev, stderr, array)
}

/// Checks that `node` ran as `tasks` shard tasks of one job array, task
/// `i` being job `ARRAY_i`; returns the array's job id.
fn one_array_of_shard_tasks(ev: &Events, node: &str, tasks: usize) -> String {
    let submitted: Vec<_> = ev
        .submitted
        .iter()
        .filter(|x| x.0 == node && x.4.is_some())
        .collect();
    assert_eq!(submitted.len(), tasks, "{node}: {:?}", ev.submitted);
    let array = submitted[0].1.split('_').next().unwrap().to_string();
    for (i, t) in submitted.iter().enumerate() {
        assert_eq!(t.4, Some(i as u64), "{node}");
        assert_eq!(t.1, format!("{array}_{i}"), "{node}");
    }
    array
}

#[test]
fn a_sharded_filter_runs_as_a_job_array_and_matches_the_local_artifact() {
    if !enabled() {
        return;
    }
    // Locally, cut into 2 shard tasks; on Slurm into 3 (6 input shards).
    let (s, ev, stderr, array) = sharded_run_matches_local(sharded_pipeline, "f", 2, 3);
    assert_eq!(ev.done, Some((3, 0, 0, 0)), "{stderr}");
    let f = &ev.keys["f"];
    assert!(
        stderr.contains("submitted f shard task 2 (slurm job"),
        "{stderr}"
    );
    let merge = &ev.job_of["f"];
    assert!(!merge.contains('_'), "the merge is a plain job: {merge}");
    assert!(ev
        .submitted
        .iter()
        .any(|x| x.0 == "f" && x.4.is_none() && &x.1 == merge));
    let states = array_tasks(&array);
    for i in 0..3 {
        assert_eq!(
            states.get(&format!("{array}_{i}")).map(String::as_str),
            Some("COMPLETED"),
            "{states:?}"
        );
    }
    // The parts were scratch: gone once the artifact is in the store.
    let parts: Vec<_> = std::fs::read_dir(s.cache().join("slurm/parts"))
        .unwrap()
        .collect();
    assert!(parts.is_empty(), "{parts:?}");
    let stats =
        std::fs::read_to_string(s.cache().join("artifacts").join(f).join("out/filter.json"))
            .unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["documents_in"], 334);
    assert_eq!(stats["per_shard"].as_array().unwrap().len(), 6);
}

#[test]
fn a_failing_shard_task_is_retried_then_fails_its_node_with_its_log() {
    if !enabled() {
        return;
    }
    // A corpus whose third shard is not zstd: only the shard task that
    // reads it fails.
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
    let p = Project::new(&format!(
        r#"
c0 = corpus(input: file("{d}/fineweb2-demo.jsonl"), docs_per_shard: 120)
clf = train_classifier(corpus: c0, labels: file("{d}/labels.csv"), positive: "medizinisch")
bad = exec(cmd: "cp {{c0}}/docs-00000.jsonl.zst {{c0}}/docs-00001.jsonl.zst {{out}}/ && echo broken > {{out}}/docs-00002.jsonl.zst")
f = filter(corpus: bad, classifier: clf, resources: {{shards: 3, cpus: 1}})
"#,
        d = demo.display()
    ));
    let (ev, stderr) = run_code(&mut slurm_cmd(&p, &["--retries", "1"]), 1);
    assert_eq!(ev.status["f"], "failed");
    let third: Vec<_> = ev.submitted.iter().filter(|x| x.4 == Some(2)).collect();
    assert_eq!(
        third.len(),
        2,
        "shard task 2 retried once: {:?}",
        ev.submitted
    );
    assert!(!third[1].1.contains('_'), "the retry is a job of its own");
    for i in [0, 1] {
        let n = ev.submitted.iter().filter(|x| x.4 == Some(i)).count();
        assert_eq!(n, 1, "shard task {i} ran once");
    }
    assert!(
        stderr.contains(&format!(
            "node `f` failed on Slurm: shard task 2 of 3, job {} ended FAILED",
            third[1].1
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("docs-00002.jsonl.zst:1"),
        "the task's log tail: {stderr}"
    );
    assert!(
        !ev.submitted.iter().any(|x| x.0 == "f" && x.4.is_none()),
        "no merge was submitted"
    );
}

/// Reads a running driver's JSON events until `enough` says so; returns
/// them. The rest of stdout is drained on a thread.
fn events_until(
    child: &mut std::process::Child,
    enough: impl Fn(&[serde_json::Value]) -> bool,
) -> (Vec<serde_json::Value>, std::thread::JoinHandle<String>) {
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut seen = Vec::new();
    while !enough(&seen) {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the driver ended early: {seen:?}");
        seen.push(serde_json::from_str(&line).unwrap());
    }
    let rest = std::thread::spawn(move || {
        let mut all = String::new();
        for l in reader.lines().map_while(Result::ok) {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    (seen, rest)
}

/// Shard tasks among `submitted` events.
fn shard_submissions(events: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events
        .iter()
        .filter(|v| v["event"] == "submitted" && v["shard"].is_u64())
        .collect()
}

/// The content hash of node `f` of `sharded_pipeline` run locally.
fn local_sharded_hash(shards: usize) -> (BTreeMap<String, String>, String) {
    let local = Project::new(&sharded_pipeline(shards));
    let out = local.flow(&["run", "p.flow", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = parse(&String::from_utf8_lossy(&out.stdout));
    let hash = content_hash(&local.cache(), &l.keys["f"]);
    (l.keys, hash)
}

/// Sets the state of the cluster's `held` partition (DOWN: jobs queue
/// there and do not start), which only this test uses.
fn held_partition(state: &str) {
    let ok = Command::new("scontrol")
        .args(["update", "PartitionName=held", &format!("State={state}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "scontrol update PartitionName=held State={state} failed (a cluster started by scripts/slurm_cluster.sh has it)");
}

#[test]
fn a_restarted_driver_follows_the_shard_tasks_still_queued() {
    if !enabled() {
        return;
    }
    // The filter's jobs go to the partition `held`, DOWN until the
    // restarted driver has taken over its shard tasks: they stay queued
    // whatever the machine's speed.
    let full = sharded_pipeline(3).replace("cpus: 1}", "cpus: 1, partition: \"held\"}");
    assert!(full.contains("held"));
    let local = Project::new(&full);
    let out = local.flow(&["run", "p.flow", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let l = parse(&String::from_utf8_lossy(&out.stdout));
    held_partition("DOWN");
    let p = Project::new(&full);
    let mut first = slurm_cmd(&p, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (seen, rest) = events_until(&mut first, |ev| shard_submissions(ev).len() == 3);
    first.kill().unwrap(); // SIGKILL: the driver leaves its tasks behind
    first.wait().unwrap();
    let _ = rest.join();
    let tasks: Vec<String> = shard_submissions(&seen)
        .iter()
        .map(|v| v["job"].as_str().unwrap().to_string())
        .collect();
    for t in &tasks {
        let state = job_state(t).unwrap_or_default();
        if state != "PENDING" {
            held_partition("UP");
            panic!("shard task {t} is {state}, not queued in the held partition");
        }
    }

    let mut second = slurm_cmd(&p, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (seen, rest) = events_until(&mut second, |ev| {
        shard_submissions(ev).len() == 3 || ev.iter().any(|v| v["event"] == "done")
    });
    held_partition("UP");
    let code = second.wait().unwrap().code();
    let stdout = rest.join().unwrap();
    let adopted: Vec<(String, u64, bool)> = shard_submissions(&seen)
        .iter()
        .map(|v| {
            (
                v["job"].as_str().unwrap().to_string(),
                v["shard"].as_u64().unwrap(),
                v["adopted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        adopted,
        tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u64, true))
            .collect::<Vec<_>>(),
        "the earlier driver's tasks are followed, not submitted again"
    );
    let ev = parse(&stdout);
    assert!(
        ev.submitted.iter().all(|s| s.4.is_none()),
        "no shard task submitted after the adoption: {:?}",
        ev.submitted
    );
    assert_eq!(ev.status["f"], "ran");
    assert_eq!(ev.keys["f"], l.keys["f"]);
    assert_eq!(
        content_hash(&p.cache(), &ev.keys["f"]),
        content_hash(&local.cache(), &l.keys["f"])
    );
}

#[test]
fn max_jobs_counts_the_shard_tasks() {
    if !enabled() {
        return;
    }
    let (local_keys, local_hash) = local_sharded_hash(3);
    let s = Project::new(&sharded_pipeline(3));
    let (ev, stderr) = run_code(&mut slurm_cmd(&s, &["--max-jobs", "2"]), 0);
    let tasks: Vec<_> = ev
        .submitted
        .iter()
        .filter(|x| x.0 == "f" && x.4.is_some())
        .collect();
    assert_eq!(tasks.len(), 3, "{:?} {stderr}", ev.submitted);
    // Room for two: tasks 0 and 1 as one array, task 2 as another once
    // one of them ended.
    let array = |j: &str| j.split('_').next().unwrap().to_string();
    assert_eq!(
        tasks.iter().map(|t| t.4).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );
    assert_eq!(array(&tasks[0].1), array(&tasks[1].1));
    assert_ne!(array(&tasks[2].1), array(&tasks[0].1));
    let times = |job: &str| {
        let out = Command::new("squeue")
            .args(["-h", "-t", "all", "-o", "%V|%e", "-j", job])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (submit, end) = text.split_once('|').unwrap_or(("", ""));
        (submit.to_string(), end.to_string())
    };
    let first_end = [&tasks[0].1, &tasks[1].1]
        .iter()
        .map(|j| times(j).1)
        .min()
        .unwrap();
    let third_submit = times(&tasks[2].1).0;
    assert!(
        !first_end.is_empty() && third_submit >= first_end,
        "task 2 submitted at {third_submit}, before either of tasks 0 and 1 ended ({first_end})"
    );
    assert_eq!(ev.keys["f"], local_keys["f"]);
    assert_eq!(content_hash(&s.cache(), &ev.keys["f"]), local_hash);
}

#[test]
fn a_sharded_pack_runs_as_a_job_array_and_matches_the_local_artifact() {
    if !enabled() {
        return;
    }
    // A word-level tokenizer over the demo's words: `pack` over the demo
    // corpus in 6 shards, cut into 3 shard tasks on Slurm, 1 locally.
    let dir = tempfile::tempdir().unwrap();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
    let mut vocab = serde_json::Map::new();
    vocab.insert("</s>".into(), 0.into());
    vocab.insert("<unk>".into(), 1.into());
    let text = std::fs::read_to_string(demo.join("fineweb2-demo.jsonl")).unwrap();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for w in v["text"].as_str().unwrap().split_whitespace() {
            let next = vocab.len();
            vocab.entry(w.to_string()).or_insert(next.into());
        }
    }
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    let tok_path = dir.path().join("tokenizer.json");
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    let pipeline = |shards: usize| {
        format!(
            r#"
c = corpus(input: file("{d}/fineweb2-demo.jsonl"), docs_per_shard: 60)
p = pack(corpus: c, tokenizer: file("{t}"), seq_len: 64, eos_token: "</s>", resources: {{shards: {shards}, cpus: 1}})
"#,
            d = demo.display(),
            t = tok_path.display()
        )
    };
    sharded_run_matches_local(pipeline, "p", 1, 3);
}

/// `flow gc` and the Slurm parts (needs no cluster: the parts are laid
/// out by hand, as drivers leave them).
#[test]
fn gc_removes_the_parts_no_unit_needs() {
    let p = Project::new(
        r#"
ok = exec(cmd: "echo ok > {out}/f")
bad = exec(cmd: "exit 3")
"#,
    );
    let out = p.flow(&["run", "p.flow", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let ev = parse(&String::from_utf8_lossy(&out.stdout));
    let (ok, bad) = (&ev.keys["ok"], &ev.keys["bad"]);
    let parts = p.cache().join("slurm/parts");
    let followed = "f011owed0000000000000000000000000000000000000000000000000000000";
    let stale = "57a1e000000000000000000000000000000000000000000000000000000000000";
    for dir in [
        format!("{ok}.3"),       // its artifact is there: not needed
        format!("{bad}.2"),      // the last run's failed unit: the next run reuses them
        format!("{followed}.4"), // a job of it may still run
        format!("{stale}.2"),    // no kept run uses it
    ] {
        std::fs::create_dir_all(parts.join(&dir).join("part-00000")).unwrap();
        std::fs::write(parts.join(&dir).join("part-00000/x"), "x").unwrap();
    }
    let jobs = serde_json::json!({"jobs": {format!("{followed}.4.part-00001"): {"job": "77_1", "attempt": 1, "node": "f", "comment": format!("flow:parts-{followed}")}}});
    std::fs::write(p.cache().join("slurm/jobs.json"), jobs.to_string()).unwrap();
    let out = p.flow(&["gc"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Slurm shard parts of 2 units"), "{stdout}");
    let mut left: Vec<String> = std::fs::read_dir(&parts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = vec![format!("{bad}.2"), format!("{followed}.4")];
    expected.sort();
    assert_eq!(left, expected);
    // Once the failed unit is no longer in a kept run, its parts go too.
    std::fs::write(p.file(), "ok = exec(cmd: \"echo ok > {out}/f\")\n").unwrap();
    assert_eq!(p.flow(&["run", "p.flow"]).status.code(), Some(0));
    assert_eq!(p.flow(&["gc"]).status.code(), Some(0));
    assert!(!parts.join(format!("{bad}.2")).exists());
    assert!(parts.join(format!("{followed}.4")).exists());
}

/// The demo corpus (data/demo/fineweb2-demo.jsonl) written into `dir` as
/// `n` files of consecutive lines, `part-<i>.jsonl`; returns its lines.
fn demo_in_files(dir: &Path, n: usize) -> Vec<String> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/demo");
    let lines: Vec<String> = std::fs::read_to_string(demo.join("fineweb2-demo.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    for (i, chunk) in lines.chunks(lines.len().div_ceil(n)).enumerate() {
        let text = chunk.join("\n") + "\n";
        std::fs::write(dir.join(format!("part-{i}.jsonl")), text).unwrap();
    }
    lines
}

#[test]
fn a_sharded_corpus_over_several_files_runs_as_a_job_array_and_matches_the_local_artifact() {
    if !enabled() {
        return;
    }
    // The demo in 4 files, one id repeated across two of them: the merge
    // drops it as one reader would, and cuts shards across the files.
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    let lines = demo_in_files(&inputs, 4);
    let last = inputs.join("part-3.jsonl");
    let text = std::fs::read_to_string(&last).unwrap() + &lines[0] + "\n";
    std::fs::write(&last, text).unwrap();
    let pipeline = |shards: usize| {
        format!(
            "c = corpus(input: dir(\"{}\"), docs_per_shard: 50, resources: {{shards: {shards}, cpus: 1}})\n",
            inputs.display()
        )
    };
    let (s, ev, _, _) = sharded_run_matches_local(pipeline, "c", 1, 4);
    let key = &ev.keys["c"];
    let stats = CorpusStats::read(&s.cache().join("artifacts").join(key).join("out")).unwrap();
    assert_eq!(stats.documents, lines.len() as u64);
    assert_eq!(stats.duplicate_ids, 1);
}

/// Names of a corpus artifact's shards (`docs-*.jsonl.zst` in `out/`):
/// the pieces a sharded op over it has.
fn corpus_shard_files(cache: &Path, key: &str) -> usize {
    let out = cache.join("artifacts").join(key).join("out");
    std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()))
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("docs-") && name.ends_with(".jsonl.zst")
        })
        .count()
}

/// The shipped `pipelines/definemed.flow`, tiny (the setup of
/// tests/e2e_definemed.rs: a tiny random Qwen2 as the source, shrunk
/// params, a keyword annotator endpoint), through every op on Slurm: every
/// unit has the key and the artifact of a local run, model ops included
/// (training checkpoints, merges, MCQA, judging); the sharded
/// stages run as job arrays; a no-op rerun submits nothing; a run done
/// locally up to `pack` and finished on Slurm gives the same artifacts.
/// The local run builds into a cache of its own, the Slurm runs into the
/// project's: results name their inputs by identity, not by place, so two
/// caches in two places hold the same bytes.
///
/// The annotator endpoint listens on loopback: the jobs of this
/// single-machine cluster run on this same machine, so they reach it (on a
/// real cluster the endpoint's address must be one the compute nodes
/// reach).
#[test]
fn the_definemed_pipeline_on_slurm_gives_the_local_keys_and_artifacts_of_every_unit() {
    if !enabled() {
        return;
    }
    let (_annotator, url) = keyword_annotator();
    // The demo's 334 documents in 4 input files, cut into shards of 60:
    // `corpus` reads 4 pieces, `filter` and `dedup` get 6 shards each. The
    // shipped `raw` (one file, one shard of 100,000 documents) would give
    // every sharded stage a single piece, which runs as a plain job.
    let p = Project::new(&pipeline_with(
        &url,
        "web_files = dir(\"web\")\nraw_shards = corpus(input: web_files, docs_per_shard: 60)\n",
        "    raw: raw_shards,\n",
    ));
    tiny_model("qwen2", &p.path().join("tiny"));
    demo_in_files(&p.path().join("web"), 4);
    let local = p.path().join("local-cache");
    let mut local_args = TARGETS.to_vec();
    local_args.extend(["--cache", local.to_str().unwrap()]);
    let l = p.run(&local_args, 0);
    assert_eq!(l.done.2, 0, "{}", l.stderr);
    let units = l.keys.len() as u64;

    let (ev, stderr) = run_code(&mut slurm_cmd(&p, &TARGETS), 0);
    assert_eq!(ev.done, Some((units, 0, 0, 0)), "{stderr}");
    assert_same_units(&local, &l.keys, &p.cache(), &ev.keys);
    for node in ev.keys.keys() {
        assert!(ev.job_of.contains_key(node), "{node} ran in no job");
    }
    // The model ops are among them, each in a job of its own or an array's.
    for node in [
        "demo.cpt",
        "demo.merged[1]",
        "demo.mmlux_merged[1]",
        "demo.heldout_cpt[0]",
        "demo.answers[0]",
        "demo.vs_larger[1]",
        "demo.summary",
    ] {
        assert_eq!(
            ev.status.get(node).map(String::as_str),
            Some("ran"),
            "{node}"
        );
    }
    // A map node's elements went as one job array.
    let array = ev.job_of["demo.merged[0]"]
        .split('_')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(ev.job_of["demo.merged[1]"], format!("{array}_1"));

    // Each sharded stage ran as one array of a task a piece (the input
    // files of `corpus`, the input shards of `filter` and `dedup`), then a
    // plain merge job.
    let medical_pieces = corpus_shard_files(&local, &l.keys["raw_shards"]);
    let unique_pieces = corpus_shard_files(&local, &l.keys["demo.medical"]);
    assert_eq!(medical_pieces, 6, "334 documents in shards of 60");
    for (node, pieces) in [
        ("raw_shards", 4),
        ("demo.medical", medical_pieces),
        ("demo.unique", unique_pieces),
    ] {
        one_array_of_shard_tasks(&ev, node, pieces);
        assert!(
            !ev.job_of[node].contains('_'),
            "{node}'s merge is a plain job"
        );
    }

    // A no-op rerun submits nothing.
    let (again, _) = run_code(&mut slurm_cmd(&p, &TARGETS), 0);
    assert_eq!(again.done, Some((0, units, 0, 0)));
    assert!(again.submitted.is_empty(), "{:?}", again.submitted);

    // Curation up to `pack` locally, the rest on Slurm, one cache (the
    // Slurm run's moved aside).
    std::fs::rename(p.cache(), p.path().join("slurm-cache")).unwrap();
    let curated = p.run(&["demo.packed", "demo.packed_heldout"], 0);
    let (ev, stderr) = run_code(&mut slurm_cmd(&p, &TARGETS), 0);
    for (node, status) in &ev.status {
        let expected = if curated.keys.contains_key(node) {
            "cached"
        } else {
            "ran"
        };
        assert_eq!(status, expected, "{node}: {stderr}");
    }
    assert!(curated.keys.contains_key("demo.labels") && ev.status["demo.cpt"] == "ran");
    assert_same_units(&local, &l.keys, &p.cache(), &ev.keys);
}
