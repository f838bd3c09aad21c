//! Code is part of the key: an op's `OpSpec::version` enters every key it
//! computes, so a change to the code that implements an op must come with
//! a version bump, or old artifacts would be served for the new code.
//!
//! `stdlib/op-sources.json` (written by hand) says which files implement
//! each op; `stdlib/op-versions.lock` (written by
//! `scripts/refresh_op_versions.sh`) records, per op, the version and the
//! blake3 hash of those files when they were last checked. This test fails
//! when the files changed and the version did not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("stdlib/ has a parent")
        .to_path_buf()
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each op's glob patterns, `@set` references expanded.
fn op_patterns() -> BTreeMap<String, Vec<String>> {
    let doc = read_json(&repo_root().join("stdlib/op-sources.json"));
    let sets = doc["_sets"].as_object().expect("_sets is an object");
    let mut out = BTreeMap::new();
    for (op, entry) in doc["ops"].as_object().expect("ops is an object") {
        let mut patterns = Vec::new();
        for s in entry["sources"].as_array().expect("sources is a list") {
            let s = s.as_str().expect("a source is a string");
            match s.strip_prefix('@') {
                Some(set) => {
                    let list = sets
                        .get(set)
                        .unwrap_or_else(|| panic!("op {op}: unknown set @{set}"));
                    for p in list.as_array().expect("a set is a list") {
                        patterns.push(p.as_str().expect("a pattern is a string").to_owned());
                    }
                }
                None => patterns.push(s.to_owned()),
            }
        }
        out.insert(op.clone(), patterns);
    }
    out
}

/// The files one pattern matches, relative to the repository root. Walks
/// only the pattern's literal prefix, so build output elsewhere is never read.
fn matches(root: &Path, pattern: &str) -> BTreeSet<String> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .unwrap_or_else(|e| panic!("bad pattern {pattern}: {e}"))
        .compile_matcher();
    let literal: Vec<&str> = pattern
        .split('/')
        .take_while(|part| !part.contains(['*', '?', '[', '{']))
        .collect();
    let start = root.join(literal.join("/"));
    let mut found = BTreeSet::new();
    for entry in walkdir::WalkDir::new(&start).sort_by_file_name() {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if glob.is_match(&rel) {
            found.insert(rel);
        }
    }
    found
}

/// blake3 over each file's relative path and bytes, in path order.
fn sources_hash(root: &Path, files: &BTreeSet<String>) -> String {
    let mut h = blake3::Hasher::new();
    for rel in files {
        let bytes = std::fs::read(root.join(rel)).expect("read a source file");
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().to_hex().to_string()
}

struct OpState {
    version: u32,
    hash: String,
    files: BTreeSet<String>,
}

/// Files compiled only into tests, which cannot change an op's output.
fn test_only() -> globset::GlobSet {
    let doc = read_json(&repo_root().join("stdlib/op-sources.json"));
    let mut set = globset::GlobSetBuilder::new();
    for p in doc["_test_only"].as_array().expect("_test_only is a list") {
        let p = p.as_str().expect("a pattern is a string");
        set.add(globset::Glob::new(p).unwrap_or_else(|e| panic!("bad pattern {p}: {e}")));
    }
    set.build().expect("glob set")
}

fn current_states() -> BTreeMap<String, OpState> {
    let root = repo_root();
    let test_only = test_only();
    let registry = flow_stdlib::registry();
    let patterns = op_patterns();
    let mut out = BTreeMap::new();
    for (name, op) in registry.iter() {
        let pats = patterns.get(name).unwrap_or_else(|| {
            panic!("op `{name}` has no entry in stdlib/op-sources.json: list the files that implement it")
        });
        let mut files = BTreeSet::new();
        for p in pats {
            let m = matches(&root, p);
            assert!(
                !m.is_empty(),
                "op `{name}`: pattern `{p}` in stdlib/op-sources.json matches no file"
            );
            files.extend(m.into_iter().filter(|f| !test_only.is_match(f)));
        }
        out.insert(
            name.to_owned(),
            OpState {
                version: op.spec().version,
                hash: sources_hash(&root, &files),
                files,
            },
        );
    }
    for name in patterns.keys() {
        assert!(
            out.contains_key(name),
            "stdlib/op-sources.json names `{name}`, which is no op of the registry"
        );
    }
    out
}

fn lock_path() -> PathBuf {
    repo_root().join("stdlib/op-versions.lock")
}

#[test]
fn an_op_whose_code_changed_has_a_new_version() {
    let lock = read_json(&lock_path());
    let mut problems = Vec::new();
    for (name, state) in current_states() {
        let Some(entry) = lock.get(&name) else {
            problems.push(format!(
                "op `{name}` is not in stdlib/op-versions.lock: run scripts/refresh_op_versions.sh"
            ));
            continue;
        };
        let locked_version = entry["version"].as_u64().unwrap_or(0) as u32;
        let locked_hash = entry["hash"].as_str().unwrap_or("");
        if state.hash != locked_hash && state.version == locked_version {
            problems.push(format!(
                "op `{name}`: the files that implement it changed since version {v} was recorded, \
                 and its OpSpec::version is still {v}. If its output for the same inputs may \
                 change, bump the version; then run scripts/refresh_op_versions.sh (with \
                 --same-output {name} only if you checked that its output cannot change). Files: {files}",
                v = state.version,
                files = state.files.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        } else if state.version != locked_version {
            problems.push(format!(
                "op `{name}`: version {} in code, {locked_version} in stdlib/op-versions.lock: \
                 run scripts/refresh_op_versions.sh",
                state.version
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Rewrites the lock (run by scripts/refresh_op_versions.sh). Refuses to
/// record new code under an old version unless the op is named in
/// `FLOW_SAME_OUTPUT` (comma-separated): the author's word that the change
/// cannot alter the op's output.
#[test]
#[ignore = "writes stdlib/op-versions.lock; run through scripts/refresh_op_versions.sh"]
fn refresh_lock() {
    let old = std::fs::read_to_string(lock_path())
        .ok()
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .unwrap_or_else(|| json!({}));
    let same_output: BTreeSet<String> = std::env::var("FLOW_SAME_OUTPUT")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let mut refused = Vec::new();
    let mut lock = serde_json::Map::new();
    for (name, state) in current_states() {
        if let Some(entry) = old.get(&name) {
            let unchanged_version = entry["version"].as_u64() == Some(state.version as u64);
            let changed_code = entry["hash"].as_str() != Some(state.hash.as_str());
            if unchanged_version && changed_code && !same_output.contains(&name) {
                refused.push(name.clone());
            }
        }
        lock.insert(
            name,
            json!({"version": state.version, "hash": state.hash, "files": state.files.len()}),
        );
    }
    assert!(
        refused.is_empty(),
        "not refreshed: the code of {} changed under the same version. Bump OpSpec::version, \
         or pass --same-output NAME for an op whose output cannot change",
        refused.join(", ")
    );
    let text = serde_json::to_string_pretty(&Json::Object(lock)).expect("json") + "\n";
    std::fs::write(lock_path(), text).expect("write the lock");
}
