//! Reading the two `generate` artifacts a judge compares.

use super::*;

/// One line of a `responses.jsonl`.
#[derive(Clone, Debug)]
pub struct ResponseItem {
    pub prompt: String,
    pub response: String,
    /// Earlier messages of the chat (everything before the last user turn).
    pub context: Vec<ChatMessage>,
}

/// A `generate` artifact: responses by id (in file order) and lineage.
pub struct Responses {
    pub ids: Vec<String>,
    pub items: BTreeMap<String, ResponseItem>,
    pub checkpoint: Option<CheckpointLineage>,
    /// The name verdicts use ([`GeneratedResponses::display_name`]).
    pub name: String,
}

/// Reads a generate artifact (or responses file) for judging: every line
/// needs its `prompt`, the query the judge sees.
/// `name` is the op's `name_a`/`name_b` (empty: derived from the artifact).
pub fn load_responses(path: &Path, name: &str) -> OpResult<Responses> {
    let generated = read_responses(path)?;
    let name = generated.display_name(name);
    let mut ids = Vec::with_capacity(generated.records.len());
    let mut items = BTreeMap::new();
    for r in generated.records {
        let prompt = r
            .prompt
            .clone()
            .ok_or_else(|| miette!("{}: missing string `prompt`", r.source))?;
        let context = r.context().to_vec();
        let id = r.id_text();
        ids.push(id.clone());
        items.insert(
            id,
            ResponseItem {
                prompt,
                response: r.response,
                context,
            },
        );
    }
    Ok(Responses {
        ids,
        items,
        checkpoint: generated.checkpoint,
        name,
    })
}
