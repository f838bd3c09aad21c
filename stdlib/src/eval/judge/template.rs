//! The judge's prompt template and the schema of its answer.

use super::*;

/// The built-in template: the judge prompt of the training-dynamics paper
/// (004, Figure 4), verbatim, schema block included. The file is
/// `prompts/judge_pairwise.yaml`; pass it (or an edited copy) as `template`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../../prompts/judge_pairwise.yaml");

/// The JSON schema of a judge's answer.
pub fn answer_schema() -> Json {
    json!({
        "type": "object",
        "properties": {"winner": {"type": "string", "enum": ["A", "B", "0"], "description": "The better response: 'A', 'B', or '0' for a tie."}},
        "required": ["winner"],
        "additionalProperties": false
    })
}

/// A parsed judge template.
pub struct JudgeTemplate {
    env: minijinja::Environment<'static>,
    roles: Vec<String>,
}

impl JudgeTemplate {
    /// Parses YAML/JSON text `{messages: [{role, content}]}`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> OpResult<JudgeTemplate> {
        let v: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| miette!("{origin}: not valid YAML: {e}"))?;
        let msgs = v
            .get("messages")
            .and_then(|m| m.as_sequence())
            .ok_or_else(|| miette!(help = "a template is {messages: [{role: system, content: ...}, {role: user, content: ...}]}", "{origin}: no `messages` list"))?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        let mut roles = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let role = m
                .get("role")
                .and_then(|r| r.as_str())
                .ok_or_else(|| miette!("{origin}: message {i} has no string `role`"))?;
            let content = m
                .get("content")
                .and_then(|r| r.as_str())
                .ok_or_else(|| miette!("{origin}: message {i} has no string `content`"))?;
            env.add_template_owned(format!("m{i}"), content.to_owned())
                .map_err(|e| miette!("{origin}: message {i}: template error: {e}"))?;
            roles.push(role.to_owned());
        }
        Ok(JudgeTemplate { env, roles })
    }

    /// The chat for one comparison.
    pub fn render(
        &self,
        item: &ResponseItem,
        response_a: &str,
        response_b: &str,
    ) -> Result<Vec<ChatMessage>, String> {
        let context: Vec<Json> = item
            .context
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let ctx = minijinja::context! {
            query => item.prompt,
            response_a => response_a,
            response_b => response_b,
            context => context,
        };
        self.roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let t = self
                    .env
                    .get_template(&format!("m{i}"))
                    .map_err(|e| e.to_string())?;
                let content = t
                    .render(&ctx)
                    .map_err(|e| format!("rendering message {i}: {e}"))?;
                Ok(ChatMessage {
                    role: role.clone(),
                    content,
                })
            })
            .collect()
    }
}
