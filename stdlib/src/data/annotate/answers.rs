//! Answers: the record stored per document, the append-only answer file
//! that lets a run resume, and what a worker hands the collector.

use super::*;

/// One answer, as stored in the answer file and in annotations.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    /// blake3 (first 16 hex) of the document text, to reuse only matching answers.
    pub text_hash: String,
    /// The parsed label; `null` if the answer named none.
    pub label: Option<String>,
    /// The model's raw answer.
    pub raw: Option<String>,
    /// Set only in answer files of versions before 4, which stored failed
    /// requests: such lines are not reused. Never written.
    #[serde(default, skip_serializing)]
    pub error: Option<Json>,
}

/// What a worker hands the collector for one document.
pub(super) enum Outcome {
    Answered(Answer),
    Failed { id: String, error: ChatError },
}

pub(super) fn text_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

/// Appends answers, fsyncing every [`SYNC_EVERY`].
pub(super) struct AnswerLog {
    pub(super) file: File,
    pub(super) unsynced: usize,
}

impl AnswerLog {
    pub(super) fn append(&mut self, a: &Answer) -> OpResult<()> {
        let mut line = serde_json::to_string(a).into_diagnostic()?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .into_diagnostic()
            .wrap_err("cannot append to the answer file")?;
        self.unsynced += 1;
        if self.unsynced >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }
    pub(super) fn sync(&mut self) -> OpResult<()> {
        self.file.sync_data().into_diagnostic()?;
        self.unsynced = 0;
        Ok(())
    }
}

/// Reads the answers of a previous run; a torn last line is ignored.
pub(super) fn load_previous(path: &Path) -> HashMap<String, Answer> {
    let mut out = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Ok(a) = serde_json::from_str::<Answer>(line) {
                if a.error.is_none() {
                    out.insert(a.id.clone(), a);
                }
            }
        }
    }
    out
}

/// The answers of every answer file of configuration `config_hash` in
/// `state_dir` (the whole run's and its shard tasks'), in name order.
pub(super) fn load_state(state_dir: &Path, config_hash: &str) -> HashMap<String, Answer> {
    let prefix = format!("annotate-{config_hash}.");
    let mut files: Vec<PathBuf> = std::fs::read_dir(state_dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = HashMap::new();
    for f in files {
        out.extend(load_previous(&f));
    }
    out
}
