//! `failure_modes(responses, baseline?)`: the side effects the DeFineMed
//! papers report for merged models, measured per response:
//!
//! * language mixing: the response is cut into clauses (at sentence and
//!   clause punctuation and line breaks); each clause of at least
//!   `min_clause_words` words is identified with `whatlang` among the
//!   `languages` (the target first). Words of clauses in another language are
//!   foreign; consecutive foreign clauses form a span. A response is flagged
//!   when a span has `min_span` or more words.
//! * verbosity: the response's length (tokens, as `generate` counted them;
//!   words when absent) over the baseline's response to the same prompt.
//! * repetition: 1 − distinct word n-grams / n-grams.
//!
//! Writes `failure_modes.json` (aggregates) and `failure_modes.jsonl` (per response).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use serde::Deserialize;
use whatlang::{Detector, Lang};

use crate::artifacts::eval::{
    FailureModesLine, FailureModesResult, LanguageMixing, Repetition, Verbosity,
};
use crate::artifacts::{finite, CheckpointLineage, JsonFile, JsonLines};
use crate::model::generate::read_responses;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

/// A whatlang language from an ISO 639-3 code or a common ISO 639-1 code.
pub fn parse_lang(code: &str) -> Option<Lang> {
    let three = match code.to_ascii_lowercase().as_str() {
        "de" => "deu",
        "en" => "eng",
        "fr" => "fra",
        "es" => "spa",
        "it" => "ita",
        "nl" => "nld",
        "pt" => "por",
        "pl" => "pol",
        "ru" => "rus",
        "sv" => "swe",
        "da" => "dan",
        "cs" => "ces",
        "tr" => "tur",
        "zh" => "cmn",
        "ja" => "jpn",
        other => return Lang::from_code(other),
    };
    Lang::from_code(three)
}

/// Language-mixing measurement of one text.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixing {
    pub words: usize,
    pub foreign_words: usize,
    /// Longest run of consecutive foreign words.
    pub longest_span: usize,
    /// Languages of the foreign clauses.
    pub foreign_langs: Vec<String>,
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .collect()
}

