//! One unit built in this process, by a worker thread of a local run or
//! by `flow slurm-worker` in a Slurm job: the op runs into a fresh build
//! directory, its output is hashed, `meta.json` written and the directory
//! renamed into the store.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Failure, Finished};
use crate::keys::{value_to_json, RVal, UnitKey};
use crate::memo::InputStamp;
use crate::op::{part_dir, run_in_parts, Device, Op, OpContext, Sharded, Value};
use crate::progress::NodeProgress;
use crate::store::{content_hash, hash_file_content, now, output_tree_hash, Meta, Store};

/// One unit built in this process (by a worker thread, or by a Slurm
/// worker).
pub(crate) struct Job {
    pub(crate) unit: usize,
    pub(crate) op: Arc<dyn Op>,
    pub(crate) store: Store,
    /// The cache subdirectory the build directory goes in (`tmp`, or
    /// `slurm/build` for Slurm workers).
    pub(crate) build_under: &'static str,
    pub(crate) display: String,
    pub(crate) key: UnitKey,
    pub(crate) args: BTreeMap<String, RVal>,
    /// The unit's `file()`/`dir()` inputs as hashed, checked again after
    /// the op ran.
    pub(crate) inputs: Vec<InputStamp>,
    pub(crate) threads: usize,
    pub(crate) device: Device,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) workdir: PathBuf,
    pub(crate) progress: NodeProgress,
    /// Also print every log line on stderr (a Slurm job's output file).
    pub(crate) echo: bool,
    /// How a sharded op (`Op::sharding`) is built; ignored for the others.
    pub(crate) shards: Shards,
}

/// How a job builds a sharded op.
#[derive(Clone, Debug)]
pub(crate) enum Shards {
    /// Every shard task here, then the merge: at most this many tasks (the
    /// node's `resources: {shards: N}`; `None`: the default).
    Here(Option<usize>),
    /// Only the merge, of the `tasks` parts that a Slurm job array wrote
    /// under `root`.
    Merge { root: PathBuf, tasks: usize },
}

/// Runs `f` (an op's code) on a rayon pool of `threads`; a panic becomes
/// an error naming the op.
pub(crate) fn run_guarded<T: Send>(
    op: &str,
    threads: usize,
    f: impl FnOnce() -> miette::Result<T> + Send,
) -> miette::Result<T> {
    let run = || std::panic::catch_unwind(AssertUnwindSafe(f));
    let result = match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    };
    result.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(miette::miette!(
            "op `{op}` panicked: {msg} (a bug in the op)"
        ))
    })
}

/// The op's params for one build: resolved args, `{out}` as `out`.
pub(crate) fn params_of(args: &BTreeMap<String, RVal>, out: &Path) -> BTreeMap<String, Value> {
    args.iter()
        .map(|(k, v)| (k.clone(), v.to_value(out)))
        .collect()
}

/// The input paths among `args`, each with its identity in the key.
pub(crate) fn input_ids_of(args: &BTreeMap<String, RVal>) -> BTreeMap<PathBuf, String> {
    let mut ids = BTreeMap::new();
    for v in args.values() {
        v.collect_input_ids(&mut ids);
    }
    ids
}

/// Merges the parts a job array wrote; every part must be there.
fn merge_parts(
    op: &dyn Sharded,
    ctx: &OpContext,
    root: &Path,
    tasks: usize,
) -> miette::Result<crate::op::Outputs> {
    let parts: Vec<PathBuf> = (0..tasks).map(|i| part_dir(root, i)).collect();
    if let Some(missing) = parts.iter().find(|p| !p.is_dir()) {
        return Err(miette::miette!(
            "cannot merge: the shard task's part {} is missing",
            missing.display()
        ));
    }
    op.merge(ctx, &parts)
}

pub(crate) const LOG_TAIL: usize = 20;

impl Job {
    pub(crate) fn execute(self) -> Finished {
        let t0 = Instant::now();
        let started = now();
        let result = self.build(started);
        self.progress.finish();
        Finished {
            unit: self.unit,
            seconds: t0.elapsed().as_secs_f64(),
            result,
            job: None,
        }
    }

