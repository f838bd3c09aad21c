//! Sharded units on Slurm: a unit whose op is data-parallel
//! (`Op::sharding`) and whose pieces make more than one shard task runs as
//! a job array, one task a part, then one merge job, the model of
//! datatrove's Slurm executor (tasks, completion markers, a dependent merge
//! step):
//!
//! - The driver asks the op for its pieces (`Sharded::pieces`, from the
//!   unit's inputs) and cuts them into `shard_tasks(pieces, shards)`
//!   contiguous ranges, the same cut a local run makes.
//! - Task `i` runs `flow slurm-worker units/<key>.part-<i>.json`, which
//!   writes `slurm/parts/<key>.<tasks>/part-<i>/` (under a temporary name,
//!   renamed when whole: the directory's existence is the task's
//!   completion marker). A failed task is retried alone (`--retries`);
//!   past the retries the unit fails with the task's log tail and its other
//!   tasks are cancelled.
//! - When every part is there the driver submits the merge: the unit's own
//!   job (`units/<key>.json`), which runs `Sharded::merge` into a build
//!   directory and commits with the same rename as any unit. The artifact
//!   is byte-identical to a local run's, whose `run_in_parts` makes the same
//!   parts on threads.
//! - `--max-jobs` counts shard tasks: a unit's tasks are submitted as
//!   arrays of at most as many tasks as there is room for next to the
//!   other jobs followed, the rest as room frees up (by submission rather
//!   than `%N` throttling, so a QOS's limit on submitted jobs, which counts
//!   array tasks one by one, holds too).
//! - Every shard task's job is in `slurm/jobs.json` (as
//!   `<key>.<tasks>.part-<i>`): a driver started again follows the tasks
//!   `squeue` still shows queued or running instead of submitting them
//!   again.
//! - Parts are scratch, never artifacts: removed once the artifact is in
//!   the store. The parts of a unit that failed stay, and a later run
//!   reuses the parts already there (same key, same task count, same
//!   bytes) and submits only the missing tasks; `flow gc` removes parts
//!   no unit can use any more (see `gc_parts`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Instant;

use super::commands::{is_active, scancel, squeue};
use super::worker::WorkerSpec;
use super::{
    fail_work, job_args, job_log, slurm_dir, submit_array_of, submit_unit, write_spec, Active,
    JobEntry, Pending, Shared, SlurmOptions,
};
use crate::executor::job::{input_ids_of, params_of, run_guarded};
use crate::executor::{Failure, Finished, Msg, Work};
use crate::op::{part_dir, shard_tasks, Device, NoProgress, OpContext};
use crate::store::Store;

/// A sharded unit's cut: its pieces and shard tasks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) pieces: usize,
    pub(super) tasks: usize,
}

/// Which part a shard task's job writes.
pub(super) struct PartOf {
    pub(super) index: usize,
    pub(super) tasks: usize,
    pub(super) dir: PathBuf,
}

/// The cut of a unit whose op is sharded (`None` for other ops).
pub(super) fn plan(work: &Work, workdir: &Path) -> Result<Option<Plan>, String> {
    let Some(sharded) = work.op.sharding() else {
        return Ok(None);
    };
    let log = |_: &str| {};
    let cancel = AtomicBool::new(false);
    let ctx = OpContext {
        params: params_of(&work.args, workdir),
        out_dir: workdir.to_path_buf(),
        workdir: workdir.to_path_buf(),
        threads: 1,
        device: Device::Cpu,
        progress: &NoProgress,
        log: &log,
        cancel: &cancel,
        input_ids: input_ids_of(&work.args),
    };
    let pieces = run_guarded(work.op.spec().name, 1, || sharded.pieces(&ctx))
        .map_err(|e| format!("cannot plan its shard tasks: {e}"))?;
    Ok(Some(Plan {
        pieces,
        tasks: shard_tasks(pieces, work.need.node.shards),
    }))
}

/// Where the parts of a unit cut into `tasks` shard tasks go.
pub(super) fn parts_root(store: &Store, key: &str, tasks: usize) -> PathBuf {
    slurm_dir(store)
        .join("parts")
        .join(format!("{key}.{tasks}"))
}

