//! The Slurm runner: every unit the scheduler starts becomes one batch job
//! (`sbatch`), whose script runs this same binary as `flow slurm-worker
//! SPEC`. The worker builds exactly that unit into the shared cache with the
//! same code and the same one-`rename` commit as a local run, so keys,
//! artifacts and content hashes are the same wherever a unit ran.
//!
//! Files under the cache directory:
//!
//! ```text
//! slurm/units/<key>.json        the unit a job builds (op, key, resolved args, threads, device)
//! slurm/logs/<key>.<job>.log    the job's stdout+stderr (the op's log, then the error if any)
//! slurm/build/<key>.<pid>.<n>/  a worker's build directory (never cleared by a driver's lock)
//! slurm/parts/<key>.<tasks>/    a sharded unit's parts, one a shard task (scratch, see sharded.rs)
//! slurm/jobs.json               key -> job id of every job this cache's driver is following
//! ```
//!
//! A monitor thread polls `squeue -t all` (jobs stay visible there for the
//! cluster's `MinJobAge` after they end; `scontrol show job` adds the exit
//! code). A job that ended is a success exactly when its artifact is in the
//! store; otherwise it is retried (`--retries`), then its node fails with
//! the tail of the job's log. Ctrl-C cancels every job with `scancel`. A
//! driver started again finds finished units cached and, through
//! `jobs.json`, follows the jobs of an earlier driver that `squeue` still
//! shows as queued or running instead of submitting them again.

mod commands;
mod monitor;
mod sharded;
mod worker;

pub use worker::worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Admit, Failure, Finished, Msg, Need, Runner, Work};
use crate::progress::NodeProgress;
use crate::store::{write_atomic, Store};
use commands::{is_active, job_name, sbatch, sbatch_script, shell_quote, squeue};
use worker::{rval_to_wire, WorkerSpec};

/// `flow run --executor slurm` settings.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Most jobs queued or running at once.
    pub max_jobs: usize,
    /// How often a failed job is submitted again before its node fails.
    pub retries: usize,
    /// Time limit (minutes) for units that declare none.
    pub time_min: Option<u64>,
    /// Memory (MiB) for units that declare none.
    pub mem_mb: Option<u64>,
    /// How often `squeue` is asked.
    pub poll: Duration,
    /// The `flow` binary the jobs run (on a shared file system).
    pub worker: PathBuf,
    /// Submit the units of one map node that start together as one job
    /// array.
    pub arrays: bool,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            partition: None,
            account: None,
            qos: None,
            max_jobs: 64,
            retries: 0,
            time_min: None,
            mem_mb: None,
            poll: Duration::from_secs(1),
            worker: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("flow")),
            arrays: true,
        }
    }
}

/// One job being followed: a unit's, or one shard task of a sharded unit.
struct Active {
    unit: usize,
    key: String,
    /// Its entry in `slurm/jobs.json`: the key, or a shard task's
    /// `sharded::part_entry`.
    entry: String,
    display: String,
    attempt: usize,
    /// sbatch arguments of a one-job submission (what a retry submits).
    args: Vec<String>,
    /// The unit file the job runs (what a retry runs again).
    spec: PathBuf,
    /// The job's output file.
    log: PathBuf,
    /// A retry's output file is `slurm/logs/<log_name>.<job>.log`.
    log_name: String,
    /// The unit's progress line; `None` for a shard task (its unit's line
    /// is held by the sharded unit).
    progress: Option<NodeProgress>,
    /// `Some`: a shard task, done when its part directory exists.
    part: Option<sharded::PartOf>,
    since: Instant,
    last_state: String,
    /// When the job was first seen COMPLETED without its artifact visible.
    completed: Option<Instant>,
}

impl Active {
    /// Whether what the job builds is there: the unit's artifact, or the
    /// shard task's part.
    fn built(&self, store: &Store) -> bool {
        match &self.part {
            Some(p) => p.dir.is_dir(),
            None => store.lookup(&self.key).is_some(),
        }
    }

