//! `method: "embed"`: a logistic head on a decoder model's mean final
//! hidden state, trained full-batch by Adam (500 steps, L2 1e-4).

use std::path::Path;

use miette::{miette, IntoDiagnostic, WrapErr};

use super::super::corpus::write_bytes_atomic;
use super::{read_f32, sigmoid, ClassifierInfo, Common, EmbedFacts, MethodFacts, Split};
use crate::op::{OpContext, OpResult, Outputs};

/// A logistic head on a model's mean final hidden state.
pub struct EmbedModel {
    pub model: flow_model::Model,
    pub tokenizer: flow_model::Tokenizer,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Tokens of a document that are embedded (its beginning).
    pub max_tokens: usize,
}

impl EmbedModel {
    /// The features of `text`: the mean hidden state of its first `max_tokens` tokens.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut ids = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| e.to_string())?;
        ids.truncate(self.max_tokens);
        if ids.is_empty() {
            return Err("the document has no tokens".into());
        }
        let h = self.model.mean_hidden_state(&ids);
        if h.len() != self.model.config.hidden_size {
            return Err("the model could not embed the document (invalid tokens?)".into());
        }
        Ok(h)
    }

    pub fn logit(&self, text: &str) -> Result<f32, String> {
        let h = self.embed(text)?;
        Ok(self.bias + h.iter().zip(&self.weights).map(|(a, b)| a * b).sum::<f32>())
    }
}

fn model_dir_of(dir: &str) -> OpResult<std::path::PathBuf> {
    if dir.is_empty() {
        return Err(miette!(
            "parameter `model`: method \"embed\" needs a model directory"
        ));
    }
    Ok(dir.into())
}

fn load_embedder(
    dir: &Path,
    weights: Vec<f32>,
    bias: f32,
    max_tokens: usize,
) -> OpResult<EmbedModel> {
    let model = flow_model::Model::load(dir)
        .map_err(|e| miette!("cannot load the embedding model: {e}"))?;
    let tokenizer =
        flow_model::Tokenizer::load(dir).map_err(|e| miette!("cannot load the tokenizer: {e}"))?;
    Ok(EmbedModel {
        model,
        tokenizer,
        weights,
        bias,
        max_tokens,
    })
}

/// Where an embed classifier keeps its model, inside its own directory.
const MODEL_DIR: &str = "model";

/// Loads the embed classifier of `dir`. Its model is in `dir/model`
/// (classifier.json's `model_dir`, relative); one trained before the
/// classifier held its model names an absolute directory instead.
pub(super) fn load(dir: &Path, info: &ClassifierInfo) -> OpResult<EmbedModel> {
    let model_dir = info
        .model_dir
        .clone()
        .ok_or_else(|| miette!("classifier.json: embed classifier without model_dir"))?;
    let weights = read_f32(&dir.join(&info.weights_file))?;
    let m = load_embedder(
        &dir.join(model_dir),
        weights,
        info.bias as f32,
        info.max_tokens.unwrap_or(512),
    )?;
    if m.weights.len() != m.model.config.hidden_size {
        return Err(miette!(
            "{}: {} weights for hidden size {}",
            dir.display(),
            m.weights.len(),
            m.model.config.hidden_size
        ));
    }
    Ok(m)
}

