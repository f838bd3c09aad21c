//! `mcqa`: multiple-choice accuracy by log-likelihood, with the prompt and
//! scoring rules of EleutherAI's lm-evaluation-harness; and `relative_gain`,
//! the ratio of a checkpoint's accuracy to a baseline's (DeFineMed's G_rel).
//!
//! Prompt (lm-eval `mmlu/default/_default_template_yaml` and the per-subject
//! yamls): description `The following are multiple choice questions (with
//! answers) about {subject}.\n\n`, then the first `shots` items of the dev
//! split of the same subject (`fewshot_config.sampler: first_n`), each
//! rendered as `doc_to_text + " " + letter + "\n\n"`, then the question's
//! `doc_to_text`, which ends in `Answer:`. Continuations are `" A"`, `" B"`,
//! ... (`target_delimiter` + choice). Tokenisation follows lm-eval's
//! `_encode_pair`: trailing whitespace of the context moves onto the
//! continuation, and the continuation's tokens are
//! `enc(ctx + cont)[len(enc(ctx)):]`, without special tokens.
//!
//! `mmlux` (openGPT-X's `ogx_mmlux_de-*` tasks) has the same layout with the
//! cue `Antwort:` and a German description per subject that ends without a
//! line break (see [`MMLUX_DE_DESCRIPTIONS`]).
//!
//! Scores: `acc` takes the argmax of the summed log-likelihoods, `acc_norm`
//! the argmax of log-likelihood divided by the character length of the
//! choice text (lm-eval's `completion_len`, the `doc_to_choice` string without
//! the delimiter). Both take the first index among ties, as `np.argmax`.
//! The top-level figures are micro averages over items (lm-eval's MMLU group
//! aggregates with `weight_by_size: True`); `*_macro` are means over subjects.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::{json, Value as Json};

use crate::model::runtime::{self, LanguageModel, LogLikelihood};
use crate::op::{Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Mcqa), Arc::new(RelativeGain)]
}

/// The benchmark family, which fixes the prompt and the input fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// English MMLU (`cais/mmlu`, or Hendrycks' CSV files).
    Mmlu,
    /// openGPT-X's machine-translated MMLU, German (`ogx_mmlux_de-*`).
    Mmlux,
    /// MedQA (`question`, `options`, `answer_idx`), lm-eval's `medqa_4options`
    /// prompt generalised to any number of options.
    Medqa,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "mmlu" => Some(Format::Mmlu),
            "mmlux" => Some(Format::Mmlux),
            "medqa" => Some(Format::Medqa),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Format::Mmlu => "mmlu",
            Format::Mmlux => "mmlux",
            Format::Medqa => "medqa",
        }
    }
}

/// One multiple-choice question.
#[derive(Clone, Debug, PartialEq)]
pub struct McItem {
    /// The item's `id` field, when it has one.
    pub id: Option<String>,
    /// The subject as in the data (e.g. `clinical_knowledge`).
    pub subject: String,
    pub question: String,
    pub choices: Vec<String>,
    /// Index of the correct choice.
    pub gold: usize,
    /// `file:line` of the item, for messages.
    pub source: String,
}

/// Python's `str.isspace` set: Unicode White_Space plus the four ASCII
/// information separators, which Python also counts as whitespace.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// The choice labels: `A`, `B`, ...
pub fn letter(i: usize) -> String {
    char::from(b'A' + i as u8).to_string()
}

/// The subject as prompts name it: underscores become spaces; openGPT-X's
/// `_DE` config suffix is dropped.
pub fn subject_words(subject: &str) -> String {
    subject
        .strip_suffix("_DE")
        .unwrap_or(subject)
        .replace('_', " ")
}

