//! The `flow` command line.
//!
//! Exit codes: 0 ok; 1 a node failed, `verify` found a mismatch, `fmt
//! --check` found an unformatted file; 2 a bad pipeline, bad usage or an
//! unusable cache (diagnostics on stderr); 130 interrupted by Ctrl-C.
//!
//! The engine's commands work on pipelines and the cache; they know no op.
//! The binary (`engine/bin/main.rs`) adds its own commands (the model
//! commands) beside these and supplies a [`Wiring`]: the op registry and
//! the CUDA probe. To add a pipeline subcommand: a variant of [`Command`]
//! with its own `Args` struct and a match arm in [`dispatch`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::op::Registry;
use clap::{Args, Subcommand, ValueEnum};

use crate::device::{parse_device, CudaProbe};
use crate::executor::slurm::SlurmOptions;
use crate::executor::{self, read_tail, ExecutorKind, RunOptions};
use crate::graph::Graph;
use crate::ir::Pipeline;
use crate::memo::InputMemo;
use crate::plan;
use crate::store::{dir_size, CacheLock, Store};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a node failed, or a check found a problem.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad pipeline or usage.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: interrupted.
pub const EXIT_INTERRUPTED: i32 = 130;

/// What the binary plugs into the engine's commands.
pub struct Wiring {
    /// Every op a pipeline may call.
    pub registry: fn() -> Registry,
    /// Counts the CUDA devices (`--device`).
    pub cuda_probe: CudaProbe,
}

/// The pipeline and cache subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline: only nodes whose key is not cached run.
    Run(Box<RunArgs>),
    /// Say which nodes are cached and which will run, and why.
    Plan(PlanArgs),
    /// Check a pipeline without running anything.
    Check(FileArgs),
    /// Print the pipeline's graph.
    Graph(GraphArgs),
    /// Show a node's key, artifact, metadata and log.
    Show(ShowArgs),
    /// Summarise the cache, or a pipeline's cached state.
    Status(StatusArgs),
    /// Remove artifacts no recent run uses.
    Gc(GcArgs),
    /// Format a pipeline file.
    Fmt(FmtArgs),
    /// Rehash every artifact and memoised input; report mismatches.
    Verify(CacheOnlyArgs),
    /// (internal) Build one unit inside a Slurm job (`flow run --executor slurm`).
    #[command(name = "slurm-worker", hide = true)]
    SlurmWorker(WorkerArgs),
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The unit file the driver wrote (`CACHE/slurm/units/KEY.json`).
    pub spec: PathBuf,
}

/// Where `flow run` runs units.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorArg {
    /// Threads of this process.
    Local,
    /// One Slurm batch job a unit (sbatch); the cache must be on a file
    /// system the compute nodes share.
    Slurm,
}

/// Where the cache is.
#[derive(Args, Debug, Clone)]
pub struct CacheArg {
    /// Cache directory (default: `.flow/` beside the pipeline file).
    #[arg(long, env = "FLOW_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// The `.flow` file.
    pub file: PathBuf,
    /// Override a param: `--set NAME=VALUE` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub cache: CacheArg,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Nodes to bring up to date, with everything they need (default: all).
    #[arg(value_name = "NODE")]
    pub targets: Vec<String>,
    /// Most nodes running at once (default: number of cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Print one JSON event a line on stdout.
    #[arg(long)]
    pub json: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Where units run: here (local) or as Slurm jobs (slurm).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorArg,
    /// Slurm partition (default: the cluster's; a node's `resources: {partition: ..}` wins).
    #[arg(long, value_name = "P", help_heading = "Slurm")]
    pub partition: Option<String>,
    /// Slurm account to charge.
    #[arg(long, value_name = "A", help_heading = "Slurm")]
    pub account: Option<String>,
    /// Slurm quality of service.
    #[arg(long, value_name = "Q", help_heading = "Slurm")]
    pub qos: Option<String>,
    /// Most Slurm jobs queued or running at once (default 64).
    #[arg(long, value_name = "N", help_heading = "Slurm")]
    pub max_jobs: Option<usize>,
    /// Submit a failed, timed-out or preempted job again up to N times.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Slurm")]
    pub retries: usize,
    /// Time limit for units that declare none: minutes or [D-]HH:MM:SS.
    #[arg(long, value_name = "TIME", help_heading = "Slurm")]
    pub time: Option<String>,
    /// Memory for units that declare none: 512M, 16G, ...
    #[arg(long, value_name = "MEM", help_heading = "Slurm")]
    pub mem: Option<String>,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Plan only these nodes and what they need (default: all).
    #[arg(value_name = "NODE")]
    pub targets: Vec<String>,
    /// Print one JSON object a line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The `.flow` file.
    pub file: PathBuf,
    /// Override a param: `--set NAME=VALUE`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub file: FileArgs,
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The node (`name`, or `name[i]` for an element of a map node).
    pub node: String,
    /// Print only the artifact's `out/` directory.
    #[arg(long)]
    pub path: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A `.flow` file: show its nodes' state; without: the cache's.
    pub file: Option<PathBuf>,
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub cache: CacheArg,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// A `.flow` file whose cache to collect (default: --cache, FLOW_CACHE or ./.flow).
    pub file: Option<PathBuf>,
    /// Keep artifacts used by the last N runs of each pipeline.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub keep_runs: usize,
    #[command(flatten)]
    pub cache: CacheArg,
}

