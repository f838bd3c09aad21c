//! `exec`: runs a shell command in a fresh output directory, so any outside
//! tool becomes a cached node.
//!
//! `exec(cmd: "...")`: `cmd` is a template; `{out}` is the node's output
//! directory, `{n}` an upstream node's artifact directory, `{p}` a param.
//! The command runs as `sh -c CMD` with:
//! - the working directory = the directory of the pipeline file
//!   (`OpContext::workdir`);
//! - `FLOW_OUT` set to the output directory as well;
//! - stdout and stderr going, line by line, to the node's log.
//!
//! A non-zero exit is an error that quotes the exit code and the log's tail.
//! Only what the call names enters the key: the `cmd` text with its
//! placeholders (params by value, `{node}` by content), and `deps`, a list
//! of `file("...")`, `dir("...")` or nodes the command reads by path:
//! `exec(cmd: "wc -l data.txt > {out}/n", deps: [file("data.txt")])`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::op::{
    Op, OpContext, OpResult, OpSpec, Outputs, Param, ParamsShape, Resources, Type, Value,
};

/// Lines of output kept for the error message.
const TAIL_LINES: usize = 20;

/// The `exec` op.
pub struct Exec;

/// `exec`'s params (see its spec).
#[derive(Deserialize)]
struct ExecParams {
    cmd: String,
    /// Only for the key: the command names these files itself.
    #[allow(dead_code)]
    deps: serde::de::IgnoredAny,
}

impl Op for Exec {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "exec",
            version: 1,
            doc: "Runs `sh -c CMD` in the pipeline's directory; `{out}` is the output directory. \
                  stdout/stderr go to the node log; a non-zero exit fails the node.",
            params: vec![
                Param::required(
                    "cmd",
                    Type::Template,
                    "the shell command; {out} = output directory, {node} = an upstream artifact, {param} = a param",
                ),
                Param::optional(
                    "deps",
                    Type::List(Box::new(Type::Any)),
                    Value::List(vec![]),
                    "what the command reads besides its placeholders: file(...), dir(...) or nodes; \
                     their content enters the key (the command refers to files by their path)",
                ),
            ],
            produces: Type::Dir,
            outputs: vec![],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<ExecParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: ExecParams = ctx.params()?;
        let cmd = p.cmd.as_str();
        let dir = &ctx.workdir;
        ctx.log(&format!("$ {cmd}"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .env("FLOW_OUT", &ctx.out_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so cancelling kills the whole command.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                miette::miette!(
                    help = "`exec` needs a POSIX `sh` on PATH",
                    "could not start `sh -c` in {}: {e}",
                    dir.display()
                )
            })?;
        let watchdog = Watchdog::start(child.id());
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let status = std::thread::scope(|s| {
            let pump = |stream: Option<Box<dyn Read + Send>>| {
                let tail = Arc::clone(&tail);
                move || {
                    let Some(stream) = stream else { return };
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        ctx.log(&line);
                        if let Ok(mut t) = tail.lock() {
                            if t.len() == TAIL_LINES {
                                t.pop_front();
                            }
                            t.push_back(line);
                        }
                    }
                }
            };
            s.spawn(pump(stdout.map(|o| Box::new(o) as Box<dyn Read + Send>)));
            s.spawn(pump(stderr.map(|o| Box::new(o) as Box<dyn Read + Send>)));
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return Ok(status),
                    Ok(None) => {}
                    Err(e) => return Err(miette::miette!("waiting for `sh -c`: {e}")),
                }
                if ctx.check_cancelled().is_err() {
                    kill_group(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(miette::miette!("cancelled"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        drop(watchdog);
        let status = status?;
        if status.success() {
            return Ok(Outputs::new());
        }
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let how = match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".to_string(),
        };
        Err(miette::miette!(
            help = "the command's output is in the node log (`flow show FILE NODE`)",
            "command {how}: {cmd}\n--- last lines of output ---\n{}",
            tail.join("\n")
        ))
    }
}

/// Kills the command's process group when `flow` dies, however it dies
/// (`kill -9` included, which no handler in `flow` can see): a small `sh`
/// outside the group waits on a pipe whose only writer is this process,
/// and the kernel closes that pipe when the process ends. On a normal end
/// the watchdog is stopped first, so it never signals a reused group id.
struct Watchdog(Option<std::process::Child>);

impl Watchdog {
    fn start(pgid: u32) -> Watchdog {
        let child = Command::new("sh")
            .arg("-c")
            .arg("read _ignored; kill -KILL -\"$0\" 2>/dev/null")
            .arg(pgid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in the command's group, nor in the terminal's.
            .process_group(0)
            .spawn()
            .ok();
        Watchdog(child)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kills a process group (the command and everything it started).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Exec)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::{full_params, with_context, RunOptions};
    use std::path::Path;

    fn run_cmd(cmd: &str, dir: &Path, out: &Path) -> (OpResult<Outputs>, Vec<String>) {
        let params = full_params(&Exec, &[("cmd", Value::Str(cmd.to_string()))]);
        let options = RunOptions {
            threads: 1,
            workdir: Some(dir.to_owned()),
            ..RunOptions::default()
        };
        with_context(params, out, options, |ctx| Exec.run(ctx))
    }

    #[test]
    fn runs_in_the_workdir_and_logs_output() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("input.txt"), "hello\n").unwrap();
        let out = t.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let (r, lines) = run_cmd(
            "cat input.txt; cp input.txt \"$FLOW_OUT/copy\"",
            t.path(),
            &out,
        );
        r.unwrap();
        assert!(lines.contains(&"hello".to_string()));
        assert_eq!(
            std::fs::read_to_string(out.join("copy")).unwrap(),
            "hello\n"
        );
    }

    #[test]
    fn nonzero_exit_is_an_error_with_code_and_tail() {
        let t = tempfile::tempdir().unwrap();
        let (r, _) = run_cmd("echo before-failing >&2; exit 3", t.path(), t.path());
        let msg = format!("{:?}", r.unwrap_err());
        assert!(msg.contains("code 3"), "{msg}");
        assert!(msg.contains("before-failing"), "{msg}");
    }
}
