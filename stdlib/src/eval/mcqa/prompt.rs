//! The prompts of lm-eval's MMLU and MedQA tasks and openGPT-X's MMLU-X:
//! descriptions, `doc_to_text`, few-shot contexts, continuations and
//! `_encode_pair`.

use miette::miette;
use serde::{Deserialize, Serialize};

use crate::op::OpResult;

/// The benchmark family, which fixes the prompt and the input fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Its name, as the `format` param spells it.
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
pub(super) fn py_space(c: char) -> bool {
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

pub(super) fn unknown_mmlux_subject(subject: &str) -> miette::Report {
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