    fn build(&self, started: f64) -> Result<Meta, Failure> {
        let build = self
            .store
            .new_build_under(self.build_under, &self.key.key)
            .map_err(|e| Failure {
                report: e.into(),
                log_tail: vec![],
                log_path: PathBuf::new(),
                cancelled: false,
            })?;
        let out = build.join("out");
        let log_path = build.join("log.txt");
        let log_file = Mutex::new(File::create(&log_path).ok());
        let log = |line: &str| {
            if self.echo {
                eprintln!("{line}");
            }
            if let Ok(mut f) = log_file.lock() {
                if let Some(f) = f.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        };
        let ctx = OpContext {
            params: params_of(&self.args, &out),
            out_dir: out.clone(),
            workdir: self.workdir.clone(),
            threads: self.threads,
            device: self.device,
            progress: &self.progress,
            log: &log,
            cancel: &self.cancel,
            input_ids: input_ids_of(&self.args),
        };
        let result = run_guarded(self.op.spec().name, self.threads, || {
            match (self.op.sharding(), &self.shards) {
                (None, _) => self.op.run(&ctx),
                (Some(s), Shards::Here(limit)) => run_in_parts(s, &ctx, *limit),
                (Some(s), Shards::Merge { root, tasks }) => merge_parts(s, &ctx, root, *tasks),
            }
        });
        let fail = |report: miette::Report, store: &Store| {
            let cancelled = self.cancel.load(Ordering::Relaxed);
            log(&format!("error: {report}"));
            drop(log_file.lock().map(|mut f| f.take()));
            let tail = read_tail(&log_path, LOG_TAIL);
            if cancelled {
                store.discard(&build);
            } else {
                store.discard_failed(&build, &self.key.key);
            }
            Failure {
                report,
                log_tail: tail,
                log_path: store.failed_log(&self.key.key),
                cancelled,
            }
        };
        let outputs = match result {
            Ok(o) => o,
            Err(report) => return Err(fail(report, &self.store)),
        };
        // The key names the inputs' content when they were hashed; an input
        // that changed since may have been read half old, half new.
        if let Some(change) = self.inputs.iter().find_map(InputStamp::changed) {
            return Err(fail(
                miette::miette!(
                    help = "the artifact was not stored; run again once the input stops changing",
                    "an input changed while `{}` ran: {change}",
                    self.display
                ),
                &self.store,
            ));
        }
        if let Ok(mut f) = log_file.lock() {
            if let Some(f) = f.as_mut() {
                let _ = f.flush();
            }
            f.take();
        }
        let mut json = serde_json::Map::new();
        for (name, v) in &outputs {
            json.insert(name.clone(), value_to_json(&relative_paths(v, &out)));
        }
        let outputs = serde_json::Value::Object(json);
        // File hashes are kept for the path outputs' own hashes.
        let mut file_hashes: HashMap<PathBuf, String> = HashMap::new();
        let mut memo = |p: &Path, m: &std::fs::Metadata| -> std::io::Result<String> {
            if let Some(h) = file_hashes.get(p) {
                return Ok(h.clone());
            }
            let h = hash_file_content(p, m)?;
            file_hashes.insert(p.to_path_buf(), h.clone());
            Ok(h)
        };
        let hashed = output_tree_hash(&out, &mut memo).and_then(|tree| {
            let paths = crate::store::path_hashes(&out, &outputs, &mut memo)?;
            Ok((paths, tree))
        });
        let (path_hashes, tree): (BTreeMap<String, String>, String) = match hashed {
            Ok(t) => t,
            Err(e) => {
                return Err(fail(
                    miette::miette!("hashing the output of `{}`: {e}", self.display),
                    &self.store,
                ))
            }
        };
        let finished = now();
        let meta = Meta {
            node: self.display.clone(),
            op: self.op.spec().name.to_string(),
            version: self.op.spec().version,
            key: self.key.key.clone(),
            parts: self.key.parts.clone(),
            content_hash: content_hash(&tree, &outputs),
            path_hashes,
            outputs,
            tree_hash: tree,
            seconds: finished - started,
            started,
            finished,
        };
        match self.store.commit(&build, &meta) {
            Ok(()) => Ok(meta),
            Err(e) => Err(fail(e.into(), &self.store)),
        }
    }
}

/// Output paths inside the output directory become relative to it.
fn relative_paths(v: &Value, out: &Path) -> Value {
    match v {
        Value::Path(p) => Value::Path(
            p.strip_prefix(out)
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| p.clone()),
        ),
        Value::List(items) => Value::List(items.iter().map(|i| relative_paths(i, out)).collect()),
        Value::Record(f) => Value::Record(
            f.iter()
                .map(|(k, i)| (k.clone(), relative_paths(i, out)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The last `n` lines of a file.
pub fn read_tail(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
