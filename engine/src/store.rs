//! The content-addressed artifact store (the cache directory).
//!
//! Layout of a cache directory (`.flow/` beside the pipeline by default):
//!
//! ```text
//! lock                      fs4 lock held by `flow run`/`gc`/`verify`; holds the owner's pid
//! artifacts/<key>/out/      what the op wrote
//! artifacts/<key>/meta.json node, op, version, key parts, outputs, hashes, times
//! artifacts/<key>/log.txt   the op's log
//! tmp/<key>.<pid>.<n>/      an artifact being built; renamed into artifacts/ when complete
//! failed/<key>.log          the log of the last failed attempt of a key
//! runs/<time>-<pid>.json    one record per run: every node's key and key parts
//! inputs.json               memo of file()/dir() content hashes by (path, size, mtime, inode)
//! ```
//!
//! Invariant: `artifacts/<key>` exists only as the result of one `rename` of
//! a directory whose `out/`, `log.txt` and `meta.json` were complete and
//! synced, so a run killed at any moment leaves either no artifact or a
//! complete one. Everything under `tmp/` is garbage once no run holds the
//! lock, and is removed when the next run takes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::keys::{Hex, KeyParts};

/// Errors of the store, with the path involved.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    #[error("cache {path}: {source}")]
    #[diagnostic(help("check that the cache directory is writable (choose another with --cache DIR or FLOW_CACHE)"))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache {path}: bad metadata: {message}")]
    #[diagnostic(help("run `flow verify`, then `flow gc` to drop broken artifacts"))]
    BadMeta { path: PathBuf, message: String },
}

/// Attaches the path to an io error.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Metadata of a complete artifact (`meta.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// Display name of the node (`name` or `name[i]`).
    pub node: String,
    pub op: String,
    pub version: u32,
    pub key: Hex,
    pub parts: KeyParts,
    /// The op's named outputs; paths as `{"$path": "relative/to/out"}`.
    pub outputs: serde_json::Value,
    /// Merkle hash of `out/` (see [`tree_hash`]).
    pub tree_hash: Hex,
    /// Hash of `tree_hash` and the outputs: what dependents' keys contain.
    pub content_hash: Hex,
    /// For every path output (`{"$path": rel}`), the hash of just that file
    /// or directory: a dependent of `cpt.checkpoints[0]` is keyed by the
    /// checkpoint's own bytes, so it stays cached when only another part of
    /// the artifact changed. See [`path_hashes`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub path_hashes: BTreeMap<String, Hex>,
    pub seconds: f64,
    /// Unix seconds.
    pub started: f64,
    pub finished: f64,
}

/// The artifact content hash: the tree hash of `out/` and the outputs.
pub fn content_hash(tree_hash: &str, outputs: &serde_json::Value) -> Hex {
    let mut h = blake3::Hasher::new();
    h.update(b"flow-content-v1\0");
    h.update(tree_hash.as_bytes());
    h.update(b"\0");
    h.update(outputs.to_string().as_bytes());
    h.finalize().to_hex().to_string()
}

/// One node (or map element) in a run record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunNode {
    /// Display name (`name` or `name[i]`).
    pub name: String,
    /// `ran`, `cached`, `failed`, `skipped`.
    pub status: String,
    pub key: Option<Hex>,
    pub parts: Option<KeyParts>,
}

/// What one `flow run` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    /// Canonical path of the pipeline file.
    pub pipeline: String,
    pub started: f64,
    pub finished: f64,
    /// `ok`, `failed`, `interrupted`.
    pub outcome: String,
    pub nodes: Vec<RunNode>,
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An open cache directory.
#[derive(Clone, Debug)]
pub struct Store {
    pub root: PathBuf,
}

