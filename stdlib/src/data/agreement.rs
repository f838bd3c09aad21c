//! `agreement`: precision, recall and F1 of model annotations against human
//! labels, per annotator and against the annotators' majority vote.
//!
//! Also holds the label-file reader `train_classifier` uses.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};

use super::corpus::for_each_line;
use crate::artifacts::data::{AgreementReport, Annotation, AnnotatorAgreement};
use crate::artifacts::{JsonFile, JsonLines};
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Agreement)]
}

/// One label of one document by one annotator (a person, or "model").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRow {
    pub id: String,
    pub annotator: String,
    pub label: String,
}

/// If `path` is a directory (an `annotate` artifact), its `annotations.jsonl`.
pub fn label_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(Annotation::NAME)
    } else {
        path.to_path_buf()
    }
}

/// Reads labels from CSV (header with `id`, `label`, optional `annotator`)
/// or JSONL (`{"id", "label", "annotator"?}`; `annotate`'s output, where
/// `label` is null for an unparseable answer: such rows are skipped and
/// counted). Returns the rows and the count of rows without a label.
pub fn read_labels(path: &Path) -> OpResult<(Vec<LabelRow>, u64)> {
    let path = label_file(path);
    let name = path.display().to_string();
    let mut rows = Vec::new();
    let mut unlabelled = 0u64;
    let lower = name.to_lowercase();
    if lower.ends_with(".csv") || lower.ends_with(".tsv") {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(if lower.ends_with(".tsv") { b'\t' } else { b',' })
            .from_path(&path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot open {name}"))?;
        let headers = reader.headers().into_diagnostic()?.clone();
        let col = |n: &str| headers.iter().position(|h| h.trim() == n);
        let (Some(id_col), Some(label_col)) = (col("id"), col("label")) else {
            return Err(miette!(
                help = "the first line must name the columns: id,annotator,label",
                "{name}: no `id` and `label` columns"
            ));
        };
        let ann_col = col("annotator");
        for (i, rec) in reader.records().enumerate() {
            let rec = rec
                .into_diagnostic()
                .wrap_err_with(|| format!("{name}:{}: malformed CSV record", i + 2))?;
            let get = |c: usize| rec.get(c).map(|s| s.trim().to_string()).unwrap_or_default();
            let (id, label) = (get(id_col), get(label_col));
            if id.is_empty() {
                return Err(miette!("{name}:{}: empty id", i + 2));
            }
            if label.is_empty() {
                unlabelled += 1;
                continue;
            }
            rows.push(LabelRow {
                id,
                annotator: ann_col.map(get).unwrap_or_else(|| "annotator".into()),
                label,
            });
        }
    } else {
        for_each_line(&path, |n, line| {
            if line.trim().is_empty() {
                return Ok(());
            }
            let a: Annotation = serde_json::from_str(line)
                .map_err(|e| miette!("{name}:{n}: not {} ({e})", Annotation::WHAT))?;
            match a.label {
                Some(label) => rows.push(LabelRow {
                    id: a.id,
                    annotator: a.annotator.unwrap_or_else(|| "model".into()),
                    label,
                }),
                None => unlabelled += 1,
            }
            Ok(())
        })?;
    }
    Ok((rows, unlabelled))
}

/// Binary scores for one class.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct Prf {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    /// Scores from (predicted positive, actually positive) pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (bool, bool)>) -> Prf {
        let mut s = Prf::default();
        for (pred, truth) in pairs {
            match (pred, truth) {
                (true, true) => s.tp += 1,
                (true, false) => s.fp += 1,
                (false, true) => s.fn_ += 1,
                (false, false) => s.tn += 1,
            }
        }
        s.precision = ratio(s.tp, s.tp + s.fp);
        s.recall = ratio(s.tp, s.tp + s.fn_);
        s.f1 = if s.precision + s.recall > 0.0 {
            2.0 * s.precision * s.recall / (s.precision + s.recall)
        } else {
            0.0
        };
        s
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The majority label of each document; ties go to no label (`None`).
pub fn majority(rows: &[LabelRow]) -> BTreeMap<String, Option<String>> {
    let mut votes: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for r in rows {
        *votes
            .entry(r.id.clone())
            .or_default()
            .entry(r.label.clone())
            .or_default() += 1;
    }
    votes
        .into_iter()
        .map(|(id, counts)| {
            let best = counts.values().copied().max().unwrap_or(0);
            let winners: Vec<&String> = counts
                .iter()
                .filter(|(_, c)| **c == best)
                .map(|(l, _)| l)
                .collect();
            (
                id,
                if winners.len() == 1 {
                    Some(winners[0].clone())
                } else {
                    None
                },
            )
        })
        .collect()
}

/// The `agreement` op.
pub struct Agreement;

/// `agreement`'s params (see its spec).
#[derive(Deserialize)]
struct AgreementParams {
    annotations: PathBuf,
    human: PathBuf,
    positive: String,
}

impl Op for Agreement {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "agreement",
            version: 2,
            doc: "Precision, recall and F1 of annotations (an annotate artifact or a label file) against human labels (CSV/JSONL: id, annotator, label), per annotator and against the majority vote.",
            params: vec![
                Param::required("annotations", Type::Either(Box::new(Type::Dir), Box::new(Type::File)), "the annotate artifact, or a label file (JSONL/CSV with id, label)"),
                Param::required("human", Type::File, "human labels: CSV or JSONL with id, annotator, label"),
                Param::required("positive", Type::Str, "the label scored as the positive class"),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "report", ty: Type::File, doc: "agreement.json" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<AgreementParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: AgreementParams = ctx.params()?;
        let positive = p.positive.as_str();
        let (model_rows, unparseable) = read_labels(&p.annotations)?;
        let (human, _) = read_labels(&p.human)?;
        if human.is_empty() {
            return Err(miette!("{}: no human labels", p.human.display()));
        }
        let model: HashMap<&str, &str> = model_rows
            .iter()
            .map(|r| (r.id.as_str(), r.label.as_str()))
            .collect();
        let human_ids: std::collections::BTreeSet<&str> =
            human.iter().map(|r| r.id.as_str()).collect();
        let missing: Vec<&str> = human_ids
            .iter()
            .copied()
            .filter(|id| !model.contains_key(id))
            .collect();
        let mut per_annotator = BTreeMap::new();
        let annotators: std::collections::BTreeSet<&str> =
            human.iter().map(|r| r.annotator.as_str()).collect();
        for a in &annotators {
            let pairs: Vec<(bool, bool)> = human
                .iter()
                .filter(|r| r.annotator == *a)
                .filter_map(|r| {
                    model
                        .get(r.id.as_str())
                        .map(|m| (*m == positive, r.label == positive))
                })
                .collect();
            per_annotator.insert(
                a.to_string(),
                AnnotatorAgreement {
                    documents: pairs.len(),
                    scores: Prf::from_pairs(pairs),
                },
            );
        }
        let maj = majority(&human);
        let ties = maj.values().filter(|v| v.is_none()).count();
        let pairs: Vec<(bool, bool)> = maj
            .iter()
            .filter_map(|(id, l)| {
                Some((
                    model.get(id.as_str())? == &positive,
                    l.as_deref()? == positive,
                ))
            })
            .collect();
        let report = AgreementReport {
            positive: positive.to_owned(),
            documents: human_ids.len(),
            compared: pairs.len(),
            missing_annotations: missing.len(),
            missing_examples: missing.iter().take(20).map(|m| m.to_string()).collect(),
            unparseable_annotations: unparseable,
            majority_ties: ties,
            majority: Prf::from_pairs(pairs),
            per_annotator,
        };
        report.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "agreement with majority: {}",
            serde_json::to_value(&report.majority).into_diagnostic()?
        ));
        Ok(BTreeMap::from([(
            "report".to_string(),
            Value::Path("agreement.json".into()),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value as Json;

    use super::super::corpus::testutil::*;
    use super::*;

    #[test]
    fn prf_matches_hand_counts() {
        // 3 tp, 1 fp, 2 fn, 4 tn: precision 3/4, recall 3/5, F1 2/3
        let pairs = [(true, true); 3]
            .into_iter()
            .chain([(true, false)])
            .chain([(false, true); 2])
            .chain([(false, false); 4]);
        let s = Prf::from_pairs(pairs);
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (3, 1, 2, 4));
        assert!((s.precision - 0.75).abs() < 1e-12 && (s.recall - 0.6).abs() < 1e-12);
        assert!((s.f1 - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
    }

    #[test]
    fn agreement_on_demo_labels() {
        let tmp = tempfile::tempdir().unwrap();
        let human = demo_dir().join("labels.csv");
        let (rows, _) = read_labels(&human).unwrap();
        assert!(rows.len() >= 180);
        // model annotations: anna's labels, except the first medical one flipped
        let mut flipped = false;
        let mut lines = String::new();
        for r in rows.iter().filter(|r| r.annotator == "anna") {
            let mut label = r.label.clone();
            if !flipped && label == "medizinisch" {
                label = "allgemein".into();
                flipped = true;
            }
            lines += &serde_json::json!({"id": r.id, "label": label}).to_string();
            lines.push('\n');
        }
        lines += "{\"id\":\"unparsed\",\"label\":null}\n";
        let ann = tmp.path().join("ann.jsonl");
        std::fs::write(&ann, lines).unwrap();
        let out = tmp.path().join("o");
        run_op(
            &Agreement,
            &[
                ("annotations", Value::Path(ann)),
                ("human", Value::Path(human)),
                ("positive", Value::Str("medizinisch".into())),
            ],
            &out,
        )
        .unwrap();
        let rep: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("agreement.json")).unwrap())
                .unwrap();
        let anna = &rep["per_annotator"]["anna"]["scores"];
        let pos = rows
            .iter()
            .filter(|r| r.annotator == "anna" && r.label == "medizinisch")
            .count() as f64;
        assert_eq!(anna["precision"], 1.0);
        assert!((anna["recall"].as_f64().unwrap() - (pos - 1.0) / pos).abs() < 1e-12);
        assert_eq!(rep["unparseable_annotations"], 1);
        assert_eq!(rep["missing_annotations"], 0);
        // the annotators disagree somewhere, so agreement with ben is below 1
        assert!(
            rep["per_annotator"]["ben"]["scores"]["f1"]
                .as_f64()
                .unwrap()
                < 1.0
        );
        // majority vote: recompute independently from the CSV
        let mut by_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in &rows {
            by_id.entry(&r.id).or_default().push(&r.label);
        }
        let maj_pos = by_id
            .values()
            .filter(|v| v.iter().filter(|l| **l == "medizinisch").count() >= 2)
            .count() as u64;
        let m = &rep["majority"];
        assert_eq!(
            m["tp"].as_u64().unwrap() + m["fn"].as_u64().unwrap(),
            maj_pos
        );
    }
}
