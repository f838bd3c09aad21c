//! The Slurm commands the runner uses: `sbatch`, `squeue`, `scontrol`,
//! `scancel`, each a child process whose output is parsed here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Submits a one-unit job; returns its id.
pub(super) fn sbatch(args: &[String], worker: &Path, spec: &Path) -> Result<String, String> {
    let script = format!(
        "#!/bin/sh\n# flow unit (see {})\nexec {} slurm-worker {}\n",
        spec.display(),
        shell_quote(&worker.to_string_lossy()),
        shell_quote(&spec.to_string_lossy())
    );
    sbatch_script(args, &script)
}

/// Submits a batch script; returns the job id.
pub(super) fn sbatch_script(args: &[String], script: &str) -> Result<String, String> {
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

pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Slurm states in which a job is still queued or running.
pub(super) fn is_active(state: &str) -> bool {
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
pub(super) fn squeue(ids: &[String]) -> Option<BTreeMap<String, (String, String)>> {
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
pub(super) fn exit_info(job: &str) -> Option<String> {
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

pub(super) fn scancel(ids: &[String]) {
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

/// A job name Slurm shows (`flow:NODE`): the display name with anything
/// but `[A-Za-z0-9_.-[]]` replaced.
pub(super) fn job_name(display: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
