//! Helpers for the tests that run the `flow` binary.
#![allow(dead_code)]

pub mod definemed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const FLOW: &str = env!("CARGO_BIN_EXE_flow");

/// A temporary directory holding `p.flow`.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p.flow"), pipeline).expect("write pipeline");
        Project { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("p.flow")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join(".flow")
    }
    /// `flow ARGS`, run in the project directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FLOW);
        c.args(args)
            .current_dir(self.path())
            .env_remove("FLOW_CACHE")
            .stdin(Stdio::null());
        c
    }
    pub fn flow(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run flow")
    }
    /// `flow run p.flow --json EXTRA...`, expecting the given exit code.
    pub fn run(&self, extra: &[&str], code: i32) -> Run {
        let mut args = vec!["run", "p.flow", "--json"];
        args.extend_from_slice(extra);
        let out = self.flow(&args);
        let run = Run::parse(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "flow {args:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        run
    }
}

/// The JSON events of a `flow run --json`.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// Node display name → status.
    pub status: BTreeMap<String, String>,
    /// Node display name → key.
    pub keys: BTreeMap<String, String>,
    /// (ran, cached, failed, skipped) from the `done` event.
    pub done: (u64, u64, u64, u64),
}

impl Run {
    pub fn parse(out: &Output) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut status = BTreeMap::new();
        let mut keys = BTreeMap::new();
        let mut done = (u64::MAX, 0, 0, 0);
        for line in stdout.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
            match v["event"].as_str() {
                Some("node") => {
                    let name = v["node"].as_str().unwrap().to_string();
                    status.insert(name.clone(), v["status"].as_str().unwrap().to_string());
                    if let Some(k) = v["key"].as_str() {
                        keys.insert(name, k.to_string());
                    }
                    assert!(v["seconds"].is_number());
                }
                Some("done") => {
                    let n = |f: &str| v[f].as_u64().unwrap();
                    done = (n("ran"), n("cached"), n("failed"), n("skipped"));
                }
                other => panic!("unknown event {other:?}"),
            }
        }
        Run {
            stdout,
            stderr,
            status,
            keys,
            done,
        }
    }
    /// Names with the given status, sorted.
    pub fn with(&self, status: &str) -> Vec<&str> {
        self.status
            .iter()
            .filter(|(_, s)| *s == status)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The content hash of the artifact of `key` in `cache`.
pub fn content_hash(cache: &Path, key: &str) -> String {
    let meta = std::fs::read_to_string(cache.join("artifacts").join(key).join("meta.json"))
        .expect("meta.json");
    let v: serde_json::Value = serde_json::from_str(&meta).unwrap();
    v["content_hash"].as_str().unwrap().to_string()
}

/// Node -> key parts of the newest run record of a cache.
pub fn run_parts(cache: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut records: Vec<_> = std::fs::read_dir(cache.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    records.sort();
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(records.last().unwrap()).unwrap()).unwrap();
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let parts = n["parts"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (n["name"].as_str().unwrap().to_string(), parts)
        })
        .collect()
}

/// Checks that the units of run `b` (in cache `b_cache`) are those of
/// run `a`: for every unit the same key parts, the same key and the same
/// artifact, byte for byte (content hash). What differs between two runs
/// (train's wall time and device) is a run fact, outside the hash.
pub fn assert_same_units(
    a_cache: &Path,
    a_keys: &BTreeMap<String, String>,
    b_cache: &Path,
    b_keys: &BTreeMap<String, String>,
) {
    assert_eq!(
        a_keys.keys().collect::<Vec<_>>(),
        b_keys.keys().collect::<Vec<_>>(),
        "the same units"
    );
    let a_parts = run_parts(a_cache);
    let b_parts = run_parts(b_cache);
    for (node, a_key) in a_keys {
        assert_eq!(a_parts[node], b_parts[node], "key parts of {node}");
        assert_eq!(a_key, &b_keys[node], "key of {node}");
        assert_eq!(
            content_hash(a_cache, a_key),
            content_hash(b_cache, &b_keys[node]),
            "content hash of {node}"
        );
    }
}
