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
//! - Parts are scratch, never artifacts: removed once the artifact is in
//!   the store. The parts of a unit that failed stay, and a later run
//!   reuses the parts already there (same key, same task count, same
//!   bytes) and submits only the missing tasks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Instant;

use super::worker::WorkerSpec;
use super::{
    fail_work, job_args, job_log, slurm_dir, submit_array_of, submit_unit, write_spec, Active,
    Pending, Shared, SlurmOptions,
};
use crate::executor::job::{params_of, run_guarded};
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

/// A sharded unit whose shard tasks run.
pub(super) struct ShardedUnit {
    /// The unit's own job, submitted once every part is there.
    merge: Pending,
    /// Shard tasks not done yet.
    remaining: BTreeSet<usize>,
    tasks: usize,
    since: Instant,
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

    /// Submits the missing shard tasks as one job array (or, with every
    /// part there already, the merge).
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
        let key = merge.work.key.key.clone();
        let display = merge.work.display.clone();
        let name = format!("parts-{key}");
        let specs: Vec<PathBuf> = missing.iter().map(|(_, s)| s.clone()).collect();
        let job = match submit_array_of(store, &opts.worker, &merge.args, &display, &name, &specs) {
            Ok(job) => job,
            Err(e) => return fail_work(merge.work, e, tx),
        };
        let unit = merge.work.unit;
        for (t, (i, spec)) in missing.iter().enumerate() {
            let task = format!("{job}_{t}");
            let log_name = format!("{key}.part-{i:05}");
            let retry_output = slurm_dir(store)
                .join("logs")
                .join(format!("{log_name}.%j.log"));
            let _ = tx.send(Msg::Submitted {
                unit,
                job: task.clone(),
                attempt: 1,
                adopted: false,
                after: None,
                shard: Some(*i),
            });
            sh.active.insert(
                task.clone(),
                Active {
                    unit,
                    key: key.clone(),
                    display: display.clone(),
                    attempt: 1,
                    args: job_args(
                        &merge.args,
                        &display,
                        &format!("flow:{name}"),
                        &retry_output,
                    ),
                    spec: spec.clone(),
                    log: job_log(store, &name, &task),
                    log_name,
                    progress: None,
                    part: Some(PartOf {
                        index: *i,
                        tasks,
                        dir: part_dir(&root, *i),
                    }),
                    since: Instant::now(),
                    last_state: String::new(),
                    completed: None,
                },
            );
        }
        crate::op::Progress::message(
            &merge.work.progress,
            &format!(
                "{} of {tasks} shard tasks, slurm job array {job}",
                missing.len()
            ),
        );
        sh.sharded.insert(
            unit,
            ShardedUnit {
                merge,
                remaining: missing.iter().map(|(i, _)| *i).collect(),
                tasks,
                since: Instant::now(),
            },
        );
    }
}

/// A shard task's part is there: once all are, the merge is submitted.
pub(super) fn part_built(
    sh: &mut Shared,
    store: &Store,
    opts: &SlurmOptions,
    tx: &mpsc::Sender<Msg>,
    a: &Active,
) {
    let (Some(part), Some(s)) = (&a.part, sh.sharded.get_mut(&a.unit)) else {
        return;
    };
    s.remaining.remove(&part.index);
    crate::op::Progress::message(
        &s.merge.work.progress,
        &format!(
            "{} of {} shard tasks done",
            s.tasks - s.remaining.len(),
            s.tasks
        ),
    );
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
