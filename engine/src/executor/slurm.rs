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

use crate::memo::InputStamp;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{read_tail, Admit, Failure, Finished, Job, Msg, Need, Runner, Work, LOG_TAIL};
use crate::device::{resolve_device, CudaProbe};
use crate::keys::{unit_key, RVal, TPart, UnitKey};
use crate::op::{Registry, Value};
use crate::progress::Display;
use crate::store::{write_atomic, Store};

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

/// One job being followed.
struct Active {
    unit: usize,
    key: String,
    display: String,
    attempt: usize,
    /// sbatch arguments of a one-unit job (what a retry submits).
    args: Vec<String>,
    /// The job's output file.
    log: PathBuf,
    progress: crate::progress::NodeProgress,
    since: Instant,
    last_state: String,
    /// When the job was first seen COMPLETED without its artifact visible.
    completed: Option<Instant>,
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
}

struct Shared {
    /// Job id -> job.
    active: BTreeMap<String, Active>,
    jobs: JobsFile,
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

fn job_log(store: &Store, key: &str, job: &str) -> PathBuf {
    slurm_dir(store)
        .join("logs")
        .join(format!("{key}.{job}.log"))
}

impl SlurmRunner {
    pub(crate) fn new(
        opts: SlurmOptions,
        store: Store,
        workdir: PathBuf,
        cancel: Arc<AtomicBool>,
        tx: mpsc::Sender<Msg>,
    ) -> miette::Result<SlurmRunner> {
        for sub in ["units", "logs", "build"] {
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
        }));
        let (stop, stop_rx) = mpsc::channel();
        let monitor = {
            let shared = Arc::clone(&shared);
            let store = store.clone();
            let tx = tx.clone();
            let opts = opts.clone();
            std::thread::spawn(move || monitor(shared, store, opts, cancel, tx, stop_rx))
        };
        Ok(SlurmRunner {
            opts,
            store,
            workdir,
            shared,
            tx,
            pending: Vec::new(),
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

    /// Writes the unit's spec for its worker.
    fn write_spec(&self, work: &Work) -> Result<PathBuf, String> {
        let path = slurm_dir(&self.store)
            .join("units")
            .join(format!("{}.json", work.key.key));
        let spec = WorkerSpec {
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
        };
        let text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?;
        write_atomic(&path, text.as_bytes()).map_err(|e| e.to_string())?;
        Ok(path)
    }
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

fn job_name(display: &str) -> String {
    display
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn save_jobs(store: &Store, jobs: &JobsFile) {
    if let Ok(text) = serde_json::to_string_pretty(jobs) {
        let _ = write_atomic(&jobs_path(store), text.as_bytes());
    }
}

/// Submits a one-unit job; returns its id.
fn sbatch(args: &[String], worker: &Path, spec: &Path) -> Result<String, String> {
    let script = format!(
        "#!/bin/sh\n# flow unit (see {})\nexec {} slurm-worker {}\n",
        spec.display(),
        shell_quote(&worker.to_string_lossy()),
        shell_quote(&spec.to_string_lossy())
    );
    sbatch_script(args, &script)
}

/// Submits a batch script; returns the job id.
fn sbatch_script(args: &[String], script: &str) -> Result<String, String> {
    let mut child = Command::new("sbatch")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sbatch: {e} (is Slurm's client on PATH?)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("sbatch: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "sbatch {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // `--parsable` prints `id` or `id;cluster`.
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("sbatch printed no job id: {stdout:?}"));
    }
    Ok(id)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Slurm states in which a job is still queued or running.
fn is_active(state: &str) -> bool {
    !matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "PREEMPTED"
            | "NODE_FAIL"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
    )
}

/// The states and comments of jobs by id (`squeue -t all`); a job missing
/// from the map is no longer known to the controller. `None`: squeue could
/// not be asked.
fn squeue(ids: &[String]) -> Option<BTreeMap<String, (String, String)>> {
    if ids.is_empty() {
        return Some(BTreeMap::new());
    }
    let run = |ids: &[String]| {
        Command::new("squeue")
            .args(["-h", "-r", "-t", "all", "-o", "%i|%T|%k"])
            .arg(format!("--jobs={}", ids.join(",")))
            .stdin(Stdio::null())
            .output()
            .ok()
    };
    let parse = |text: &str, map: &mut BTreeMap<String, (String, String)>| {
        for line in text.lines() {
            let mut f = line.trim().splitn(3, '|');
            if let (Some(id), Some(state)) = (f.next(), f.next()) {
                // `CANCELLED by 0` etc.: the first word is the state.
                let state = state.split_whitespace().next().unwrap_or("").to_string();
                let comment = f.next().unwrap_or("").trim().to_string();
                map.insert(id.to_string(), (state, comment));
            }
        }
    };
    let mut map = BTreeMap::new();
    let out = run(ids)?;
    if out.status.success() {
        parse(&String::from_utf8_lossy(&out.stdout), &mut map);
        return Some(map);
    }
    // squeue refuses the whole list when one id was purged: ask one by one.
    // Any other failure (the controller not answering) says nothing about
    // the jobs: skip this poll rather than take them for gone.
    for id in ids {
        let out = run(std::slice::from_ref(id))?;
        if out.status.success() {
            parse(&String::from_utf8_lossy(&out.stdout), &mut map);
        } else if !String::from_utf8_lossy(&out.stderr).contains("Invalid job id") {
            return None;
        }
    }
    Some(map)
}

/// `ExitCode=N:S` and `Reason=...` of a finished job, when still known.
fn exit_info(job: &str) -> Option<String> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    let code = field("ExitCode=")?;
    let reason = field("Reason=").filter(|r| r != "None");
    Some(match reason {
        Some(r) => format!("exit code {code}, reason {r}"),
        None => format!("exit code {code}"),
    })
}

fn scancel(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let _ = Command::new("scancel")
        .args(ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
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

fn monitor(
    shared: Arc<Mutex<Shared>>,
    store: Store,
    opts: SlurmOptions,
    cancel: Arc<AtomicBool>,
    tx: mpsc::Sender<Msg>,
    stop: mpsc::Receiver<()>,
) {
    let mut cancelled_once = false;
    loop {
        match stop.recv_timeout(opts.poll) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Ok(mut sh) = shared.lock() else { return };
        if cancel.load(Ordering::Relaxed) {
            if !cancelled_once && !sh.active.is_empty() {
                cancelled_once = true;
                let ids: Vec<String> = sh.active.keys().cloned().collect();
                scancel(&ids);
            }
            let active = std::mem::take(&mut sh.active);
            for (job, a) in active {
                sh.jobs.jobs.remove(&a.key);
                a.progress.finish();
                let _ = tx.send(Msg::Finished(Box::new(Finished {
                    unit: a.unit,
                    seconds: a.since.elapsed().as_secs_f64(),
                    result: Err(Failure {
                        report: miette::miette!("slurm job {job} cancelled"),
                        log_tail: vec![],
                        log_path: PathBuf::new(),
                        cancelled: true,
                    }),
                    job: Some(job),
                })));
            }
            save_jobs(&store, &sh.jobs);
            continue;
        }
        let ids: Vec<String> = sh.active.keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        // Ask squeue without holding the lock for long: the scheduler
        // thread submits under it.
        drop(sh);
        let Some(states) = squeue(&ids) else {
            continue;
        };
        let Ok(mut sh) = shared.lock() else { return };
        let mut changed = false;
        for id in ids {
            let state = states.get(&id).map(|(s, _)| s.clone());
            if let Some(st) = state.as_deref().filter(|s| is_active(s)) {
                if let Some(a) = sh.active.get_mut(&id) {
                    if a.last_state != st {
                        a.last_state = st.to_string();
                        crate::op::Progress::message(&a.progress, &format!("slurm job {id} {st}"));
                    }
                }
                continue;
            }
            if state.as_deref() == Some("COMPLETED") {
                // The worker exits 0 only after its commit: wait for the
                // artifact to become visible here.
                if let Some(a) = sh.active.get_mut(&id) {
                    if store.lookup(&a.key).is_none() {
                        let first = *a.completed.get_or_insert_with(Instant::now);
                        if first.elapsed() < VISIBLE_WITHIN {
                            continue;
                        }
                    }
                }
            }
            let Some(a) = sh.active.remove(&id) else {
                continue;
            };
            changed = true;
            let state = state.unwrap_or_else(|| "gone from squeue".to_string());
            clean_builds(&store, &a.key);
            if let Some(meta) = store.lookup(&a.key) {
                sh.jobs.jobs.remove(&a.key);
                a.progress.finish();
                let _ = tx.send(Msg::Finished(Box::new(Finished {
                    unit: a.unit,
                    seconds: a.since.elapsed().as_secs_f64(),
                    result: Ok(meta),
                    job: Some(id),
                })));
                continue;
            }
            let log = a.log.clone();
            let info = exit_info(&id).map(|i| format!(", {i}")).unwrap_or_default();
            if a.attempt <= opts.retries {
                let spec = slurm_dir(&store)
                    .join("units")
                    .join(format!("{}.json", a.key));
                match sbatch(&a.args, &opts.worker, &spec) {
                    Ok(new) => {
                        let attempt = a.attempt + 1;
                        crate::op::Progress::message(
                            &a.progress,
                            &format!("slurm job {new} (attempt {attempt})"),
                        );
                        sh.jobs.jobs.insert(
                            a.key.clone(),
                            JobEntry {
                                job: new.clone(),
                                attempt,
                                node: a.display.clone(),
                                comment: job_comment(&a.key),
                            },
                        );
                        let unit = a.unit;
                        let _ = tx.send(Msg::Submitted {
                            unit,
                            job: new.clone(),
                            attempt,
                            adopted: false,
                            after: Some(format!("job {id} ended {state}{info}")),
                        });
                        let log = job_log(&store, &a.key, &new);
                        sh.active.insert(
                            new,
                            Active {
                                attempt,
                                log,
                                last_state: String::new(),
                                completed: None,
                                ..a
                            },
                        );
                        continue;
                    }
                    Err(e) => {
                        sh.jobs.jobs.remove(&a.key);
                        a.progress.finish();
                        let _ = tx.send(Msg::Finished(Box::new(Finished {
                            unit: a.unit,
                            seconds: a.since.elapsed().as_secs_f64(),
                            result: Err(Failure {
                                report: miette::miette!(
                                    "slurm job {id} of `{}` ended {state}{info}, and submitting it again failed: {e}",
                                    a.display
                                ),
                                log_tail: read_tail(&log, LOG_TAIL),
                                log_path: log,
                                cancelled: false,
                            }),
                            job: Some(id),
                        })));
                        continue;
                    }
                }
            }
            sh.jobs.jobs.remove(&a.key);
            a.progress.finish();
            // `flow show` prints the failed log of a key: keep the job's.
            let _ = std::fs::copy(&log, store.failed_log(&a.key));
            let attempts = if a.attempt > 1 {
                format!(" (attempt {} of {})", a.attempt, opts.retries + 1)
            } else {
                String::new()
            };
            let _ = tx.send(Msg::Finished(Box::new(Finished {
                unit: a.unit,
                seconds: a.since.elapsed().as_secs_f64(),
                result: Err(Failure {
                    report: miette::miette!(
                        "node `{}` failed on Slurm: job {id} ended {state}{info}{attempts}",
                        a.display
                    ),
                    log_tail: read_tail(&log, LOG_TAIL),
                    log_path: log,
                    cancelled: false,
                }),
                job: Some(id),
            })));
        }
        if changed {
            save_jobs(&store, &sh.jobs);
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

impl SlurmRunner {
    /// Starts following a submitted (or adopted) job.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &self,
        sh: &mut Shared,
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
            },
        );
        let _ = self.tx.send(Msg::Submitted {
            unit: p.work.unit,
            job: job.clone(),
            attempt,
            adopted,
            after: None,
        });
        crate::op::Progress::message(&p.work.progress, &format!("slurm job {job}"));
        sh.active.insert(
            job,
            Active {
                unit: p.work.unit,
                key: p.work.key.key.clone(),
                display: p.work.display.clone(),
                attempt,
                args: p.args,
                log,
                progress: p.work.progress,
                since: Instant::now(),
                last_state: String::new(),
                completed: None,
            },
        );
    }

    /// Several units of one map node: one job array, task `i` builds the
    /// `i`-th unit (its unit file is line `i+1` of a list file).
    fn submit_array(&self, sh: &mut Shared, group: Vec<Pending>) {
        let first = group[0].work.key.key.clone();
        let name = format!("array-{first}");
        let list = slurm_dir(&self.store)
            .join("units")
            .join(format!("{name}.txt"));
        let text: String = group
            .iter()
            .map(|p| format!("{}\n", p.spec.display()))
            .collect();
        if let Err(e) = write_atomic(&list, text.as_bytes()) {
            for p in group {
                fail_work(
                    p.work,
                    format!("cannot write {}: {e}", list.display()),
                    &self.tx,
                );
            }
            return;
        }
        let comment = format!("flow:{name}");
        let node_name = group[0]
            .work
            .display
            .split('[')
            .next()
            .unwrap_or("")
            .to_string();
        let mut args: Vec<String> = group[0]
            .args
            .iter()
            .filter(|a| {
                !a.starts_with("--output=")
                    && !a.starts_with("--comment=")
                    && !a.starts_with("--job-name=")
            })
            .cloned()
            .collect();
        args.push(format!("--array=0-{}", group.len() - 1));
        args.push(format!("--job-name=flow:{}", job_name(&node_name)));
        args.push(format!("--comment={comment}"));
        args.push(format!(
            "--output={}",
            slurm_dir(&self.store)
                .join("logs")
                .join(format!("{name}.%A_%a.log"))
                .display()
        ));
        let script = format!(
            "#!/bin/sh\n# flow units, one a task (see {list})\nspec=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {list})\nexec {worker} slurm-worker \"$spec\"\n",
            list = shell_quote(&list.to_string_lossy()),
            worker = shell_quote(&self.opts.worker.to_string_lossy()),
        );
        match sbatch_script(&args, &script) {
            Ok(job) => {
                for (i, p) in group.into_iter().enumerate() {
                    let task = format!("{job}_{i}");
                    let log = slurm_dir(&self.store)
                        .join("logs")
                        .join(format!("{name}.{task}.log"));
                    self.follow(sh, p, task, 1, false, log, comment.clone());
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
}

impl Runner for SlurmRunner {
    fn admit(&self, _need: &Need) -> Admit {
        let n = self.shared.lock().map(|s| s.active.len()).unwrap_or(0) + self.pending.len();
        if n < self.opts.max_jobs.max(1) {
            Admit::Now
        } else {
            Admit::Block
        }
    }

    fn start(&mut self, work: Work) {
        let args = self.sbatch_args(&work);
        let spec = match self.write_spec(&work) {
            Ok(s) => s,
            Err(e) => {
                return fail_work(
                    work,
                    format!("cannot write the job's unit file: {e}"),
                    &self.tx,
                )
            }
        };
        let p = Pending { work, args, spec };
        let Ok(mut sh) = self.shared.lock() else {
            return;
        };
        // A job an earlier driver submitted for this key, still queued or
        // running: follow it.
        let key = p.work.key.key.clone();
        if let Some(entry) = sh.jobs.jobs.get(&key).cloned() {
            // The comment names the key (or its array): job ids of another
            // cluster (or of a restarted controller) are never mistaken
            // for ours.
            let expected = if entry.comment.is_empty() {
                job_comment(&key)
            } else {
                entry.comment.clone()
            };
            let found =
                squeue(std::slice::from_ref(&entry.job)).and_then(|m| m.get(&entry.job).cloned());
            if found.is_some_and(|(state, comment)| is_active(&state) && comment == expected) {
                let log = if entry.comment.starts_with("flow:array-") {
                    slurm_dir(&self.store).join("logs").join(format!(
                        "{}.{}.log",
                        entry.comment.trim_start_matches("flow:"),
                        entry.job
                    ))
                } else {
                    job_log(&self.store, &key, &entry.job)
                };
                self.follow(
                    &mut sh,
                    p,
                    entry.job.clone(),
                    entry.attempt,
                    true,
                    log,
                    expected,
                );
                return;
            }
            sh.jobs.jobs.remove(&key);
        }
        drop(sh);
        clean_builds(&self.store, &key);
        self.pending.push(p);
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Ok(mut sh) = self.shared.lock() else {
            return;
        };
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
                let spec = p.spec.clone();
                match sbatch(&p.args, &self.opts.worker, &spec) {
                    Ok(job) => {
                        let log = job_log(&self.store, &p.work.key.key, &job);
                        let comment = job_comment(&p.work.key.key);
                        self.follow(&mut sh, p, job, 1, false, log, comment);
                    }
                    Err(e) => fail_work(p.work, e, &self.tx),
                }
            }
            save_jobs(&self.store, &sh.jobs);
        }
    }

    fn release(&mut self, _unit: usize) {}
}

impl Drop for SlurmRunner {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.monitor.take() {
            let _ = h.join();
        }
    }
}

/// What a worker builds: written by the driver, read by `flow slurm-worker`.
#[derive(Serialize, Deserialize)]
struct WorkerSpec {
    cache: PathBuf,
    workdir: PathBuf,
    op: String,
    display: String,
    key: UnitKey,
    args: BTreeMap<String, serde_json::Value>,
    element: Option<serde_json::Value>,
    /// The inputs as the driver stamped them before hashing: the job
    /// checks them again after the op ran, as a local run does.
    #[serde(default)]
    inputs: Vec<InputStamp>,
    /// CPU threads; 0: every CPU of the job's node.
    threads: usize,
    device: String,
}

/// `flow slurm-worker SPEC`: builds one unit into the cache the spec
/// names; exit 0 when its artifact is there afterwards, 1 otherwise.
pub fn worker(spec_path: &Path, registry: &Registry, probe: CudaProbe) -> i32 {
    match worker_inner(spec_path, registry, probe) {
        Ok(()) => 0,
        Err(report) => {
            eprintln!("{report:?}");
            1
        }
    }
}

fn worker_inner(spec_path: &Path, registry: &Registry, probe: CudaProbe) -> miette::Result<()> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| miette::miette!("cannot read unit file {}: {e}", spec_path.display()))?;
    let spec: WorkerSpec = serde_json::from_str(&text)
        .map_err(|e| miette::miette!("bad unit file {}: {e}", spec_path.display()))?;
    let op = registry.get(&spec.op).cloned().ok_or_else(|| {
        miette::miette!(
            help = "the jobs must run the same flow binary as the driver",
            "this flow binary has no op `{}`",
            spec.op
        )
    })?;
    let decode = |v: &serde_json::Value| {
        rval_from_wire(v).ok_or_else(|| {
            miette::miette!("bad unit file {}: unreadable argument", spec_path.display())
        })
    };
    let mut args = BTreeMap::new();
    for (k, v) in &spec.args {
        args.insert(k.clone(), decode(v)?);
    }
    let element = spec.element.as_ref().map(decode).transpose()?;
    let s = op.spec();
    let key = unit_key(s.name, s.version, &args, element.as_ref());
    if key.key != spec.key.key {
        return Err(miette::miette!(
            help = "run the jobs with the driver's binary (a shared file system path)",
            "unit `{}`: this flow binary computes key {} where the driver computed {} (a different op version?)",
            spec.display,
            key.key,
            spec.key.key
        ));
    }
    let store = Store::existing(&spec.cache);
    if store.lookup(&key.key).is_some() {
        eprintln!("flow: {} is already in the cache", spec.display);
        return Ok(());
    }
    let threads = match spec.threads {
        0 => std::env::var("SLURM_CPUS_ON_NODE")
            .ok()
            .and_then(|v| v.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1),
        n => n,
    };
    let request =
        crate::device::parse_device(&spec.device).unwrap_or(crate::ir::DeviceRequest::Cpu);
    let (device, notice) = resolve_device(request, probe);
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let host = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    eprintln!(
        "flow: building {} (key {}) on {host} with {threads} threads, {device:?}",
        spec.display, key.key
    );
    let display = Display::new(true);
    let job = Job {
        unit: 0,
        op,
        store,
        build_under: "slurm/build",
        display: spec.display.clone(),
        key: spec.key,
        args,
        inputs: spec.inputs,
        threads,
        device,
        cancel: Arc::new(AtomicBool::new(false)),
        workdir: spec.workdir,
        progress: display.start(&spec.display),
        echo: true,
    };
    let f = job.execute();
    match f.result {
        Ok(meta) => {
            eprintln!(
                "flow: built {} ({:.2}s), content hash {}",
                spec.display, f.seconds, meta.content_hash
            );
            Ok(())
        }
        Err(failure) => Err(failure.report),
    }
}

// The wire form of resolved arguments: tagged, so a path never reads back
// as a string, and floats by their bits, so keys recompute exactly.

fn value_to_wire(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Bool(b) => json!({ "b": b }),
        Value::Int(i) => json!({ "i": i }),
        Value::Float(f) => json!({ "f": f.to_bits().to_string() }),
        Value::Str(s) => json!({ "s": s }),
        Value::Path(p) => json!({ "p": p.to_string_lossy() }),
        Value::List(items) => json!({ "l": items.iter().map(value_to_wire).collect::<Vec<_>>() }),
        Value::Record(f) => json!({
            "r": f.iter().map(|(k, v)| (k.clone(), value_to_wire(v))).collect::<serde_json::Map<_, _>>()
        }),
    }
}

fn value_from_wire(v: &serde_json::Value) -> Option<Value> {
    let (tag, x) = v.as_object()?.iter().next()?;
    Some(match tag.as_str() {
        "b" => Value::Bool(x.as_bool()?),
        "i" => Value::Int(x.as_i64()?),
        "f" => Value::Float(f64::from_bits(x.as_str()?.parse().ok()?)),
        "s" => Value::Str(x.as_str()?.to_string()),
        "p" => Value::Path(PathBuf::from(x.as_str()?)),
        "l" => Value::List(
            x.as_array()?
                .iter()
                .map(value_from_wire)
                .collect::<Option<_>>()?,
        ),
        "r" => Value::Record(
            x.as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), value_from_wire(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

fn rval_to_wire(v: &RVal) -> serde_json::Value {
    use serde_json::json;
    match v {
        RVal::Lit(x) => json!({ "lit": value_to_wire(x) }),
        RVal::Path { path, key } => json!({ "path": [path.to_string_lossy(), key] }),
        RVal::List(items) => json!({ "list": items.iter().map(rval_to_wire).collect::<Vec<_>>() }),
        RVal::Record(f) => json!({
            "record": f.iter().map(|(k, v)| (k.clone(), rval_to_wire(v))).collect::<serde_json::Map<_, _>>()
        }),
        RVal::Template(parts) => json!({
            "template": parts.iter().map(|p| match p {
                TPart::Text(t) => json!({ "text": t }),
                TPart::Out => json!("out"),
                TPart::Val(v) => json!({ "val": rval_to_wire(v) }),
            }).collect::<Vec<_>>()
        }),
        RVal::Param { name, value } => json!({ "param": [name, value_to_wire(value)] }),
    }
}

fn rval_from_wire(v: &serde_json::Value) -> Option<RVal> {
    let (tag, x) = v.as_object()?.iter().next()?;
    Some(match tag.as_str() {
        "lit" => RVal::Lit(value_from_wire(x)?),
        "path" => {
            let a = x.as_array()?;
            RVal::Path {
                path: PathBuf::from(a.first()?.as_str()?),
                key: a.get(1)?.as_str()?.to_string(),
            }
        }
        "list" => RVal::List(
            x.as_array()?
                .iter()
                .map(rval_from_wire)
                .collect::<Option<_>>()?,
        ),
        "record" => RVal::Record(
            x.as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), rval_from_wire(v)?)))
                .collect::<Option<_>>()?,
        ),
        "template" => RVal::Template(
            x.as_array()?
                .iter()
                .map(|p| {
                    if p.as_str() == Some("out") {
                        return Some(TPart::Out);
                    }
                    let (t, y) = p.as_object()?.iter().next()?;
                    match t.as_str() {
                        "text" => Some(TPart::Text(y.as_str()?.to_string())),
                        "val" => Some(TPart::Val(rval_from_wire(y)?)),
                        _ => None,
                    }
                })
                .collect::<Option<_>>()?,
        ),
        "param" => {
            let a = x.as_array()?;
            RVal::Param {
                name: a.first()?.as_str()?.to_string(),
                value: value_from_wire(a.get(1)?)?,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_survive_the_wire_exactly() {
        let mut rec = BTreeMap::new();
        rec.insert("x".to_string(), Value::Float(0.1 + 0.2));
        rec.insert("p".to_string(), Value::Path(PathBuf::from("/a/b")));
        let v = RVal::List(vec![
            RVal::Lit(Value::Record(rec)),
            RVal::Lit(Value::Str("/a/b".into())),
            RVal::Lit(Value::Float(f64::MIN_POSITIVE)),
            RVal::Lit(Value::Int(-3)),
            RVal::Path {
                path: PathBuf::from("/c"),
                key: "artifact:abc".into(),
            },
            RVal::Template(vec![
                TPart::Text("echo ".into()),
                TPart::Out,
                TPart::Val(RVal::Lit(Value::Bool(true))),
            ]),
            RVal::Param {
                name: "lr".into(),
                value: Value::Float(3e-4),
            },
        ]);
        let back = rval_from_wire(&rval_to_wire(&v)).expect("decodes");
        assert_eq!(back, v);
        // A string that looks like a path stays a string, a path a path.
        let RVal::List(items) = &back else { panic!() };
        assert_eq!(items[1], RVal::Lit(Value::Str("/a/b".into())));
    }

    #[test]
    fn terminal_states_end_a_job() {
        for s in [
            "PENDING",
            "RUNNING",
            "COMPLETING",
            "CONFIGURING",
            "REQUEUED",
            "SUSPENDED",
        ] {
            assert!(is_active(s), "{s}");
        }
        for s in [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "PREEMPTED",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ] {
            assert!(!is_active(s), "{s}");
        }
    }
}