/// Cuts text at sentence/clause punctuation and line breaks.
fn clauses(text: &str) -> Vec<&str> {
    text.split(['.', '!', '?', ';', ':', '\n', '(', ')', '"', '„', '“', '”'])
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// Measures language mixing of `text` against `target` (first of `detector`'s languages).
pub fn language_mixing(
    text: &str,
    target: Lang,
    detector: &Detector,
    min_clause_words: usize,
) -> Mixing {
    let mut m = Mixing {
        words: 0,
        foreign_words: 0,
        longest_span: 0,
        foreign_langs: Vec::new(),
    };
    let mut run = 0;
    for clause in clauses(text) {
        let n = words(clause).len();
        if n == 0 {
            continue;
        }
        m.words += n;
        // Short clauses (a heading, a term) carry too little signal; they
        // neither count as foreign nor break a foreign span.
        if n < min_clause_words {
            continue;
        }
        let lang = detector.detect_lang(clause).unwrap_or(target);
        if lang != target {
            m.foreign_words += n;
            run += n;
            m.longest_span = m.longest_span.max(run);
            let code = lang.code().to_owned();
            if !m.foreign_langs.contains(&code) {
                m.foreign_langs.push(code);
            }
        } else {
            run = 0;
        }
    }
    m
}

/// 1 − distinct n-grams / n-grams of the lower-cased words (0 when too short).
pub fn repetition_ratio(text: &str, n: usize) -> f64 {
    let w: Vec<String> = words(text).iter().map(|x| x.to_lowercase()).collect();
    if n == 0 || w.len() < n {
        return 0.0;
    }
    let grams: Vec<&[String]> = w.windows(n).collect();
    let distinct: HashSet<&[String]> = grams.iter().copied().collect();
    1.0 - distinct.len() as f64 / grams.len() as f64
}

struct Row {
    id: String,
    response: String,
    length: f64,
    truncated: bool,
}

/// The rows of a generate artifact (or responses file), its lineage, and the
/// model's name (`given`, else derived from the artifact).
fn read_rows(path: &Path, given: &str) -> OpResult<(Vec<Row>, Option<CheckpointLineage>, String)> {
    let generated = read_responses(path)?;
    let name = generated.display_name(given);
    let rows = generated
        .records
        .into_iter()
        .map(|r| Row {
            length: r
                .tokens
                .map_or_else(|| words(&r.response).len() as f64, |t| t as f64),
            truncated: r.finish_reason.as_deref() == Some("length"),
            id: r.id_text(),
            response: r.response,
        })
        .collect();
    Ok((rows, generated.checkpoint, name))
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The `failure_modes` op.
pub struct FailureModes;

/// `failure_modes`'s params (see its spec).
#[derive(Deserialize)]
struct FailureModesParams {
    responses: PathBuf,
    /// A generate node (its directory) or a file; empty: none.
    baseline: String,
    language: String,
    languages: Vec<String>,
    min_span: usize,
    min_clause_words: usize,
    ngram: usize,
    repetition_threshold: f64,
    verbose_ratio: f64,
    name: String,
}

impl Op for FailureModes {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "failure_modes",
            version: 2,
            doc: "Language mixing (share of words in clauses not in the target language; responses with a foreign span of min_span words flagged), verbosity (length over the baseline's answer to the same prompt) and repetition (repeated n-gram ratio) of a generate artifact. Writes failure_modes.json and failure_modes.jsonl.",
            params: vec![
                Param::required("responses", Type::Either(Box::new(Type::Dir), Box::new(Type::File)), "generate node (or responses.jsonl) to analyse"),
                Param::optional("baseline", Type::Either(Box::new(Type::Dir), Box::new(Type::Str)), Value::Str(String::new()), "generate node of the baseline for verbosity; empty: none"),
                Param::optional("language", Type::Str, Value::Str("deu".into()), "target language (ISO 639-3 or 639-1)"),
                Param::optional("languages", Type::List(Box::new(Type::Str)), Value::List(vec![Value::Str("eng".into())]), "other languages the detector may choose (besides the target)"),
                Param::optional("min_span", Type::Int, Value::Int(5), "foreign words in a row that flag a response").at_least(1.0),
                Param::optional("min_clause_words", Type::Int, Value::Int(3), "clauses shorter than this are not classified").at_least(1.0),
                Param::optional("ngram", Type::Int, Value::Int(3), "n of the repetition n-grams").at_least(1.0),
                Param::optional("repetition_threshold", Type::Float, Value::Float(0.3), "repetition ratio above which a response is flagged"),
                Param::optional("verbose_ratio", Type::Float, Value::Float(1.5), "length ratio above which a response counts as longer than the baseline's"),
                Param::optional("name", Type::Str, Value::Str(String::new()), "model name in the report; empty: `step-N` for a checkpoint, else the model directory's name (as `judge`)"),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "json", ty: Type::File, doc: "failure_modes.json" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<FailureModesParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: FailureModesParams = ctx.params()?;
        let path = p.responses.clone();
        let (rows, checkpoint, name) = read_rows(&path, &p.name)?;
        // A node arrives as its directory's path, which is never empty.
        let baseline: Option<PathBuf> = match p.baseline.as_str() {
            "" => None,
            s => Some(PathBuf::from(s)),
        };
        let base_rows: BTreeMap<String, f64> = match &baseline {
            Some(p) => read_rows(p, "")?
                .0
                .into_iter()
                .map(|r| (r.id, r.length))
                .collect(),
            None => BTreeMap::new(),
        };
        let code = p.language.as_str();
        let target = parse_lang(code).ok_or_else(|| {
            miette!(
                help = "use an ISO 639-3 code such as deu, eng, fra",
                "parameter `language`: unknown language `{code}`"
            )
        })?;
        let mut allow = vec![target];
        for (i, c) in p.languages.iter().enumerate() {
            let l = parse_lang(c).ok_or_else(|| {
                miette!("parameter `languages`, item {i}: unknown language `{c}`")
            })?;
            if !allow.contains(&l) {
                allow.push(l);
            }
        }
        if allow.len() < 2 {
            return Err(miette!(
                "parameter `languages`: name at least one language besides the target"
            ));
        }
        let detector = Detector::with_allowlist(allow);
        let (min_span, min_clause, n) = (p.min_span, p.min_clause_words, p.ngram);
        let (rep_thr, verbose_ratio) = (p.repetition_threshold, p.verbose_ratio);

        let mut per = Vec::new();
        let (mut shares, mut reps, mut ratios, mut lengths, mut base_lengths) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut flagged_mix, mut flagged_rep, mut longer, mut truncated) =
            (0usize, 0usize, 0usize, 0usize);
        for r in &rows {
            let m = language_mixing(&r.response, target, &detector, min_clause);
            let share = if m.words > 0 {
                m.foreign_words as f64 / m.words as f64
            } else {
                0.0
            };
            let mixed = m.longest_span >= min_span;
            let rep = repetition_ratio(&r.response, n);
            let ratio = base_rows
                .get(&r.id)
                .filter(|b| **b > 0.0)
                .map(|b| r.length / b);
            shares.push(share);
            reps.push(rep);
            lengths.push(r.length);
            if let Some(b) = base_rows.get(&r.id) {
                base_lengths.push(*b);
            }
            if let Some(x) = ratio {
                ratios.push(x);
                if x > verbose_ratio {
                    longer += 1;
                }
            }
            flagged_mix += mixed as usize;
            flagged_rep += (rep > rep_thr) as usize;
            truncated += r.truncated as usize;
            per.push(FailureModesLine {
                id: r.id.clone(),
                words: m.words,
                foreign_words: m.foreign_words,
                foreign_share: share,
                longest_foreign_span: m.longest_span,
                foreign_languages: m.foreign_langs,
                mixed,
                length: r.length,
                length_ratio: ratio.and_then(finite),
                repetition: rep,
                repetitive: rep > rep_thr,
                truncated: r.truncated,
            });
        }
        let total = rows.len().max(1) as f64;
        let out = FailureModesResult {
            model: name,
            n: rows.len(),
            language: target.code().to_owned(),
            language_mixing: LanguageMixing {
                mean_foreign_share: mean(&shares),
                flagged: flagged_mix,
                flagged_share: Some(flagged_mix as f64 / total),
                min_span,
            },
            verbosity: Verbosity {
                mean_length: mean(&lengths),
                baseline_mean_length: mean(&base_lengths),
                mean_ratio: mean(&ratios),
                median_ratio: median(&ratios),
                longer_share: (!ratios.is_empty()).then(|| longer as f64 / ratios.len() as f64),
                compared: ratios.len(),
                truncated_share: Some(truncated as f64 / total),
            },
            repetition: Repetition {
                ngram: n,
                mean_ratio: mean(&reps),
                flagged: flagged_rep,
                flagged_share: Some(flagged_rep as f64 / total),
                threshold: rep_thr,
            },
            checkpoint,
        };
        FailureModesLine::write_all(&per, &ctx.out_dir)?;
        out.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "{} responses: {flagged_mix} with language mixing, {flagged_rep} repetitive",
            rows.len()
        ));
        Ok(BTreeMap::from([(
            "json".to_owned(),
            Value::Path("failure_modes.json".into()),
        )]))
    }
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(FailureModes)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::run_op;
    use serde_json::{json, Value as Json};

    fn de_en() -> Detector {
        Detector::with_allowlist(vec![Lang::Deu, Lang::Eng])
    }

    #[test]
    fn english_span_in_german_text_is_found() {
        let text = "Fieber ist eine Erhöhung der Körpertemperatur über den Normalwert. \
                    The patient should drink plenty of water and rest in bed. \
                    Bei anhaltendem Fieber sollte man einen Arzt aufsuchen.";
        let m = language_mixing(text, Lang::Deu, &de_en(), 3);
        assert_eq!(m.words, 9 + 11 + 8);
        assert_eq!(m.foreign_words, 11);
        assert_eq!(m.longest_span, 11);
        assert_eq!(m.foreign_langs, vec!["eng".to_owned()]);
        let pure = "Fieber ist eine Erhöhung der Körpertemperatur. Bei anhaltendem Fieber sollte man einen Arzt aufsuchen.";
        let m = language_mixing(pure, Lang::Deu, &de_en(), 3);
        assert_eq!((m.foreign_words, m.longest_span), (0, 0));
    }

    #[test]
    fn repetition_counts_repeated_ngrams() {
        // 9 words, 7 trigrams, 3 distinct.
        assert!((repetition_ratio("a b c a b c a b c", 3) - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(repetition_ratio("one two three four", 3), 0.0);
        assert_eq!(repetition_ratio("short", 3), 0.0);
    }

    #[test]
    fn op_writes_mixing_verbosity_and_repetition() {
        let tmp = tempfile::tempdir().unwrap();
        let (m, b) = (tmp.path().join("m"), tmp.path().join("b"));
        std::fs::create_dir_all(&m).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let rows = [
            json!({"id": 1, "prompt": "p", "response": "Die Behandlung hängt von der Ursache ab. You should always consult your doctor about this first. Gute Besserung und viel Ruhe.", "tokens": 30, "finish_reason": "stop"}),
            json!({"id": 2, "prompt": "p", "response": "Ruhe. Ruhe. Ruhe. Ruhe. Ruhe. Ruhe.", "tokens": 60, "finish_reason": "length"}),
        ];
        std::fs::write(
            m.join("responses.jsonl"),
            rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
        )
        .unwrap();
        std::fs::write(
            m.join("generate.json"),
            json!({"checkpoint": {"tokens_seen": 5}}).to_string(),
        )
        .unwrap();
        let base = [
            json!({"id": 1, "prompt": "p", "response": "x", "tokens": 20}),
            json!({"id": 2, "prompt": "p", "response": "y", "tokens": 20}),
        ];
        std::fs::write(
            b.join("responses.jsonl"),
            base.iter().map(|r| format!("{r}\n")).collect::<String>(),
        )
        .unwrap();
        let out = tmp.path().join("out");
        let res = run_op(
            &FailureModes,
            &[
                ("responses", Value::Path(m)),
                ("baseline", Value::Path(b)),
                ("name", Value::Str("merged".into())),
            ],
            &out,
        );
        res.unwrap();
        let j: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("failure_modes.json")).unwrap())
                .unwrap();
        assert_eq!(j["model"], "merged");
        assert_eq!(j["language_mixing"]["flagged"], 1);
        // Ratios 30/20 and 60/20.
        assert!((j["verbosity"]["mean_ratio"].as_f64().unwrap() - 2.25).abs() < 1e-12);
        assert!((j["verbosity"]["longer_share"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        assert!((j["verbosity"]["truncated_share"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        // "Ruhe."×6 (one-word clauses, not classified): 4 trigrams, 1 distinct -> 0.75, flagged.
        assert_eq!(j["repetition"]["flagged"], 1);
        assert_eq!(j["checkpoint"]["tokens_seen"], 5);
        let lines = std::fs::read_to_string(out.join(FailureModesLine::NAME)).unwrap();
        // The bytes the op wrote with `json!` before the line was typed.
        assert_eq!(lines, crate::artifacts::tests::FAILURE_MODES_LINES);
        let first = &FailureModesLine::read_all(&out).unwrap()[0];
        assert_eq!(first.foreign_words, 9);
        assert_eq!(first.length_ratio, Some(1.5));
        let res = run_op(
            &FailureModes,
            &[
                ("responses", Value::Path(tmp.path().join("m"))),
                ("language", Value::Str("xx".into())),
            ],
            &tmp.path().join("o2"),
        );
        assert!(format!("{:?}", res.unwrap_err()).contains("unknown language"));
    }
}
