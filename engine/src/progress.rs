//! Live progress on stderr: one line per running node, a bar once the op
//! called `set_total`. Drawn only when stderr is a terminal; otherwise
//! only the finished-node lines are printed.

use std::io::IsTerminal;
use std::time::Duration;

use crate::op::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress display of one run.
pub struct Display {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Display {
    /// A display on stderr; `quiet` prints nothing at all.
    pub fn new(quiet: bool) -> Display {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Display { multi, quiet }
    }

    /// A line for a node that started running.
    pub fn start(&self, name: &str) -> NodeProgress {
        let bar = match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }
            None => ProgressBar::hidden(),
        };
        bar.set_prefix(name.to_string());
        NodeProgress { bar }
    }

    /// Prints a line above the live bars.
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

/// The progress line of one running node.
pub struct NodeProgress {
    bar: ProgressBar,
}

impl NodeProgress {
    /// Removes the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for NodeProgress {
    fn set_total(&self, total: u64, unit: &str) {
        self.bar.set_length(total);
        self.bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{prefix:.bold}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed}} eta {{eta}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    }
    fn inc(&self, done: u64) {
        self.bar.inc(done);
    }
    fn message(&self, text: &str) {
        self.bar.set_message(text.to_string());
    }
}