    fn message(&self, text: &str) {
        if let Some(p) = &self.progress {
            crate::op::Progress::message(p, text);
        }
    }
}

/// How long a job that completed may take to show its artifact to this
/// machine: on NFS a client's cached directory entries (negative lookups
/// included) can lag behind a rename another client made.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// `slurm/jobs.json`: the jobs a driver follows, by key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct JobsFile {
    jobs: BTreeMap<String, JobEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobEntry {
    job: String,
    attempt: usize,
    node: String,
    /// The job's `--comment` (`flow:KEY`, or `flow:array-KEY` for a task
    /// of a job array).
    #[serde(default)]
    comment: String,
    /// The job's output file (for a shard task, which a restarted driver
    /// follows without knowing its array's list name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    log: String,
}

struct Shared {
    /// Job id -> job.
    active: BTreeMap<String, Active>,
    jobs: JobsFile,
    /// Sharded units whose shard tasks run, by unit.
    sharded: BTreeMap<usize, sharded::ShardedUnit>,
}

/// Submits units as Slurm jobs and follows them.
pub(crate) struct SlurmRunner {
    opts: SlurmOptions,
    store: Store,
    workdir: PathBuf,
    shared: Arc<Mutex<Shared>>,
    tx: mpsc::Sender<Msg>,
    /// Units written out, submitted at the next `flush`.
    pending: Vec<Pending>,
    /// Sharded units written out, their shard tasks submitted at the next
    /// `flush`.
    pending_sharded: Vec<sharded::PendingShards>,
    /// Dropped to stop the monitor at once.
    stop: Option<mpsc::Sender<()>>,
    monitor: Option<JoinHandle<()>>,
}

fn slurm_dir(store: &Store) -> PathBuf {
    store.root.join("slurm")
}

fn jobs_path(store: &Store) -> PathBuf {
    slurm_dir(store).join("jobs.json")
}

/// The output file of job `job` whose `--output` was `<name>.%j.log` (an
/// array task's: `<name>.%A_%a.log`, `job` being `A_a`).
fn job_log(store: &Store, name: &str, job: &str) -> PathBuf {
    slurm_dir(store)
        .join("logs")
        .join(format!("{name}.{job}.log"))
}

