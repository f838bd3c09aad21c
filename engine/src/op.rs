//! The contract between the engine and an op.
//!
//! An op knows nothing of the cache. It declares what it takes ([`OpSpec`]),
//! gets typed parameters and the paths of its input artifacts in an
//! [`OpContext`], writes everything it produces under `ctx.out_dir`, and
//! returns its named outputs. The engine owns keys, storage, scheduling,
//! devices and resources: it checks arguments against the spec before anything
//! runs, hands the op a fresh output directory, and renames that directory into
//! the store only when `run` returned `Ok`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod params;
pub use params::{
    from_params, variant_name, variants_of, FieldShape, ParamError, ParamsShape, PathOrStr,
};

/// The result type of every op: a `miette` report carries a message and,
/// where the op knows one, a `help` line saying what to do.
pub type OpResult<T> = miette::Result<T>;

/// A value as an op sees it, after the engine resolved every reference.
///
/// Node references arrive as [`Value::Path`] (the upstream artifact directory,
/// or an entry inside it for a field such as `cpt.checkpoints`); `file()` and
/// `dir()` inputs arrive as [`Value::Path`] to the user's file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Record(BTreeMap<String, Value>),
    Path(PathBuf),
}

impl Value {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Record(_) => "record",
            Value::Path(_) => "path",
        }
    }
}

/// The declared type of a parameter or an output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Type {
    Bool,
    Int,
    /// A float; an int literal is accepted and widened.
    Float,
    Str,
    /// A string whose `{NAME}` placeholders the engine resolves before the op
    /// runs: `{out}` is the output directory, `{p}` a param's value, `{n}` the
    /// artifact directory of node `n` (which makes `n` an input). The op gets
    /// the substituted string as a [`Value::Str`].
    Template,
    /// A file: `file("...")`, or a node output that is a file.
    File,
    /// A directory: `dir("...")`, or a node (its artifact directory).
    Dir,
    /// A directory holding a Hugging Face model (config.json, safetensors,
    /// tokenizer): a model-producing node, or `dir("...")`.
    Model,
    List(Box<Type>),
    /// A record of named values; the op checks its fields.
    Record,
    /// One of the listed strings.
    Enum(Vec<String>),
    /// Either of two types (e.g. a float or a list of floats).
    Either(Box<Type>, Box<Type>),
    /// Anything; the op checks it.
    Any,
}

impl Type {
    /// The enum type whose strings are the serde names of `E`'s unit
    /// variants: an op's spec and its params struct share one list.
    pub fn enum_of<E: DeserializeOwned>() -> Type {
        Type::Enum(variants_of::<E>().into_iter().map(String::from).collect())
    }
}

/// A parameter an op takes.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: Type,
    /// `None`: the argument is required.
    pub default: Option<Value>,
    pub doc: &'static str,
    /// Inclusive bounds every number in the argument must lie within (for
    /// a list or record argument: each number inside it); `flow check`
    /// rejects a value outside them, NaN included.
    pub range: Option<(f64, f64)>,
}

impl Param {
    pub fn required(name: &'static str, ty: Type, doc: &'static str) -> Self {
        Param {
            name,
            ty,
            default: None,
            doc,
            range: None,
        }
    }
    pub fn optional(name: &'static str, ty: Type, default: Value, doc: &'static str) -> Self {
        Param {
            name,
            ty,
            default: Some(default),
            doc,
            range: None,
        }
    }
    /// The same param, its numbers bounded to `[lo, hi]`.
    pub fn within(self, lo: f64, hi: f64) -> Self {
        Param {
            range: Some((lo, hi)),
            ..self
        }
    }

    /// The same param, its numbers bounded below by `lo` (no upper bound).
    pub fn at_least(self, lo: f64) -> Self {
        self.within(lo, f64::INFINITY)
    }

    /// The first number in `value` outside this param's range, if any.
    pub fn out_of_range(&self, value: &Value) -> Option<f64> {
        let (lo, hi) = self.range?;
        let bad = |x: f64| !(lo..=hi).contains(&x);
        match value {
            Value::Int(i) => bad(*i as f64).then_some(*i as f64),
            Value::Float(f) => bad(*f).then_some(*f),
            Value::List(items) => items.iter().find_map(|v| self.out_of_range(v)),
            Value::Record(fields) => fields.values().find_map(|v| self.out_of_range(v)),
            Value::Bool(_) | Value::Str(_) | Value::Path(_) => None,
        }
    }
}

