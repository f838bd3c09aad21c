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
