//! The `train` op's own file: `run-facts/train.json`. (Its checkpoints'
//! `flow_checkpoint.json` is flow-model's [`super::CheckpointLineage`], and
//! its `losses.jsonl` flow-model's [`LossLine`], both written by the
//! training loop.)

use serde::{Deserialize, Serialize};

use super::{JsonFile, JsonLines};

pub use flow_model::train::LossLine;

/// `run-facts/train.json`: how a training run ran, its wall time and
/// device (written by `train` into its run facts, outside the artifact's
/// content hash; read by the report's compute table). The report reads the
/// same fields from another tool's `train.json` or `metadata.json`, which
/// may also give the tokens, FLOPs and parameters, or the time as
/// `elapsed_s` or `seconds`; a field a file lacks is left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainRunFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<u64>,
    /// The device's name, e.g. the CPU model and its thread count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Optimizer steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_seen: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl JsonFile for TrainRunFacts {
    const NAME: &'static str = "train.json";
    const WHAT: &'static str = "a training run's facts";
    const FINAL_NEWLINE: bool = false;
}

/// `losses.jsonl` ([`LossLine`]) is the training loop's format, so its
/// struct is flow-model's; the report reads it through this.
impl JsonLines for LossLine {
    const NAME: &'static str = LossLine::FILE;
    const WHAT: &'static str = "a losses line";
}
