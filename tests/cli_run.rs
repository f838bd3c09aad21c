//! `flow run` and `flow plan` through the real binary: incremental reruns,
//! early cutoff, failures, SIGKILL and Ctrl-C, two runs on one cache.

mod cli_common;

use std::time::{Duration, Instant};

use cli_common::{text, Project, Run};

/// a → b → d, c → d, e alone.
const PIPELINE: &str = r#"
param x = "Hello"
param y = "fixed"
a = exec(cmd: "echo {x} | tr A-Z a-z > {out}/f")
b = exec(cmd: "cat {a}/f {a}/f > {out}/f")
c = exec(cmd: "echo {y} > {out}/f")
d = exec(cmd: "cat {b}/f {c}/f > {out}/f")
e = exec(cmd: "echo alone > {out}/f")
"#;

fn read_out(p: &Project, run: &Run, node: &str) -> String {
    let key = &run.keys[node];
    std::fs::read_to_string(p.cache().join("artifacts").join(key).join("out/f")).unwrap()
}

#[test]
fn reruns_exactly_what_changed() {
    let p = Project::new(PIPELINE);
    let r1 = p.run(&[], 0);
    assert_eq!(r1.done, (5, 0, 0, 0));
    assert_eq!(read_out(&p, &r1, "d"), "hello\nhello\nfixed\n");
    let r2 = p.run(&[], 0);
    assert_eq!(r2.done, (0, 5, 0, 0));
    assert_eq!(r2.keys, r1.keys);
    // y feeds only c, and d below it.
    let r3 = p.run(&["--set", "y=other"], 0);
    assert_eq!(r3.with("ran"), vec!["c", "d"]);
    assert_eq!(r3.done, (2, 3, 0, 0));
    assert_eq!(read_out(&p, &r3, "d"), "hello\nhello\nother\n");
    // Back to the default: everything was cached from the first run.
    assert_eq!(p.run(&[], 0).done, (0, 5, 0, 0));
}

#[test]
fn targets_run_only_what_they_need() {
    let p = Project::new(PIPELINE);
    let r = p.run(&["b"], 0);
    assert_eq!(
        r.with("ran"),
        vec!["a", "b"],
        "b and its upstream, nothing else"
    );
    let r = p.run(&["d", "e"], 0);
    assert_eq!(r.with("cached"), vec!["a", "b"]);
    assert_eq!(r.with("ran"), vec!["c", "d", "e"]);
    let out = p.flow(&["run", "p.flow", "dd"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("no node `dd` in the pipeline; did you mean `d`?"),
        "{stderr}"
    );
    let out = p.flow(&["plan", "p.flow", "c"]);
    let (stdout, _) = text(&out);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("cached")).count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("1 cached, 0 to run"), "{stdout}");
}

#[test]
fn early_cutoff_through_the_cli() {
    let p = Project::new(PIPELINE);
    p.run(&[], 0);
    // `a` lower-cases x, so HELLO gives the same bytes as Hello: only `a` reruns.
    let r = p.run(&["--set", "x=HELLO"], 0);
    assert_eq!(r.with("ran"), vec!["a"]);
    assert_eq!(r.done, (1, 4, 0, 0));
}

#[test]
fn plan_explains_each_node() {
    let p = Project::new(PIPELINE);
    let (out, _) = text(&p.flow(&["plan", "p.flow"]));
    assert!(out.contains("run     a  (never run)"), "{out}");
    assert!(
        out.contains("run     d  (upstream b will run; upstream c will run)"),
        "{out}"
    );
    p.run(&[], 0);
    let (out, _) = text(&p.flow(&["plan", "p.flow", "--set", "x=Bye"]));
    assert!(
        out.contains("run     a  (param `x` changed: \"Hello\" → \"Bye\")"),
        "{out}"
    );
    assert!(out.contains("run     b  (upstream a will run)"), "{out}");
    assert!(out.contains("cached  c"), "{out}");
    assert!(out.contains("cached  e"), "{out}");
    assert!(out.contains("2 cached, 3 to run"), "{out}");
    // JSON lines, one per node.
    let (out, _) = text(&p.flow(&["plan", "p.flow", "--json"]));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["status"] == "cached"));
}

