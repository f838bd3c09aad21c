//! The cache commands through the real binary: `gc`, `verify`, `show`,
//! `status`, the `file()` memo, `--cache`/`FLOW_CACHE`, and `check`,
//! `graph`, `fmt`.

mod cli_common;

use std::time::{Duration, SystemTime};

use cli_common::{text, Project};

const PIPELINE: &str = r#"
param x = "one"
a = exec(cmd: "echo {x} > {out}/f")
b = exec(cmd: "cat {a}/f > {out}/f")
c = exec(cmd: "echo constant > {out}/f")
"#;

fn artifacts(p: &Project) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p.cache().join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn gc_keeps_what_the_last_runs_use() {
    let p = Project::new(PIPELINE);
    let r1 = p.run(&[], 0);
    let r2 = p.run(&["--set", "x=two"], 0);
    assert_eq!(artifacts(&p).len(), 5);
    let out = p.flow(&["gc", "p.flow", "--keep-runs", "2"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(artifacts(&p).len(), 5, "both runs kept");
    let out = p.flow(&["gc", "p.flow", "--keep-runs", "1"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let mut expect: Vec<String> = r2.keys.values().cloned().collect();
    expect.sort();
    assert_eq!(artifacts(&p), expect);
    assert!(!artifacts(&p).contains(&r1.keys["a"]));
    // What gc kept is still a cache hit; what it removed runs again.
    assert_eq!(p.run(&["--set", "x=two"], 0).done, (0, 3, 0, 0));
    let r = p.run(&[], 0);
    assert_eq!(r.with("ran"), vec!["a", "b"]);
}

#[test]
fn verify_reports_corrupted_and_missing_artifacts() {
    let p = Project::new(PIPELINE);
    let r = p.run(&[], 0);
    let out = p.flow(&["verify", "p.flow"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // `show --path` prints the artifact's out/ directory.
    let (path, _) = text(&p.flow(&["show", "p.flow", "b", "--path"]));
    let path = path.trim();
    assert_eq!(
        std::fs::read_to_string(format!("{path}/f")).unwrap(),
        "one\n"
    );
    std::fs::write(format!("{path}/f"), "tampered\n").unwrap();
    std::fs::remove_dir_all(p.cache().join("artifacts").join(&r.keys["c"])).unwrap();
    let out = p.flow(&["verify", "p.flow"]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!(
            "MISMATCH artifact {} (node b): content does not match",
            r.keys["b"]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("MISMATCH artifact {} (node c", r.keys["c"]))
            && stdout.contains("missing"),
        "{stdout}"
    );
}

#[test]
fn file_inputs_touch_vs_change_and_the_memo() {
    let p = Project::new(
        r#"
data = exec(cmd: "wc -c < input.bin > {out}/n", deps: [file("input.bin")])
"#,
    );
    let input = p.path().join("input.bin");
    std::fs::write(&input, vec![7u8; 10_000]).unwrap();
    let old = SystemTime::now() - Duration::from_secs(100);
    let set_mtime = |t: SystemTime| {
        std::fs::File::options()
            .write(true)
            .open(&input)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set_mtime(old);
    assert_eq!(p.run(&[], 0).done, (1, 0, 0, 0));
    // Touched, same content: no rerun.
    set_mtime(old + Duration::from_secs(10));
    assert_eq!(p.run(&[], 0).done, (0, 1, 0, 0));
    // Changed content: rerun.
    std::fs::write(&input, vec![8u8; 10_001]).unwrap();
    set_mtime(old + Duration::from_secs(20));
    assert_eq!(p.run(&[], 0).done, (1, 0, 0, 0));
    // Same size and mtime, different bytes: the memo is trusted (the file
    // is not reread), and `verify` catches the lie.
    std::fs::write(&input, vec![9u8; 10_001]).unwrap();
    set_mtime(old + Duration::from_secs(20));
    assert_eq!(p.run(&[], 0).done, (0, 1, 0, 0));
    let out = p.flow(&["verify", "p.flow"]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("input.bin: content changed but size/mtime did not"),
        "{stdout}"
    );
    // verify dropped the stale memo entry: the next run rehashes and reruns.
    assert_eq!(p.run(&[], 0).done, (1, 0, 0, 0));
}

#[test]
fn cache_location_flag_and_env() {
    let p = Project::new(PIPELINE);
    let elsewhere = p.path().join("elsewhere");
    let out = p.flow(&["run", "p.flow", "--cache", elsewhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(elsewhere.join("artifacts").exists());
    assert!(!p.cache().exists());
    let out = p
        .cmd(&["run", "p.flow", "--json"])
        .env("FLOW_CACHE", &elsewhere)
        .output()
        .unwrap();
    let run = cli_common::Run::parse(&out);
    assert_eq!(run.done, (0, 3, 0, 0));
}

#[test]
fn show_and_status() {
    let p = Project::new(PIPELINE);
    let out = p.flow(&["show", "p.flow", "b", "--path"]);
    assert_eq!(out.status.code(), Some(1), "not in the cache yet");
    let r = p.run(&[], 0);
    let (out, _) = text(&p.flow(&["show", "p.flow", "b"]));
    assert!(out.contains(&format!("key:      {}", r.keys["b"])), "{out}");
    assert!(out.contains("\"op\": \"exec\""), "{out}");
    assert!(out.contains("--- log.txt"), "{out}");
    let out = p.flow(&["show", "p.flow", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let (out, _) = text(&p.flow(&["status", "p.flow", "--set", "x=three"]));
    assert!(out.contains("1 of 3 nodes cached"), "{out}");
    let (out, _) = text(&p.flow(&["status", "--cache", p.cache().to_str().unwrap()]));
    assert!(out.contains("3 artifacts"), "{out}");
    assert!(out.contains("ok: 3 ran, 0 cached"), "{out}");
}

#[test]
fn check_graph_and_fmt() {
    let p = Project::new(PIPELINE);
    let out = p.flow(&["check", "p.flow"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.contains("ok (3 nodes"));
    let (dot, _) = text(&p.flow(&["graph", "p.flow"]));
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("\"a\" -> \"b\""), "{dot}");
    assert!(!dot.contains("\"c\" ->"), "{dot}");
    let (mermaid, _) = text(&p.flow(&["graph", "p.flow", "--format", "mermaid"]));
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("n0 --> n1"), "{mermaid}");
    // fmt: --check fails on an unformatted file, --write fixes it.
    let messy = "param   x=\"one\"\na=exec( cmd : \"echo {x} > {out}/f\" )\n";
    std::fs::write(p.file(), messy).unwrap();
    assert_eq!(p.flow(&["fmt", "p.flow", "--check"]).status.code(), Some(1));
    assert_eq!(p.flow(&["fmt", "p.flow", "--write"]).status.code(), Some(0));
    assert_eq!(p.flow(&["fmt", "p.flow", "--check"]).status.code(), Some(0));
    assert_ne!(std::fs::read_to_string(p.file()).unwrap(), messy);
}

/// Adversarial run, issue 12 item 11: `slerp(t: 1e308)` wrote an all-NaN
/// model and exited 0. The real op declares t in [0, 1]: `flow check` and
/// `flow run` refuse it before anything runs, naming the line.
#[test]
fn slerp_t_out_of_range_is_refused_at_check() {
    let p = Project::new("m = slerp(base: dir(\"a\"), other: dir(\"b\"), t: 1e308)\n");
    for command in ["check", "run"] {
        let out = p.flow(&[command, "p.flow"]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains("argument `t` of `slerp` is 1e308, outside [0, 1]")
                && err.contains("p.flow:1:"),
            "{command}: {err}"
        );
    }
    assert!(!p.cache().join("artifacts").exists());
}
