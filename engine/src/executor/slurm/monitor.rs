//! The monitor thread: polls `squeue` for the jobs being followed, and
//! decides what an ended job means: its unit (or shard task's part) is
//! built, it is submitted again (`--retries`), or its unit fails with the
//! tail of the job's log. On Ctrl-C it cancels every job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use super::commands::{exit_info, is_active, sbatch, scancel, squeue};
use super::{
    clean_builds, job_comment, job_log, save_jobs, sharded, Active, JobEntry, Shared, SlurmOptions,
    VISIBLE_WITHIN,
};
use crate::executor::{read_tail, Failure, Finished, Msg, LOG_TAIL};
use crate::store::Store;

pub(super) fn monitor(
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
            cancel_all(&mut sh, &store, &tx);
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
                        a.message(&format!("slurm job {id} {st}"));
                    }
                }
                continue;
            }
            if state.as_deref() == Some("COMPLETED") {
                // The worker exits 0 only after its commit: wait for the
                // artifact (or part) to become visible here.
                if let Some(a) = sh.active.get_mut(&id) {
                    if !a.built(&store) {
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
            ended(&mut sh, &store, &opts, &tx, id, a, &state);
        }
        if changed {
            sharded::top_up(&mut sh, &store, &opts, &tx);
            save_jobs(&store, &sh.jobs);
        }
    }
}

/// Ctrl-C: every followed unit ends cancelled (one message a unit, however
/// many shard tasks it had running).
fn cancel_all(sh: &mut Shared, store: &Store, tx: &mpsc::Sender<Msg>) {
    let cancelled = |job: String| Failure {
        report: miette::miette!("slurm job {job} cancelled"),
        log_tail: vec![],
        log_path: std::path::PathBuf::new(),
        cancelled: true,
    };
    for (job, a) in std::mem::take(&mut sh.active) {
        sh.jobs.jobs.remove(&a.entry);
        let Some(progress) = a.progress else {
            continue;
        };
        progress.finish();
        let _ = tx.send(Msg::Finished(Box::new(Finished {
            unit: a.unit,
            seconds: a.since.elapsed().as_secs_f64(),
            result: Err(cancelled(job.clone())),
            job: Some(job),
        })));
    }
    for (unit, s) in std::mem::take(&mut sh.sharded) {
        let _ = tx.send(s.cancelled(unit));
    }
    save_jobs(store, &sh.jobs);
}

/// A job that left the queue: built, retried, or its unit failed.
fn ended(
    sh: &mut Shared,
    store: &Store,
    opts: &SlurmOptions,
    tx: &mpsc::Sender<Msg>,
    id: String,
    a: Active,
    state: &str,
) {
    if a.part.is_none() {
        clean_builds(store, &a.key);
        if let Some(meta) = store.lookup(&a.key) {
            sh.jobs.jobs.remove(&a.key);
            sharded::remove_parts(store, &a.key);
            if let Some(p) = &a.progress {
                p.finish();
            }
            let _ = tx.send(Msg::Finished(Box::new(Finished {
                unit: a.unit,
                seconds: a.since.elapsed().as_secs_f64(),
                result: Ok(meta),
                job: Some(id),
            })));
            return;
        }
    } else if a.built(store) {
        sharded::part_built(sh, store, opts, tx, &a);
        return;
    }
    let info = exit_info(&id).map(|i| format!(", {i}")).unwrap_or_default();
    let what = match &a.part {
        Some(p) => format!("shard task {} of {}, job {id}", p.index, p.tasks),
        None => format!("job {id}"),
    };
    if a.attempt <= opts.retries {
        match sbatch(&a.args, &opts.worker, &a.spec) {
            Ok(new) => {
                let attempt = a.attempt + 1;
                a.message(&format!("slurm job {new} (attempt {attempt})"));
                let log = job_log(store, &a.log_name, &new);
                sh.jobs.jobs.insert(
                    a.entry.clone(),
                    JobEntry {
                        job: new.clone(),
                        attempt,
                        node: a.display.clone(),
                        comment: comment_of(&a.args).unwrap_or_else(|| job_comment(&a.key)),
                        log: if a.part.is_some() {
                            log.display().to_string()
                        } else {
                            String::new()
                        },
                    },
                );
                let _ = tx.send(Msg::Submitted {
                    unit: a.unit,
                    job: new.clone(),
                    attempt,
                    adopted: false,
                    after: Some(format!("{what} ended {state}{info}")),
                    shard: a.part.as_ref().map(|p| p.index),
                });
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
                return;
            }
            Err(e) => {
                let report = miette::miette!(
                    "slurm {what} of `{}` ended {state}{info}, and submitting it again failed: {e}",
                    a.display
                );
                return fail_unit(sh, store, tx, a, id, report);
            }
        }
    }
    let attempts = if a.attempt > 1 {
        format!(" (attempt {} of {})", a.attempt, opts.retries + 1)
    } else {
        String::new()
    };
    let report = miette::miette!(
        "node `{}` failed on Slurm: {what} ended {state}{info}{attempts}",
        a.display
    );
    fail_unit(sh, store, tx, a, id, report);
}

/// Fails the unit of job `id` with `report` and the tail of the job's log
/// (kept as the key's failed log, which `flow show` prints). A shard
/// task's failure cancels the unit's other shard tasks.
fn fail_unit(
    sh: &mut Shared,
    store: &Store,
    tx: &mpsc::Sender<Msg>,
    a: Active,
    id: String,
    report: miette::Report,
) {
    sh.jobs.jobs.remove(&a.key);
    sh.jobs.jobs.remove(&a.entry);
    let _ = std::fs::copy(&a.log, store.failed_log(&a.key));
    let failure = Failure {
        report,
        log_tail: read_tail(&a.log, LOG_TAIL),
        log_path: a.log.clone(),
        cancelled: false,
    };
    if let Some(p) = &a.progress {
        p.finish();
    }
    if a.part.is_some() {
        let others: Vec<String> = sh
            .active
            .iter()
            .filter(|(_, b)| b.unit == a.unit)
            .map(|(j, _)| j.clone())
            .collect();
        scancel(&others);
        for j in others {
            if let Some(b) = sh.active.remove(&j) {
                sh.jobs.jobs.remove(&b.entry);
            }
        }
        if let Some(s) = sh.sharded.remove(&a.unit) {
            s.finish();
        }
    }
    let _ = tx.send(Msg::Finished(Box::new(Finished {
        unit: a.unit,
        seconds: a.since.elapsed().as_secs_f64(),
        result: Err(failure),
        job: Some(id),
    })));
}

/// The `--comment=` of a job's sbatch arguments.
fn comment_of(args: &[String]) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix("--comment="))
        .map(str::to_string)
}
