//! `tokenizer.json` (through the `tokenizers` crate) and the chat template.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{read_to_string, ModelError};

/// A Hugging Face fast tokenizer loaded from `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `model_dir/tokenizer.json`.
    pub fn load(model_dir: &Path) -> Result<Self, ModelError> {
        let path = model_dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(ModelError::invalid(
                &path,
                "no tokenizer: the model directory must contain tokenizer.json (a Hugging Face fast tokenizer)",
            ));
        }
        let mut inner = guarded(&path, "read", || tokenizers::Tokenizer::from_file(&path))?;
        // Lengths are the runtime's business (packing, context checks):
        // tokenizer-level truncation would drop text silently, and a
        // malformed setting panics (stride >= max_length) or asks for
        // terabytes (`Fixed` padding) inside the tokenizers crate.
        inner
            .with_truncation(None)
            .map_err(|e| ModelError::invalid(&path, format!("cannot read the tokenizer: {e}")))?;
        inner.with_padding(None);
        Ok(Tokenizer { inner, path })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g. BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let enc = guarded(&self.path, "encode a text with", || {
            self.inner.encode(text, add_special_tokens)
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; ids outside the vocabulary are an error.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        let n = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary (size {n})"
            )));
        }
        guarded(&self.path, "decode tokens with", || {
            self.inner.decode(ids, skip_special_tokens)
        })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` object (truncation and padding off).
    pub(crate) fn into_inner(self) -> tokenizers::Tokenizer {
        self.inner
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Runs a call into the tokenizers crate, which panics on some malformed
/// `tokenizer.json` files (a post-processor naming a token it does not
/// define, say): an error or a panic becomes an error naming the file.
pub(crate) fn guarded<T>(
    path: &Path,
    what: &str,
    call: impl FnOnce() -> tokenizers::Result<T>,
) -> Result<T, ModelError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ModelError::invalid(
            path,
            format!("cannot {what} the tokenizer: {e}"),
        )),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ModelError::invalid(
                path,
                format!(
                    "cannot {what} the tokenizer: the tokenizers crate failed on this file ({message}); \
                     check the file against the model's original tokenizer.json"
                ),
            ))
        }
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A model's Jinja chat template, rendered as transformers' `apply_chat_template` does.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    source_path: PathBuf,
}

/// `bos_token` in tokenizer_config.json is a string or an AddedToken object `{content: ...}`.
fn special_token(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// Finds the template: `chat_template.jinja`, else `chat_template` in tokenizer_config.json
    /// (a string, or a list of `{name, template}` of which `default` is used).
    pub fn load(model_dir: &Path) -> Result<Self, ModelError> {
        let tc_path = model_dir.join("tokenizer_config.json");
        let tc: serde_json::Map<String, Value> = if tc_path.is_file() {
            serde_json::from_str(&read_to_string(&tc_path)?)
                .map_err(|e| ModelError::invalid(&tc_path, format!("not valid JSON: {e}")))?
        } else {
            Default::default()
        };
        let jinja_path = model_dir.join("chat_template.jinja");
        let (source, source_path) = if jinja_path.is_file() {
            (read_to_string(&jinja_path)?, jinja_path)
        } else {
            let t = match tc.get("chat_template") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(list)) => {
                    let pick = list
                        .iter()
                        .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"))
                        .or_else(|| list.first());
                    pick.and_then(|e| e.get("template")).and_then(|t| t.as_str()).map(str::to_string).ok_or_else(
                        || ModelError::invalid(&tc_path, "`chat_template` list has no {name, template} entry"),
                    )?
                }
                _ => {
                    return Err(ModelError::invalid(
                        model_dir,
                        "no chat template: expected chat_template.jinja or `chat_template` in tokenizer_config.json",
                    ))
                }
            };
            (t, tc_path.clone())
        };
        ChatTemplate::from_source(
            source,
            special_token(tc.get("bos_token")),
            special_token(tc.get("eos_token")),
            source_path,
        )
    }

    /// A template from its Jinja source; `origin` names it in errors.
    pub fn from_source(
        source: String,
        bos_token: String,
        eos_token: String,
        origin: PathBuf,
    ) -> Result<Self, ModelError> {
        let mut env = minijinja::Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks on
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source).map_err(|e| {
            ModelError::invalid(&origin, format!("chat template does not parse: {e}"))
        })?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
            source_path: origin,
        })
    }

    /// The prompt text for `messages`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let tmpl = self.env.get_template("chat").expect("added in load");
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        };
        tmpl.render(ctx).map_err(|e| {
            ModelError::invalid(
                &self.source_path,
                format!("rendering the chat template: {e}"),
            )
        })
    }
}

/// Copies tokenizer.json, tokenizer_config.json, chat_template.jinja,
/// special_tokens_map.json and generation_config.json when present.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(to).map_err(|e| ModelError::io(to, e))?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| ModelError::io(&src, e))?;
            crate::error::write_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Ids of `<|im_end|>`-style stop tokens found in `tokenizer.json`'s added tokens.
pub(crate) fn chat_stop_ids(model_dir: &Path) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(model_dir.join("tokenizer.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    let Some(list) = v.get("added_tokens").and_then(|a| a.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .filter(|t| t.get("content").and_then(|c| c.as_str()) == Some("<|im_end|>"))
        .filter_map(|t| t.get("id").and_then(|i| i.as_u64()).map(|i| i as u32))
        .collect()
}