/// Removes every part directory of `key` (its artifact is in the store).
pub(super) fn remove_parts(store: &Store, key: &str) {
    let prefix = format!("{key}.");
    if let Ok(entries) = std::fs::read_dir(slurm_dir(store).join("parts")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The entry of shard task `index` of a unit cut into `tasks` in
/// `slurm/jobs.json`.
pub(super) fn part_entry(key: &str, tasks: usize, index: usize) -> String {
    format!("{key}.{tasks}.part-{index:05}")
}

/// The comment of a unit's shard task jobs (arrays and retries alike).
fn parts_comment(key: &str) -> String {
    format!("flow:parts-{key}")
}

/// A sharded unit whose shard tasks run.
pub(super) struct ShardedUnit {
    /// The unit's own job, submitted once every part is there.
    merge: Pending,
    /// Shard tasks not done yet (submitted or waiting).
    remaining: BTreeSet<usize>,
    /// (task, unit file) of the tasks not submitted yet, for want of room
    /// under `--max-jobs`.
    waiting: Vec<(usize, PathBuf)>,
    tasks: usize,
    root: PathBuf,
    since: Instant,
}

impl ShardedUnit {
    /// Shows the unit's progress line: its shard tasks done, then `more`.
    fn show_progress(&self, more: &str) {
        crate::op::Progress::message(
            &self.merge.work.progress,
            &format!(
                "{} of {} shard tasks done{more}",
                self.tasks - self.remaining.len(),
                self.tasks
            ),
        );
    }
}

impl ShardedUnit {
    /// The unit ended by Ctrl-C.
    pub(super) fn cancelled(self, unit: usize) -> Msg {
        let seconds = self.since.elapsed().as_secs_f64();
        self.finish();
        Msg::Finished(Box::new(Finished {
            unit,
            seconds,
            result: Err(Failure {
                report: miette::miette!("shard tasks cancelled"),
                log_tail: vec![],
                log_path: PathBuf::new(),
                cancelled: true,
            }),
            job: None,
        }))
    }

    /// Removes the unit's progress line.
    pub(super) fn finish(self) {
        self.merge.work.progress.finish();
    }

    /// Shard tasks waiting for room under `--max-jobs`.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// A sharded unit written out, its shard tasks submitted at the next
/// `flush`.
pub(super) struct PendingShards {
    merge: Pending,
    tasks: usize,
    root: PathBuf,
    /// (task, unit file) of the tasks whose part is not there yet.
    missing: Vec<(usize, PathBuf)>,
}

impl PendingShards {
    /// Writes a unit file for every shard task whose part is missing.
    pub(super) fn new(
        store: &Store,
        merge: Pending,
        spec: WorkerSpec,
    ) -> Result<PendingShards, Box<(Pending, String)>> {
        // the merge unit comes back with the error, so that it fails as a unit
        let Some(root) = spec.parts.clone() else {
            return Err(Box::new((
                merge,
                "internal: a sharded unit without parts".into(),
            )));
        };
        if let Err(e) = std::fs::create_dir_all(&root) {
            return Err(Box::new((
                merge,
                format!("cannot create {}: {e}", root.display()),
            )));
        }
        let mut missing = Vec::new();
        for i in 0..spec.tasks {
            if part_dir(&root, i).is_dir() {
                continue; // made by an earlier run
            }
            let name = format!("{}.part-{i:05}", spec.key.key);
            let part = WorkerSpec {
                part: Some(i),
                ..spec.clone()
            };
            match write_spec(store, &name, &part) {
                Ok(path) => missing.push((i, path)),
                Err(e) => {
                    return Err(Box::new((
                        merge,
                        format!("cannot write the unit file {name}: {e}"),
                    )))
                }
            }
        }
        Ok(PendingShards {
            merge,
            tasks: spec.tasks,
            root,
            missing,
        })
    }

    /// The jobs this unit will add (what `--max-jobs` counts before it is
    /// submitted): its missing tasks, or the merge.
    pub(super) fn jobs(&self) -> usize {
        self.missing.len().max(1)
    }

    /// Follows the missing shard tasks an earlier driver submitted that
    /// are still queued or running, and submits the others, as many as
    /// `--max-jobs` leaves room for (or, with every part there already,
    /// the merge).
    pub(super) fn submit(
        self,
        sh: &mut Shared,
        store: &Store,
        opts: &SlurmOptions,
        tx: &mpsc::Sender<Msg>,
    ) {
        let PendingShards {
            merge,
            tasks,
            root,
            missing,
        } = self;
        if missing.is_empty() {
            return submit_unit(sh, store, opts, tx, merge);
        }
        let unit = merge.work.unit;
        let s = ShardedUnit {
            merge,
            remaining: missing.iter().map(|(i, _)| *i).collect(),
            waiting: Vec::new(),
            tasks,
            root,
            since: Instant::now(),
        };
        let waiting = adopt_tasks(sh, store, tx, &s, missing);
        let adopted = s.remaining.len() - waiting.len();
        let line = if adopted > 0 {
            format!("{adopted} of {tasks} shard tasks followed from an earlier run")
        } else {
            format!("{} of {tasks} shard tasks", waiting.len())
        };
        crate::op::Progress::message(&s.merge.work.progress, &line);
        sh.sharded.insert(unit, ShardedUnit { waiting, ..s });
        top_up(sh, store, opts, tx);
    }
}

/// The `Active` entry of shard task `index` of `s` as job `job`.
fn task_active(
    store: &Store,
    s: &ShardedUnit,
    index: usize,
    spec: &Path,
    attempt: usize,
    log: PathBuf,
) -> Active {
    let key = &s.merge.work.key.key;
    let display = &s.merge.work.display;
    let log_name = format!("{key}.part-{index:05}");
    let retry_output = slurm_dir(store)
        .join("logs")
        .join(format!("{log_name}.%j.log"));
    Active {
        unit: s.merge.work.unit,
        key: key.clone(),
        entry: part_entry(key, s.tasks, index),
        display: display.clone(),
        attempt,
        args: job_args(&s.merge.args, display, &parts_comment(key), &retry_output),
        spec: spec.to_path_buf(),
        log,
        log_name,
        progress: None,
        part: Some(PartOf {
            index,
            tasks: s.tasks,
            dir: part_dir(&s.root, index),
        }),
        since: Instant::now(),
        last_state: String::new(),
        completed: None,
    }
}

/// Follows the tasks of `missing` whose job (by `slurm/jobs.json`) squeue
/// still shows queued or running with this unit's comment; returns the
/// others.
fn adopt_tasks(
    sh: &mut Shared,
    store: &Store,
    tx: &mpsc::Sender<Msg>,
    s: &ShardedUnit,
    missing: Vec<(usize, PathBuf)>,
) -> Vec<(usize, PathBuf)> {
    let key = &s.merge.work.key.key;
    let entries: Vec<Option<JobEntry>> = missing
        .iter()
        .map(|(i, _)| sh.jobs.jobs.get(&part_entry(key, s.tasks, *i)).cloned())
        .collect();
    let ids: Vec<String> = entries.iter().flatten().map(|e| e.job.clone()).collect();
    let states = if ids.is_empty() {
        Default::default()
    } else {
        squeue(&ids).unwrap_or_default()
    };
    let comment = parts_comment(key);
    let mut rest = Vec::new();
    for ((i, spec), entry) in missing.into_iter().zip(entries) {
        let Some(entry) = entry else {
            rest.push((i, spec));
            continue;
        };
        let running = states
            .get(&entry.job)
            .is_some_and(|(state, c)| is_active(state) && *c == comment);
        if !running {
            sh.jobs.jobs.remove(&part_entry(key, s.tasks, i));
            rest.push((i, spec));
            continue;
        }
        let log = PathBuf::from(&entry.log);
        let _ = tx.send(Msg::Submitted {
            unit: s.merge.work.unit,
            job: entry.job.clone(),
            attempt: entry.attempt,
            adopted: true,
            after: None,
            shard: Some(i),
        });
        let a = task_active(store, s, i, &spec, entry.attempt, log);
        sh.active.insert(entry.job.clone(), a);
    }
    rest
}

/// Submits waiting shard tasks, in unit order, as far as `--max-jobs`
/// leaves room next to the jobs followed: one job array a unit.
pub(super) fn top_up(sh: &mut Shared, store: &Store, opts: &SlurmOptions, tx: &mpsc::Sender<Msg>) {
    let mut room = opts.max_jobs.max(1).saturating_sub(sh.active.len());
    let units: Vec<usize> = sh.sharded.keys().copied().collect();
    for unit in units {
        if room == 0 {
            return;
        }
        let Some(s) = sh.sharded.get_mut(&unit) else {
            continue;
        };
        if s.waiting.is_empty() {
            continue;
        }
        let n = room.min(s.waiting.len());
        let batch: Vec<(usize, PathBuf)> = s.waiting.drain(..n).collect();
        room -= n;
        submit_tasks(sh, store, opts, tx, unit, batch);
    }
}

/// Submits `batch` of the shard tasks of `unit` as one job array.
fn submit_tasks(
    sh: &mut Shared,
    store: &Store,
    opts: &SlurmOptions,
    tx: &mpsc::Sender<Msg>,
    unit: usize,
    batch: Vec<(usize, PathBuf)>,
) {
    let Some(s) = sh.sharded.get(&unit) else {
        return;
    };
    let key = s.merge.work.key.key.clone();
    // A list file of its own for every array of the unit: an array whose
    // tasks have not started yet still reads its own.
    let name = format!("parts-{key}-{:05}", batch[0].0);
    let specs: Vec<PathBuf> = batch.iter().map(|(_, p)| p.clone()).collect();
    let submitted = submit_array_of(
        store,
        &opts.worker,
        &s.merge.args,
        &s.merge.work.display,
        &name,
        &parts_comment(&key),
        &specs,
    );
    let job = match submitted {
        Ok(job) => job,
        Err(e) => {
            // The unit fails; its tasks already submitted are cancelled.
            let others: Vec<String> = sh
                .active
                .iter()
                .filter(|(_, b)| b.unit == unit)
                .map(|(j, _)| j.clone())
                .collect();
            scancel(&others);
            for j in others {
                if let Some(a) = sh.active.remove(&j) {
                    sh.jobs.jobs.remove(&a.entry);
                }
            }
            if let Some(s) = sh.sharded.remove(&unit) {
                fail_work(s.merge.work, e, tx);
            }
            return;
        }
    };
    let mut actives = Vec::new();
    for (t, (i, spec)) in batch.iter().enumerate() {
        let task = format!("{job}_{t}");
        let log = job_log(store, &name, &task);
        let _ = tx.send(Msg::Submitted {
            unit,
            job: task.clone(),
            attempt: 1,
            adopted: false,
            after: None,
            shard: Some(*i),
        });
        sh.jobs.jobs.insert(
            part_entry(&key, s.tasks, *i),
            JobEntry {
                job: task.clone(),
                attempt: 1,
                node: s.merge.work.display.clone(),
                comment: parts_comment(&key),
                log: log.display().to_string(),
            },
        );
        actives.push((task.clone(), task_active(store, s, *i, spec, 1, log)));
    }
    s.show_progress(&format!(", slurm job array {job}"));
    sh.active.extend(actives);
}

/// A shard task's part is there: once all are, the merge is submitted.
pub(super) fn part_built(
    sh: &mut Shared,
    store: &Store,
    opts: &SlurmOptions,
    tx: &mpsc::Sender<Msg>,
    a: &Active,
) {
    sh.jobs.jobs.remove(&a.entry);
    let (Some(part), Some(s)) = (&a.part, sh.sharded.get_mut(&a.unit)) else {
        return;
    };
    s.remaining.remove(&part.index);
    s.show_progress("");
    if !s.remaining.is_empty() {
        return;
    }
    let Some(s) = sh.sharded.remove(&a.unit) else {
        return;
    };
    let since = s.since;
    submit_unit(sh, store, opts, tx, s.merge);
    // The unit's time counts from its first shard task.
    if let Some(m) = sh
        .active
        .values_mut()
        .find(|b| b.unit == a.unit && b.part.is_none())
    {
        m.since = since;
    }
}