/// A named output, reachable in the language as `node.name`. Its value is
/// what the op returned under that name; paths are relative to the output
/// directory and the engine makes them absolute for dependents.
#[derive(Clone, Debug)]
pub struct Output {
    pub name: &'static str,
    pub ty: Type,
    pub doc: &'static str,
}

/// What a running op occupies; the scheduler never oversubscribes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// CPU threads the op uses; 0 means all of them (exclusive).
    pub threads: usize,
    /// Whether the op can use a GPU when one is selected.
    pub gpu: bool,
    /// Memory the op needs, in MiB, for a batch scheduler (`flow run
    /// --executor slurm` passes it as `--mem`); 0: not declared (the run's
    /// `--mem`, else the cluster's default). Local runs ignore it.
    pub mem_mb: u64,
    /// A time limit in minutes for a batch scheduler (`--time`); 0: not
    /// declared (the run's `--time`, else the partition's default).
    pub time_min: u64,
}

impl Resources {
    pub const ONE_THREAD: Resources = Resources {
        threads: 1,
        gpu: false,
        mem_mb: 0,
        time_min: 0,
    };
    pub const ALL_THREADS: Resources = Resources {
        threads: 0,
        gpu: false,
        mem_mb: 0,
        time_min: 0,
    };
    pub const MODEL: Resources = Resources {
        threads: 0,
        gpu: true,
        mem_mb: 0,
        time_min: 0,
    };

    /// The same, declaring the memory a scheduler should reserve (MiB):
    /// `Resources::MODEL.with_mem_mb(64 * 1024)`.
    pub const fn with_mem_mb(self, mem_mb: u64) -> Resources {
        Resources { mem_mb, ..self }
    }

    /// The same, declaring a time limit for a scheduler (minutes).
    pub const fn with_time_min(self, time_min: u64) -> Resources {
        Resources { time_min, ..self }
    }
}

/// Everything the engine needs to know about an op before running it.
#[derive(Clone, Debug)]
pub struct OpSpec {
    pub name: &'static str,
    /// The implementation's version: part of every key, bumped whenever the
    /// op's output for the same inputs may change.
    pub version: u32,
    pub doc: &'static str,
    pub params: Vec<Param>,
    /// What the node's artifact directory is, as a value: `Type::Dir` for
    /// most ops, `Type::Model` for ops that write a Hugging Face model
    /// directory (so a `Model` parameter accepts the node).
    pub produces: Type,
    pub outputs: Vec<Output>,
    pub resources: Resources,
}

/// The device the engine chose for a node (the CPU unless one was chosen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

/// Progress reporting: the engine draws a live line (a bar when a total is
/// known) for each running node.
pub trait Progress: Send + Sync {
    /// Sets the number of units (steps, documents, items) to do.
    fn set_total(&self, total: u64, unit: &str);
    /// Adds finished units.
    fn inc(&self, done: u64);
    /// A short status text (e.g. the current loss).
    fn message(&self, text: &str);
}

/// A progress sink that drops everything, for tests and library callers.
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&self, _: u64, _: &str) {}
    fn inc(&self, _: u64) {}
    fn message(&self, _: &str) {}
}

/// The folder of an op's output directory that holds facts of the run
/// that built it (wall time, host, device): stored with the artifact and
/// readable by its dependents, but left out of its content hash, so two
/// builds of the same inputs (locally, on Slurm, tomorrow) have one hash and
/// early cutoff holds. Nothing an op computes from its inputs goes here.
pub const RUN_FACTS_DIR: &str = "run-facts";

/// What an op gets for one run.
pub struct OpContext<'a> {
    /// Every declared parameter, defaults filled, references resolved.
    pub params: BTreeMap<String, Value>,
    /// A fresh, empty directory: everything the op produces goes here.
    pub out_dir: PathBuf,
    /// The directory relative paths in the pipeline are resolved against
    /// (the pipeline file's directory); `exec` runs its command there.
    pub workdir: PathBuf,
    /// CPU threads the op may use (a rayon pool of this size is installed
    /// around `run`).
    pub threads: usize,
    pub device: Device,
    pub progress: &'a dyn Progress,
    /// Lines for the node's log file.
    pub log: &'a (dyn Fn(&str) + Send + Sync),
    /// Set when the user pressed Ctrl-C: long loops return an error soon.
    pub cancel: &'a AtomicBool,
    /// Each input path among the params (an upstream artifact, an entry in
    /// one, a `file()` or `dir()`) with the identity that stands for it in
    /// the key (`artifact:HASH`, `path:HASH`, `file:HASH`, ...). See
    /// [`OpContext::input_name`].
    pub input_ids: BTreeMap<PathBuf, String>,
}

