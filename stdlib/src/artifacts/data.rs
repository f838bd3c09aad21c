//! The data ops' statistics files: `annotate.json`, `agreement.json`,
//! `filter.json`, `dedup.json`, `pack.json` (written by their ops, read by
//! `report`'s curation section and, for `pack.json`, by `heldout_loss`),
//! `corpus.json` ([`CorpusStats`]) and `sample.json` ([`SampleStats`]).
//! Each ends in a line break, as the data ops always wrote them. Also
//! `annotate`'s labels, `annotations.jsonl` ([`Annotation`], one a line).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{FailedRequest, JsonFile, JsonLines, OrderedMap};
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
    /// Up to 20 answers that named no label.
    pub unparseable_examples: Vec<UnparseableAnswer>,
    pub max_failures: u64,
    /// Up to 20 failed requests.
    pub failed_examples: Vec<FailedRequest>,
}

/// An answer that named no label, as `annotate.json` keeps up to 20.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnparseableAnswer {
    pub id: String,
    /// The model's answer.
    pub raw: Option<String>,
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

/// `corpus.json`: what `corpus` read. Written by `corpus` (by its merge, so
/// one reader and any number of shard tasks write the same bytes); read by
/// the corpus tests and the cluster test of a sharded corpus.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorpusStats {
    pub documents: u64,
    pub characters: u64,
    /// The sums of the sources' figures.
    pub empty_text: u64,
    pub duplicate_ids: u64,
    pub documents_lost: u64,
    /// Sources whose stream broke off ([`CorpusSource::broken_off`]).
    pub broken_off_files: usize,
    pub errors: ErrorLog,
    /// Each input file, in input order.
    pub sources: Vec<CorpusSource>,
    pub shards: Vec<ShardCount>,
}

/// One input file of `corpus.json`, also what a shard task of `corpus`
/// hands the merge (its `part.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorpusSource {
    /// The file, named by identity (`OpContext::input_place`) in
    /// `corpus.json`, by path in a part.
    pub path: String,
    /// "jsonl" or "parquet".
    pub format: String,
    pub bytes: u64,
    /// blake3 of the file's bytes, so the artifact says exactly what it read.
    pub blake3: String,
    pub documents: u64,
    pub empty_text: u64,
    pub duplicate_ids: u64,
    pub errors: u64,
    /// Documents known to be lost: the unreadable rest of a parquet row group.
    pub documents_lost: u64,
    /// A compressed or broken stream ended early: what was read is kept,
    /// and this says where it broke off. Absent when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_off: Option<String>,
}

impl JsonFile for CorpusStats {
    const NAME: &'static str = "corpus.json";
    const WHAT: &'static str = "a corpus statistics file";
    const FINAL_NEWLINE: bool = true;
}

/// `sample.json`: what `sample` drew. Written by `sample`; no op reads it
/// (it is the artifact's record, and its tests').
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SampleStats {
    /// Documents of the corpus.
    pub seen: u64,
    /// Documents drawn.
    pub documents: usize,
    /// The seed's two's-complement bits (a negative seed is a large number).
    pub seed: u64,
    /// How the documents were drawn: [`SampleStats::METHOD`].
    pub method: String,
    pub shards: Vec<ShardCount>,
}

impl SampleStats {
    /// The `method` `sample` writes.
    pub const METHOD: &'static str = "bottom-k of blake3(seed le64 || id)";
}

impl JsonFile for SampleStats {
    const NAME: &'static str = "sample.json";
    const WHAT: &'static str = "a sample statistics file";
    const FINAL_NEWLINE: bool = true;
}

/// One line of `annotations.jsonl`: a document's label. Written by
/// `annotate` (`{id, label, raw}` in corpus order, `label` null when the
/// answer named none); read through [`crate::data::agreement::read_labels`]
/// by `agreement` and `train_classifier`, which also take hand-made label
/// files: there `id` may be a number (read as its text), `label` and `raw`
/// may be missing (null), and `annotator` names the labeller (`model` when
/// it is missing or not a string; `annotate` never writes it). Other keys
/// are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    /// The parsed label; `None` (null) if the answer named none.
    #[serde(default)]
    pub label: Option<String>,
    /// The model's raw answer (ignored when it is not a string).
    #[serde(default, deserialize_with = "string_or_none")]
    pub raw: Option<String>,
    /// Who labelled the document, in a hand-made file.
    #[serde(
        default,
        deserialize_with = "string_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub annotator: Option<String>,
}

impl JsonLines for Annotation {
    const NAME: &'static str = "annotations.jsonl";
    const WHAT: &'static str = "an annotation line";
}

/// A document id: a string, or a number read as its text.
fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Json::deserialize(d)? {
        Json::String(s) => Ok(s),
        Json::Number(x) => Ok(x.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "`id` is not a string or number but {other}"
        ))),
    }
}

/// A string, or `None` for anything else (null included).
fn string_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Json::deserialize(d)? {
        Json::String(s) => Some(s),
        _ => None,
    })
}
