//! The data ops' statistics files: `annotate.json`, `agreement.json`,
//! `filter.json`, `dedup.json`, `pack.json` (written by their ops, read by
//! `report`'s curation section and, for `pack.json`, by `heldout_loss`).
//! Each ends in a line break, as the data ops always wrote them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{JsonFile, OrderedMap};
use crate::data::agreement::Prf;
use crate::data::corpus::ErrorLog;
pub use flow_model::train::PackInfo;

/// One output shard of a corpus artifact and its document count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShardCount {
    pub file: String,
    pub documents: u64,
}

impl ShardCount {
    /// The list `ShardWriter::finish` returns, as the files write it.
    pub fn list(shards: &[(String, u64)]) -> Vec<ShardCount> {
        shards
            .iter()
            .map(|(file, documents)| ShardCount {
                file: file.clone(),
                documents: *documents,
            })
            .collect()
    }
}

/// `annotate.json`: the labels a chat model gave a corpus sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnotateStats {
    /// Documents answered (failed ones left out).
    pub n: usize,
    /// Documents per label, every label of the set (0 included), in the
    /// file's order.
    pub labels: OrderedMap<u64>,
    pub unparseable: u64,
    pub failed: u64,
    pub reused_from_state: u64,
    /// The backend's description.
    pub backend: Json,
    pub json_schema: bool,
    pub config_hash: String,
    /// Up to 20 `{id, raw}` answers that named no label.
    pub unparseable_examples: Vec<Json>,
    pub max_failures: u64,
    /// Up to 20 `{id, class, status}` of failed requests.
    pub failed_examples: Vec<Json>,
}

impl JsonFile for AnnotateStats {
    const NAME: &'static str = "annotate.json";
    const WHAT: &'static str = "an annotate statistics file";
    const FINAL_NEWLINE: bool = true;
}

/// `agreement.json`: the annotations scored against human labels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgreementReport {
    pub positive: String,
    /// Documents with a human label.
    pub documents: usize,
    /// Documents with both an annotation and a human majority.
    pub compared: usize,
    pub missing_annotations: usize,
    /// Up to 20 ids with human labels and no annotation.
    pub missing_examples: Vec<String>,
    pub unparseable_annotations: u64,
    pub majority_ties: usize,
    /// Against the human majority vote.
    pub majority: Prf,
    pub per_annotator: BTreeMap<String, AnnotatorAgreement>,
}

/// The annotations against one human annotator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnotatorAgreement {
    pub documents: usize,
    pub scores: Prf,
}

impl JsonFile for AgreementReport {
    const NAME: &'static str = "agreement.json";
    const WHAT: &'static str = "an agreement report";
    const FINAL_NEWLINE: bool = true;
}

/// `filter.json`: what the classifier kept. Written by `filter`, read by
/// `report`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterStats {
    /// The classifier's f32 threshold widened to f64, as `json!` writes it
    /// (0.42f32 is 0.41999998688697815 here).
    pub threshold: f64,
    /// What was kept: the positive class, or the rest.
    pub keep: String,
    pub positive: String,
    /// The whole corpus's.
    #[serde(flatten)]
    pub counts: KeptCounts,
    /// Bad records skipped.
    pub errors: u64,
    /// Each shard's figures.
    pub per_shard: Vec<ShardStats>,
}

/// One shard's figures in `filter.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub file: String,
    #[serde(flatten)]
    pub counts: KeptCounts,
    /// Histogram of scores in ten bins [0, 0.1), ..., [0.9, 1].
    pub score_histogram: [u64; 10],
    pub errors: ErrorLog,
}

/// Documents, whitespace-separated tokens and characters into and out of
/// the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeptCounts {
    pub documents_in: u64,
    pub documents_out: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub chars_in: u64,
    pub chars_out: u64,
}

impl KeptCounts {
    /// Counts a document of `tokens` and `chars`, in and, when `kept`, out.
    pub fn add(&mut self, tokens: u64, chars: u64, kept: bool) {
        self.documents_in += 1;
        self.tokens_in += tokens;
        self.chars_in += chars;
        if kept {
            self.documents_out += 1;
            self.tokens_out += tokens;
            self.chars_out += chars;
        }
    }

    /// The sum of `all`.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a KeptCounts>) -> KeptCounts {
        all.into_iter()
            .fold(KeptCounts::default(), |a, b| KeptCounts {
                documents_in: a.documents_in + b.documents_in,
                documents_out: a.documents_out + b.documents_out,
                tokens_in: a.tokens_in + b.tokens_in,
                tokens_out: a.tokens_out + b.tokens_out,
                chars_in: a.chars_in + b.chars_in,
                chars_out: a.chars_out + b.chars_out,
            })
    }
}

impl JsonFile for FilterStats {
    const NAME: &'static str = "filter.json";
    const WHAT: &'static str = "a filter statistics file";
    const FINAL_NEWLINE: bool = true;
}

/// `dedup.json`: the duplicates removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupStats {
    pub documents_in: u64,
    pub documents_out: u64,
    pub exact_duplicates: u64,
    pub near_duplicates: u64,
    pub candidate_pairs: u64,
    pub ngram: usize,
    pub bands: usize,
    pub rows: usize,
    pub threshold: f64,
    pub errors: ErrorLog,
    /// Up to 20 removed documents with the one kept in their place.
    pub examples: Vec<DedupExample>,
    pub shards: Vec<ShardCount>,
}

/// A removed duplicate and the document kept for its cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupExample {
    pub removed: String,
    pub kept: String,
    /// "exact" or "near".
    pub kind: String,
}

impl JsonFile for DedupStats {
    const NAME: &'static str = "dedup.json";
    const WHAT: &'static str = "a dedup statistics file";
    const FINAL_NEWLINE: bool = true;
}

/// `pack.json` ([`PackInfo`]) is the training runtime's format, so its
/// struct is flow-model's, which reads it without this crate.
impl JsonFile for PackInfo {
    const NAME: &'static str = "pack.json";
    const WHAT: &'static str = "a pack info file";
    const FINAL_NEWLINE: bool = true;
}