#[test]
fn plan_names_an_edited_argument() {
    let p = Project::new(PIPELINE);
    p.run(&[], 0);
    std::fs::write(p.file(), PIPELINE.replace("echo alone", "echo together")).unwrap();
    let (out, _) = text(&p.flow(&["plan", "p.flow"]));
    assert!(out.contains("run     e  (argument `cmd` changed"), "{out}");
    assert!(out.contains("echo together"), "{out}");
}

#[test]
fn a_failure_skips_dependents_keeps_the_rest_and_prints_the_log() {
    let p = Project::new(
        r#"
bad = exec(cmd: "echo some-diagnostic-line; exit 7")
after = exec(cmd: "cat {bad}/f > {out}/f")
good = exec(cmd: "echo ok > {out}/f")
"#,
    );
    let r = p.run(&[], 1);
    assert_eq!(r.status["bad"], "failed");
    assert_eq!(r.status["after"], "skipped");
    assert_eq!(r.status["good"], "ran");
    assert_eq!(r.done, (1, 0, 1, 1));
    assert!(r.stderr.contains("exited with code 7"), "{}", r.stderr);
    assert!(r.stderr.contains("some-diagnostic-line"), "{}", r.stderr);
    // The finished branch is kept.
    let r2 = p.run(&[], 1);
    assert_eq!(r2.status["good"], "cached");
}

