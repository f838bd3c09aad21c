//! The executor: runs a pipeline's nodes, in parallel where the graph and
//! the resources allow, reusing every artifact whose key is already in the
//! store.
//!
//! A node becomes ready when all its upstream nodes are done. Its arguments
//! are then resolved (upstream artifacts by content hash), its key computed
//! and looked up; a hit is `cached`, a miss is queued. A map node expands
//! into one unit per element of its `over` list at that point. Queued units
//! start while the `--jobs` limit, the CPU thread budget (an op asking for 0
//! threads takes all cores, alone) and the one-GPU-unit-per-device rule allow. A failed
//! unit fails its node; everything downstream is skipped, everything else
//! goes on. Ctrl-C sets the `cancel` flag ops poll; no new unit starts and
//! the run ends once the running ones returned.
//!
//! Where a unit runs is the [`Runner`]'s business: [`LocalRunner`] runs it
//! on a thread of this process within the `--jobs`/cores/GPU budget;
//! [`slurm::SlurmRunner`] submits it as a batch job whose worker (this
//! binary, `flow slurm-worker`) builds it into the same store with the same
//! commit. The scheduler (readiness, keys, cache hits, failures, events)
//! is the same for both.

pub(crate) mod job;
pub mod slurm;

pub use job::read_tail;
pub(crate) use job::{Job, Shards, LOG_TAIL};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::op::Registry;
use crate::op::{Device, Op};
use serde::Serialize;

use crate::device::{no_cuda, resolve_device, CudaProbe};
use crate::graph::Graph;
use crate::ir::{DeviceRequest, NodeResources, Pipeline};
use crate::keys::{unit_key, RVal, UnitKey};
use crate::memo::{InputMemo, InputStamp};
use crate::progress::{Display, NodeProgress};
use crate::resolve::{NodeValue, Resolver, UnitSpec};
use crate::store::{now, Meta, RunNode, RunRecord, Store};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Most units running at once (at least 1).
    pub jobs: usize,
    /// CPU threads to share among running units (at least 1).
    pub cores: usize,
    pub device: DeviceRequest,
    /// Print one JSON event a line on stdout.
    pub json: bool,
    /// Print nothing on stderr.
    pub quiet: bool,
    /// Set on Ctrl-C.
    pub cancel: Arc<AtomicBool>,
    /// How CUDA devices are found (the binary wires the kernel crate's).
    pub cuda_probe: CudaProbe,
    /// Where units run: threads here, or Slurm jobs.
    pub executor: ExecutorKind,
}

/// Where units run.
#[derive(Clone, Debug, Default)]
pub enum ExecutorKind {
    /// Worker threads of this process.
    #[default]
    Local,
    /// One Slurm batch job a unit (`flow run --executor slurm`).
    Slurm(slurm::SlurmOptions),
}

impl Default for RunOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        RunOptions {
            jobs: cores,
            cores,
            device: DeviceRequest::Auto,
            json: false,
            quiet: true,
            cancel: Arc::new(AtomicBool::new(false)),
            cuda_probe: no_cuda,
            executor: ExecutorKind::Local,
        }
    }
}

/// One node (or map element) outcome, as printed with `--json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeEvent {
    pub event: &'static str,
    pub node: String,
    /// `ran`, `cached`, `failed` or `skipped`.
    pub status: &'static str,
    pub key: Option<String>,
    pub seconds: f64,
    /// The Slurm job that built it (`--executor slurm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Ctrl-C ended the run early.
    pub interrupted: bool,
    pub events: Vec<NodeEvent>,
}

impl RunSummary {
    /// The status of a node or element by display name.
    pub fn status_of(&self, name: &str) -> Option<&'static str> {
        self.events
            .iter()
            .find(|e| e.node == name)
            .map(|e| e.status)
    }
}

enum NState {
    Waiting,
    Active {
        pending: usize,
        values: Vec<Option<NodeValue>>,
        failed: bool,
    },
    Done,
    Failed,
    Skipped,
}

struct Unit {
    node: usize,
    elem: Option<usize>,
    display: String,
    key: UnitKey,
    args: BTreeMap<String, RVal>,
    element: Option<RVal>,
    inputs: Vec<InputStamp>,
}

