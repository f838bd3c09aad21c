//! The chat backend a run asks, from the op's params, and the count of
//! documents whose request failed.

use super::*;

pub(super) fn backend_from(ctx: &OpContext) -> OpResult<Arc<dyn ChatBackend>> {
    let model = ctx.value("model")?;
    match ctx.str("backend")? {
        "openai" => {
            let name = match model {
                Value::Str(s) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(miette!(
                        "parameter `model`: the openai backend needs the model's name as a string"
                    ))
                }
            };
            let timeout = ctx.float("timeout_s")?;
            let backoff = ctx.float("backoff_s")?;
            if timeout <= 0.0 || backoff < 0.0 {
                return Err(miette!(
                    "parameters `timeout_s` (> 0) and `backoff_s` (>= 0) are out of range"
                ));
            }
            let settings = OpenAiSettings {
                base_url: ctx.str("base_url")?.to_string(),
                model: name,
                api_key_env: ctx.str("api_key_env")?.to_string(),
                concurrency: ctx.int("concurrency")?.clamp(1, 256) as usize,
                retries: ctx.int("retries")?.clamp(0, 20) as u32,
                backoff: Duration::from_secs_f64(backoff),
                timeout: Duration::from_secs_f64(timeout),
                json_schema: ctx.bool("json_schema")?,
            };
            Ok(Arc::new(
                OpenAiBackend::new(settings).map_err(|e| miette!("annotate: {e}"))?,
            ))
        }
        "local" => {
            let dir = match model {
                Value::Path(p) => p.clone(),
                Value::Str(s) if !s.is_empty() => PathBuf::from(s),
                _ => {
                    return Err(miette!(
                        "parameter `model`: the local backend needs a model directory"
                    ))
                }
            };
            Ok(shared_local(&dir)
                .map_err(|e| miette!("annotate: cannot load the local model: {e}"))?)
        }
        other => Err(miette!(
            "parameter `backend`: expected \"openai\" or \"local\", got {other:?}"
        )),
    }
}

/// The local model of `dir`, loaded once for the shard tasks of a unit
/// that run at the same time in one process (a local run's threads): they
/// share it while any holds it, and it is freed with the last.
fn shared_local(dir: &Path) -> Result<Arc<LocalBackend>, String> {
    static LOADED: std::sync::Mutex<Vec<(PathBuf, std::sync::Weak<LocalBackend>)>> =
        std::sync::Mutex::new(Vec::new());
    // Held while loading, so that tasks starting together load it once.
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    loaded.retain(|(_, w)| w.strong_count() > 0);
    if let Some(b) = loaded
        .iter()
        .find(|(d, _)| d == dir)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(b);
    }
    let backend = Arc::new(LocalBackend::load(dir)?);
    loaded.push((dir.to_path_buf(), Arc::downgrade(&backend)));
    Ok(backend)
}

/// Documents whose request failed.
#[derive(Default)]
pub(super) struct Failures {
    pub(super) count: u64,
    /// Up to 20 `{id, class, status}`: no server text, which may echo the
    /// key or the document.
    pub(super) examples: Vec<Json>,
}

/// Failed requests whose message goes into the log (the rest are counted).
pub(super) const LOGGED_FAILURES: u64 = 5;

impl Failures {
    /// Counts one failed document and logs it (the first few); returns why
    /// the run must stop, if it must.
    pub(super) fn record(
        &mut self,
        ctx: &OpContext,
        id: &str,
        error: &ChatError,
        max_failures: u64,
    ) -> Option<String> {
        self.count += 1;
        if self.examples.len() < 20 {
            let mut record = error.to_record();
            record["id"] = json!(id);
            self.examples.push(record);
        }
        if self.count <= LOGGED_FAILURES {
            // the backend redacted the key from this text
            ctx.log(&format!("document {id}: {error}"));
        }
        if error.is_unauthorized() {
            Some(format!("document {id}: {error}"))
        } else if self.count > max_failures {
            Some(format!(
                "{} documents failed, more than max_failures = {max_failures}; the last, document {id}: {error}",
                self.count
            ))
        } else {
            None
        }
    }
}
