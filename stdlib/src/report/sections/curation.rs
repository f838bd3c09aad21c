//! Curation statistics beside the papers' values.

use super::*;
use crate::artifacts::data::{AgreementReport, AnnotateStats, DedupStats, FilterStats, PackInfo};
use crate::artifacts::JsonFile;
use crate::data::train_classifier::ClassifierInfo;
use crate::heldout::split::HoldoutStats;

/// Curation statistics (004 Appendix C; 002's filtering pipeline): one row
/// per figure found in the given curation artifacts (annotate, agreement,
/// train_classifier, filter, dedup, pack), beside the paper's value.
pub(in crate::report) fn curation_section(doc: &mut Doc, paths: &[PathBuf]) -> OpResult<()> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |what: &str, value: String, paper: &str| {
        rows.push(vec![what.to_owned(), value, paper.to_owned()]);
    };
    // Counts: whole numbers as they are below a thousand (`4`, not `4.000`).
    let num = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e3 {
            format!("{x:.0}")
        } else {
            human(x)
        }
    };
    let frac = |x: f64| fmt_opt(Some(x), 3);
    for p in paths {
        let mut known = false;
        if let Some(j) = AnnotateStats::read_if_present(p)? {
            known = true;
            row(
                "documents sampled and labelled by the LLM",
                num(j.n as f64),
                "260k (Mixtral-8x7B-Instruct, zero-shot)",
            );
            for (label, n) in j.labels.iter() {
                row(&format!("  labelled {label}"), num(*n as f64), "");
            }
            row("  unparseable answers", num(j.unparseable as f64), "");
        }
        if let Some(j) = AgreementReport::read_if_present(p)? {
            known = true;
            row(
                "documents checked by human annotators",
                num(j.compared as f64),
                "100 (three annotators)",
            );
            let m = &j.majority;
            row("LLM vs human majority: F1", fmt_opt(Some(m.f1), 3), "0.911");
            row(
                "LLM vs human majority: precision",
                fmt_opt(Some(m.precision), 3),
                "",
            );
            row(
                "LLM vs human majority: recall",
                fmt_opt(Some(m.recall), 3),
                "",
            );
        }
        if let Some(j) = ClassifierInfo::read_if_present(p)? {
            known = true;
            // The test split's figures; a run without test documents (or
            // a file without them) has only the validation split's.
            let e = &j.eval;
            let (split, m) = if e.test_documents > 0 {
                ("test", &e.test)
            } else {
                ("validation", &e.valid)
            };
            row(
                &format!("classifier precision ({split} split)"),
                frac(m.precision),
                "0.95 (test set)",
            );
            row(
                &format!("classifier recall ({split} split)"),
                frac(m.recall),
                "0.80 (test set)",
            );
            row(&format!("classifier F1 ({split} split)"), frac(m.f1), "");
            row("classifier threshold", frac(e.threshold), "");
        }
        if let Some(j) = FilterStats::read_if_present(p)? {
            known = true;
            row(
                "documents classified",
                num(j.counts.documents_in as f64),
                "428M (German FineWeb-2)",
            );
            row(
                "documents kept as medical",
                num(j.counts.documents_out as f64),
                "7.3M",
            );
        }
        if let Some(j) = DedupStats::read_if_present(p)? {
            known = true;
            row(
                "documents after deduplication",
                num(j.documents_out as f64),
                "7.3M unique",
            );
            row(
                "  exact duplicates removed",
                num(j.exact_duplicates as f64),
                "",
            );
            row(
                "  near duplicates removed",
                num(j.near_duplicates as f64),
                "",
            );
        }
        let holdout = p.join(HoldoutStats::NAME);
        if holdout.is_file() {
            let split = HoldoutStats::read(&holdout)?;
            known = true;
            row(
                "documents held out of training (held-out loss)",
                num(split.heldout_documents as f64),
                "none (the papers train on all of FineMed-de)",
            );
            row(
                "  documents to train on",
                num(split.train_documents as f64),
                "",
            );
        }
        if let Some(j) = PackInfo::read_if_present(p)? {
            known = true;
            row(
                "tokens after packing",
                num(j.tokens as f64),
                "9.5B (Qwen2.5 tokenizer)",
            );
            row("  packed sequences", num(j.sequences as f64), "");
        }
        if !known {
            return Err(miette!(
                help = "pass annotate, agreement, train_classifier, filter, dedup, holdout or pack nodes",
                "report: parameter `curation`: {} holds none of annotate.json, agreement.json, classifier.json, filter.json, dedup.json, holdout.json, pack.json",
                p.display()
            ));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    doc.heading("Curation");
    doc.para("From web corpus to domain corpus: LLM annotation of a sample, its agreement with human labels, the classifier trained on it, the filtered, deduplicated and packed corpus. The paper column gives the training-dynamics paper's Appendix C (and DeFineMed's 428M classified documents).");
    doc.table(&["statistic", "this run", "paper"], rows);
    Ok(())
}
