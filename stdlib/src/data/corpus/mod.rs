//! `corpus`: reads FineWeb-2 parquet shards and JSONL files (plain, `.gz`,
//! `.zst`) into flow's normalised corpus artifact.
//!
//! The artifact (every data op reads and most write it) is a directory of
//! zstd-compressed JSONL shards `docs-00000.jsonl.zst`, one JSON object a
//! line with at least `id` and `text` (all other source fields kept), plus a
//! JSON statistics file. This module also holds the shared reading and writing
//! helpers the other data ops use.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::op::{
    run_in_parts, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Sharded,
    Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Corpus)]
}

// ---------------------------------------------------------------------------
// Shared helpers for the data ops.

/// What an op does with a bad record (malformed line, missing field, failed
/// request): `Fail` stops with an error naming the place, `Skip` counts it,
/// keeps the first examples for the statistics file and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    Skip,
    Fail,
}

/// The `on_error` parameter every data op takes.
pub fn on_error_param() -> Param {
    Param::optional(
        "on_error",
        Type::enum_of::<OnError>(),
        Value::Str("skip".into()),
        "what to do with a bad record: \"skip\" counts and reports it, \"fail\" stops the run",
    )
}

/// Bad records seen so far (flow-model's, as `pack.json` records them).
pub use flow_model::train::ErrorLog;

impl OnError {
    /// Records a bad record at `place` (file:line or document id) in `log`,
    /// or fails with it under [`OnError::Fail`].
    pub fn record(self, log: &mut ErrorLog, place: &str, what: &str) -> OpResult<()> {
        if self == OnError::Fail {
            return Err(miette!("{place}: {what}")).wrap_err(
                "bad input (on_error: \"fail\"; use on_error: \"skip\" to count and skip it)",
            );
        }
        log.push(place, what);
        Ok(())
    }
}

/// Names each example's place in `log` by its input's identity
/// ([`OpContext::input_place`]): done once, before the log goes into a
/// result, so the op's own messages keep the paths.
pub fn name_error_places(log: &mut ErrorLog, ctx: &OpContext) {
    for e in &mut log.examples {
        *e = ctx.input_place(e);
    }
}

mod inputs;
mod lines;
mod read;
mod shards;
#[cfg(test)]
mod tests;
/// A test harness: builds an [`OpContext`] around an op's spec defaults.
#[cfg(test)]
pub(crate) mod testutil;

pub use inputs::*;
pub use lines::*;
pub use read::*;
pub use shards::*;