impl OpContext<'_> {
    /// The params as the op's params struct (one serde struct an op: its
    /// fields are the spec's params, enums as Rust enums). A value that does
    /// not fit its field is an error naming the param.
    pub fn params<T: DeserializeOwned>(&self) -> OpResult<T> {
        from_params(&self.params)
    }

    /// Where this run's facts go (see [`RUN_FACTS_DIR`]); created on demand.
    pub fn run_facts_dir(&self) -> OpResult<PathBuf> {
        let dir = self.out_dir.join(RUN_FACTS_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| miette::miette!("cannot create {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// How a result names the input at `path`: by its identity in the key
    /// (for a path below an input, that input's identity and the rest of
    /// the path), never by where the cache or the project lies. A result
    /// that wrote the location instead would differ between two caches of
    /// one pipeline (another machine, a moved cache, a Slurm scratch path)
    /// while its key does not, and its dependents' keys would differ with
    /// it. A path that is no input (a literal string param) is named as
    /// given: the key holds it as given too.
    pub fn input_name(&self, path: &Path) -> String {
        self.input_place(&path.to_string_lossy())
    }

    /// [`OpContext::input_name`] for a place that starts with a path, such
    /// as `PATH:LINE` or `PATH:LINE: what was wrong`: the input path it
    /// starts with (the longest) becomes the input's identity.
    pub fn input_place(&self, place: &str) -> String {
        let starts_with_input = |path: &Path| {
            let path = path.to_string_lossy();
            place.strip_prefix(path.as_ref()).and_then(|rest| {
                matches!(rest.chars().next(), None | Some('/' | ':')).then_some(path.len())
            })
        };
        let longest = self
            .input_ids
            .iter()
            .filter_map(|(path, id)| Some((starts_with_input(path)?, id)))
            .max_by_key(|(len, _)| *len);
        match longest {
            Some((len, id)) => format!("{id}{}", &place[len..]),
            None => place.to_owned(),
        }
    }

    /// Writes a line to the node's log.
    pub fn log(&self, line: &str) {
        (self.log)(line)
    }

    /// Returns an error if the run was cancelled; call it in long loops.
    pub fn check_cancelled(&self) -> OpResult<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(miette::miette!("cancelled"))
        } else {
            Ok(())
        }
    }
}

/// The named outputs an op returns (see [`Output`]).
pub type Outputs = BTreeMap<String, Value>;

/// An op of the language.
pub trait Op: Send + Sync {
    fn spec(&self) -> OpSpec;
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs>;
    /// The shape of the struct the op reads its params into
    /// (`ParamsShape::of::<TheOpsParams>()`), for the registry-wide test
    /// that it matches the spec. `None`: the op reads its params by name.
    fn params_shape(&self) -> Option<ParamsShape> {
        None
    }
    /// The op's data-parallel form, if its work splits into independent
    /// pieces (see [`Sharded`]). The engine then builds the unit as shard
    /// tasks and one merge ([`run_in_parts`]); `run` is not called.
    fn sharding(&self) -> Option<&dyn Sharded> {
        None
    }
}

/// An op whose work splits into independent, ordered pieces (e.g. the
/// shards of its input corpus), run as shard tasks (threads of one process
/// locally, a Slurm job array with `--executor slurm`) whose partial results
/// one deterministic merge combines.
///
/// The contract: whatever contiguous groups the pieces are cut into, the
/// merge of their parts writes the same bytes into `ctx.out_dir` as one
/// group of all pieces would. The number of tasks is therefore a resource
/// (`resources: {shards: N}`), never part of a key. Parts are scratch:
/// never an artifact, deleted once merged.
pub trait Sharded: Send + Sync {
    /// How many pieces the unit's work splits into (at least 1), from its
    /// params and inputs only (it is asked before any task runs, on the
    /// machine that plans the unit).
    fn pieces(&self, ctx: &OpContext) -> OpResult<usize>;
    /// Does the pieces of `range` and writes their partial result into
    /// `ctx.out_dir`, a fresh directory of its own.
    fn run_part(&self, ctx: &OpContext, range: std::ops::Range<usize>) -> OpResult<()>;
    /// Combines the parts (their directories, in piece order, covering
    /// every piece once) into `ctx.out_dir`; returns the named outputs.
    /// Must not change the parts: a merge that failed is run again on them.
    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs>;
}

