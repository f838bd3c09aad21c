//! `flow_checkpoint.json`: where a model directory sits in a training run.
//! The training loop writes it into every checkpoint and the final model;
//! the merges copy it, and the evaluation ops copy it into their results
//! (`checkpoint`) so the report can place each result on the run's axis
//! of tokens and FLOPs.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{read_to_string, write_atomic, ModelError};

/// The training lineage of a model directory. The training loop writes
/// every field; a hand-written or merged lineage may carry only some
/// (`{"step": 3}`), and a field it lacks is left out again when it is
/// copied, so a copy holds what the original held.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointLineage {
    /// The optimizer step the weights are from.
    #[serde(
        default,
        deserialize_with = "whole",
        skip_serializing_if = "Option::is_none"
    )]
    pub step: Option<u64>,
    /// Tokens trained on up to `step` (predicted targets, padding excluded).
    #[serde(
        default,
        deserialize_with = "whole",
        skip_serializing_if = "Option::is_none"
    )]
    pub tokens_seen: Option<u64>,
    /// Training FLOPs up to `step`: 6 · non-embedding parameters · tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
    /// The step's training loss: `Some(None)` (written `null`) when it was
    /// not finite, `None` when the lineage does not say.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub loss: Option<Option<f64>>,
    /// The checkpoint's directory relative to the training run's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// A count written as a whole number, `4096` or `4096.0` (hand-made
/// lineages of tests and other tools write them as floats).
pub(crate) fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(u64),
        Float(f64),
    }
    match Option::<Number>::deserialize(d)? {
        None => Ok(None),
        Some(Number::Int(n)) => Ok(Some(n)),
        Some(Number::Float(x)) if x >= 0.0 && x.fract() == 0.0 && x < u64::MAX as f64 => {
            Ok(Some(x as u64))
        }
        Some(Number::Float(x)) => Err(serde::de::Error::custom(format!(
            "expected a whole number of at least 0, got {x}"
        ))),
    }
}

/// A field that is there, `null` or not (absent is `None` by `default`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

impl CheckpointLineage {
    /// The file's name in a model directory.
    pub const FILE: &'static str = "flow_checkpoint.json";

    /// The lineage of `model_dir`, `None` when it has none (a model that
    /// did not come out of a training run).
    pub fn read(model_dir: &Path) -> Result<Option<CheckpointLineage>, ModelError> {
        let path = model_dir.join(Self::FILE);
        if !path.is_file() {
            return Ok(None);
        }
        serde_json::from_str(&read_to_string(&path)?)
            .map(Some)
            .map_err(|e| ModelError::invalid(&path, format!("not a checkpoint lineage: {e}")))
    }

    /// Writes the lineage into `model_dir` (pretty JSON, no final newline).
    pub fn write(&self, model_dir: &Path) -> Result<(), ModelError> {
        let text = serde_json::to_string_pretty(self).expect("a lineage is JSON");
        write_atomic(&model_dir.join(Self::FILE), text.as_bytes())
    }
}
