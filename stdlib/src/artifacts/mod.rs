//! The JSON and JSONL files ops hand each other: one struct per artifact
//! file, used by the op that writes it and by every op that reads it
//! (report, davidson, ...). Field order is the file's (serde_json keeps
//! insertion order), so a struct writes the bytes the op always wrote.
//!
//! Readers are lenient where the report always was: a field an older or
//! hand-written artifact lacks takes its default (`#[serde(default)]`), and
//! a number that may be non-finite is an `Option<f64>` (serde_json writes
//! NaN and infinities as `null`).
//!
//! `mcqa.json` and `items.jsonl` are [`crate::eval::mcqa::McqaResult`]
//! and [`crate::eval::mcqa::McqaItemLine`], beside the scoring that fills
//! them; `holdout.json` is [`crate::heldout::split::HoldoutStats`];
//! `classifier.json` is [`crate::data::train_classifier::ClassifierInfo`].
//! `pack.json` ([`data::PackInfo`]) and `flow_checkpoint.json`
//! ([`CheckpointLineage`]) are the training runtime's formats, so their
//! structs are flow-model's, re-exported here, as is `losses.jsonl`'s
//! ([`train::LossLine`]); `train_log.jsonl` is
//! [`crate::data::train_classifier::TrainLogLine`]. [`eval`] holds the
//! evaluation ops' files, [`model`] the model ops' (`generate`,
//! `import_gguf`, `fetch_wheel`), [`data`] the data ops' statistics
//! (`corpus.json`, `sample.json`, ...) and `annotate`'s `annotations.jsonl`,
//! [`train`] the
//! training run's facts; each is written and read through its struct.

use std::path::{Path, PathBuf};

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::op::OpResult;

pub mod data;
pub mod eval;
pub mod model;
mod ordered;
#[cfg(test)]
pub(crate) mod tests;
pub mod train;

pub use flow_model::train::CheckpointLineage;
pub use ordered::OrderedMap;

/// A `[low, high]` interval whose ends may be non-finite (`null`); `None`
/// where there was nothing to compute it from.
pub type Interval = Option<[Option<f64>; 2]>;

/// Both ends of an [`Interval`], when both are numbers.
pub fn interval_ends(i: &Interval) -> Option<(f64, f64)> {
    let [lo, hi] = (*i)?;
    Some((lo?, hi?))
}

/// `x` when it is finite (what serde_json would write as a number).
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The path of `name` given an artifact directory or the file itself.
fn file_in(path: &Path, name: &str) -> PathBuf {
    if path.is_dir() {
        path.join(name)
    } else {
        path.to_path_buf()
    }
}

/// A JSON artifact file: pretty-printed, as every op writes them.
pub trait JsonFile: Serialize + DeserializeOwned {
    /// The file's name in its artifact directory.
    const NAME: &'static str;
    /// What the file is, for errors ("a davidson result").
    const WHAT: &'static str;
    /// Whether the file ends in a line break. The data ops' statistics do,
    /// the evaluation and training files do not; each keeps the bytes it
    /// had before it was typed.
    const FINAL_NEWLINE: bool;

    /// The file's bytes.
    fn to_bytes(&self) -> OpResult<Vec<u8>> {
        let mut text = serde_json::to_string_pretty(self).into_diagnostic()?;
        if Self::FINAL_NEWLINE {
            text.push('\n');
        }
        Ok(text.into_bytes())
    }

    /// Writes the file into the artifact directory `dir`, atomically.
    fn write(&self, dir: &Path) -> OpResult<()> {
        crate::data::corpus::write_bytes_atomic(&dir.join(Self::NAME), &self.to_bytes()?)
    }

    /// Reads the file: `path` is the file or the artifact directory.
    fn read(path: &Path) -> OpResult<Self> {
        let file = file_in(path, Self::NAME);
        let text = std::fs::read_to_string(&file)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            miette!(
                "{}:{}:{}: not {} ({e})",
                file.display(),
                e.line(),
                e.column(),
                Self::WHAT
            )
        })
    }

    /// Reads the file of the artifact directory `dir` if it has one.
    fn read_if_present(dir: &Path) -> OpResult<Option<Self>> {
        let file = dir.join(Self::NAME);
        if file.is_file() {
            Self::read(&file).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A request to a chat model that failed, as `annotate.json` and
/// `judge.json` keep up to 20 of them: the kind of failure and the HTTP
/// status, never the server's text (it may echo the key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedRequest {
    /// `transport`, `unauthorized`, `http_status`, `malformed_answer` or
    /// `local_model`.
    pub class: String,
    pub status: Option<u16>,
    /// The document's or prompt's id.
    pub id: String,
}

/// One line of a JSONL input file read as a JSON object.
pub struct ObjectLine {
    /// The 1-based line number.
    pub line: usize,
    /// `file:line`, for errors.
    pub at: String,
    pub object: serde_json::Map<String, serde_json::Value>,
}

/// The JSON objects of a hand-made JSONL input (prompts, benchmark items,
/// responses): blank lines are skipped; a line that is not a JSON object is
/// an error naming its file and line.
pub fn read_object_lines(path: &Path) -> OpResult<Vec<ObjectLine>> {
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| miette!("{at}: not valid JSON: {e}"))?;
        let serde_json::Value::Object(object) = value else {
            return Err(miette!("{at}: each line must be a JSON object"));
        };
        out.push(ObjectLine {
            line: i + 1,
            at,
            object,
        });
    }
    Ok(out)
}

/// A JSONL artifact file: one compact JSON object a line.
pub trait JsonLines: Serialize + DeserializeOwned {
    /// The file's name in its artifact directory.
    const NAME: &'static str;
    /// What one line is, for errors ("a verdict line").
    const WHAT: &'static str;

    /// The line, without its line break.
    fn to_line(&self) -> OpResult<String> {
        serde_json::to_string(self).into_diagnostic()
    }

    /// The file's text: every record on its own line.
    fn to_text(records: &[Self]) -> OpResult<String> {
        let mut text = String::new();
        for r in records {
            text += &r.to_line()?;
            text.push('\n');
        }
        Ok(text)
    }

    /// Writes `records` as the file of the artifact directory `dir`,
    /// atomically.
    fn write_all(records: &[Self], dir: &Path) -> OpResult<()> {
        crate::data::corpus::write_bytes_atomic(
            &dir.join(Self::NAME),
            Self::to_text(records)?.as_bytes(),
        )
    }

    /// Reads every line (blank lines are skipped); `path` is the file or
    /// the artifact directory. A line that is not a record is an error
    /// naming the file and line.
    fn read_all(path: &Path) -> OpResult<Vec<Self>> {
        let file = file_in(path, Self::NAME);
        let text = std::fs::read_to_string(&file)
            .into_diagnostic()
            .wrap_err_with(|| format!("reading {}", file.display()))?;
        Self::parse_all(&text, &file)
    }

    /// Parses the lines of `text`, read from `file`.
    fn parse_all(text: &str, file: &Path) -> OpResult<Vec<Self>> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str(l)
                    .map_err(|e| miette!("{}:{}: not {} ({e})", file.display(), n + 1, Self::WHAT))
            })
            .collect()
    }
}