/// The `description` of each `ogx_mmlux_de-{subject}` task, as in the task
/// yamls openGPT-X's `_generate_configs.py` wrote into
/// `lm_eval/tasks/opengptx/ogx_mmlux/` of their lm-evaluation-harness fork
/// (task version 0, `_default_mmlux_template_yaml`; the same text in
/// LumiOpen's copy of those tasks). The descriptions end without a line
/// break, and lm-eval puts the description directly before the first
/// example, so the first question follows the full stop without a space
/// (`...zur Anatomie.Welcher Knochen...`).
pub const MMLUX_DE_DESCRIPTIONS: [(&str, &str); 57] = [
    ("abstract_algebra", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur abstrakten Algebra."),
    ("anatomy", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Anatomie."),
    ("astronomy", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Astronomie."),
    ("business_ethics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Unternehmensethik."),
    ("clinical_knowledge", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu klinischen Kenntnissen."),
    ("college_biology", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Biologie an der Universität."),
    ("college_chemistry", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Chemie an Hochschulen."),
    ("college_computer_science", "Nachfolgend finden Sie Multiple-Choice-Fragen (mit Antworten) zur Hochschulinformatik."),
    ("college_mathematics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Hochschulmathematik."),
    ("college_medicine", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Hochschulmedizin."),
    ("college_physics", "Nachfolgend finden Sie Multiple-Choice-Fragen (mit Antworten) zur Hochschulphysik."),
    ("computer_security", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Computersicherheit."),
    ("conceptual_physics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur konzeptionellen Physik."),
    ("econometrics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Ökonometrie."),
    ("electrical_engineering", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Elektrotechnik."),
    ("elementary_mathematics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur elementaren Mathematik."),
    ("formal_logic", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur formalen Logik."),
    ("global_facts", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu globalen Fakten."),
    ("high_school_biology", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Biologie in der Oberstufe."),
    ("high_school_chemistry", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Chemie in der Oberstufe."),
    ("high_school_computer_science", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Informatik in der Schule."),
    ("high_school_european_history", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur europäischen Geschichte in der Oberstufe."),
    ("high_school_geography", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Geografie in der Oberstufe."),
    ("high_school_government_and_politics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Regierung und Politik in der Schule."),
    ("high_school_macroeconomics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Makroökonomie in der Oberstufe."),
    ("high_school_mathematics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Mathematik in der Oberstufe."),
    ("high_school_microeconomics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Mikroökonomie in der Oberstufe."),
    ("high_school_physics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Physik in der Oberstufe."),
    ("high_school_psychology", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Schulpsychologie."),
    ("high_school_statistics", "Nachfolgend finden Sie Multiple-Choice-Fragen (mit Antworten) zur Statistik in der Schule."),
    ("high_school_us_history", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Geschichte der USA in der High School."),
    ("high_school_world_history", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Weltgeschichte in der Oberstufe."),
    ("human_aging", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum menschlichen Altern."),
    ("human_sexuality", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur menschlichen Sexualität."),
    ("international_law", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum internationalen Recht."),
    ("jurisprudence", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Rechtswissenschaft."),
    ("logical_fallacies", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu logischen Fehlschlüssen."),
    ("machine_learning", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum maschinellen Lernen."),
    ("management", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Management."),
    ("marketing", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Marketing."),
    ("medical_genetics", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur medizinischen Genetik."),
    ("miscellaneous", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Verschiedenes."),
    ("moral_disputes", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu moralischen Streitigkeiten."),
    ("moral_scenarios", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu moralischen Szenarien."),
    ("nutrition", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Ernährung."),
    ("philosophy", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Philosophie."),
    ("prehistory", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Vorgeschichte."),
    ("professional_accounting", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema professionelle Buchhaltung."),
    ("professional_law", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Berufsrecht."),
    ("professional_medicine", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Berufsmedizin."),
    ("professional_psychology", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Berufspsychologie."),
    ("public_relations", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Öffentlichkeitsarbeit."),
    ("security_studies", "Es folgen Multiple-Choice-Fragen (mit Antworten) zu Sicherheitsstudien."),
    ("sociology", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Soziologie."),
    ("us_foreign_policy", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Außenpolitik der USA."),
    ("virology", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Virologie."),
    ("world_religions", "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu den Weltreligionen."),
];

/// The German description of an MMLU subject (`anatomy` or its config name
/// `anatomy_DE`), if openGPT-X translated that subject.
pub fn mmlux_description(subject: &str) -> Option<&'static str> {
    let key = subject.strip_suffix("_DE").unwrap_or(subject);
    MMLUX_DE_DESCRIPTIONS
        .iter()
        .find(|(s, _)| *s == key)
        .map(|(_, d)| *d)
}

/// The task description that opens every prompt.
pub fn description(format: Format, subject: &str) -> OpResult<String> {
    match format {
        Format::Mmlu => Ok(format!(
            "The following are multiple choice questions (with answers) about {}.\n\n",
            subject_words(subject)
        )),
        Format::Mmlux => mmlux_description(subject)
            .map(str::to_string)
            .ok_or_else(|| unknown_mmlux_subject(subject)),
        Format::Medqa => Ok(String::new()),
    }
}

fn unknown_mmlux_subject(subject: &str) -> miette::Report {
    miette!(
        help = "the mmlux format knows the 57 MMLU subjects (e.g. clinical_knowledge, anatomy, college_medicine), optionally with openGPT-X's `_DE` suffix; use format \"mmlu\" for other subjects",
        "subject `{subject}` has no German description in openGPT-X's ogx_mmlux_de tasks"
    )
}

/// lm-eval's `doc_to_text`: the question and its lettered options, ending in
/// the answer cue.
pub fn doc_to_text(format: Format, item: &McItem) -> String {
    let options: String = item
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}. {c}\n", letter(i)))
        .collect();
    match format {
        Format::Mmlu => format!("{}\n{options}Answer:", py_strip(&item.question)),
        Format::Mmlux => format!("{}\n{options}Antwort:", py_strip(&item.question)),
        Format::Medqa => format!("Question: {}\n{options}Answer:", item.question),
    }
}

/// The full context of `item`: description, the few-shot examples with their
/// answers, and the question.
pub fn build_context(format: Format, item: &McItem, fewshot: &[&McItem]) -> OpResult<String> {
    let mut ctx = description(format, &item.subject)?;
    for ex in fewshot {
        ctx.push_str(&doc_to_text(format, ex));
        ctx.push(' ');
        ctx.push_str(&letter(ex.gold));
        ctx.push_str("\n\n");
    }
    ctx.push_str(&doc_to_text(format, item));
    Ok(ctx)
}

/// The continuations scored for `item`: `" A"`, `" B"`, ...
pub fn continuations(item: &McItem) -> Vec<String> {
    (0..item.choices.len())
        .map(|i| format!(" {}", letter(i)))
        .collect()
}

/// lm-eval's `_encode_pair`: moves the context's trailing whitespace onto the
/// continuation, then takes the continuation's tokens as what encoding the
/// whole adds after the context's tokens.
pub fn encode_pair(
    encode: &dyn Fn(&str) -> Result<Vec<u32>, String>,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    let kept = context.trim_end_matches(py_space);
    let moved = &context[kept.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = encode(&format!("{kept}{continuation}"))?;
    let context_enc = encode(kept)?;
    let cont_enc = whole.get(context_enc.len()..).unwrap_or_default().to_vec();
    Ok((context_enc, cont_enc))
}

/// What `mcqa` needs of a model: tokenisation and scoring.
pub trait Scorer {
    /// Tokens of `text` without special tokens (lm-eval's `tok_encode` for
    /// causal models).
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
    fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood>;
    /// The longest input; longer requests lose context tokens on the left.
    fn max_context(&self) -> usize;
}

impl<M: LanguageModel + ?Sized> Scorer for M {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        LanguageModel::encode(self, text, false)
    }
    fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood> {
        LanguageModel::loglikelihood(self, requests)
    }
    fn max_context(&self) -> usize {
        LanguageModel::max_context(self)
    }
}

/// Index of the largest value, the first among ties (`np.argmax`).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The scored result of one item.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemResult {
    pub loglikelihoods: Vec<f64>,
    pub is_greedy: Vec<bool>,
    pub pred: usize,
    pub pred_norm: usize,
}

/// Predictions from per-choice log-likelihoods (`acc`) and from
/// log-likelihoods divided by the choice text's character length (`acc_norm`).
/// The choice texts are lm-eval's `doc_to_choice`, the letters.
pub fn predict(item: &McItem, lls: &[LogLikelihood]) -> ItemResult {
    let labels: Vec<String> = (0..item.choices.len()).map(letter).collect();
    predict_with_labels(&labels, lls)
}

/// [`predict`] for any choice texts: lm-eval's
/// `completion_len = [len(c) for c in choices]`, in Python characters.
pub fn predict_with_labels(labels: &[String], lls: &[LogLikelihood]) -> ItemResult {
    let loglikelihoods: Vec<f64> = lls.iter().map(|l| l.logprob).collect();
    let normed: Vec<f64> = loglikelihoods
        .iter()
        .zip(labels)
        .map(|(l, c)| l / c.chars().count().max(1) as f64)
        .collect();
    ItemResult {
        pred: argmax(&loglikelihoods),
        pred_norm: argmax(&normed),
        loglikelihoods,
        is_greedy: lls.iter().map(|l| l.is_greedy).collect(),
    }
}

/// The first `shots` dev items of each subject, in file order.
pub fn fewshot_pool(dev: &[McItem]) -> BTreeMap<String, Vec<&McItem>> {
    let mut pool: BTreeMap<String, Vec<&McItem>> = BTreeMap::new();
    for item in dev {
        pool.entry(item.subject.clone()).or_default().push(item);
    }
    pool
}

/// Scores every item of `bench`; `on_done` is told how many items finished
/// and may stop the run by returning an error.
pub fn score_items<S: Scorer + ?Sized>(
    scorer: &S,
    format: Format,
    bench: &[McItem],
    dev: &[McItem],
    shots: usize,
    batch_items: usize,
    on_done: &mut dyn FnMut(usize) -> OpResult<()>,
) -> OpResult<Vec<ItemResult>> {
    let pool = fewshot_pool(dev);
    let max_len = scorer.max_context().max(2);
    let mut results = Vec::with_capacity(bench.len());
    for chunk in bench.chunks(batch_items.max(1)) {
        let mut requests = Vec::new();
        for item in chunk {
            let examples: &[&McItem] = if shots == 0 {
                &[]
            } else {
                let available = pool
                    .get(&item.subject)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if available.len() < shots {
                    return Err(miette!(
                        "{}: subject `{}` has {} dev item(s), {shots} shot(s) were asked for; add dev items or lower `shots`",
                        item.source,
                        item.subject,
                        available.len()
                    ));
                }
                &available[..shots]
            };
            let context = build_context(format, item, examples)
                .map_err(|e| miette!("{}: {e}", item.source))?;
            for cont in continuations(item) {
                let (mut ctx, cont_enc) = encode_pair(&|t| scorer.encode(t), &context, &cont)
                    .map_err(|e| miette!("{}: tokenising the prompt: {e}", item.source))?;
                if cont_enc.is_empty() {
                    return Err(miette!(
                        "{}: continuation `{cont}` encodes to no tokens",
                        item.source
                    ));
                }
                // lm-eval truncates the input on the left to the model's length.
                let total = ctx.len() + cont_enc.len();
                if total > max_len {
                    let cut = (total - max_len).min(ctx.len());
                    ctx.drain(..cut);
                }
                requests.push((ctx, cont_enc));
            }
        }
        let lls = scorer.loglikelihood(&requests);
        if lls.len() != requests.len() {
            return Err(miette!(
                "internal: the model returned {} scores for {} requests",
                lls.len(),
                requests.len()
            ));
        }
        let mut at = 0;
        for item in chunk {
            let n = item.choices.len();
            results.push(predict(item, &lls[at..at + n]));
            at += n;
        }
        on_done(chunk.len())?;
    }
    Ok(results)
}

/// Accuracy figures of a set of items.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// lm-eval's `mean_stderr`: sample standard deviation / sqrt(n).
    pub acc_stderr: f64,
    pub acc_norm_stderr: f64,
}

fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

pub fn summarize(items: &[&McItem], results: &[&ItemResult]) -> Summary {
    let acc: Vec<f64> = items
        .iter()
        .zip(results)
        .map(|(i, r)| f64::from(u8::from(r.pred == i.gold)))
        .collect();
    let norm: Vec<f64> = items
        .iter()
        .zip(results)
        .map(|(i, r)| f64::from(u8::from(r.pred_norm == i.gold)))
        .collect();
    let (acc, acc_stderr) = mean_stderr(&acc);
    let (acc_norm, acc_norm_stderr) = mean_stderr(&norm);
    Summary {
        n: items.len(),
        acc,
        acc_norm,
        acc_stderr,
        acc_norm_stderr,
    }
}

/// The `mcqa.json` document.
pub fn report(format: Format, shots: usize, bench: &[McItem], results: &[ItemResult]) -> Json {
    let all = summarize(
        &bench.iter().collect::<Vec<_>>(),
        &results.iter().collect::<Vec<_>>(),
    );
    let mut by_subject: BTreeMap<&str, (Vec<&McItem>, Vec<&ItemResult>)> = BTreeMap::new();
    for (item, r) in bench.iter().zip(results) {
        let e = by_subject.entry(item.subject.as_str()).or_default();
        e.0.push(item);
        e.1.push(r);
    }
    let mut subjects = serde_json::Map::new();
    let (mut macro_acc, mut macro_norm) = (0.0, 0.0);
    for (name, (items, rs)) in &by_subject {
        let s = summarize(items, rs);
        macro_acc += s.acc;
        macro_norm += s.acc_norm;
        subjects.insert(
            name.to_string(),
            json!({"n": s.n, "acc": s.acc, "acc_norm": s.acc_norm, "acc_stderr": s.acc_stderr, "acc_norm_stderr": s.acc_norm_stderr}),
        );
    }
    let k = by_subject.len().max(1) as f64;
    json!({
        "format": format.name(),
        "shots": shots,
        "n": all.n,
        "acc": all.acc,
        "acc_norm": all.acc_norm,
        "acc_stderr": all.acc_stderr,
        "acc_norm_stderr": all.acc_norm_stderr,
        "acc_macro": macro_acc / k,
        "acc_norm_macro": macro_norm / k,
        "averaging": "acc and acc_norm are micro averages over items (lm-eval's weight_by_size); *_macro are means over subjects",
        "subjects": subjects,
    })
}

// ---------------------------------------------------------------------------
// Input files

fn field<'a>(obj: &'a serde_json::Map<String, Json>, name: &str, at: &str) -> OpResult<&'a Json> {
    obj.get(name)
        .ok_or_else(|| miette!("{at}: missing field `{name}`"))
}

fn str_field(obj: &serde_json::Map<String, Json>, name: &str, at: &str) -> OpResult<String> {
    match field(obj, name, at)? {
        Json::String(s) => Ok(s.clone()),
        other => Err(miette!(
            "{at}: field `{name}` must be a string, found {other}"
        )),
    }
}

/// An answer given as a 0-based index, or as a letter.
fn answer_index(value: &Json, n_choices: usize, at: &str, name: &str) -> OpResult<usize> {
    let index = match value {
        Json::Number(n) => n.as_u64().map(|v| v as usize),
        Json::String(s) => {
            let s = s.trim();
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_uppercase() => Some((c as u8 - b'A') as usize),
                _ => s.parse::<usize>().ok(),
            }
        }
        _ => None,
    };
    let index = index.ok_or_else(|| {
        miette!("{at}: field `{name}` must be a choice index (0-based) or a letter, found {value}")
    })?;
    if index >= n_choices {
        return Err(miette!(
            "{at}: answer {value} is out of range: the item has {n_choices} choices (indices 0..{})",
            n_choices.saturating_sub(1)
        ));
    }
    Ok(index)
}

/// The subject of a file named like Hendrycks' `anatomy_test.csv`.
fn subject_from_file(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("all");
    for suffix in ["_test", "_dev", "_val", "_validation"] {
        if let Some(s) = stem.strip_suffix(suffix) {
            return s.to_string();
        }
    }
    stem.to_string()
}

fn check_choices(format: Format, n: usize, at: &str) -> OpResult<()> {
    let ok = match format {
        Format::Mmlu | Format::Mmlux => n == 4,
        Format::Medqa => (2..=26).contains(&n),
    };
    if ok {
        Ok(())
    } else {
        Err(miette!(
            "{at}: {n} choices; the {} format takes {}",
            format.name(),
            if format == Format::Medqa {
                "2 to 26"
            } else {
                "exactly 4"
            }
        ))
    }
}

fn item_from_json(
    format: Format,
    obj: &serde_json::Map<String, Json>,
    at: &str,
    file_subject: &str,
) -> OpResult<McItem> {
    let id = obj.get("id").map(|v| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    });
    match format {
        Format::Mmlu | Format::Mmlux => {
            let question = str_field(obj, "question", at)?;
            let choices = match field(obj, "choices", at)? {
                Json::Array(a) => a
                    .iter()
                    .map(|c| match c {
                        Json::String(s) => Ok(s.clone()),
                        other => Err(miette!(
                            "{at}: every choice must be a string, found {other}"
                        )),
                    })
                    .collect::<OpResult<Vec<_>>>()?,
                other => {
                    return Err(miette!(
                        "{at}: field `choices` must be a list of strings, found {other}"
                    ))
                }
            };
            check_choices(format, choices.len(), at)?;
            let gold = answer_index(field(obj, "answer", at)?, choices.len(), at, "answer")?;
            // openGPT-X's files name the subject in `id` ("anatomy/test/12").
            let subject = match obj.get("subject") {
                Some(Json::String(s)) if !s.is_empty() => s.clone(),
                _ => match &id {
                    Some(id) if id.contains('/') => {
                        id.split('/').next().unwrap_or_default().to_string()
                    }
                    _ => file_subject.to_string(),
                },
            };
            Ok(McItem {
                id,
                subject,
                question,
                choices,
                gold,
                source: at.to_string(),
            })
        }
        Format::Medqa => {
            let question = str_field(obj, "question", at)?;
            let choices: Vec<String> = match field(obj, "options", at)? {
                Json::Object(map) => {
                    let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                    let mut choices = Vec::new();
                    for (i, (k, v)) in entries.into_iter().enumerate() {
                        if *k != letter(i) {
                            return Err(miette!("{at}: option keys must be A, B, C, ... in order; found `{k}`"));
                        }
                        match v {
                            Json::String(s) => choices.push(s.clone()),
                            other => return Err(miette!("{at}: option {k} must be a string, found {other}")),
                        }
                    }
                    choices
                }
                Json::Array(a) => {
                    a.iter()
                        .map(|c| match c {
                            Json::String(s) => Ok(s.clone()),
                            other => Err(miette!("{at}: every option must be a string, found {other}")),
                        })
                        .collect::<OpResult<Vec<_>>>()?
                }
                other => return Err(miette!("{at}: field `options` must be an object {{\"A\": ...}} or a list, found {other}")),
            };
            check_choices(format, choices.len(), at)?;
            let gold = answer_index(
                field(obj, "answer_idx", at)?,
                choices.len(),
                at,
                "answer_idx",
            )?;
            let subject = match obj.get("subject") {
                Some(Json::String(s)) if !s.is_empty() => s.clone(),
                _ => "medqa".to_string(),
            };
            Ok(McItem {
                id,
                subject,
                question,
                choices,
                gold,
                source: at.to_string(),
            })
        }
    }
}

fn load_jsonl(path: &Path, format: Format) -> OpResult<Vec<McItem>> {
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {}", path.display()))?;
    let file_subject = subject_from_file(path);
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let value: Json =
            serde_json::from_str(line).map_err(|e| miette!("{at}: not valid JSON: {e}"))?;
        let Json::Object(obj) = value else {
            return Err(miette!("{at}: each line must be a JSON object"));
        };
        items.push(item_from_json(format, &obj, &at, &file_subject)?);
    }
    Ok(items)
}

/// CSV: Hendrycks' headerless `question,A,B,C,D,answer` files (the subject
/// from the file name), or a header naming `question`, `A`..`D`, `answer` and
/// optionally `subject`.
fn load_csv(path: &Path, format: Format) -> OpResult<Vec<McItem>> {
    if format == Format::Medqa {
        return Err(miette!(
            "{}: MedQA is read from JSONL, not CSV",
            path.display()
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {}", path.display()))?;
    let file_subject = subject_from_file(path);
    let records = reader.records();
    let mut items = Vec::new();
    let mut columns: Option<BTreeMap<String, usize>> = None;
    let mut first = true;
    for record in records {
        let record = record.map_err(|e| miette!("{}: {e}", path.display()))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let at = format!("{}:{line}", path.display());
        if first {
            first = false;
            let lower: Vec<String> = record.iter().map(|h| h.trim().to_lowercase()).collect();
            if lower.iter().any(|h| h == "question") {
                columns = Some(lower.into_iter().enumerate().map(|(i, h)| (h, i)).collect());
                continue;
            }
        }
        let get = |name: &str, fallback: usize| -> OpResult<String> {
            let idx = match &columns {
                Some(cols) => *cols
                    .get(name)
                    .ok_or_else(|| miette!("{at}: missing column `{name}`"))?,
                None => fallback,
            };
            record
                .get(idx)
                .map(str::to_string)
                .ok_or_else(|| miette!("{at}: missing field `{name}` (column {})", idx + 1))
        };
        let question = get("question", 0)?;
        let choices = (0..4)
            .map(|i| get(&letter(i).to_lowercase(), i + 1))
            .collect::<OpResult<Vec<_>>>()?;
        let answer = get("answer", 5)?;
        let gold = answer_index(&Json::String(answer), 4, &at, "answer")?;
        let subject = match &columns {
            Some(cols) if cols.contains_key("subject") => get("subject", 0)?,
            _ => file_subject.clone(),
        };
        items.push(McItem {
            id: None,
            subject,
            question,
            choices,
            gold,
            source: at,
        });
    }
    Ok(items)
}

/// Reads a benchmark file (`.jsonl`/`.json` lines, or `.csv`).
pub fn load_items(path: &Path, format: Format) -> OpResult<Vec<McItem>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_lowercase();
    let items = if ext == "csv" {
        load_csv(path, format)?
    } else {
        load_jsonl(path, format)?
    };
    if items.is_empty() {
        return Err(miette!("{}: no items", path.display()));
    }
    if format == Format::Mmlux {
        if let Some(item) = items
            .iter()
            .find(|i| mmlux_description(&i.subject).is_none())
        {
            return Err(unknown_mmlux_subject(&item.subject)
                .wrap_err(format!("{}: unknown subject", item.source)));
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------
// Ops

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> OpResult<PathBuf> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).into_diagnostic()?;
    tmp.write_all(bytes).into_diagnostic()?;
    let path = dir.join(name);
    tmp.persist(&path)
        .into_diagnostic()
        .wrap_err_with(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The `mcqa` op.
pub struct Mcqa;

impl Op for Mcqa {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "mcqa",
            version: 2,
            doc: "Multiple-choice accuracy by log-likelihood with lm-evaluation-harness's prompts and scoring (MMLU, openGPT-X MMLUX German, MedQA).",
            params: vec![
                Param::required("model", Type::Model, "the model to evaluate"),
                Param::required("bench", Type::File, "the questions: JSONL (or CSV for MMLU)"),
                Param::required("dev", Type::File, "few-shot examples: the first `shots` items of each subject are used"),
                Param::optional(
                    "format",
                    Type::Enum(vec!["mmlu".into(), "mmlux".into(), "medqa".into()]),
                    Value::Str("mmlu".into()),
                    "prompt and input format",
                ),
                Param::optional("shots", Type::Int, Value::Int(1), "few-shot examples per question"),
                Param::optional("limit", Type::Int, Value::Int(0), "score only the first N items (0: all)"),
                Param::optional("batch_items", Type::Int, Value::Int(16), "items scored per model call (results do not depend on it)"),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "result", ty: Type::File, doc: "mcqa.json: acc, acc_norm, n, per-subject figures, checkpoint" },
                Output { name: "items", ty: Type::File, doc: "items.jsonl: per-choice log-likelihoods, gold and prediction of each item" },
                Output { name: "acc", ty: Type::Float, doc: "accuracy (micro average over items)" },
                Output { name: "acc_norm", ty: Type::Float, doc: "length-normalised accuracy (micro average)" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let model_dir = ctx.path("model")?;
        let format = Format::parse(ctx.str("format")?).ok_or_else(|| {
            miette!(
                "mcqa: unknown format `{}`",
                ctx.str("format").unwrap_or_default()
            )
        })?;
        let shots = usize::try_from(ctx.int("shots")?)
            .map_err(|_| miette!("mcqa: `shots` must be 0 or more"))?;
        let limit = usize::try_from(ctx.int("limit")?)
            .map_err(|_| miette!("mcqa: `limit` must be 0 or more"))?;
        let batch_items = ctx.int("batch_items")?.max(1) as usize;
        let mut bench = load_items(ctx.path("bench")?, format)?;
        if limit > 0 {
            bench.truncate(limit);
        }
        let dev = if shots > 0 {
            load_items(ctx.path("dev")?, format)?
        } else {
            Vec::new()
        };
        let checkpoint = runtime::read_checkpoint(model_dir).map_err(|e| miette!("mcqa: {e}"))?;
        let model = runtime::load(model_dir).map_err(|e| miette!("mcqa: {e}"))?;
        ctx.progress.set_total(bench.len() as u64, "items");
        let results = score_items(
            model.as_ref(),
            format,
            &bench,
            &dev,
            shots,
            batch_items,
            &mut |n| {
                ctx.progress.inc(n as u64);
                ctx.check_cancelled()
            },
        )?;
        let outputs = write_results(
            &ctx.out_dir,
            format,
            shots,
            &bench,
            &results,
            checkpoint,
            model_dir,
        )?;
        ctx.log(&format!(
            "mcqa {}: n={} acc={:.4} acc_norm={:.4}",
            format.name(),
            bench.len(),
            outputs
                .get("acc")
                .and_then(|v| if let Value::Float(f) = v {
                    Some(*f)
                } else {
                    None
                })
                .unwrap_or(0.0),
            outputs
                .get("acc_norm")
                .and_then(|v| if let Value::Float(f) = v {
                    Some(*f)
                } else {
                    None
                })
                .unwrap_or(0.0),
        ));
        Ok(outputs)
    }
}

/// Writes `mcqa.json` and `items.jsonl` and returns the op's outputs.
pub fn write_results(
    out_dir: &Path,
    format: Format,
    shots: usize,
    bench: &[McItem],
    results: &[ItemResult],
    checkpoint: Option<Json>,
    model_dir: &Path,
) -> OpResult<Outputs> {
    let mut doc = report(format, shots, bench, results);
    doc["model"] = json!(model_dir.display().to_string());
    if let Some(c) = checkpoint {
        doc["checkpoint"] = c;
    }
    let mut lines = String::new();
    for (i, (item, r)) in bench.iter().zip(results).enumerate() {
        let line = json!({
            "index": i,
            "id": item.id,
            "subject": item.subject,
            "source": item.source,
            "gold": item.gold,
            "pred": r.pred,
            "pred_norm": r.pred_norm,
            "correct": r.pred == item.gold,
            "loglikelihoods": r.loglikelihoods,
            "is_greedy": r.is_greedy,
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    write_atomic(out_dir, "items.jsonl", lines.as_bytes())?;
    let text = serde_json::to_string_pretty(&doc).into_diagnostic()?;
    write_atomic(out_dir, "mcqa.json", text.as_bytes())?;
    let mut out = Outputs::new();
    out.insert("result".into(), Value::Path("mcqa.json".into()));
    out.insert("items".into(), Value::Path("items.jsonl".into()));
    out.insert(
        "acc".into(),
        Value::Float(doc["acc"].as_f64().unwrap_or(0.0)),
    );
    out.insert(
        "acc_norm".into(),
        Value::Float(doc["acc_norm"].as_f64().unwrap_or(0.0)),
    );
    Ok(out)
}

// ---------------------------------------------------------------------------
// relative_gain

/// A score as `relative_gain` takes it: a number, an `mcqa.json` file, or a
/// directory holding one.
fn read_score(value: &Value, metric: &str, what: &str) -> OpResult<(String, f64, Option<Json>)> {
    match value {
        Value::Float(f) => Ok((format!("{f}"), *f, None)),
        Value::Int(i) => Ok((format!("{i}"), *i as f64, None)),
        Value::Path(p) => {
            let file = if p.is_dir() {
                p.join("mcqa.json")
            } else {
                p.clone()
            };
            let text = std::fs::read_to_string(&file)
                .into_diagnostic()
                .wrap_err_with(|| format!("relative_gain: reading {what} {}", file.display()))?;
            let doc: Json = serde_json::from_str(&text)
                .map_err(|e| miette!("relative_gain: {}: not valid JSON: {e}", file.display()))?;
            let acc = doc.get(metric).and_then(Json::as_f64).ok_or_else(|| {
                miette!(
                    "relative_gain: {}: no number `{metric}`; pass an mcqa result",
                    file.display()
                )
            })?;
            Ok((p.display().to_string(), acc, doc.get("checkpoint").cloned()))
        }
        other => Err(miette!(
            "relative_gain: {what} must be an mcqa node, an mcqa.json file or a number, found {}",
            other.kind()
        )),
    }
}

/// G_rel = Acc(checkpoint) / Acc(baseline) for each score.
pub fn relative_gains(scores: &[f64], baseline: f64) -> OpResult<Vec<f64>> {
    if baseline.is_nan() || baseline <= 0.0 {
        return Err(miette!(
            "relative_gain: the baseline accuracy is {baseline}; G_rel needs a positive baseline"
        ));
    }
    Ok(scores.iter().map(|s| s / baseline).collect())
}

/// The `relative_gain` op.
pub struct RelativeGain;

impl Op for RelativeGain {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "relative_gain",
            version: 1,
            doc: "Relative performance gain G_rel = Acc(checkpoint) / Acc(baseline) for each score (DeFineMed eq. 1).",
            params: vec![
                Param::required("scores", Type::List(Box::new(Type::Any)), "mcqa nodes (or mcqa.json files, or numbers)"),
                Param::required("baseline", Type::Any, "the baseline's mcqa node (or file, or number)"),
                Param::optional(
                    "metric",
                    Type::Enum(vec!["acc".into(), "acc_norm".into(), "acc_macro".into(), "acc_norm_macro".into()]),
                    Value::Str("acc".into()),
                    "which accuracy to compare",
                ),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "result", ty: Type::File, doc: "relative_gain.json" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let metric = ctx.str("metric")?;
        let (base_src, base_acc, base_ckpt) =
            read_score(ctx.value("baseline")?, metric, "baseline")?;
        let scores = ctx
            .list("scores")?
            .iter()
            .map(|v| read_score(v, metric, "score"))
            .collect::<OpResult<Vec<_>>>()?;
        let gains = relative_gains(&scores.iter().map(|s| s.1).collect::<Vec<_>>(), base_acc)?;
        let rows: Vec<Json> = scores
            .iter()
            .zip(&gains)
            .map(|((src, acc, ckpt), g)| json!({"source": src, "acc": acc, "g_rel": g, "checkpoint": ckpt}))
            .collect();
        let doc = json!({
            "metric": metric,
            "baseline": {"source": base_src, "acc": base_acc, "checkpoint": base_ckpt},
            "scores": rows,
        });
        write_atomic(
            &ctx.out_dir,
            "relative_gain.json",
            serde_json::to_string_pretty(&doc)
                .into_diagnostic()?
                .as_bytes(),
        )?;
        let mut out = Outputs::new();
        out.insert("result".into(), Value::Path("relative_gain.json".into()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::runtime::ToyModel;
    use crate::op::testing::{full_params, with_context, RunOptions};

    fn one_thread() -> RunOptions {
        RunOptions {
            threads: 1,
            ..RunOptions::default()
        }
    }

    fn item(subject: &str, question: &str, choices: &[&str], gold: usize) -> McItem {
        McItem {
            id: None,
            subject: subject.into(),
            question: question.into(),
            choices: choices.iter().map(|s| s.to_string()).collect(),
            gold,
            source: "test:1".into(),
        }
    }

    // Expected strings follow lm-evaluation-harness's
    // lm_eval/tasks/mmlu/default/_default_template_yaml:
    //   doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
    //   doc_to_choice: ["A", "B", "C", "D"], target_delimiter " ", fewshot_delimiter "\n\n",
    // the description of mmlu_clinical_knowledge.yaml, and samplers.py's
    // get_context (text + delimiter + target + fewshot_delimiter per example).
    #[test]
    fn mmlu_one_shot_prompt_matches_lm_eval_rendering() {
        let shot = item(
            "clinical_knowledge",
            "  What is the normal pH of blood?\n",
            &["7.0", "7.4", "6.8", "8.0"],
            1,
        );
        let q = item(
            "clinical_knowledge",
            "Which organ makes insulin?",
            &["Liver", "Pancreas", "Kidney", "Spleen"],
            1,
        );
        let ctx = build_context(Format::Mmlu, &q, &[&shot]).unwrap();
        let expected = "The following are multiple choice questions (with answers) about clinical knowledge.\n\n\
What is the normal pH of blood?\nA. 7.0\nB. 7.4\nC. 6.8\nD. 8.0\nAnswer: B\n\n\
Which organ makes insulin?\nA. Liver\nB. Pancreas\nC. Kidney\nD. Spleen\nAnswer:";
        assert_eq!(ctx, expected);
        assert_eq!(continuations(&q), vec![" A", " B", " C", " D"]);
    }

    #[test]
    fn mmlu_zero_shot_prompt_and_two_shots_in_dev_order() {
        let a = item("anatomy", "Q1", &["a", "b", "c", "d"], 0);
        let b = item("anatomy", "Q2", &["e", "f", "g", "h"], 3);
        let q = item("anatomy", "Q3", &["i", "j", "k", "l"], 2);
        assert_eq!(
            build_context(Format::Mmlu, &q, &[]).unwrap(),
            "The following are multiple choice questions (with answers) about anatomy.\n\nQ3\nA. i\nB. j\nC. k\nD. l\nAnswer:"
        );
        assert_eq!(
            build_context(Format::Mmlu, &q, &[&a, &b]).unwrap(),
            "The following are multiple choice questions (with answers) about anatomy.\n\n\
Q1\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\nQ2\nA. e\nB. f\nC. g\nD. h\nAnswer: D\n\nQ3\nA. i\nB. j\nC. k\nD. l\nAnswer:"
        );
    }

    // openGPT-X's lm-evaluation-harness fork,
    // lm_eval/tasks/opengptx/ogx_mmlux/ogx_mmlux_de-college_medicine.yaml
    // (written by _generate_configs.py from PROMPT_WORDS["DE"] = (..., "Antwort")):
    //   include: _default_mmlux_template_yaml (fewshot_config.sampler: first_n)
    //   doc_to_choice: "['A', 'B', 'C', 'D']"
    //   doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAntwort:"
    //   description: "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Hochschulmedizin."
    // and ..._de-clinical_knowledge.yaml / _de-anatomy.yaml for the other two
    // descriptions. lm-eval's fewshot_context starts with the description and
    // appends samplers.get_context (text + target_delimiter " " + target +
    // fewshot_delimiter "\n\n" per example) with no separator of its own.
    #[test]
    fn mmlux_prompt_uses_german_cue_and_description() {
        let cue = "Antwort:";
        let block = |q: &str, c: [&str; 4]| {
            format!(
                "{q}\nA. {}\nB. {}\nC. {}\nD. {}\n{cue}",
                c[0], c[1], c[2], c[3]
            )
        };
        let q = item(
            "college_medicine_DE",
            " Was ist ein Erythrozyt? ",
            &["Zelle", "Organ", "Gewebe", "Virus"],
            0,
        );
        let college_medicine =
            "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Hochschulmedizin.";
        assert_eq!(
            build_context(Format::Mmlux, &q, &[]).unwrap(),
            format!(
                "{college_medicine}{}",
                block(
                    "Was ist ein Erythrozyt?",
                    ["Zelle", "Organ", "Gewebe", "Virus"]
                )
            )
        );

        let shot = item(
            "clinical_knowledge",
            "Normaler pH-Wert des Blutes?\n",
            &["7,0", "7,4", "6,8", "8,0"],
            1,
        );
        let q = item(
            "clinical_knowledge",
            "Welches Organ bildet Insulin?",
            &["Leber", "Pankreas", "Niere", "Milz"],
            1,
        );
        let clinical_knowledge =
            "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu klinischen Kenntnissen.";
        assert_eq!(
            build_context(Format::Mmlux, &q, &[&shot]).unwrap(),
            format!(
                "{clinical_knowledge}{} B\n\n{}",
                block("Normaler pH-Wert des Blutes?", ["7,0", "7,4", "6,8", "8,0"]),
                block(
                    "Welches Organ bildet Insulin?",
                    ["Leber", "Pankreas", "Niere", "Milz"]
                )
            )
        );
        assert_eq!(continuations(&q), vec![" A", " B", " C", " D"]);

        let q = item("anatomy", "Q", &["a", "b", "c", "d"], 2);
        assert_eq!(
            build_context(Format::Mmlux, &q, &[]).unwrap(),
            format!(
                "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Anatomie.{}",
                block("Q", ["a", "b", "c", "d"])
            )
        );
    }

    // The 57 subjects of lm-eval's MMLU (lm_eval/tasks/mmlu/_generate_configs.py
    // SUBJECTS), which openGPT-X's generator translates one for one.
    #[test]
    fn mmlux_knows_every_mmlu_subject_and_rejects_others() {
        let mmlu = "abstract_algebra anatomy astronomy business_ethics clinical_knowledge \
college_biology college_chemistry college_computer_science college_mathematics \
college_medicine college_physics computer_security conceptual_physics econometrics \
electrical_engineering elementary_mathematics formal_logic global_facts \
high_school_biology high_school_chemistry high_school_computer_science \
high_school_european_history high_school_geography high_school_government_and_politics \
high_school_macroeconomics high_school_mathematics high_school_microeconomics \
high_school_physics high_school_psychology high_school_statistics high_school_us_history \
high_school_world_history human_aging human_sexuality international_law jurisprudence \
logical_fallacies machine_learning management marketing medical_genetics miscellaneous \
moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting \
professional_law professional_medicine professional_psychology public_relations \
security_studies sociology us_foreign_policy virology world_religions";
        let subjects: Vec<&str> = mmlu.split_whitespace().collect();
        assert_eq!(subjects.len(), 57);
        for s in &subjects {
            let d = mmlux_description(s).unwrap_or_else(|| panic!("no description for {s}"));
            assert!(
                d.contains("Multiple-Choice-Fragen (mit Antworten)"),
                "{s}: {d}"
            );
            assert!(d.ends_with('.') && !d.ends_with("\n"), "{s}: {d}");
            assert_eq!(mmlux_description(&format!("{s}_DE")), Some(d));
        }
        let table: Vec<&str> = MMLUX_DE_DESCRIPTIONS.iter().map(|(s, _)| *s).collect();
        let mut sorted = subjects.clone();
        sorted.sort_unstable();
        assert_eq!(table, sorted);

        let q = item("kardiologie", "Q", &["a", "b", "c", "d"], 0);
        let err = build_context(Format::Mmlux, &q, &[]).unwrap_err();
        assert!(format!("{err}").contains("subject `kardiologie`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "b.jsonl",
            "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0,\"subject\":\"anatomy\"}\n\
{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0,\"subject\":\"kardiologie\"}\n",
        );
        let err = load_items(&p, Format::Mmlux).unwrap_err();
        let msg = format!("{err:?}");
        assert!(
            msg.contains("b.jsonl:2") && msg.contains("kardiologie"),
            "{msg}"
        );
        // The same file is fine as English MMLU, which takes any subject.
        assert_eq!(load_items(&p, Format::Mmlu).unwrap().len(), 2);
    }

    // lm-eval lm_eval/tasks/medqa/preprocess_medqa.py:
    // f"Question: {doc['sent1']}\n" + "".join(f"{k}. {v}\n") + "Answer:", no description.
    #[test]
    fn medqa_prompt_has_no_description_and_keeps_question_as_is() {
        let q = item(
            "medqa",
            "A 23-year-old ... ?",
            &["a", "b", "c", "d", "e"],
            4,
        );
        assert_eq!(
            build_context(Format::Medqa, &q, &[]).unwrap(),
            "Question: A 23-year-old ... ?\nA. a\nB. b\nC. c\nD. d\nE. e\nAnswer:"
        );
        assert_eq!(continuations(&q).last().map(String::as_str), Some(" E"));
    }

    /// A GPT-2-like word tokenizer: each run of whitespace, and each word with
    /// its one leading space, is a token; ids are assigned on first sight.
    struct WordTokenizer(std::sync::Mutex<Vec<String>>);

    impl WordTokenizer {
        fn id(&self, piece: &str) -> u32 {
            let mut v = self.0.lock().unwrap();
            if let Some(i) = v.iter().position(|p| p == piece) {
                return i as u32;
            }
            v.push(piece.to_string());
            (v.len() - 1) as u32
        }
        fn encode(&self, text: &str) -> Vec<u32> {
            let mut pieces: Vec<String> = Vec::new();
            let chars: Vec<char> = text.chars().collect();
            let mut i = 0;
            while i < chars.len() {
                let start = i;
                if chars[i] == ' ' && i + 1 < chars.len() && !chars[i + 1].is_whitespace() {
                    i += 1;
                    while i < chars.len() && !chars[i].is_whitespace() {
                        i += 1;
                    }
                } else if chars[i].is_whitespace() {
                    while i < chars.len()
                        && chars[i].is_whitespace()
                        && !(chars[i] == ' '
                            && i + 1 < chars.len()
                            && !chars[i + 1].is_whitespace())
                    {
                        i += 1;
                    }
                } else {
                    while i < chars.len() && !chars[i].is_whitespace() {
                        i += 1;
                    }
                }
                pieces.push(chars[start..i].iter().collect());
            }
            pieces.iter().map(|p| self.id(p)).collect()
        }
    }

    #[test]
    fn encode_pair_moves_trailing_whitespace_onto_the_continuation() {
        let tok = WordTokenizer(Default::default());
        let enc = |t: &str| -> Result<Vec<u32>, String> { Ok(tok.encode(t)) };
        // The context ends in a space: lm-eval scores "Answer:" + " A", not "Answer: " + "A".
        let (ctx, cont) = encode_pair(&enc, "Q\nAnswer: ", "A").unwrap();
        assert_eq!(ctx, tok.encode("Q\nAnswer:"));
        assert_eq!(cont, vec![tok.id(" A")]);
        assert_ne!(cont, tok.encode("A"));
        // Several trailing whitespace characters move together.
        let (ctx, cont) = encode_pair(&enc, "Answer: B\n\n", "Next").unwrap();
        assert_eq!(ctx, tok.encode("Answer: B"));
        assert_eq!(cont, tok.encode("Answer: B\n\nNext")[ctx.len()..].to_vec());
        assert_eq!(cont, vec![tok.id("\n\n"), tok.id("Next")]);
        // Without trailing whitespace the context is kept as it is.
        let (ctx, cont) = encode_pair(&enc, "Answer:", " C").unwrap();
        assert_eq!(ctx, tok.encode("Answer:"));
        assert_eq!(cont, vec![tok.id(" C")]);
    }

    /// Scores continuations from a table: item question → per-letter scores.
    struct TableScorer(BTreeMap<String, Vec<f64>>);

    impl Scorer for TableScorer {
        fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
            Ok(text.bytes().map(u32::from).collect())
        }
        fn loglikelihood(&self, requests: &[(Vec<u32>, Vec<u32>)]) -> Vec<LogLikelihood> {
            requests
                .iter()
                .map(|(ctx, cont)| {
                    let text = String::from_utf8(ctx.iter().map(|&b| b as u8).collect()).unwrap();
                    // The question is the line after the last blank line.
                    let question = text
                        .rsplit("\n\n")
                        .next()
                        .unwrap()
                        .lines()
                        .next()
                        .unwrap()
                        .to_string();
                    let letter = (*cont.last().unwrap() as u8 - b'A') as usize;
                    LogLikelihood {
                        logprob: self.0[&question][letter],
                        is_greedy: false,
                    }
                })
                .collect()
        }
        fn max_context(&self) -> usize {
            1 << 20
        }
    }

    #[test]
    fn acc_and_acc_norm_with_a_fake_scorer() {
        let bench = vec![
            item("a", "q1", &["w", "x", "y", "z"], 0),
            item("a", "q2", &["w", "x", "y", "z"], 1),
            item("a", "q3", &["w", "x", "y", "z"], 2),
            item("b", "q4", &["w", "x", "y", "z"], 3),
        ];
        let table: BTreeMap<String, Vec<f64>> = [
            ("q1", vec![-1.0, -2.0, -3.0, -4.0]), // right
            ("q2", vec![-0.5, -0.6, -3.0, -4.0]), // wrong: A wins
            ("q3", vec![-2.0, -2.0, -2.0, -2.0]), // tie: first index (A), wrong
            ("q4", vec![-9.0, -9.0, -9.0, -0.1]), // right
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let scorer = TableScorer(table);
        let results =
            score_items(&scorer, Format::Mmlu, &bench, &[], 0, 3, &mut |_| Ok(())).unwrap();
        let preds: Vec<usize> = results.iter().map(|r| r.pred).collect();
        assert_eq!(preds, vec![0, 0, 0, 3]);
        // MMLU's choices are single letters, so lm-eval's length normalisation
        // (division by len("A") == 1) never changes the prediction.
        assert!(results.iter().all(|r| r.pred_norm == r.pred));
        let doc = report(Format::Mmlu, 0, &bench, &results);
        assert_eq!(doc["n"], 4);
        assert_eq!(doc["acc"].as_f64().unwrap(), 0.5);
        // Subject a: 1 of 3, subject b: 1 of 1; macro = (1/3 + 1) / 2.
        assert!((doc["acc_macro"].as_f64().unwrap() - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
        assert!((doc["subjects"]["a"]["acc"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // lm-eval's mean_stderr: sqrt(sample variance / n) over 0/1 scores.
        let expected_stderr = ((4.0 * 0.25) / 3.0 / 4.0f64).sqrt();
        assert!((doc["acc_stderr"].as_f64().unwrap() - expected_stderr).abs() < 1e-12);
    }

    #[test]
    fn acc_norm_divides_by_the_choice_length_in_characters() {
        // -1.5 beats -3.0 raw, but per character -3.0/3 = -1.0 beats -1.5/1.
        let lls = [
            LogLikelihood {
                logprob: -1.5,
                is_greedy: false,
            },
            LogLikelihood {
                logprob: -3.0,
                is_greedy: false,
            },
        ];
        let r = predict_with_labels(&["x".to_string(), "äöü".to_string()], &lls);
        assert_eq!(r.pred, 0);
        assert_eq!(
            r.pred_norm, 1,
            "characters, not bytes: äöü is 3 characters (6 bytes)"
        );
        // A 6-byte label would have given -0.5 vs -1.5 and kept choice 0 only
        // if divided by bytes; check that bytes are not used.
        let lls = [
            LogLikelihood {
                logprob: -1.2,
                is_greedy: false,
            },
            LogLikelihood {
                logprob: -3.3,
                is_greedy: false,
            },
        ];
        let r = predict_with_labels(&["x".to_string(), "äöü".to_string()], &lls);
        assert_eq!(
            r.pred_norm, 1,
            "-3.3/3 = -1.1 > -1.2 by characters; by bytes -0.55 would also win"
        );
        let lls = [
            LogLikelihood {
                logprob: -0.9,
                is_greedy: false,
            },
            LogLikelihood {
                logprob: -3.3,
                is_greedy: false,
            },
        ];
        let r = predict_with_labels(&["x".to_string(), "äöü".to_string()], &lls);
        assert_eq!(
            r.pred_norm, 0,
            "by characters -1.1 < -0.9; by bytes -0.55 would win"
        );
    }

    #[test]
    fn toy_model_scores_equal_an_independent_bigram_sum() {
        let model = ToyModel::new(11);
        let dev = vec![item("anatomy", "D1", &["a", "b", "c", "d"], 2)];
        let bench = vec![item(
            "anatomy",
            "Where is the femur?",
            &["Leg", "Arm", "Head", "Neck"],
            0,
        )];
        let results =
            score_items(&model, Format::Mmlu, &bench, &dev, 1, 8, &mut |_| Ok(())).unwrap();
        let ctx = build_context(Format::Mmlu, &bench[0], &[&dev[0]]).unwrap();
        assert!(ctx.ends_with("Answer:"));
        let last = *ctx.as_bytes().last().unwrap() as u32;
        for (i, ll) in results[0].loglikelihoods.iter().enumerate() {
            // Continuation " X": space after ':', then the letter after the space.
            let letter = b'A' as u32 + i as u32;
            let expected = model.logprob_after(last, b' ' as u32) as f64
                + model.logprob_after(b' ' as u32, letter) as f64;
            assert!(
                (ll - expected).abs() < 1e-5,
                "choice {i}: {ll} vs {expected}"
            );
        }
    }

    #[test]
    fn shots_need_enough_dev_items_of_the_subject() {
        let model = ToyModel::new(1);
        let dev = vec![item("anatomy", "D1", &["a", "b", "c", "d"], 2)];
        let bench = vec![item("virology", "Q", &["a", "b", "c", "d"], 0)];
        let err =
            score_items(&model, Format::Mmlu, &bench, &dev, 1, 8, &mut |_| Ok(())).unwrap_err();
        assert!(
            format!("{err}").contains("subject `virology` has 0 dev item(s)"),
            "{err:?}"
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_mmlu_jsonl_with_index_or_letter_answers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "b.jsonl",
            "{\"question\":\"q1\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":2,\"subject\":\"anatomy\"}\n\n\
{\"question\":\"q2\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":\"D\",\"subject\":\"anatomy\"}\n",
        );
        let items = load_items(&p, Format::Mmlu).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].gold, 2);
        assert_eq!(items[1].gold, 3);
        assert!(items[1].source.ends_with("b.jsonl:3"));
    }

    #[test]
    fn bad_input_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0,\"subject\":\"s\"}\n";
        let p = write(dir.path(), "missing.jsonl", &format!("{good}{{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"subject\":\"s\"}}\n"));
        let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
        assert!(
            err.contains("missing.jsonl:2: missing field `answer`"),
            "{err}"
        );

        let p = write(dir.path(), "range.jsonl", "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":4,\"subject\":\"s\"}\n");
        let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
        assert!(
            err.contains("range.jsonl:1: answer 4 is out of range"),
            "{err}"
        );

        let p = write(
            dir.path(),
            "json.jsonl",
            &format!("{good}{good}{{not json\n"),
        );
        let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
        assert!(err.contains("json.jsonl:3: not valid JSON"), "{err}");

        let p = write(
            dir.path(),
            "three.jsonl",
            "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\"],\"answer\":0,\"subject\":\"s\"}\n",
        );
        let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
        assert!(err.contains("three.jsonl:1: 3 choices"), "{err}");

        let p = write(
            dir.path(),
            "medqa.jsonl",
            "{\"question\":\"q\",\"options\":{\"A\":\"a\",\"B\":\"b\"},\"answer_idx\":\"C\"}\n",
        );
        let err = format!("{}", load_items(&p, Format::Medqa).unwrap_err());
        assert!(err.contains("medqa.jsonl:1: answer"), "{err}");
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn reads_medqa_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "m.jsonl",
            "{\"question\":\"Q?\",\"answer\":\"bee\",\"options\":{\"B\":\"bee\",\"A\":\"ay\",\"C\":\"cee\",\"D\":\"dee\",\"E\":\"ee\"},\"answer_idx\":\"B\",\"meta_info\":\"step1\"}\n",
        );
        let items = load_items(&p, Format::Medqa).unwrap();
        assert_eq!(items[0].choices, vec!["ay", "bee", "cee", "dee", "ee"]);
        assert_eq!(items[0].gold, 1);
        assert_eq!(items[0].subject, "medqa");
    }

    #[test]
    fn reads_hendrycks_csv_with_quotes_and_header_csv() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "anatomy_test.csv",
            "\"Which bone, if any,\nis longest?\",Femur,Tibia,Ulna,Radius,A\nSecond,a,b,c,d,C\n",
        );
        let items = load_items(&p, Format::Mmlu).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].question, "Which bone, if any,\nis longest?");
        assert_eq!(items[0].subject, "anatomy");
        assert_eq!(items[1].gold, 2);
        assert!(
            items[1].source.ends_with("anatomy_test.csv:3"),
            "{}",
            items[1].source
        );

        let p = write(
            dir.path(),
            "h.csv",
            "subject,question,A,B,C,D,answer\nvirology,q,a,b,c,d,1\nvirology,q,a,b,c,d,E\n",
        );
        let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
        assert!(err.contains("h.csv:3"), "{err}");
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn write_results_copies_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let bench = vec![item("a", "q1", &["w", "x", "y", "z"], 1)];
        let results = vec![ItemResult {
            loglikelihoods: vec![-3.0, -1.0, -2.0, -4.0],
            is_greedy: vec![false; 4],
            pred: 1,
            pred_norm: 1,
        }];
        let ckpt = json!({"step": 10, "tokens_seen": 4096});
        let out = write_results(
            dir.path(),
            Format::Mmlu,
            1,
            &bench,
            &results,
            Some(ckpt.clone()),
            Path::new("m"),
        )
        .unwrap();
        assert_eq!(out["acc"], Value::Float(1.0));
        let doc: Json =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("mcqa.json")).unwrap())
                .unwrap();
        assert_eq!(doc["checkpoint"], ckpt);
        let line: Json = serde_json::from_str(
            std::fs::read_to_string(dir.path().join("items.jsonl"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        assert_eq!(line["loglikelihoods"], json!([-3.0, -1.0, -2.0, -4.0]));
        assert_eq!(line["gold"], 1);
        assert_eq!(line["pred"], 1);
    }

    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/qwen2")
    }

    /// The op end to end on the golden tiny Qwen2 model (transformers-made):
    /// each item's per-choice log-likelihood equals the sum of the runtime's
    /// per-token log-probabilities over the continuation, a separate code path.
    #[test]
    fn mcqa_op_on_the_golden_model() {
        let dir = tempfile::tempdir().unwrap();
        let bench = write(
            dir.path(),
            "bench.jsonl",
            "{\"question\":\"Fever?\",\"choices\":[\"yes\",\"no\",\"maybe\",\"never\"],\"answer\":0,\"subject\":\"anatomy\"}\n\
{\"question\":\"Cough?\",\"choices\":[\"dry\",\"wet\",\"none\",\"both\"],\"answer\":3,\"subject\":\"virology\"}\n",
        );
        let dev = write(
            dir.path(),
            "dev.jsonl",
            "{\"question\":\"Pulse?\",\"choices\":[\"72\",\"7\",\"700\",\"0\"],\"answer\":0,\"subject\":\"anatomy\"}\n\
{\"question\":\"Virus?\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":1,\"subject\":\"virology\"}\n",
        );
        let out_dir = dir.path().join("out");
        let params = full_params(
            &Mcqa,
            &[
                ("model", Value::Path(golden_dir())),
                ("bench", Value::Path(bench)),
                ("dev", Value::Path(dev)),
                ("format", Value::Str("mmlu".into())),
                ("shots", Value::Int(1)),
                ("limit", Value::Int(0)),
                ("batch_items", Value::Int(1)),
            ],
        );
        let outputs = with_context(params, &out_dir, one_thread(), |ctx| Mcqa.run(ctx))
            .0
            .unwrap();
        let doc: Json =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("mcqa.json")).unwrap())
                .unwrap();
        assert_eq!(doc["n"], 2);
        assert_eq!(outputs["acc"], Value::Float(doc["acc"].as_f64().unwrap()));
        assert_eq!(doc["subjects"].as_object().unwrap().len(), 2);
        let model = runtime::load(&golden_dir()).unwrap();
        let items = load_items(&out_dir.join("../bench.jsonl"), Format::Mmlu).unwrap();
        let dev_items = load_items(&out_dir.join("../dev.jsonl"), Format::Mmlu).unwrap();
        let lines: Vec<Json> = std::fs::read_to_string(out_dir.join("items.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for (k, item) in items.iter().enumerate() {
            let shot = dev_items
                .iter()
                .find(|d| d.subject == item.subject)
                .unwrap();
            let context = build_context(Format::Mmlu, item, &[shot]).unwrap();
            for (i, cont) in continuations(item).iter().enumerate() {
                let (mut ctx_ids, cont_ids) =
                    encode_pair(&|t| model.encode(t, false), &context, cont).unwrap();
                // The golden model takes 128 tokens: the prompt loses its start.
                let excess = (ctx_ids.len() + cont_ids.len()).saturating_sub(model.max_context());
                ctx_ids.drain(..excess);
                let all: Vec<u32> = ctx_ids.iter().chain(&cont_ids).copied().collect();
                let per_token = model.token_logprobs(&all, 1);
                let expected: f64 = per_token[ctx_ids.len()..]
                    .iter()
                    .map(|t| t.as_ref().unwrap().logprob as f64)
                    .sum();
                let got = lines[k]["loglikelihoods"][i].as_f64().unwrap();
                assert!(
                    (got - expected).abs() < 1e-3,
                    "item {k} choice {i}: {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn relative_gain_is_the_accuracy_ratio() {
        let g = relative_gains(&[0.5, 0.6, 0.4], 0.5).unwrap();
        assert_eq!(g, vec![1.0, 1.2, 0.8]);
        assert!(relative_gains(&[0.5], 0.0).is_err());

        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let ck = dir.path().join("ck");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&ck).unwrap();
        write(&base, "mcqa.json", "{\"acc\": 0.4}");
        write(
            &ck,
            "mcqa.json",
            "{\"acc\": 0.5, \"checkpoint\": {\"tokens_seen\": 100}}",
        );
        let out_dir = dir.path().join("out");
        let params = full_params(
            &RelativeGain,
            &[
                (
                    "scores",
                    Value::List(vec![Value::Path(ck.clone()), Value::Float(0.2)]),
                ),
                ("baseline", Value::Path(base.clone())),
                ("metric", Value::Str("acc".into())),
            ],
        );
        with_context(params, &out_dir, one_thread(), |ctx| RelativeGain.run(ctx))
            .0
            .unwrap();
        let doc: Json = serde_json::from_str(
            &std::fs::read_to_string(out_dir.join("relative_gain.json")).unwrap(),
        )
        .unwrap();
        assert!((doc["scores"][0]["g_rel"].as_f64().unwrap() - 1.25).abs() < 1e-12);
        assert!((doc["scores"][1]["g_rel"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(doc["scores"][0]["checkpoint"]["tokens_seen"], 100);
    }
}
