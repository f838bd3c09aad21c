//! Benchmark files: JSONL (MMLU, MMLU-X, MedQA) and Hendrycks' CSV.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::Value as Json;

use crate::artifacts::read_object_lines;
use crate::op::OpResult;

use super::*;

pub(super) fn field<'a>(
    obj: &'a serde_json::Map<String, Json>,
    name: &str,
    at: &str,
) -> OpResult<&'a Json> {
    obj.get(name)
        .ok_or_else(|| miette!("{at}: missing field `{name}`"))
}

pub(super) fn str_field(
    obj: &serde_json::Map<String, Json>,
    name: &str,
    at: &str,
) -> OpResult<String> {
    match field(obj, name, at)? {
        Json::String(s) => Ok(s.clone()),
        other => Err(miette!(
            "{at}: field `{name}` must be a string, found {other}"
        )),
    }
}

/// An answer given as a 0-based index, or as a letter.
pub(super) fn answer_index(
    value: &Json,
    n_choices: usize,
    at: &str,
    name: &str,
) -> OpResult<usize> {
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
pub(super) fn subject_from_file(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("all");
    for suffix in ["_test", "_dev", "_val", "_validation"] {
        if let Some(s) = stem.strip_suffix(suffix) {
            return s.to_string();
        }
    }
    stem.to_string()
}

pub(super) fn check_choices(format: Format, n: usize, at: &str) -> OpResult<()> {
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

pub(super) fn item_from_json(
    format: Format,
    obj: &serde_json::Map<String, Json>,
    at: &str,
    file_subject: &str,
) -> OpResult<McItem> {
    let id = obj.get("id").map(|v| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    });
    let question = str_field(obj, "question", at)?;
    let (choices, gold, subject) = match format {
        Format::Mmlu | Format::Mmlux => {
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
            (choices, gold, subject)
        }
        Format::Medqa => {
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
            (choices, gold, subject)
        }
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

pub(super) fn load_jsonl(path: &Path, format: Format) -> OpResult<Vec<McItem>> {
    let file_subject = subject_from_file(path);
    read_object_lines(path)?
        .iter()
        .map(|l| item_from_json(format, &l.object, &l.at, &file_subject))
        .collect()
}

/// CSV: Hendrycks' headerless `question,A,B,C,D,answer` files (the subject
/// from the file name), or a header naming `question`, `A`..`D`, `answer` and
/// optionally `subject`.
pub(super) fn load_csv(path: &Path, format: Format) -> OpResult<Vec<McItem>> {
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