/// `method: "embed"`: a logistic head on the model's mean hidden state,
/// trained full-batch by Adam (500 steps, L2 1e-4) on the train split.
pub(super) fn train_embed(ctx: &OpContext, common: &Common) -> OpResult<Outputs> {
    let dir = model_dir_of(&common.params.model)?;
    let dir = dir
        .canonicalize()
        .into_diagnostic()
        .wrap_err_with(|| format!("model directory {} not found", dir.display()))?;
    let max_tokens = common.params.max_tokens;
    let mut embedder = load_embedder(&dir, Vec::new(), 0.0, max_tokens)?;
    let hidden = embedder.model.config.hidden_size;
    let (docs, missing) = common.labelled_docs(ctx)?;
    let mut examples: Vec<(Split, Vec<f32>, bool)> = Vec::new();
    let mut failed = 0u64;
    ctx.progress.set_total(docs.len() as u64, "documents");
    for (id, text, split, y) in &docs {
        ctx.check_cancelled()?;
        match embedder.embed(text) {
            Ok(h) => examples.push((*split, h, *y)),
            Err(e) => {
                failed += 1;
                ctx.log(&format!("document {id}: {e} (left out)"));
            }
        }
        ctx.progress.inc(1);
    }
    let train: Vec<&(Split, Vec<f32>, bool)> =
        examples.iter().filter(|e| e.0 == Split::Train).collect();
    if train.is_empty() {
        return Err(miette!("no training document could be embedded"));
    }
    let (mut w, mut b) = (vec![0f32; hidden], 0f32);
    let (mut m, mut v) = (vec![0f32; hidden + 1], vec![0f32; hidden + 1]);
    let (lr, b1, b2, l2) = (0.05f32, 0.9f32, 0.999f32, 1e-4f32);
    for step in 1..=500i32 {
        let mut g = vec![0f32; hidden + 1];
        for (_, x, y) in &train {
            let z = b + x.iter().zip(&w).map(|(a, c)| a * c).sum::<f32>();
            let d = sigmoid(z) - if *y { 1.0 } else { 0.0 };
            for (gi, xi) in g.iter_mut().zip(x) {
                *gi += d * xi;
            }
            g[hidden] += d;
        }
        let n = train.len() as f32;
        for i in 0..=hidden {
            let reg = if i < hidden { l2 * w[i] } else { 0.0 };
            let gi = g[i] / n + reg;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let upd = lr * (m[i] / (1.0 - b1.powi(step)))
                / ((v[i] / (1.0 - b2.powi(step))).sqrt() + 1e-8);
            if i < hidden {
                w[i] -= upd;
            } else {
                b -= upd;
            }
        }
    }
    embedder.weights = w;
    embedder.bias = b;
    let scored: Vec<(Split, f32, bool)> = examples
        .iter()
        .map(|(s, x, y)| {
            let z = b + x
                .iter()
                .zip(&embedder.weights)
                .map(|(a, c)| a * c)
                .sum::<f32>();
            (*s, sigmoid(z), *y)
        })
        .collect();
    let bytes: Vec<u8> = embedder
        .weights
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_bytes_atomic(&ctx.out_dir.join("weights.f32"), &bytes)?;
    // The classifier holds a copy of its model: a path to the model's
    // directory would leave the artifact broken when the cache moves, and
    // `filter`'s key, which holds the classifier's content, would not
    // change with the model's.
    copy_model_files(&dir, &ctx.out_dir.join(MODEL_DIR))?;
    let info = ClassifierInfo {
        method: "embed".into(),
        bias: b as f64,
        weights_file: "weights.f32".into(),
        epochs: 500,
        seed: common.seed,
        model_dir: Some(MODEL_DIR.into()),
        max_tokens: Some(max_tokens),
        training: Some(MethodFacts::Embed(EmbedFacts {
            embedding_failures: failed,
            labelled_ids_not_in_corpus: missing,
        })),
        ..common.info()
    };
    common.finish(ctx, &scored, info)
}

/// Copies the files of model directory `from` into `to`: the weights,
/// config and tokenizer files a model directory holds at its top level;
/// its subdirectories are not part of the model. A copy, not a hard link:
/// the source may be the user's directory, and a file edited there in
/// place would change the artifact under its hash. (Linux copies with
/// `copy_file_range`, which shares the blocks on copy-on-write file
/// systems.)
fn copy_model_files(from: &Path, to: &Path) -> OpResult<()> {
    std::fs::create_dir_all(to)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", to.display()))?;
    let entries = std::fs::read_dir(from)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot list model directory {}", from.display()))?;
    for entry in entries {
        let entry = entry.into_diagnostic()?;
        if entry.file_type().into_diagnostic()?.is_file() {
            let target = to.join(entry.file_name());
            std::fs::copy(entry.path(), &target)
                .into_diagnostic()
                .wrap_err_with(|| {
                    format!(
                        "cannot copy {} to {}",
                        entry.path().display(),
                        target.display()
                    )
                })?;
        }
    }
    Ok(())
}