/// Shard tasks a unit gets without `resources: {shards: N}`: one a piece,
/// at most this many.
pub const DEFAULT_SHARD_TASKS: usize = 64;

/// The number of shard tasks for `pieces` pieces and a node's `shards`
/// limit.
pub fn shard_tasks(pieces: usize, limit: Option<usize>) -> usize {
    pieces.min(limit.unwrap_or(DEFAULT_SHARD_TASKS)).max(1)
}

/// Pieces `0..pieces` cut into `tasks` contiguous ranges whose sizes differ
/// by at most one (the longer ones first).
pub fn part_ranges(pieces: usize, tasks: usize) -> Vec<std::ops::Range<usize>> {
    let tasks = tasks.clamp(1, pieces.max(1));
    let (base, extra) = (pieces / tasks, pieces % tasks);
    let mut start = 0;
    (0..tasks)
        .map(|t| {
            let len = base + usize::from(t < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// The directory part `index` of a unit is written to, under `root`.
pub fn part_dir(root: &Path, index: usize) -> PathBuf {
    root.join(format!("part-{index:05}"))
}

/// A context like `ctx` writing into `out_dir` (a shard task's part).
fn with_out<'a>(ctx: &OpContext<'a>, out_dir: PathBuf) -> OpContext<'a> {
    OpContext {
        params: ctx.params.clone(),
        out_dir,
        workdir: ctx.workdir.clone(),
        threads: ctx.threads,
        device: ctx.device,
        progress: ctx.progress,
        log: ctx.log,
        cancel: ctx.cancel,
        input_ids: ctx.input_ids.clone(),
    }
}

/// Runs part `index` of `tasks` of a sharded op into `part_dir(root,
/// index)`: written under a temporary name and renamed when complete, so a
/// part directory that exists is whole (an existing one is kept: same
/// unit, same bytes). The shard tasks of a Slurm job array run this.
pub fn run_part_into(
    op: &dyn Sharded,
    ctx: &OpContext,
    pieces: usize,
    tasks: usize,
    index: usize,
    root: &Path,
) -> OpResult<PathBuf> {
    let ranges = part_ranges(pieces, tasks);
    let range = ranges.get(index).cloned().ok_or_else(|| {
        miette::miette!("internal: shard task {index} of {} requested", ranges.len())
    })?;
    let done = part_dir(root, index);
    if done.is_dir() {
        return Ok(done);
    }
    let tmp = root.join(format!(
        ".part-{index:05}.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let io = |what: &str, p: &Path, e: std::io::Error| {
        miette::miette!("shard task {index}: cannot {what} {}: {e}", p.display())
    };
    std::fs::create_dir_all(&tmp).map_err(|e| io("create", &tmp, e))?;
    let result = op.run_part(&with_out(ctx, tmp.clone()), range.clone());
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        // One task is the whole unit: its error is the op's own.
        if ranges.len() == 1 {
            return Err(e);
        }
        return Err(e.wrap_err(format!(
            "shard task {index} of {} (pieces {}..{}) failed",
            ranges.len(),
            range.start,
            range.end
        )));
    }
    if let Err(e) = std::fs::rename(&tmp, &done) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another task of the same unit finished it first (a retry racing
        // a straggler): the part is there, with the same bytes.
        if !done.is_dir() {
            return Err(io("rename", &done, e));
        }
    }
    Ok(done)
}

/// Builds a sharded op's unit in this process: its pieces cut into
/// `shard_tasks(pieces, limit)` parts, run in parallel on the current rayon
/// pool into a scratch directory beside `ctx.out_dir`, then merged into
/// `ctx.out_dir`; the parts are removed either way. A failing part fails the
/// unit with that part's error.
pub fn run_in_parts(op: &dyn Sharded, ctx: &OpContext, limit: Option<usize>) -> OpResult<Outputs> {
    use rayon::prelude::*;
    let pieces = op.pieces(ctx)?;
    let tasks = shard_tasks(pieces, limit);
    ctx.progress.set_total(pieces as u64, "shards");
    let mut name = ctx.out_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    let root = ctx.out_dir.with_file_name(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)
        .map_err(|e| miette::miette!("cannot create {}: {e}", root.display()))?;
    let result = (0..tasks)
        .into_par_iter()
        .map(|i| run_part_into(op, ctx, pieces, tasks, i, &root))
        .collect::<OpResult<Vec<PathBuf>>>()
        .and_then(|parts| op.merge(ctx, &parts));
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// All ops by name.
pub struct Registry {
    ops: BTreeMap<&'static str, Arc<dyn Op>>,
}

impl Registry {
    /// A registry of the given ops (tests use it with ops of their own).
    pub fn from_ops(list: Vec<Arc<dyn Op>>) -> Registry {
        let mut ops: BTreeMap<&'static str, Arc<dyn Op>> = BTreeMap::new();
        for op in list {
            let name = op.spec().name;
            assert!(ops.insert(name, op).is_none(), "two ops are named `{name}`");
        }
        Registry { ops }
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Op>> {
        self.ops.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.ops.keys().copied()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Arc<dyn Op>)> {
        self.ops.iter().map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_cut_into_contiguous_near_equal_ranges() {
        assert_eq!(part_ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(part_ranges(6, 4), vec![0..2, 2..4, 4..5, 5..6]);
        assert_eq!(part_ranges(2, 5), vec![0..1, 1..2], "never an empty task");
        assert_eq!(part_ranges(3, 1), vec![0..3]);
        assert_eq!(part_ranges(0, 4), vec![0..0]);
        assert_eq!(shard_tasks(1000, None), DEFAULT_SHARD_TASKS);
        assert_eq!(shard_tasks(5, None), 5);
        assert_eq!(shard_tasks(5, Some(2)), 2);
        assert_eq!(shard_tasks(0, Some(2)), 1);
    }

    /// A context whose inputs are a cache artifact, an output entry of
    /// another and a `file()`.
    fn with_inputs<R>(f: impl FnOnce(&OpContext) -> R) -> R {
        let (log, cancel) = (|_: &str| {}, AtomicBool::new(false));
        let ctx = OpContext {
            params: BTreeMap::new(),
            out_dir: "/cache/artifacts/k3/out".into(),
            workdir: "/project".into(),
            threads: 1,
            device: Device::Cpu,
            progress: &NoProgress,
            log: &log,
            cancel: &cancel,
            input_ids: BTreeMap::from([
                ("/cache/artifacts/k1/out".into(), "artifact:aa".to_owned()),
                (
                    "/cache/artifacts/k1/out/ckpt/step-4".into(),
                    "path:bb".to_owned(),
                ),
                ("/project/bench.jsonl".into(), "file:cc".to_owned()),
            ]),
        };
        f(&ctx)
    }

    #[test]
    fn results_name_inputs_by_their_key_identity_not_their_place() {
        with_inputs(|ctx| {
            let name = |p: &str| ctx.input_name(Path::new(p));
            assert_eq!(name("/cache/artifacts/k1/out"), "artifact:aa");
            assert_eq!(
                name("/cache/artifacts/k1/out/model.safetensors"),
                "artifact:aa/model.safetensors"
            );
            assert_eq!(
                name("/cache/artifacts/k1/out/ckpt/step-4"),
                "path:bb",
                "the longest input wins"
            );
            assert_eq!(
                name("/cache/artifacts/k1/out/ckpt/step-4/config.json"),
                "path:bb/config.json"
            );
            assert_eq!(name("/project/bench.jsonl"), "file:cc");
            // Not below an input: as given (a literal path is in the key as given).
            assert_eq!(name("/models/qwen"), "/models/qwen");
            assert_eq!(
                name("/cache/artifacts/k1/outer"),
                "/cache/artifacts/k1/outer",
                "a sibling with the same prefix"
            );
        });
    }

    #[test]
    fn places_in_results_name_their_file_by_identity() {
        with_inputs(|ctx| {
            assert_eq!(ctx.input_place("/project/bench.jsonl:12"), "file:cc:12");
            assert_eq!(
                ctx.input_place("/cache/artifacts/k1/out/shard-00000.jsonl.zst:3: not JSON: a/b"),
                "artifact:aa/shard-00000.jsonl.zst:3: not JSON: a/b"
            );
            assert_eq!(
                ctx.input_place("/project/bench.jsonl.bak:1"),
                "/project/bench.jsonl.bak:1"
            );
            assert_eq!(ctx.input_place("doc 7: empty"), "doc 7: empty");
        });
    }
}