#[derive(Args, Debug)]
pub struct CacheOnlyArgs {
    /// A `.flow` file whose cache to use (default: --cache, FLOW_CACHE or ./.flow).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArg,
}

#[derive(Args, Debug)]
pub struct FmtArgs {
    pub file: PathBuf,
    /// Exit 1 if the file is not formatted.
    #[arg(long)]
    pub check: bool,
    /// Rewrite the file in place.
    #[arg(long)]
    pub write: bool,
}

/// Why a command ended: a code and, for usage errors, a rendered message.
pub struct Exit(pub i32);

/// Runs a parsed pipeline or cache command and returns the exit code.
pub fn dispatch(command: Command, wiring: &Wiring) -> i32 {
    let result = match command {
        Command::Run(a) => cmd_run(*a, wiring),
        Command::Plan(a) => cmd_plan(a, wiring),
        Command::Check(a) => cmd_check(a, wiring),
        Command::Graph(a) => cmd_graph(a, wiring),
        Command::Show(a) => cmd_show(a, wiring),
        Command::Status(a) => cmd_status(a, wiring),
        Command::Gc(a) => cmd_gc(a),
        Command::Fmt(a) => cmd_fmt(a),
        Command::Verify(a) => cmd_verify(a),
        Command::SlurmWorker(a) => Ok(executor::slurm::worker(
            &a.spec,
            &(wiring.registry)(),
            wiring.cuda_probe,
        )),
    };
    match result {
        Ok(code) => code,
        Err(Exit(code)) => code,
    }
}

type CmdResult = Result<i32, Exit>;

/// Prints a report on stderr and returns the usage exit code.
fn usage_error(report: miette::Report) -> Exit {
    eprintln!("{report:?}");
    Exit(EXIT_USAGE)
}

/// Loads and checks a pipeline; diagnostics go to stderr (exit 2).
pub fn load(file: &Path, set: &[String], registry: &Registry) -> Result<Pipeline, Exit> {
    crate::lang::load(file, set, registry).map_err(|d| {
        eprint!("{d}");
        Exit(EXIT_USAGE)
    })
}

/// The cache directory for a pipeline file.
pub fn cache_root(file: Option<&Path>, cache: &CacheArg) -> PathBuf {
    if let Some(c) = &cache.cache {
        return c.clone();
    }
    match file.and_then(Path::parent) {
        Some(d) if !d.as_os_str().is_empty() => d.join(".flow"),
        _ => PathBuf::from(".flow"),
    }
}

fn open_store(root: &Path) -> Result<Store, Exit> {
    Store::open(root).map_err(|e| usage_error(e.into()))
}

/// The cache of `gc` and `verify`, opened and locked; `None` (after saying
/// so) when there is no cache to work on.
fn lock_existing_cache(
    file: Option<&Path>,
    cache: &CacheArg,
) -> Result<Option<(Store, CacheLock)>, Exit> {
    let root = cache_root(file, cache);
    if !root.exists() {
        println!("no cache at {}", root.display());
        return Ok(None);
    }
    let store = open_store(&root)?;
    let lock = store.lock(false).map_err(|e| usage_error(e.into()))?;
    Ok(Some((store, lock)))
}