/// The exclusive lock on a cache, released when dropped.
pub struct CacheLock {
    file: File,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

static BUILD_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) a cache directory.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["artifacts", "tmp", "runs", "failed"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        // Absolute, so artifact paths handed to ops work from any directory.
        let root = fs::canonicalize(root).map_err(io_at(root))?;
        Ok(Store { root })
    }

    /// Opens a cache for reading only: does not create it.
    pub fn existing(root: &Path) -> Store {
        let root = fs::canonicalize(root)
            .or_else(|_| std::path::absolute(root))
            .unwrap_or_else(|_| root.to_path_buf());
        Store { root }
    }

    pub fn artifact_dir(&self, key: &str) -> PathBuf {
        self.root.join("artifacts").join(key)
    }

    pub fn out_dir(&self, key: &str) -> PathBuf {
        self.artifact_dir(key).join("out")
    }

    pub fn failed_log(&self, key: &str) -> PathBuf {
        self.root.join("failed").join(format!("{key}.log"))
    }

    /// Takes the exclusive lock, waiting (and saying so on stderr, with the
    /// holder's pid) while another `flow` holds it. Then removes stale
    /// build directories, which nobody else can be writing.
    pub fn lock(&self, quiet: bool) -> Result<CacheLock, StoreError> {
        let path = self.root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                if !quiet {
                    let who = if holder.is_empty() {
                        "?".to_string()
                    } else {
                        holder.to_string()
                    };
                    eprintln!(
                        "waiting for flow run pid {who} to finish (cache {})...",
                        self.root.display()
                    );
                }
                fs4::FileExt::lock(&file).map_err(io_at(&path))?;
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io_at(&path)(e)),
        }
        file.set_len(0).map_err(io_at(&path))?;
        file.seek(io::SeekFrom::Start(0)).map_err(io_at(&path))?;
        write!(file, "{}", std::process::id()).map_err(io_at(&path))?;
        file.flush().map_err(io_at(&path))?;
        let lock = CacheLock { file };
        self.clean_tmp()?;
        Ok(lock)
    }

    /// Removes every build directory under `tmp/` (call with the lock held).
    fn clean_tmp(&self) -> Result<(), StoreError> {
        let tmp = self.root.join("tmp");
        let entries = match fs::read_dir(&tmp) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&tmp)(e)),
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
        Ok(())
    }

    /// A fresh build directory for `key` (with an empty `out/`) under `tmp/`.
    pub fn new_build(&self, key: &str) -> Result<PathBuf, StoreError> {
        self.new_build_under("tmp", key)
    }

    /// A fresh build directory for `key` under `sub/` of the cache (same
    /// file system as `artifacts/`, so the commit stays one `rename`). Slurm
    /// workers build under `slurm/build/`, which a driver taking the lock
    /// does not clear: jobs of an earlier driver may still be writing there.
    pub fn new_build_under(&self, sub: &str, key: &str) -> Result<PathBuf, StoreError> {
        let n = BUILD_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = self
            .root
            .join(sub)
            .join(format!("{key}.{}.{n}{nanos}", std::process::id()));
        let out = dir.join("out");
        fs::create_dir_all(&out).map_err(io_at(&out))?;
        Ok(dir)
    }

    /// Writes meta.json into a build directory, syncs it and renames it
    /// into place. If the key already exists, the build is dropped.
    pub fn commit(&self, build: &Path, meta: &Meta) -> Result<(), StoreError> {
        let meta_path = build.join("meta.json");
        let text = serde_json::to_string_pretty(meta).map_err(|e| StoreError::BadMeta {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        {
            let mut f = File::create(&meta_path).map_err(io_at(&meta_path))?;
            f.write_all(text.as_bytes()).map_err(io_at(&meta_path))?;
            f.sync_all().map_err(io_at(&meta_path))?;
        }
        let log = build.join("log.txt");
        if let Ok(f) = File::open(&log) {
            let _ = f.sync_all();
        }
        let dest = self.artifact_dir(&meta.key);
        if dest.join("meta.json").exists() {
            let _ = fs::remove_dir_all(build);
            return Ok(());
        }
        if dest.exists() {
            // An incomplete directory cannot come from a rename; drop it.
            let _ = fs::remove_dir_all(&dest);
        }
        if let Err(e) = fs::rename(build, &dest) {
            // Another process (a Slurm job, a second driver on a shared
            // cache) committed the same key meanwhile: same key, same
            // content; keep theirs.
            if dest.join("meta.json").exists() {
                let _ = fs::remove_dir_all(build);
                return Ok(());
            }
            return Err(io_at(&dest)(e));
        }
        if let Ok(d) = File::open(self.root.join("artifacts")) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The metadata of a complete artifact, if there is one.
    pub fn lookup(&self, key: &str) -> Option<Meta> {
        let path = self.artifact_dir(key).join("meta.json");
        let text = fs::read_to_string(path).ok()?;
        let meta: Meta = serde_json::from_str(&text).ok()?;
        (meta.key == key).then_some(meta)
    }

    /// Moves a failed build's log to `failed/<key>.log` and drops the build.
    pub fn discard_failed(&self, build: &Path, key: &str) {
        let _ = fs::rename(build.join("log.txt"), self.failed_log(key));
        let _ = fs::remove_dir_all(build);
    }

    /// Drops a build directory (e.g. after Ctrl-C).
    pub fn discard(&self, build: &Path) {
        let _ = fs::remove_dir_all(build);
    }

    /// Appends a run record.
    pub fn record_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let dir = self.root.join("runs");
        let path = dir.join(format!("{}.json", run.id));
        let text = serde_json::to_string(run).map_err(|e| StoreError::BadMeta {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes())
    }

    /// All run records, oldest first. Unreadable records are skipped.
    pub fn runs(&self) -> Vec<RunRecord> {
        let mut runs: Vec<RunRecord> = self.runs_newest_first().collect();
        runs.reverse();
        runs
    }

    /// Run records, newest first, read lazily.
    pub fn runs_newest_first(&self) -> impl Iterator<Item = RunRecord> {
        let mut names: Vec<PathBuf> = match fs::read_dir(self.root.join("runs")) {
            Ok(e) => e
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
            .into_iter()
            .rev()
            .filter_map(|p| fs::read_to_string(p).ok())
            .filter_map(|t| serde_json::from_str::<RunRecord>(&t).ok())
    }

    /// The id of a new run: sorts by time.
    pub fn new_run_id() -> String {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{:010}.{:09}-{}",
            d.as_secs(),
            d.subsec_nanos(),
            std::process::id()
        )
    }

    /// Keys of every complete-looking artifact directory.
    pub fn artifact_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match fs::read_dir(self.root.join("artifacts")) {
            Ok(e) => e
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        keys.sort();
        keys
    }

    /// Removes artifacts (and failed logs) not used by the last `keep_runs`
    /// runs of each pipeline, and older run records. Call with the lock held.
    pub fn gc(&self, keep_runs: usize) -> Result<GcReport, StoreError> {
        let runs = self.runs();
        let kept_ids = kept_run_ids(&runs, keep_runs);
        let reachable = self.kept_keys(keep_runs);
        let mut report = GcReport::default();
        for key in self.artifact_keys() {
            if !reachable.contains(&key) {
                let dir = self.artifact_dir(&key);
                report.bytes += dir_size(&dir);
                fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
                report.removed += 1;
            } else {
                report.kept += 1;
            }
        }
        if let Ok(entries) = fs::read_dir(self.root.join("failed")) {
            for e in entries.flatten() {
                let name = e
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".log")
                    .to_string();
                if !reachable.contains(&name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for run in runs.iter().filter(|r| !kept_ids.contains(&r.id)) {
            let p = self.root.join("runs").join(format!("{}.json", run.id));
            if fs::remove_file(&p).is_ok() {
                report.runs_removed += 1;
            }
        }
        Ok(report)
    }

    /// The keys the last `keep_runs` runs of each pipeline used (what `gc`
    /// keeps).
    pub fn kept_keys(&self, keep_runs: usize) -> BTreeSet<String> {
        let runs = self.runs();
        let kept_ids = kept_run_ids(&runs, keep_runs);
        let mut reachable = BTreeSet::new();
        for run in runs.iter().filter(|r| kept_ids.contains(&r.id)) {
            for n in &run.nodes {
                if let Some(k) = &n.key {
                    reachable.insert(k.clone());
                }
            }
        }
        reachable
    }

    /// Rehashes every artifact and reports those whose content no longer
    /// matches meta.json, and keys the kept runs need that are missing.
    pub fn verify(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for key in self.artifact_keys() {
            let dir = self.artifact_dir(&key);
            let meta_path = dir.join("meta.json");
            let meta: Meta = match fs::read_to_string(&meta_path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("artifact {key}: meta.json unreadable ({e})"));
                    continue;
                }
            };
            match output_tree_hash(&dir.join("out"), &mut hash_file_content) {
                Ok(h)
                    if h == meta.tree_hash
                        && content_hash(&h, &meta.outputs) == meta.content_hash => {}
                Ok(_) => problems.push(format!(
                    "artifact {key} (node {}): content does not match its recorded hash",
                    meta.node
                )),
                Err(e) => problems.push(format!("artifact {key} (node {}): {e}", meta.node)),
            }
        }
        let present: BTreeSet<String> = self.artifact_keys().into_iter().collect();
        let mut reported = BTreeSet::new();
        for run in self.runs() {
            for n in &run.nodes {
                if n.status != "ran" && n.status != "cached" {
                    continue;
                }
                if let Some(k) = &n.key {
                    if !present.contains(k) && reported.insert(k.clone()) {
                        problems.push(format!(
                            "artifact {k} (node {} of {}): missing",
                            n.name, run.pipeline
                        ));
                    }
                }
            }
        }
        problems
    }
}

/// The ids of the last `keep_runs` runs of each pipeline (`runs` oldest
/// first).
fn kept_run_ids(runs: &[RunRecord], keep_runs: usize) -> BTreeSet<String> {
    let mut kept_ids = BTreeSet::new();
    let mut per_pipeline: BTreeMap<&str, usize> = BTreeMap::new();
    for run in runs.iter().rev() {
        let n = per_pipeline.entry(run.pipeline.as_str()).or_insert(0);
        if *n < keep_runs {
            *n += 1;
            kept_ids.insert(run.id.clone());
        }
    }
    kept_ids
}

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: usize,
    pub kept: usize,
    pub bytes: u64,
    pub runs_removed: usize,
}

/// Writes a file through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // atomic-write-file: a temporary file beside the target, synced, renamed
    // over it, and the directory synced; every crate of flow writes so.
    let mut f = atomic_write_file::AtomicWriteFile::open(path).map_err(io_at(path))?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.commit().map_err(io_at(path))
}