impl SlurmRunner {
    pub(crate) fn new(
        opts: SlurmOptions,
        store: Store,
        workdir: PathBuf,
        cancel: Arc<AtomicBool>,
        tx: mpsc::Sender<Msg>,
    ) -> miette::Result<SlurmRunner> {
        for sub in ["units", "logs", "build", "parts"] {
            let d = slurm_dir(&store).join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| miette::miette!("cannot create {}: {e}", d.display()))?;
        }
        let jobs: JobsFile = std::fs::read_to_string(jobs_path(&store))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let shared = Arc::new(Mutex::new(Shared {
            active: BTreeMap::new(),
            jobs,
            sharded: BTreeMap::new(),
        }));
        let (stop, stop_rx) = mpsc::channel();
        let monitor = {
            let shared = Arc::clone(&shared);
            let store = store.clone();
            let tx = tx.clone();
            let opts = opts.clone();
            std::thread::spawn(move || monitor::monitor(shared, store, opts, cancel, tx, stop_rx))
        };
        Ok(SlurmRunner {
            opts,
            store,
            workdir,
            shared,
            tx,
            pending: Vec::new(),
            pending_sharded: Vec::new(),
            stop: Some(stop),
            monitor: Some(monitor),
        })
    }

    /// The sbatch arguments of a unit (everything but the script).
    fn sbatch_args(&self, work: &Work) -> Vec<String> {
        let need = &work.need;
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name=flow:{}", job_name(&work.display)),
            format!(
                "--output={}",
                slurm_dir(&self.store)
                    .join("logs")
                    .join(format!("{}.%j.log", work.key.key))
                    .display()
            ),
            format!("--chdir={}", self.workdir.display()),
            format!("--comment={}", job_comment(&work.key.key)),
        ];
        match slurm_cpus(need) {
            0 => a.push("--exclusive".to_string()),
            n => a.push(format!("--cpus-per-task={n}")),
        }
        let mem = need
            .node
            .mem_mb
            .or((need.op.mem_mb > 0).then_some(need.op.mem_mb))
            .or(self.opts.mem_mb);
        if let Some(m) = mem {
            a.push(format!("--mem={m}M"));
        }
        let gpus = slurm_gpus(need);
        if gpus > 0 {
            a.push(format!("--gres=gpu:{gpus}"));
        }
        let time = need
            .node
            .time_min
            .or((need.op.time_min > 0).then_some(need.op.time_min))
            .or(self.opts.time_min);
        if let Some(t) = time {
            a.push(format!("--time={t}"));
        }
        if let Some(p) = need
            .node
            .partition
            .as_ref()
            .or(self.opts.partition.as_ref())
        {
            a.push(format!("--partition={p}"));
        }
        if let Some(x) = &self.opts.account {
            a.push(format!("--account={x}"));
        }
        if let Some(x) = &self.opts.qos {
            a.push(format!("--qos={x}"));
        }
        a
    }

    /// The unit file of a unit for its worker (`plan`: a sharded op's
    /// pieces and shard tasks).
    fn worker_spec(&self, work: &Work, plan: Option<sharded::Plan>) -> WorkerSpec {
        let plan = plan.unwrap_or(sharded::Plan {
            pieces: 0,
            tasks: 1,
        });
        WorkerSpec {
            cache: self.store.root.clone(),
            workdir: self.workdir.clone(),
            op: work.op.spec().name.to_string(),
            display: work.display.clone(),
            key: work.key.clone(),
            args: work
                .args
                .iter()
                .map(|(k, v)| (k.clone(), rval_to_wire(v)))
                .collect(),
            element: work.element.as_ref().map(rval_to_wire),
            inputs: work.inputs.clone(),
            threads: slurm_cpus(&work.need),
            device: device_text(work),
            tasks: plan.tasks,
            pieces: plan.pieces,
            parts: (plan.tasks > 1)
                .then(|| sharded::parts_root(&self.store, &work.key.key, plan.tasks)),
            part: None,
        }
    }
}