pub(crate) struct Failure {
    pub(crate) report: miette::Report,
    pub(crate) log_tail: Vec<String>,
    pub(crate) log_path: PathBuf,
    pub(crate) cancelled: bool,
}

pub(crate) struct Finished {
    pub(crate) unit: usize,
    pub(crate) seconds: f64,
    pub(crate) result: Result<Meta, Failure>,
    /// The Slurm job id, for units built by a job.
    pub(crate) job: Option<String>,
}

/// What a runner reports back to the scheduler.
pub(crate) enum Msg {
    Finished(Box<Finished>),
    /// A unit was submitted as a batch job (`adopted`: a job an earlier
    /// driver submitted, still queued or running, is followed instead).
    Submitted {
        unit: usize,
        job: String,
        attempt: usize,
        adopted: bool,
        /// For a retry: how the previous job ended.
        after: Option<String>,
        /// The shard task, for a job that builds one part of a sharded
        /// unit.
        shard: Option<usize>,
    },
}

/// What a unit asks for, from its op's declaration and its node.
#[derive(Clone, Debug)]
pub(crate) struct Need {
    /// CPU threads (already capped at the cores for local runs; 0 on Slurm
    /// means a whole node).
    pub(crate) threads: usize,
    /// Whether it occupies its device (a GPU: `device` is `Device::Cuda`).
    pub(crate) gpu: bool,
    /// The device resolved on this machine (local runs).
    pub(crate) device: Device,
    /// The device as asked (Slurm workers resolve it on their node).
    pub(crate) request: DeviceRequest,
    /// The op's declaration.
    pub(crate) op: crate::op::Resources,
    /// The node's `resources:` record.
    pub(crate) node: NodeResources,
}

impl Need {
    /// The CUDA device the unit occupies, if it is a GPU unit.
    pub(crate) fn gpu_ordinal(&self) -> Option<usize> {
        match self.device {
            Device::Cuda(n) if self.gpu => Some(n),
            _ => None,
        }
    }
}

/// Whether a queued unit may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Now,
    /// Not now; later units may go first.
    Later,
    /// Not now, and nothing behind it may overtake it.
    Block,
}

/// A unit handed to a runner.
pub(crate) struct Work {
    pub(crate) unit: usize,
    /// Index of the unit's node in the pipeline.
    pub(crate) node: usize,
    pub(crate) op: Arc<dyn Op>,
    pub(crate) display: String,
    pub(crate) key: UnitKey,
    pub(crate) args: BTreeMap<String, RVal>,
    pub(crate) element: Option<RVal>,
    pub(crate) inputs: Vec<InputStamp>,
    pub(crate) need: Need,
    pub(crate) progress: NodeProgress,
}

/// Where units run: the seam between the scheduler and the machines.
pub(crate) trait Runner {
    /// Whether a unit with this need can start now.
    fn admit(&self, need: &Need) -> Admit;
    /// Starts a unit; its outcome arrives later as [`Msg::Finished`].
    fn start(&mut self, work: Work);
    /// A unit's outcome was received: free what it held.
    fn release(&mut self, unit: usize);
    /// Called after a round of `start`s: a runner may submit what it
    /// collected together (Slurm: one job array for a map node's units).
    fn flush(&mut self) {}
}

/// Runs units on threads of this process.
struct LocalRunner {
    store: Store,
    jobs: usize,
    cores: usize,
    running: usize,
    threads_used: usize,
    /// The CUDA devices a running unit occupies: at most one GPU unit per device.
    gpus_busy: BTreeSet<usize>,
    held: BTreeMap<usize, (usize, Option<usize>)>,
    cancel: Arc<AtomicBool>,
    workdir: PathBuf,
    tx: mpsc::Sender<Msg>,
}

impl Runner for LocalRunner {
    fn admit(&self, need: &Need) -> Admit {
        if self.running >= self.jobs {
            return Admit::Block;
        }
        let fits = self.threads_used + need.threads <= self.cores
            && need
                .gpu_ordinal()
                .is_none_or(|n| !self.gpus_busy.contains(&n));
        if fits {
            Admit::Now
        } else if need.threads == self.cores {
            // An exclusive unit waits at the head: nothing overtakes it.
            Admit::Block
        } else {
            Admit::Later
        }
    }

