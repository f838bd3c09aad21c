//! The chat backend a run asks, from the op's params, and the count of
//! documents whose request failed.

use super::*;

use std::sync::{Mutex, Weak};

use crate::model::runtime::WeightDtype;
use crate::op::Device;

pub(super) fn backend_from(p: &AnnotateParams, ctx: &OpContext) -> OpResult<Arc<dyn ChatBackend>> {
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
            let dir = Path::new(&p.model);
            Ok(shared_local(dir, &ctx.input_name(dir), p.dtype, ctx)
                .map_err(|e| miette!("annotate: cannot load the local model: {e}"))?)
        }
    }
}

/// The local model of `dir` (named `name` in results), loaded once for the shard tasks of a unit
/// that run at the same time in one process (a local run's threads): they
/// share it while any holds it, and it is freed with the last.
///
/// The registry's lock is never held while a model loads: loading runs
/// rayon work (the weights are converted in parallel), and a task blocked
/// on the lock inside a rayon worker would keep that work from running, a
/// deadlock two tests sharing the global pool once hit. A task that finds
/// another loading the same directory runs pending rayon work while it waits.
fn shared_local(
    dir: &Path,
    name: &str,
    dtype: WeightDtype,
    ctx: &OpContext,
) -> Result<Arc<LocalBackend>, String> {
    enum Entry {
        Loading,
        Loaded(Weak<LocalBackend>),
    }
    /// A loaded model: its directory, its name in results, its device, its weights' type.
    type Id = (PathBuf, String, Device, WeightDtype);
    static REGISTRY: Mutex<Vec<(Id, Entry)>> = Mutex::new(Vec::new());
    let registry = || REGISTRY.lock().unwrap_or_else(|e| e.into_inner());

    /// Takes the `Loading` mark away however the load ends (a panic included).
    struct LoadingMark<'a>(&'a Id);
    impl Drop for LoadingMark<'_> {
        fn drop(&mut self) {
            REGISTRY
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(d, e)| !(d == self.0 && matches!(e, Entry::Loading)));
        }
    }
    let id = (dir.to_path_buf(), name.to_owned(), ctx.device, dtype);

    loop {
        {
            let mut entries = registry();
            entries.retain(|(_, e)| match e {
                Entry::Loading => true,
                Entry::Loaded(w) => w.strong_count() > 0,
            });
            match entries.iter().find(|(d, _)| *d == id).map(|(_, e)| e) {
                Some(Entry::Loaded(w)) => {
                    if let Some(b) = w.upgrade() {
                        return Ok(b);
                    }
                }
                Some(Entry::Loading) => {}
                None => {
                    entries.push((id.clone(), Entry::Loading));
                    drop(entries);
                    // On an error or a panic the mark's drop frees the directory.
                    let mark = LoadingMark(&id);
                    let model = crate::model::runtime::load_for(ctx, dir, dtype)?;
                    let backend = Arc::new(LocalBackend::new(model, name.to_owned())?);
                    let mut entries = registry();
                    if let Some((_, e)) = entries
                        .iter_mut()
                        .find(|(d, e)| *d == id && matches!(e, Entry::Loading))
                    {
                        *e = Entry::Loaded(Arc::downgrade(&backend));
                    }
                    drop(entries);
                    std::mem::forget(mark);
                    return Ok(backend);
                }
            }
        }
        if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Documents whose request failed.
#[derive(Default)]
pub(super) struct Failures {
    pub(super) count: u64,
    /// Up to 20 `{id, class, status}`: no server text, which may echo the
    /// key or the document.
    pub(super) examples: Vec<FailedRequest>,
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
            self.examples.push(error.failed_request(id));
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