/// Loads a pipeline and cuts it down to the targets given on the command line.
fn load_targets(
    a: &PipelineArgs,
    targets: &[String],
    registry: &Registry,
) -> Result<Pipeline, Exit> {
    let p = load(&a.file, &a.set, registry)?;
    crate::graph::restrict_to(&p, targets).map_err(|e| usage_error(miette::miette!("{e}")))
}

fn cmd_run(a: RunArgs, wiring: &Wiring) -> CmdResult {
    let registry = (wiring.registry)();
    let p = load_targets(&a.pipeline, &a.targets, &registry)?;
    let device = parse_device(&a.device).map_err(|e| usage_error(miette::miette!("{e}")))?;
    let exec = executor_of(&a)?;
    let store = open_store(&cache_root(Some(&a.pipeline.file), &a.pipeline.cache))?;
    let cancel = Arc::new(AtomicBool::new(false));
    install_ctrlc(Arc::clone(&cancel));
    let mut opts = RunOptions {
        device,
        json: a.json,
        quiet: false,
        cancel,
        cuda_probe: wiring.cuda_probe,
        executor: exec,
        ..RunOptions::default()
    };
    if let Some(j) = a.jobs {
        if j == 0 {
            return Err(usage_error(miette::miette!("--jobs must be at least 1")));
        }
        opts.jobs = j;
    }
    let summary = executor::run(&p, &registry, &store, &opts).map_err(usage_error)?;
    Ok(if summary.interrupted {
        EXIT_INTERRUPTED
    } else if summary.failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// The executor `flow run`'s flags ask for.
fn executor_of(a: &RunArgs) -> Result<ExecutorKind, Exit> {
    let slurm_flag = [
        (a.partition.is_some(), "--partition"),
        (a.account.is_some(), "--account"),
        (a.qos.is_some(), "--qos"),
        (a.max_jobs.is_some(), "--max-jobs"),
        (a.retries > 0, "--retries"),
        (a.time.is_some(), "--time"),
        (a.mem.is_some(), "--mem"),
    ]
    .into_iter()
    .find(|(given, _)| *given);
    if a.executor == ExecutorArg::Local {
        if let Some((_, flag)) = slurm_flag {
            return Err(usage_error(miette::miette!(
                help = "add `--executor slurm`",
                "{flag} is a Slurm setting, but units run locally"
            )));
        }
        return Ok(ExecutorKind::Local);
    }
    let mut so = SlurmOptions {
        partition: a.partition.clone(),
        account: a.account.clone(),
        qos: a.qos.clone(),
        retries: a.retries,
        ..SlurmOptions::default()
    };
    if let Some(n) = a.max_jobs {
        if n == 0 {
            return Err(usage_error(miette::miette!(
                "--max-jobs must be at least 1"
            )));
        }
        so.max_jobs = n;
    }
    if let Some(t) = &a.time {
        so.time_min = Some(crate::lang::parse_time_min(t).ok_or_else(|| {
            usage_error(miette::miette!(
                help = "minutes (`90`) or `[D-]HH:MM:SS` (`1-00:00:00`)",
                "bad --time `{t}`"
            ))
        })?);
    }
    if let Some(m) = &a.mem {
        so.mem_mb = Some(crate::lang::parse_mem_mb(m).ok_or_else(|| {
            usage_error(miette::miette!(
                help = "e.g. `512M` or `16G`",
                "bad --mem `{m}`"
            ))
        })?);
    }
    if let Some(ms) = std::env::var("FLOW_SLURM_POLL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        so.poll = std::time::Duration::from_millis(ms.max(50));
    }
    Ok(ExecutorKind::Slurm(so))
}

fn install_ctrlc(cancel: Arc<AtomicBool>) {
    let _ = ctrlc::set_handler(move || {
        if cancel.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: stop waiting for running nodes.
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!(
            "flow: interrupted; waiting for running nodes to stop (Ctrl-C again to quit now)"
        );
    });
}

fn cmd_plan(a: PlanArgs, wiring: &Wiring) -> CmdResult {
    let registry = (wiring.registry)();
    let p = load_targets(&a.pipeline, &a.targets, &registry)?;
    let store = Store::existing(&cache_root(Some(&a.pipeline.file), &a.pipeline.cache));
    let entries = plan::plan(&p, &registry, &store).map_err(usage_error)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        for e in &entries {
            let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
        }
    } else {
        for e in &entries {
            let status = match e.status {
                "cached" => "cached  ",
                "run" => "run     ",
                _ => "error   ",
            };
            if e.why.is_empty() {
                let _ = writeln!(out, "{status}{}", e.node);
            } else {
                let _ = writeln!(out, "{status}{}  ({})", e.node, e.why.join("; "));
            }
        }
        let run = entries.iter().filter(|e| e.status != "cached").count();
        let _ = writeln!(out, "{} cached, {} to run", entries.len() - run, run);
    }
    Ok(EXIT_OK)
}

fn cmd_check(a: FileArgs, wiring: &Wiring) -> CmdResult {
    let registry = (wiring.registry)();
    let p = load(&a.file, &a.set, &registry)?;
    Graph::build(&p).map_err(|e| usage_error(e.into()))?;
    let maps = p.nodes.iter().filter(|n| n.map.is_some()).count();
    println!(
        "{}: ok ({} nodes, {} map nodes, {} params)",
        a.file.display(),
        p.nodes.len(),
        maps,
        p.params.len()
    );
    Ok(EXIT_OK)
}

fn cmd_graph(a: GraphArgs, wiring: &Wiring) -> CmdResult {
    let registry = (wiring.registry)();
    let p = load(&a.file.file, &a.file.set, &registry)?;
    let g = Graph::build(&p).map_err(|e| usage_error(e.into()))?;
    let text = match a.format {
        GraphFormat::Dot => g.to_dot(&p),
        GraphFormat::Mermaid => g.to_mermaid(&p),
    };
    print!("{text}");
    Ok(EXIT_OK)
}

fn cmd_show(a: ShowArgs, wiring: &Wiring) -> CmdResult {
    let registry = (wiring.registry)();
    let p = load(&a.pipeline.file, &a.pipeline.set, &registry)?;
    let store = Store::existing(&cache_root(Some(&a.pipeline.file), &a.pipeline.cache));
    let entries = plan::plan(&p, &registry, &store).map_err(usage_error)?;
    let prefix = format!("{}[", a.node);
    let matching: Vec<&plan::PlanEntry> = entries
        .iter()
        .filter(|e| e.node == a.node || e.node.starts_with(&prefix))
        .collect();
    if matching.is_empty() {
        let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
        return Err(usage_error(miette::miette!(
            help = format!("nodes: {}", names.join(", ")),
            "no node `{}` in {}",
            a.node,
            a.pipeline.file.display()
        )));
    }
    if matching.len() > 1 || matching[0].node != a.node {
        for e in &matching {
            let key = e.key.as_deref().unwrap_or("(unknown until upstream runs)");
            println!("{}  {}  {}", e.node, e.status, key);
        }
        println!("(a map node: show one element with `{}[i]`)", a.node);
        return Ok(EXIT_OK);
    }
    let e = matching[0];
    if a.path {
        return match (&e.key, e.status) {
            (Some(k), "cached") => {
                println!("{}", store.out_dir(k).display());
                Ok(EXIT_OK)
            }
            _ => {
                eprintln!(
                    "flow: node `{}` is not in the cache ({})",
                    e.node,
                    e.why.join("; ")
                );
                Ok(EXIT_FAILED)
            }
        };
    }
    println!("node:     {}", e.node);
    println!("op:       {}", e.op);
    println!(
        "key:      {}",
        e.key.as_deref().unwrap_or("(unknown until upstream runs)")
    );
    match (&e.key, e.status) {
        (Some(k), "cached") => {
            let dir = store.artifact_dir(k);
            println!("artifact: {}", store.out_dir(k).display());
            if let Ok(meta) = std::fs::read_to_string(dir.join("meta.json")) {
                println!("--- meta.json ---\n{}", meta.trim_end());
            }
            let log = read_tail(&dir.join("log.txt"), 200);
            println!("--- log.txt ({} lines shown) ---", log.len());
            for l in log {
                println!("{l}");
            }
        }
        (key, _) => {
            println!("status:   will run ({})", e.why.join("; "));
            if let Some(k) = key {
                let failed = store.failed_log(k);
                if failed.exists() {
                    println!(
                        "--- log of the last failed attempt ({}) ---",
                        failed.display()
                    );
                    for l in read_tail(&failed, 200) {
                        println!("{l}");
                    }
                }
            }
        }
    }
    Ok(EXIT_OK)
}

fn cmd_status(a: StatusArgs, wiring: &Wiring) -> CmdResult {
    let root = cache_root(a.file.as_deref(), &a.cache);
    let store = Store::existing(&root);
    if let Some(file) = &a.file {
        let registry = (wiring.registry)();
        let p = load(file, &a.set, &registry)?;
        let entries = plan::plan(&p, &registry, &store).map_err(usage_error)?;
        let cached = entries.iter().filter(|e| e.status == "cached").count();
        println!(
            "{}: {} of {} nodes cached (cache {})",
            file.display(),
            cached,
            entries.len(),
            root.display()
        );
        for e in entries.iter().filter(|e| e.status != "cached") {
            println!(
                "  {} {}  ({})",
                if e.status == "run" {
                    "stale "
                } else {
                    "error "
                },
                e.node,
                e.why.join("; ")
            );
        }
        return Ok(EXIT_OK);
    }
    if !root.exists() {
        println!("no cache at {}", root.display());
        return Ok(EXIT_OK);
    }
    let keys = store.artifact_keys();
    let size = dir_size(&root.join("artifacts"));
    let runs = store.runs();
    println!(
        "cache {}: {} artifacts, {:.1} MiB, {} runs recorded",
        root.display(),
        keys.len(),
        size as f64 / (1 << 20) as f64,
        runs.len()
    );
    for r in runs.iter().rev().take(5) {
        let count = |s: &str| r.nodes.iter().filter(|n| n.status == s).count();
        println!(
            "  run {}  {}  {}: {} ran, {} cached, {} failed, {} skipped",
            r.id,
            r.pipeline,
            r.outcome,
            count("ran"),
            count("cached"),
            count("failed"),
            count("skipped")
        );
    }
    Ok(EXIT_OK)
}

fn cmd_gc(a: GcArgs) -> CmdResult {
    let Some((store, _lock)) = lock_existing_cache(a.file.as_deref(), &a.cache)? else {
        return Ok(EXIT_OK);
    };
    let r = store.gc(a.keep_runs).map_err(|e| usage_error(e.into()))?;
    let parts = crate::executor::slurm::gc_parts(&store, &store.kept_keys(a.keep_runs));
    println!(
        "gc: removed {} artifacts ({:.1} MiB) and {} run records; kept {} artifacts used by the last {} runs",
        r.removed,
        r.bytes as f64 / (1 << 20) as f64,
        r.runs_removed,
        r.kept,
        a.keep_runs
    );
    if parts.removed > 0 {
        println!(
            "gc: removed the Slurm shard parts of {} units ({:.1} MiB) that no unit needs any more",
            parts.removed,
            parts.bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(EXIT_OK)
}

fn cmd_verify(a: CacheOnlyArgs) -> CmdResult {
    let Some((store, _lock)) = lock_existing_cache(a.file.as_deref(), &a.cache)? else {
        return Ok(EXIT_OK);
    };
    let mut problems = store.verify();
    let mut memo = InputMemo::load(&store.root);
    problems.extend(memo.verify());
    memo.save().map_err(|e| usage_error(e.into()))?;
    let n = store.artifact_keys().len();
    if problems.is_empty() {
        println!("verify: {} artifacts and {} inputs ok", n, memo.len());
        Ok(EXIT_OK)
    } else {
        for pr in &problems {
            println!("MISMATCH {pr}");
        }
        println!(
            "verify: {} problems in {} artifacts and the memoised inputs",
            problems.len(),
            n
        );
        Ok(EXIT_FAILED)
    }
}

fn cmd_fmt(a: FmtArgs) -> CmdResult {
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| usage_error(miette::miette!("cannot read {}: {e}", a.file.display())))?;
    let formatted = crate::lang::format(&a.file, &text).map_err(|d| {
        eprint!("{d}");
        Exit(EXIT_USAGE)
    })?;
    if a.check {
        if formatted != text {
            eprintln!(
                "{}: not formatted (run `flow fmt --write {}`)",
                a.file.display(),
                a.file.display()
            );
            return Ok(EXIT_FAILED);
        }
        return Ok(EXIT_OK);
    }
    if a.write {
        if formatted != text {
            crate::store::write_atomic(&a.file, formatted.as_bytes())
                .map_err(|e| usage_error(e.into()))?;
        }
        return Ok(EXIT_OK);
    }
    print!("{formatted}");
    Ok(EXIT_OK)
}