    fn start(&mut self, work: Work) {
        self.running += 1;
        self.threads_used += work.need.threads;
        let gpu = work.need.gpu_ordinal();
        if let Some(n) = gpu {
            self.gpus_busy.insert(n);
        }
        self.held.insert(work.unit, (work.need.threads, gpu));
        let job = Job {
            unit: work.unit,
            op: work.op,
            store: self.store.clone(),
            build_under: "tmp",
            display: work.display,
            key: work.key,
            args: work.args,
            inputs: work.inputs,
            threads: work.need.threads,
            device: work.need.device,
            cancel: Arc::clone(&self.cancel),
            workdir: self.workdir.clone(),
            progress: work.progress,
            echo: false,
            shards: Shards::Here(work.need.node.shards),
        };
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let f = job.execute();
            let _ = tx.send(Msg::Finished(Box::new(f)));
        });
    }

    fn release(&mut self, unit: usize) {
        if let Some((threads, gpu)) = self.held.remove(&unit) {
            self.running -= 1;
            self.threads_used -= threads;
            if let Some(n) = gpu {
                self.gpus_busy.remove(&n);
            }
        }
    }
}

/// Runs a pipeline against a store. Errors are about the run as a whole
/// (the cache is unusable, the graph is broken); node failures are counted
/// in the summary.
pub fn run(
    p: &Pipeline,
    registry: &Registry,
    store: &Store,
    opts: &RunOptions,
) -> miette::Result<RunSummary> {
    let graph = Graph::build(p)?;
    let _lock = store.lock(opts.quiet)?;
    let mut ex = Executor::new(p, registry, store, opts, &graph)?;
    let started = now();
    ex.go()?;
    let finished = now();
    let outcome = if ex.summary.interrupted {
        "interrupted"
    } else if ex.summary.failed > 0 {
        "failed"
    } else {
        "ok"
    };
    let record = RunRecord {
        id: Store::new_run_id(),
        pipeline: pipeline_id(&p.path),
        started,
        finished,
        outcome: outcome.to_string(),
        nodes: std::mem::take(&mut ex.records),
    };
    store.record_run(&record)?;
    ex.memo.save()?;
    let s = &ex.summary;
    if opts.json {
        let done = serde_json::json!({
            "event": "done", "ran": s.ran, "cached": s.cached, "failed": s.failed, "skipped": s.skipped
        });
        print_line(&done.to_string());
    }
    ex.display.println(&format!(
        "flow: {} ran, {} cached, {} failed, {} skipped ({:.2}s){}",
        s.ran,
        s.cached,
        s.failed,
        s.skipped,
        finished - started,
        if s.interrupted { ", interrupted" } else { "" }
    ));
    Ok(ex.summary)
}

/// How a pipeline is named in run records: its canonical path.
pub fn pipeline_id(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

fn print_line(line: &str) {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = writeln!(lock, "{line}");
    let _ = lock.flush();
}

struct Executor<'a> {
    p: &'a Pipeline,
    registry: &'a Registry,
    store: &'a Store,
    opts: &'a RunOptions,
    graph: &'a Graph,
    memo: InputMemo,
    display: Display,
    default_device: Device,
    state: Vec<NState>,
    done: BTreeMap<String, NodeValue>,
    units: Vec<Unit>,
    queue: VecDeque<usize>,
    ready: VecDeque<usize>,
    running: usize,
    runner: Box<dyn Runner>,
    rx: mpsc::Receiver<Msg>,
    summary: RunSummary,
    records: Vec<RunNode>,
}