/// Total size of the files under a directory.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => total += dir_size(&e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

/// blake3 of a file's bytes (memory-mapped and multi-threaded for big files).
pub fn hash_file_content(path: &Path, _meta: &fs::Metadata) -> io::Result<Hex> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path)?;
    Ok(h.finalize().to_hex().to_string())
}

/// The hash of every path output under `out` (relative path → hash): a
/// directory's [`tree_hash`], a file's content hash tagged `f:`. `file_hash`
/// is the one that hashed the whole tree, so a memoising one reads each file
/// once.
pub fn path_hashes(
    out: &Path,
    outputs: &serde_json::Value,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hex>,
) -> io::Result<BTreeMap<String, Hex>> {
    fn collect<'a>(v: &'a serde_json::Value, rels: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(m) => match m.get("$path").and_then(|p| p.as_str()) {
                Some(rel) if m.len() == 1 => rels.push(rel),
                _ => m.values().for_each(|x| collect(x, rels)),
            },
            serde_json::Value::Array(items) => items.iter().for_each(|x| collect(x, rels)),
            _ => {}
        }
    }
    let mut rels = Vec::new();
    collect(outputs, &mut rels);
    let mut hashes = BTreeMap::new();
    for rel in rels {
        let path = out.join(rel);
        // Only paths inside the artifact; anything else keeps the whole
        // artifact's hash in dependents' keys.
        if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let hash = if meta.is_dir() {
            tree_hash(&path, file_hash)?
        } else if meta.is_file() {
            format!("f:{}", file_hash(&path, &meta)?)
        } else {
            continue;
        };
        hashes.insert(rel.to_string(), hash);
    }
    Ok(hashes)
}

