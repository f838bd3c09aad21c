//! The chat backend a run asks, from the op's params, and the count of
//! documents whose request failed.

use super::*;

pub(super) fn backend_from(p: &AnnotateParams) -> OpResult<Arc<dyn ChatBackend>> {
    match p.backend {
        Backend::Openai => {
            if p.model.is_empty() {
                return Err(miette!(
                    "parameter `model`: the openai backend needs the model's name as a string"
                ));
            }
            // The declared range allows 0; a request needs some time.
            if p.timeout_s <= 0.0 {
                return Err(miette!("parameter `timeout_s`: must be > 0"));
            }
            let settings = OpenAiSettings {
                base_url: p.base_url.clone(),
                model: p.model.clone(),
                api_key_env: p.api_key_env.clone(),
                concurrency: p.concurrency,
                retries: p.retries,
                backoff: Duration::from_secs_f64(p.backoff_s),
                timeout: Duration::from_secs_f64(p.timeout_s),
                json_schema: p.json_schema,
            };
            Ok(Arc::new(
                OpenAiBackend::new(settings).map_err(|e| miette!("annotate: {e}"))?,
            ))
        }
        Backend::Local => {
            if p.model.is_empty() {
                return Err(miette!(
                    "parameter `model`: the local backend needs a model directory"
                ));
            }
            Ok(shared_local(Path::new(&p.model))
                .map_err(|e| miette!("annotate: cannot load the local model: {e}"))?)
        }
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