#[test]
fn a_bad_pipeline_exits_2_with_a_diagnostic() {
    let p = Project::new("a = exec(cmd: \"true\")\nb = nosuchop(x: 1)\n");
    let out = p.flow(&["run", "p.flow"]);
    assert_eq!(out.status.code(), Some(2));
    let (_, err) = text(&out);
    assert!(err.contains("nosuchop"), "{err}");
    assert!(
        !p.cache().join("runs").exists()
            || p.cache().join("runs").read_dir().unwrap().next().is_none()
    );
    let out = p.flow(&["run", "p.flow", "--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = p.flow(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

fn wait_for_build(p: &Project, child: &mut std::process::Child) {
    let t0 = Instant::now();
    loop {
        let tmp = p.cache().join("tmp");
        if tmp
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "flow exited before the node started"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the node never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SLOW: &str = r#"
fast = exec(cmd: "echo fast > {out}/f")
slow = exec(cmd: "echo partial > {out}/f; sleep 1.5; echo done >> {out}/f")
after = exec(cmd: "cat {slow}/f > {out}/f")
"#;

#[test]
fn sigkill_mid_node_leaves_nothing_half_done() {
    let p = Project::new(SLOW);
    let mut child = p
        .cmd(&["run", "p.flow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_build(&p, &mut child);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // No artifact of `slow` or `after` exists, however far it got.
    let r = p.run(&[], 0);
    assert_eq!(r.status["slow"], "ran");
    assert_eq!(r.status["after"], "ran");
    let key = &r.keys["after"];
    let f = std::fs::read_to_string(p.cache().join("artifacts").join(key).join("out/f")).unwrap();
    assert_eq!(f, "partial\ndone\n");
    // The killed run's build directory was cleaned up.
    assert!(p.cache().join("tmp").read_dir().unwrap().next().is_none());
    assert_eq!(p.run(&[], 0).done, (0, 3, 0, 0));
}

#[test]
fn ctrl_c_stops_cleanly_with_130() {
    let p = Project::new(SLOW);
    let mut child = p
        .cmd(&["run", "p.flow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_build(&p, &mut child);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Run::parse(&out);
    assert!(
        !run.status.contains_key("after"),
        "nothing starts after Ctrl-C"
    );
    assert!(
        p.cache().join("tmp").read_dir().unwrap().next().is_none(),
        "the cancelled build is removed"
    );
    let r = p.run(&[], 0);
    assert_eq!(r.status["slow"], "ran");
}

#[test]
fn two_concurrent_runs_share_the_cache() {
    let p = Project::new(
        r#"
a = exec(cmd: "sleep 0.4; echo a > {out}/f")
b = exec(cmd: "sleep 0.2; cat {a}/f > {out}/f")
c = exec(cmd: "echo c > {out}/f")
"#,
    );
    let spawn = || {
        p.cmd(&["run", "p.flow", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let second = spawn();
    let o1 = first.wait_with_output().unwrap();
    let o2 = second.wait_with_output().unwrap();
    assert_eq!(o1.status.code(), Some(0));
    assert_eq!(o2.status.code(), Some(0));
    let (r1, r2) = (Run::parse(&o1), Run::parse(&o2));
    // Each node ran once overall; the other run found it cached.
    assert_eq!(r1.done.0 + r2.done.0, 3, "{}\n{}", r1.stdout, r2.stdout);
    assert_eq!(r1.done.1 + r2.done.1, 3);
    assert_eq!(r1.keys, r2.keys);
    let waited = format!("{}{}", r1.stderr, r2.stderr);
    assert!(waited.contains("waiting for flow run pid"), "{waited}");
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Adversarial run, issue 12 item 12: `kill -9` of `flow run` left the
/// commands of its `exec` nodes running, and what they started too.
#[test]
fn exec_commands_die_with_a_killed_run() {
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("pids");
    let p = Project::new(&format!(
        "a = exec(cmd: \"sleep 300 & echo $! >> {f}; echo $$ >> {f}; wait\")\n",
        f = pid_file.display()
    ));
    let mut child = p
        .cmd(&["run", "p.flow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let pids = loop {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let pids: Vec<String> = text.lines().map(str::to_string).collect();
        if pids.len() == 2 {
            break pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(pids.iter().all(|p| alive(p)));
    child.kill().unwrap(); // SIGKILL: no handler in flow runs
    child.wait().unwrap();
    let killed = std::time::Instant::now();
    while pids.iter().any(|p| alive(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the command (sh {} and its sleep {}) outlived the run",
            pids[1],
            pids[0]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adversarial run, issue 12 item 7: an input edited while its node ran
/// was stored under the old content's key; once the file was restored, the
/// next run served the edited result from the cache. The input is stat'ed
/// again after the node: a change fails the node and nothing is stored.
#[test]
fn an_input_changed_while_its_node_runs_is_never_stored() {
    let p = Project::new(
        "a = exec(cmd: \"cat in.txt > {out}/x; sleep 1; cat in.txt >> {out}/x\", deps: [file(\"in.txt\")])\n",
    );
    let input = p.path().join("in.txt");
    std::fs::write(&input, "v1\n").unwrap();
    let child = p
        .cmd(&["run", "p.flow", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    wait_for_build(&p, &mut child);
    std::fs::write(&input, "v2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let run = Run::parse(&out);
    assert_eq!(out.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.status["a"], "failed");
    assert!(
        run.stderr.contains("an input changed while `a` ran")
            && run.stderr.contains("in.txt was modified"),
        "{}",
        run.stderr
    );
    // Restored: the node runs again (nothing was cached) and reads v1 only.
    std::fs::write(&input, "v1\n").unwrap();
    let r = p.run(&[], 0);
    assert_eq!(r.status["a"], "ran");
    let x = p.cache().join("artifacts").join(&r.keys["a"]).join("out/x");
    assert_eq!(std::fs::read_to_string(x).unwrap(), "v1\nv1\n");
}

/// Issue 12 item 14, the run-time path: an input that cannot be read is
/// reported where the run finds it, and on a line past column 65,535 the
/// report gives the place as text instead of panicking in miette.
#[test]
fn a_run_time_error_on_a_very_long_line_names_the_place() {
    let long = "x".repeat(70_000);
    let p = Project::new(&format!(
        "a = exec(cmd: \"echo {long}\", deps: [file(\"missing.txt\")])\n"
    ));
    // `check` is content with the file; the run finds the input missing.
    assert_eq!(p.flow(&["check", "p.flow"]).status.code(), Some(0));
    let out = p.flow(&["run", "p.flow"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err:.2000}");
    assert!(
        err.contains("missing.txt")
            && err.contains("p.flow:1:70031")
            && err.contains("too long to show"),
        "{err:.2000}"
    );
    assert!(!err.contains("panicked") && !err.contains(&long));
}