/// Merkle hash of a directory: sorted relative paths, each entry's kind
/// and, for files, the content hash given by `file_hash` (so callers can
/// memoise). Symlinks enter by their target text.
pub fn tree_hash(
    root: &Path,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hex>,
) -> io::Result<Hex> {
    tree_hash_without(root, None, file_hash)
}

/// The tree hash of an op's output directory: all of it but its run facts
/// ([`crate::op::RUN_FACTS_DIR`]).
pub fn output_tree_hash(
    out: &Path,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hex>,
) -> io::Result<Hex> {
    tree_hash_without(out, Some(crate::op::RUN_FACTS_DIR), file_hash)
}

fn tree_hash_without(
    root: &Path,
    skipped_top: Option<&str>,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hex>,
) -> io::Result<Hex> {
    let mut entries = BTreeMap::new();
    walk(root, root, &mut entries, file_hash)?;
    if let Some(top) = skipped_top {
        let inside = format!("{top}/");
        entries.retain(|rel, _| rel != top && !rel.starts_with(&inside));
    }
    let mut h = blake3::Hasher::new();
    h.update(b"flow-tree-v1\0");
    for (rel, entry) in &entries {
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        h.update(entry.as_bytes());
        h.update(b"\0");
    }
    Ok(h.finalize().to_hex().to_string())
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    file_hash: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<Hex>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            let target = fs::read_link(&path)?;
            out.insert(rel, format!("l:{}", target.to_string_lossy()));
        } else if ft.is_dir() {
            out.insert(rel, "d".to_string());
            walk(root, &path, out, file_hash)?;
        } else {
            let meta = entry.metadata()?;
            out.insert(rel, format!("f:{}", file_hash(&path, &meta)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_sees_names_contents_and_structure() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        fs::create_dir_all(a.join("sub")).unwrap();
        fs::write(a.join("sub/x"), b"1").unwrap();
        let h1 = tree_hash(&a, &mut hash_file_content).unwrap();
        fs::write(a.join("sub/x"), b"2").unwrap();
        let h2 = tree_hash(&a, &mut hash_file_content).unwrap();
        assert_ne!(h1, h2);
        fs::write(a.join("sub/x"), b"1").unwrap();
        assert_eq!(tree_hash(&a, &mut hash_file_content).unwrap(), h1);
        fs::rename(a.join("sub/x"), a.join("sub/y")).unwrap();
        assert_ne!(tree_hash(&a, &mut hash_file_content).unwrap(), h1);
    }

    #[test]
    fn an_outputs_run_facts_stay_out_of_its_hash_and_nothing_else_does() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        fs::create_dir_all(out.join("run-facts")).unwrap();
        fs::write(out.join("result.json"), b"{}").unwrap();
        fs::write(out.join("run-facts/timing.json"), b"{\"wall_s\": 1.5}").unwrap();
        let h = output_tree_hash(&out, &mut hash_file_content).unwrap();
        fs::write(out.join("run-facts/timing.json"), b"{\"wall_s\": 9.0}").unwrap();
        fs::write(out.join("run-facts/host"), b"node7").unwrap();
        assert_eq!(output_tree_hash(&out, &mut hash_file_content).unwrap(), h);
        // the same name deeper down, or a look-alike at the top, is content
        fs::create_dir_all(out.join("sub/run-facts")).unwrap();
        fs::write(out.join("sub/run-facts/x"), b"1").unwrap();
        let h2 = output_tree_hash(&out, &mut hash_file_content).unwrap();
        assert_ne!(h2, h);
        fs::write(out.join("run-facts.json"), b"1").unwrap();
        assert_ne!(output_tree_hash(&out, &mut hash_file_content).unwrap(), h2);
        // a user's dir() input is hashed whole
        let whole = tree_hash(&out, &mut hash_file_content).unwrap();
        fs::write(out.join("run-facts/timing.json"), b"{}").unwrap();
        assert_ne!(tree_hash(&out, &mut hash_file_content).unwrap(), whole);
    }

    #[test]
    fn commit_is_atomic_and_lookup_checks_key() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let b = s.new_build("k1").unwrap();
        fs::write(b.join("out/f"), b"x").unwrap();
        assert!(s.lookup("k1").is_none());
        let th = tree_hash(&b.join("out"), &mut hash_file_content).unwrap();
        let outputs = serde_json::json!({});
        let meta = Meta {
            node: "n".into(),
            op: "o".into(),
            version: 1,
            key: "k1".into(),
            parts: KeyParts::new(),
            content_hash: content_hash(&th, &outputs),
            path_hashes: BTreeMap::new(),
            outputs,
            tree_hash: th,
            seconds: 0.0,
            started: 0.0,
            finished: 0.0,
        };
        s.commit(&b, &meta).unwrap();
        assert!(s.lookup("k1").is_some());
        assert!(!b.exists());
        assert!(s.verify().is_empty());
        fs::write(s.out_dir("k1").join("f"), b"y").unwrap();
        assert_eq!(s.verify().len(), 1);
    }
}