impl<'a> Executor<'a> {
    fn new(
        p: &'a Pipeline,
        registry: &'a Registry,
        store: &'a Store,
        opts: &'a RunOptions,
        graph: &'a Graph,
    ) -> miette::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (default_device, notice) = resolve_device(opts.device, opts.cuda_probe);
        let display = Display::new(opts.quiet);
        if let Some(n) = notice {
            // On Slurm the device is resolved by each job on its node.
            if matches!(opts.executor, ExecutorKind::Local) {
                display.println(&n);
            }
        }
        let workdir = p
            .path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .and_then(|d| std::fs::canonicalize(d).ok())
            .unwrap_or_else(|| PathBuf::from("."));
        let runner: Box<dyn Runner> = match &opts.executor {
            ExecutorKind::Local => Box::new(LocalRunner {
                store: store.clone(),
                jobs: opts.jobs.max(1),
                cores: opts.cores.max(1),
                running: 0,
                threads_used: 0,
                gpus_busy: BTreeSet::new(),
                held: BTreeMap::new(),
                cancel: Arc::clone(&opts.cancel),
                workdir: workdir.clone(),
                tx,
            }),
            ExecutorKind::Slurm(so) => Box::new(slurm::SlurmRunner::new(
                so.clone(),
                store.clone(),
                workdir.clone(),
                Arc::clone(&opts.cancel),
                tx,
            )?),
        };
        Ok(Executor {
            p,
            registry,
            store,
            opts,
            graph,
            memo: InputMemo::load(&store.root),
            display,
            default_device,
            state: p.nodes.iter().map(|_| NState::Waiting).collect(),
            done: BTreeMap::new(),
            units: Vec::new(),
            queue: VecDeque::new(),
            ready: VecDeque::new(),
            running: 0,
            runner,
            rx,
            summary: RunSummary::default(),
            records: Vec::new(),
        })
    }

    fn go(&mut self) -> miette::Result<()> {
        for &i in &self.graph.order {
            if self.graph.deps[i].is_empty() {
                self.ready.push_back(i);
            }
        }
        loop {
            while let Some(i) = self.ready.pop_front() {
                self.prepare(i);
            }
            let cancelled = self.opts.cancel.load(Ordering::Relaxed);
            if cancelled {
                self.summary.interrupted = true;
            } else {
                self.start_units();
            }
            if self.running == 0 && (cancelled || self.queue.is_empty()) && self.ready.is_empty() {
                break;
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Finished(f)) => self.finished(*f),
                Ok(Msg::Submitted {
                    unit,
                    job,
                    attempt,
                    adopted,
                    after,
                    shard,
                }) => self.submitted(unit, &job, attempt, adopted, after, shard),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(())
    }

    fn submitted(
        &mut self,
        unit: usize,
        job: &str,
        attempt: usize,
        adopted: bool,
        after: Option<String>,
        shard: Option<usize>,
    ) {
        let u = &self.units[unit];
        let name = match shard {
            Some(i) => format!("{} shard task {i}", u.display),
            None => u.display.clone(),
        };
        let what = if adopted {
            format!("following {name} (slurm job {job}, submitted by an earlier run)")
        } else if attempt > 1 {
            format!(
                "retrying {name} (slurm job {job}, attempt {attempt}): {}",
                after.as_deref().unwrap_or("the last job failed")
            )
        } else {
            format!("submitted {name} (slurm job {job})")
        };
        self.display.println(&what);
        if self.opts.json {
            let mut ev = serde_json::json!({
                "event": "submitted", "node": u.display, "key": u.key.key,
                "job": job, "attempt": attempt, "adopted": adopted,
            });
            if let Some(i) = shard {
                ev["shard"] = i.into();
            }
            print_line(&ev.to_string());
        }
    }

    /// Reports a unit's status (`job`: the cluster job that ran it).
    fn event(
        &mut self,
        name: &str,
        status: &'static str,
        key: Option<&str>,
        seconds: f64,
        parts: Option<&UnitKey>,
        job: Option<&str>,
    ) {
        match status {
            "ran" => self.summary.ran += 1,
            "cached" => self.summary.cached += 1,
            "failed" => self.summary.failed += 1,
            _ => self.summary.skipped += 1,
        }
        let ev = NodeEvent {
            event: "node",
            node: name.to_string(),
            status,
            key: key.map(str::to_string),
            seconds: (seconds * 1000.0).round() / 1000.0,
            job: job.map(str::to_string),
        };
        if self.opts.json {
            if let Ok(line) = serde_json::to_string(&ev) {
                print_line(&line);
            }
        }
        self.summary.events.push(ev);
        self.records.push(RunNode {
            name: name.to_string(),
            status: status.to_string(),
            key: key.map(str::to_string),
            parts: parts.map(|u| u.parts.clone()),
        });
    }

    /// Resolves a ready node, computes its units' keys, serves hits from
    /// the store and queues the misses.
    fn prepare(&mut self, i: usize) {
        let node = &self.p.nodes[i];
        let Some(op) = self.registry.get(&node.op) else {
            let report = miette::miette!("node `{}`: unknown op `{}`", node.name, node.op);
            self.fail_node(i, report);
            return;
        };
        let spec = op.spec();
        let mut resolver = Resolver::new(self.p, &self.done, &mut self.memo);
        let units = resolver.units(node);
        let units = match units {
            Ok(u) => u,
            Err(report) => {
                self.fail_node(i, report);
                return;
            }
        };
        let n = units.len();
        self.state[i] = NState::Active {
            pending: n,
            values: vec![None; n],
            failed: false,
        };
        for UnitSpec {
            elem,
            display,
            args,
            element,
            inputs,
        } in units
        {
            let key = unit_key(spec.name, spec.version, &args, element.as_ref());
            if let Some(meta) = self.store.lookup(&key.key) {
                let value = NodeValue::from_meta(self.store, &meta);
                self.event(&display, "cached", Some(&key.key), 0.0, Some(&key), None);
                self.unit_done(i, elem, Some(value));
            } else {
                self.units.push(Unit {
                    node: i,
                    elem,
                    display,
                    key,
                    args,
                    element,
                    inputs,
                });
                self.queue.push_back(self.units.len() - 1);
            }
        }
        if n == 0 {
            self.finish_node(i);
        }
    }

    fn need_of(&self, u: usize) -> Need {
        let node = &self.p.nodes[self.units[u].node];
        let res = self
            .registry
            .get(&node.op)
            .map(|o| o.spec().resources)
            .unwrap_or(crate::op::Resources::ONE_THREAD);
        let cores = self.opts.cores.max(1);
        let asked = node.resources.cpus.unwrap_or(res.threads);
        let threads = if asked == 0 { cores } else { asked.min(cores) };
        let request = match node.device {
            Some(req) if req != DeviceRequest::Auto => req,
            _ => self.opts.device,
        };
        let device = match node.device {
            Some(req) if req != DeviceRequest::Auto => resolve_device(req, self.opts.cuda_probe).0,
            _ => self.default_device,
        };
        let gpu = res.gpu && matches!(device, Device::Cuda(_));
        let device = if res.gpu { device } else { Device::Cpu };
        Need {
            threads,
            gpu,
            device,
            request,
            op: res,
            node: node.resources.clone(),
        }
    }

    fn start_units(&mut self) {
        let mut idx = 0;
        while idx < self.queue.len() {
            let u = self.queue[idx];
            let need = self.need_of(u);
            match self.runner.admit(&need) {
                Admit::Now => {}
                Admit::Later => {
                    idx += 1;
                    continue;
                }
                Admit::Block => break,
            }
            self.queue.remove(idx);
            let unit = &self.units[u];
            let node = &self.p.nodes[unit.node];
            let Some(op) = self.registry.get(&node.op).cloned() else {
                continue;
            };
            self.running += 1;
            let work = Work {
                unit: u,
                node: unit.node,
                op,
                display: unit.display.clone(),
                key: unit.key.clone(),
                args: unit.args.clone(),
                element: unit.element.clone(),
                inputs: unit.inputs.clone(),
                need,
                progress: self.display.start(&unit.display),
            };
            self.runner.start(work);
        }
        self.runner.flush();
    }

    fn finished(&mut self, f: Finished) {
        self.running -= 1;
        self.runner.release(f.unit);
        let job = f.job.clone();
        let on = match &job {
            Some(j) => format!(", slurm job {j}"),
            None => String::new(),
        };
        let (node, elem, display, key) = {
            let u = &self.units[f.unit];
            (u.node, u.elem, u.display.clone(), u.key.clone())
        };
        match f.result {
            Ok(meta) => {
                let value = NodeValue::from_meta(self.store, &meta);
                self.display
                    .println(&format!("ran     {display} ({:.2}s{on})", f.seconds));
                self.event(
                    &display,
                    "ran",
                    Some(&key.key),
                    f.seconds,
                    Some(&key),
                    job.as_deref(),
                );
                self.unit_done(node, elem, Some(value));
            }
            Err(failure) if failure.cancelled => {
                // Interrupted, not failed: no event, nothing skipped; the
                // node simply does not finish in this run.
                self.display.println(&format!("cancelled {display}"));
                if let NState::Active { failed, .. } = &mut self.state[node] {
                    *failed = true;
                }
                self.unit_done(node, elem, None);
            }
            Err(failure) => {
                {
                    self.display
                        .println(&format!("FAILED  {display} ({:.2}s{on})", f.seconds));
                    self.display.println(&format!("{:?}", failure.report));
                    let text = format!("{:?}", failure.report);
                    let already = failure
                        .log_tail
                        .last()
                        .is_some_and(|l| !l.is_empty() && text.contains(l.as_str()));
                    if !failure.log_tail.is_empty() && !already {
                        self.display.println(&format!(
                            "--- last lines of {} ---",
                            failure.log_path.display()
                        ));
                        for l in &failure.log_tail {
                            self.display.println(l);
                        }
                    }
                }
                self.event(
                    &display,
                    "failed",
                    Some(&key.key),
                    f.seconds,
                    Some(&key),
                    job.as_deref(),
                );
                if let NState::Active { failed, .. } = &mut self.state[node] {
                    if !*failed {
                        *failed = true;
                        self.skip_downstream(node);
                    }
                }
                self.unit_done(node, elem, None);
            }
        }
    }

    fn unit_done(&mut self, i: usize, elem: Option<usize>, value: Option<NodeValue>) {
        let mut complete = false;
        if let NState::Active {
            pending, values, ..
        } = &mut self.state[i]
        {
            values[elem.unwrap_or(0)] = value;
            *pending -= 1;
            complete = *pending == 0;
        }
        if complete {
            self.finish_node(i);
        }
    }

    fn finish_node(&mut self, i: usize) {
        let state = std::mem::replace(&mut self.state[i], NState::Done);
        let NState::Active { values, failed, .. } = state else {
            self.state[i] = state;
            return;
        };
        if failed {
            self.state[i] = NState::Failed;
            return;
        }
        let values: Vec<NodeValue> = values.into_iter().flatten().collect();
        let value = if self.p.nodes[i].map.is_some() {
            NodeValue::from_elements(&values)
        } else {
            match values.into_iter().next() {
                Some(v) => v,
                None => return,
            }
        };
        self.done.insert(self.p.nodes[i].name.clone(), value);
        for &d in &self.graph.dependents[i] {
            if matches!(self.state[d], NState::Waiting)
                && self.graph.deps[d]
                    .iter()
                    .all(|&x| matches!(self.state[x], NState::Done))
                && !self.ready.contains(&d)
            {
                self.ready.push_back(d);
            }
        }
    }

    fn fail_node(&mut self, i: usize, report: miette::Report) {
        let name = self.p.nodes[i].name.clone();
        self.display.println(&format!("FAILED  {name}"));
        self.display.println(&format!("{report:?}"));
        self.state[i] = NState::Failed;
        self.event(&name, "failed", None, 0.0, None, None);
        self.skip_downstream(i);
    }

    fn skip_downstream(&mut self, i: usize) {
        let cause = self.p.nodes[i].name.clone();
        for d in self.graph.downstream(i) {
            if matches!(self.state[d], NState::Waiting) {
                self.state[d] = NState::Skipped;
                let name = self.p.nodes[d].name.clone();
                self.display
                    .println(&format!("skipped {name} (upstream {cause} failed)"));
                self.event(&name, "skipped", None, 0.0, None, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(gpu: bool, device: Device) -> Need {
        Need {
            threads: 1,
            gpu,
            device,
            request: DeviceRequest::Auto,
            op: crate::op::Resources::MODEL,
            node: NodeResources::default(),
        }
    }

    /// The one-GPU-unit rule holds per device: units on different devices occupy different
    /// GPUs, and a GPU op that resolved to the CPU occupies none.
    #[test]
    fn a_gpu_unit_occupies_only_its_own_device() {
        assert_eq!(need(true, Device::Cuda(0)).gpu_ordinal(), Some(0));
        assert_eq!(need(true, Device::Cuda(3)).gpu_ordinal(), Some(3));
        assert_eq!(need(true, Device::Cpu).gpu_ordinal(), None);
        assert_eq!(need(false, Device::Cuda(1)).gpu_ordinal(), None);
    }
}
