//! The packed token dataset the `train` loop reads and the `pack` op
//! writes: `tokens.bin`, `doc_ids.bin` (u32 little-endian, `sequences` ×
//! `seq_len` each) and `pack.json` ([`PackInfo`]). The format is the
//! runtime's, so its struct lives here; the ops crate writes and reads
//! `pack.json` through the same struct.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_to_string, ModelError};
use crate::train::backward::Sequence;

/// `pack.json`: the packed dataset's shape and where it came from (written
/// by `pack`; read by [`PackedData::load`], `heldout_loss` and `report`).
/// Readers are lenient: a field a hand-written file lacks takes its default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PackInfo {
    pub seq_len: usize,
    pub sequences: u64,
    /// Tokens that are not padding.
    pub tokens: u64,
    pub documents: u64,
    pub eos_id: u32,
    pub pad_id: u32,
    /// blake3 of the tokenizer.json the corpus was packed with.
    pub tokenizer_hash: String,
    /// Tokens of the last, incomplete sequence dropped by `drop_last`.
    pub dropped_tokens: u64,
    /// The bad records of the corpus that were skipped.
    pub errors: ErrorLog,
}

/// Bad records seen so far: a count and the first few, each with its place.
/// (The data ops' error policy, which decides whether a bad record fails
/// the run, is theirs; this is only the record `pack.json` and the other
/// statistics files keep.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorLog {
    pub count: u64,
    /// The first [`ErrorLog::KEEP`] problems, as "place: what".
    pub examples: Vec<String>,
}

impl ErrorLog {
    pub const KEEP: usize = 50;

    /// Counts a bad record at `place` (file:line or document id), keeping
    /// it among the examples while there are fewer than [`Self::KEEP`].
    pub fn push(&mut self, place: &str, what: &str) {
        self.count += 1;
        if self.examples.len() < Self::KEEP {
            self.examples.push(format!("{place}: {what}"));
        }
    }

    pub fn merge(&mut self, other: ErrorLog) {
        self.count += other.count;
        for e in other.examples {
            if self.examples.len() < Self::KEEP {
                self.examples.push(e);
            }
        }
    }
}

/// A packed token dataset, loaded and checked.
pub struct PackedData {
    pub seq_len: usize,
    pub sequences: usize,
    tokens: Vec<u32>,
    doc_ids: Vec<u32>,
}

fn read_u32s(path: &Path) -> Result<Vec<u32>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    if bytes.len() % 4 != 0 {
        return Err(ModelError::invalid(
            path,
            "length is not a multiple of 4 bytes (u32 little-endian expected)",
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl PackedData {
    /// Reads and checks a packed dataset directory.
    pub fn load(dir: &Path) -> Result<PackedData, ModelError> {
        let meta_path = dir.join("pack.json");
        let meta: PackInfo = serde_json::from_str(&read_to_string(&meta_path)?)
            .map_err(|e| ModelError::invalid(&meta_path, format!("not a pack.json: {e}")))?;
        let seq_len = meta.seq_len;
        let sequences = meta.sequences as usize;
        if seq_len == 0 {
            return Err(ModelError::invalid(
                &meta_path,
                "seq_len must be positive (missing or 0)",
            ));
        }
        let tokens = read_u32s(&dir.join("tokens.bin"))?;
        let doc_ids = read_u32s(&dir.join("doc_ids.bin"))?;
        for (name, v) in [("tokens.bin", &tokens), ("doc_ids.bin", &doc_ids)] {
            if v.len() != seq_len * sequences {
                return Err(ModelError::invalid(
                    &dir.join(name),
                    format!(
                        "holds {} values but pack.json says {sequences} sequences × {seq_len}",
                        v.len()
                    ),
                ));
            }
        }
        Ok(PackedData {
            seq_len,
            sequences,
            tokens,
            doc_ids,
        })
    }

    /// Training sequence `i` (padding positions get no target and their own doc id).
    pub fn sequence(&self, i: usize) -> Sequence {
        let r = i * self.seq_len..(i + 1) * self.seq_len;
        Sequence::packed(&self.tokens[r.clone()], &self.doc_ids[r])
    }
}
