//! `losses.jsonl`: one line per optimizer step of a training run. The
//! training loop ([`super::train_on`]) appends a line after every step; the
//! report plots the loss and learning rate and takes the run's last line
//! for its compute table.

use serde::{Deserialize, Serialize};

use crate::train::lineage::whole;
use crate::train::optim::StepStats;

/// One line of `losses.jsonl`. The training loop writes the first five
/// fields, always (a non-finite loss, learning rate or gradient norm as
/// `null`). Readers are lenient: a field a line lacks is `None`, and
/// another tool's line may also give the run's FLOPs, parameters, devices
/// and timing (`wall_s`, `elapsed_s` or `seconds`), which the report's
/// compute table takes when the run has no facts of its own; those are
/// left out again when absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossLine {
    /// The optimizer step, from 1.
    #[serde(deserialize_with = "whole")]
    pub step: Option<u64>,
    /// The step's mean token loss (nats) over its effective batch.
    pub loss: Option<f64>,
    /// The learning rate the step used.
    pub lr: Option<f64>,
    /// The global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Tokens trained on up to and including this step.
    #[serde(deserialize_with = "whole")]
    pub tokens_seen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<f64>,
    /// The device's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl LossLine {
    /// The file's name in a training run's output directory.
    pub const FILE: &'static str = "losses.jsonl";

    /// The line of optimizer step `step` (from 1), `tokens_seen` after it.
    pub fn of_step(step: usize, stats: &StepStats, tokens_seen: u64) -> LossLine {
        let finite = |x: f64| x.is_finite().then_some(x);
        LossLine {
            step: Some(step as u64),
            loss: finite(stats.loss),
            lr: finite(stats.lr),
            grad_norm: finite(stats.grad_norm),
            tokens_seen: Some(tokens_seen),
            ..LossLine::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line the training loop wrote with `json!` before it was typed,
    /// non-finite figures (`null`) included, and the struct's the same.
    #[test]
    fn a_loss_line_writes_what_json_wrote_and_reads_back() {
        for (loss, lr, grad_norm) in [
            (5.703_782_081_604_004, 2e-6, 0.312_5),
            (f64::NAN, 0.0, f64::INFINITY),
        ] {
            let stats = StepStats {
                loss,
                grad_norm,
                lr,
                tokens: 9,
            };
            let old = serde_json::json!({"step": 3, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_seen": 27u64});
            let line = LossLine::of_step(3, &stats, 27);
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(text, old.to_string());
            assert_eq!(serde_json::from_str::<LossLine>(&text).unwrap(), line);
        }
    }

    #[test]
    fn another_tools_line_keeps_its_timing_and_counts_may_be_floats() {
        let line: LossLine = serde_json::from_str(
            r#"{"step": 400.0, "loss": 2.0, "tokens_seen": 8.0e9, "elapsed_s": 7200}"#,
        )
        .unwrap();
        assert_eq!(line.step, Some(400));
        assert_eq!(line.tokens_seen, Some(8_000_000_000));
        assert_eq!((line.lr, line.elapsed_s), (None, Some(7200.0)));
        assert!(serde_json::from_str::<LossLine>(r#"{"step": 1.5}"#).is_err());
    }
}