/// Writes a unit file (`slurm/units/<name>.json`); returns its path.
fn write_spec(store: &Store, name: &str, spec: &WorkerSpec) -> Result<PathBuf, String> {
    let path = slurm_dir(store).join("units").join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(spec).map_err(|e| e.to_string())?;
    write_atomic(&path, text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(path)
}

/// CPUs a unit asks of Slurm: the node's `cpus`, else the op's threads;
/// 0 (all threads) means a whole node.
fn slurm_cpus(need: &Need) -> usize {
    need.node.cpus.unwrap_or(need.op.threads)
}

/// GPUs: the node's `gpus`, else one for a GPU op that was asked to run on
/// CUDA (`device: "cuda"` or `--device cuda`).
fn slurm_gpus(need: &Need) -> u32 {
    need.node.gpus.unwrap_or_else(|| {
        u32::from(need.op.gpu && matches!(need.request, crate::ir::DeviceRequest::Cuda(_)))
    })
}

fn device_text(work: &Work) -> String {
    if !work.need.op.gpu || slurm_gpus(&work.need) == 0 {
        return "cpu".to_string();
    }
    match work.need.request {
        // Inside the allocation the GPUs are numbered from 0.
        crate::ir::DeviceRequest::Cuda(Some(n)) => format!("cuda:{n}"),
        _ => "cuda".to_string(),
    }
}

/// A job's comment: the key it builds.
fn job_comment(key: &str) -> String {
    format!("flow:{key}")
}

fn save_jobs(store: &Store, jobs: &JobsFile) {
    if let Ok(text) = serde_json::to_string_pretty(jobs) {
        let _ = write_atomic(&jobs_path(store), text.as_bytes());
    }
}

/// Removes the build directories a job of `key` may have left.
fn clean_builds(store: &Store, key: &str) {
    let dir = slurm_dir(store).join("build");
    let prefix = format!("{key}.");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A unit that was written out and waits for the next `flush`.
struct Pending {
    work: Work,
    args: Vec<String>,
    spec: PathBuf,
}

fn fail_work(work: Work, message: String, tx: &mpsc::Sender<Msg>) {
    work.progress.finish();
    let _ = tx.send(Msg::Finished(Box::new(Finished {
        unit: work.unit,
        seconds: 0.0,
        result: Err(Failure {
            report: miette::miette!("node `{}`: {message}", work.display),
            log_tail: vec![],
            log_path: PathBuf::new(),
            cancelled: false,
        }),
        job: None,
    })));
}

/// Starts following a submitted (or adopted) job of a whole unit.
#[allow(clippy::too_many_arguments)]
fn follow(
    sh: &mut Shared,
    tx: &mpsc::Sender<Msg>,
    p: Pending,
    job: String,
    attempt: usize,
    adopted: bool,
    log: PathBuf,
    comment: String,
) {
    sh.jobs.jobs.insert(
        p.work.key.key.clone(),
        JobEntry {
            job: job.clone(),
            attempt,
            node: p.work.display.clone(),
            comment,
            log: String::new(),
        },
    );
    let _ = tx.send(Msg::Submitted {
        unit: p.work.unit,
        job: job.clone(),
        attempt,
        adopted,
        after: None,
        shard: None,
    });
    crate::op::Progress::message(&p.work.progress, &format!("slurm job {job}"));
    sh.active.insert(
        job,
        Active {
            unit: p.work.unit,
            key: p.work.key.key.clone(),
            entry: p.work.key.key.clone(),
            display: p.work.display.clone(),
            attempt,
            args: p.args,
            spec: p.spec,
            log,
            log_name: p.work.key.key.clone(),
            progress: Some(p.work.progress),
            part: None,
            since: Instant::now(),
            last_state: String::new(),
            completed: None,
        },
    );
}

/// A unit's sbatch arguments for another kind of job: its name, comment
/// and output file replaced.
fn job_args(base: &[String], name: &str, comment: &str, output: &Path) -> Vec<String> {
    let mut args: Vec<String> = base
        .iter()
        .filter(|a| {
            !a.starts_with("--output=")
                && !a.starts_with("--comment=")
                && !a.starts_with("--job-name=")
        })
        .cloned()
        .collect();
    args.push(format!("--job-name=flow:{}", job_name(name)));
    args.push(format!("--comment={comment}"));
    args.push(format!("--output={}", output.display()));
    args
}

/// Submits one job array whose task `i` runs the unit file `specs[i]`
/// (line `i+1` of the list file `slurm/units/<name>.txt`), with the sbatch
/// arguments `base` (a unit's) and `--comment=comment`; returns the
/// array's job id. Task `i`'s log is `slurm/logs/<name>.<job>_<i>.log`.
fn submit_array_of(
    store: &Store,
    worker: &Path,
    base: &[String],
    node: &str,
    name: &str,
    comment: &str,
    specs: &[PathBuf],
) -> Result<String, String> {
    let list = slurm_dir(store).join("units").join(format!("{name}.txt"));
    let text: String = specs.iter().map(|p| format!("{}\n", p.display())).collect();
    write_atomic(&list, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", list.display()))?;
    let output = slurm_dir(store)
        .join("logs")
        .join(format!("{name}.%A_%a.log"));
    let mut args = job_args(base, node, comment, &output);
    args.push(format!("--array=0-{}", specs.len() - 1));
    let script = format!(
        "#!/bin/sh\n# flow units, one a task (see {list})\nspec=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {list})\nexec {worker} slurm-worker \"$spec\"\n",
        list = shell_quote(&list.to_string_lossy()),
        worker = shell_quote(&worker.to_string_lossy()),
    );
    sbatch_script(&args, &script)
}

impl SlurmRunner {
    /// Several units of one map node: one job array, task `i` builds the
    /// `i`-th unit.
    fn submit_array(&self, sh: &mut Shared, group: Vec<Pending>) {
        let name = format!("array-{}", group[0].work.key.key);
        let node = group[0]
            .work
            .display
            .split('[')
            .next()
            .unwrap_or("")
            .to_string();
        let specs: Vec<PathBuf> = group.iter().map(|p| p.spec.clone()).collect();
        match submit_array_of(
            &self.store,
            &self.opts.worker,
            &group[0].args,
            &node,
            &name,
            &format!("flow:{name}"),
            &specs,
        ) {
            Ok(job) => {
                for (i, p) in group.into_iter().enumerate() {
                    let task = format!("{job}_{i}");
                    let log = job_log(&self.store, &name, &task);
                    follow(sh, &self.tx, p, task, 1, false, log, format!("flow:{name}"));
                }
                save_jobs(&self.store, &sh.jobs);
            }
            Err(e) => {
                for p in group {
                    fail_work(p.work, e.clone(), &self.tx);
                }
            }
        }
    }

    /// Follows the job an earlier driver submitted for this key, if
    /// `squeue` still shows it queued or running; gives `p` back if not.
    fn adopt(&self, sh: &mut Shared, p: Pending) -> Option<Pending> {
        let key = p.work.key.key.clone();
        let Some(entry) = sh.jobs.jobs.get(&key).cloned() else {
            return Some(p);
        };
        // The comment names the key (or its array): job ids of another
        // cluster (or of a restarted controller) are never mistaken for
        // ours.
        let expected = if entry.comment.is_empty() {
            job_comment(&key)
        } else {
            entry.comment.clone()
        };
        let found =
            squeue(std::slice::from_ref(&entry.job)).and_then(|m| m.get(&entry.job).cloned());
        if found.is_some_and(|(state, comment)| is_active(&state) && comment == expected) {
            let name = entry
                .comment
                .strip_prefix("flow:")
                .filter(|n| n.starts_with("array-"))
                .unwrap_or(&key);
            let log = job_log(&self.store, name, &entry.job);
            let job = entry.job.clone();
            follow(sh, &self.tx, p, job, entry.attempt, true, log, expected);
            return None;
        }
        sh.jobs.jobs.remove(&key);
        Some(p)
    }
}

impl Runner for SlurmRunner {
    /// `--max-jobs` counts jobs: a whole unit's, or each shard task of a
    /// sharded unit (followed, or waiting for room).
    fn admit(&self, _need: &Need) -> Admit {
        let followed = self
            .shared
            .lock()
            .map(|s| s.active.len() + s.sharded.values().map(|u| u.waiting()).sum::<usize>())
            .unwrap_or(0);
        let n = followed
            + self.pending.len()
            + self
                .pending_sharded
                .iter()
                .map(sharded::PendingShards::jobs)
                .sum::<usize>();
        if n < self.opts.max_jobs.max(1) {
            Admit::Now
        } else {
            Admit::Block
        }
    }

    fn start(&mut self, work: Work) {
        let args = self.sbatch_args(&work);
        let plan = match sharded::plan(&work, &self.workdir) {
            Ok(plan) => plan,
            Err(e) => return fail_work(work, e, &self.tx),
        };
        let spec = self.worker_spec(&work, plan);
        let path = match write_spec(&self.store, &work.key.key, &spec) {
            Ok(s) => s,
            Err(e) => {
                return fail_work(
                    work,
                    format!("cannot write the job's unit file: {e}"),
                    &self.tx,
                )
            }
        };
        let p = Pending {
            work,
            args,
            spec: path,
        };
        let Ok(mut sh) = self.shared.lock() else {
            return;
        };
        let Some(p) = self.adopt(&mut sh, p) else {
            return;
        };
        drop(sh);
        clean_builds(&self.store, &p.work.key.key);
        if spec.tasks > 1 {
            match sharded::PendingShards::new(&self.store, p, spec) {
                Ok(s) => self.pending_sharded.push(s),
                Err(failed) => {
                    let (p, e) = *failed;
                    fail_work(p.work, e, &self.tx)
                }
            }
            return;
        }
        self.pending.push(p);
    }

    fn flush(&mut self) {
        if self.pending.is_empty() && self.pending_sharded.is_empty() {
            return;
        }
        let Ok(mut sh) = self.shared.lock() else {
            return;
        };
        for s in std::mem::take(&mut self.pending_sharded) {
            s.submit(&mut sh, &self.store, &self.opts, &self.tx);
        }
        // Units of one map node started together go as one job array.
        let mut groups: BTreeMap<usize, Vec<Pending>> = BTreeMap::new();
        for p in std::mem::take(&mut self.pending) {
            groups.entry(p.work.node).or_default().push(p);
        }
        for (_, group) in groups {
            if group.len() > 1 && self.opts.arrays {
                self.submit_array(&mut sh, group);
                continue;
            }
            for p in group {
                submit_unit(&mut sh, &self.store, &self.opts, &self.tx, p);
            }
        }
        save_jobs(&self.store, &sh.jobs);
    }

    fn release(&mut self, _unit: usize) {}
}

/// Submits a whole unit as one job and follows it.
fn submit_unit(
    sh: &mut Shared,
    store: &Store,
    opts: &SlurmOptions,
    tx: &mpsc::Sender<Msg>,
    p: Pending,
) {
    match sbatch(&p.args, &opts.worker, &p.spec) {
        Ok(job) => {
            let log = job_log(store, &p.work.key.key, &job);
            let comment = job_comment(&p.work.key.key);
            follow(sh, tx, p, job, 1, false, log, comment);
        }
        Err(e) => fail_work(p.work, e, tx),
    }
}

/// What `flow gc` removed under `slurm/parts/`.
#[derive(Debug, Default)]
pub struct PartsGc {
    pub removed: usize,
    pub bytes: u64,
}

/// `flow gc`: removes the parts (`slurm/parts/<key>.<tasks>/`) that no
/// unit can use any more, and keeps those a later run may still reuse:
///
/// - a key whose artifact is in the store needs no parts (its merge
///   committed; the driver died before it removed them): removed;
/// - a key `slurm/jobs.json` lists has jobs an earlier driver may still
///   have running (shard tasks writing into its parts, which a restarted
///   driver adopts): kept;
/// - a key that one of the kept runs (`--keep-runs`) used, and whose
///   artifact is not there (its unit failed or was interrupted), is what
///   the next run of that pipeline builds, reusing the parts: kept;
/// - any other: removed (a key no kept run uses).
///
/// Call with the cache lock held (no driver runs).
pub fn gc_parts(store: &Store, kept_keys: &std::collections::BTreeSet<String>) -> PartsGc {
    let jobs: JobsFile = std::fs::read_to_string(jobs_path(store))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // Entries are a key, or a shard task's `<key>.<tasks>.part-<i>`.
    let followed: std::collections::BTreeSet<&str> = jobs
        .jobs
        .keys()
        .map(|e| e.split('.').next().unwrap_or(e))
        .collect();
    let mut report = PartsGc::default();
    let Ok(entries) = std::fs::read_dir(slurm_dir(store).join("parts")) else {
        return report;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let key = name.split('.').next().unwrap_or(&name);
        let needed =
            store.lookup(key).is_none() && (followed.contains(key) || kept_keys.contains(key));
        if needed {
            continue;
        }
        let size = crate::store::dir_size(&e.path());
        if std::fs::remove_dir_all(e.path()).is_ok() {
            report.removed += 1;
            report.bytes += size;
        }
    }
    report
}

impl Drop for SlurmRunner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.monitor.take() {
            let _ = h.join();
        }
    }
}
