//! The prompt file and reading a label out of an answer.

use super::*;

/// A prompt file: an optional system message and the user message template.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTemplate {
    pub system: Option<String>,
    pub user: String,
}

impl PromptTemplate {
    /// Parses a prompt file. Without markers the whole file is the user
    /// message; with a line `### system` and a line `### user`, the text
    /// after each is that message. The user message must contain `{text}`;
    /// `{labels}` becomes the label set joined by ", ".
    pub fn parse(src: &str) -> Result<PromptTemplate, String> {
        let mut system = None;
        let mut user = None;
        let mut current: Option<&str> = None;
        let mut buf = String::new();
        let mut saw_marker = false;
        let mut close = |which: Option<&str>, buf: &mut String| {
            match which {
                Some("system") => system = Some(buf.trim().to_string()),
                Some("user") => user = Some(buf.trim().to_string()),
                _ => {}
            }
            buf.clear();
        };
        for line in src.lines() {
            let t = line.trim().to_lowercase();
            if t == "### system" || t == "### user" {
                saw_marker = true;
                close(current, &mut buf);
                current = Some(if t.ends_with("system") {
                    "system"
                } else {
                    "user"
                });
            } else {
                buf.push_str(line);
                buf.push('\n');
            }
        }
        close(current, &mut buf);
        let user = if saw_marker {
            user.ok_or("the prompt has `### system` but no `### user` section")?
        } else {
            src.trim().to_string()
        };
        if !user.contains("{text}") {
            return Err("the user message has no {text} placeholder".into());
        }
        Ok(PromptTemplate {
            system: system.filter(|s| !s.is_empty()),
            user,
        })
    }

    /// The chat messages for one document.
    pub fn messages(&self, text: &str, labels: &[String]) -> Vec<ChatMessage> {
        let labels_text = labels.join(", ");
        let mut out = Vec::new();
        if let Some(s) = &self.system {
            out.push(ChatMessage {
                role: "system".into(),
                content: s.replace("{labels}", &labels_text),
            });
        }
        // `{text}` last, so a document containing "{labels}" stays as it is
        let user = self
            .user
            .replace("{labels}", &labels_text)
            .replace("{text}", text);
        out.push(ChatMessage {
            role: "user".into(),
            content: user,
        });
        out
    }
}

/// The label an answer names: the `label` field of a JSON object in it (case
/// and surrounding space ignored), else the label found earliest in the text
/// as a whole word (the longer one on a tie); `None` if neither.
pub fn parse_label(answer: &str, labels: &[String]) -> Option<String> {
    let trimmed = answer.trim();
    let json_part = match (trimmed.find('{'), trimmed.rfind('}')) {
        (Some(a), Some(b)) if a < b => Some(&trimmed[a..=b]),
        _ => None,
    };
    if let Some(Ok(Json::Object(o))) = json_part.map(serde_json::from_str::<Json>) {
        if let Some(l) = o.get("label").and_then(|l| l.as_str()) {
            let l = l.trim().to_lowercase();
            return labels.iter().find(|x| x.to_lowercase() == l).cloned();
        }
    }
    let lower = answer.to_lowercase();
    let mut best: Option<(usize, usize, &String)> = None;
    for label in labels {
        let needle = label.to_lowercase();
        if needle.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&needle) {
            let start = from + pos;
            let end = start + needle.len();
            let before_ok = lower[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric());
            let after_ok = lower[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric());
            if before_ok && after_ok {
                let better = match best {
                    None => true,
                    Some((bs, bl, _)) => start < bs || (start == bs && needle.len() > bl),
                };
                if better {
                    best = Some((start, needle.len(), label));
                }
                break;
            }
            from = start + needle.len().max(1);
            while !lower.is_char_boundary(from) {
                from += 1;
            }
        }
    }
    best.map(|b| b.2.clone())
}
