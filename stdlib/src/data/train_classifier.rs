//! `train_classifier`: a binary document classifier trained on labels
//! (from `annotate`, or a label file) over a corpus.
//!
//! `method: "ngram"` is fastText-like: hashed word unigrams and bigrams plus
//! character 3- to 5-grams of each word (with `<`, `>` boundary marks), the
//! document vector being the mean of its features' weights, a logistic output,
//! trained by SGD. It scores a 3,000-character document in tens of
//! microseconds on one core. `method: "embed"` (a logistic head on the
//! model's mean hidden state) waits for the model runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::agreement::{majority, read_labels, Prf};
use super::corpus::{corpus_shards, for_each_doc, write_bytes_atomic, write_json_atomic};
use super::sample::sample_score;
use crate::op::{Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(TrainClassifier)]
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Fibonacci hashing: the top `bits` bits of h × 2^64/φ, one multiply, and
/// every input bit reaches the bucket.
#[inline(always)]
fn bucket(h: u64, shift: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// The feature hashing of the n-gram classifier.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NgramFeatures {
    /// Number of hash buckets (a power of two).
    pub buckets: u32,
    /// Word n-grams up to this length (1 or 2).
    pub word_ngrams: u32,
    /// Character n-gram lengths inside `<word>`; `char_min` 0 disables them.
    pub char_min: u32,
    pub char_max: u32,
}

impl NgramFeatures {
    /// Calls `emit(bucket)` for every feature of `text`. Words are maximal
    /// runs of letters and digits (bytes >= 0x80 count as letters, so UTF-8
    /// umlauts stay inside words); ASCII is lower-cased.
    #[inline]
    pub fn for_each(&self, text: &str, mut emit: impl FnMut(usize)) {
        // buckets is a power of two >= 2: the top log2(buckets) bits
        let shift = 64 - self.buckets.trailing_zeros();
        let bytes = text.as_bytes();
        let mut word = [0u8; 66];
        let mut prev_word: u64 = 0;
        let mut have_prev = false;
        let mut i = 0;
        let n = bytes.len();
        while i < n {
            while i < n && !is_word_byte(bytes[i]) {
                i += 1;
            }
            if i >= n {
                break;
            }
            let start = i;
            while i < n && is_word_byte(bytes[i]) {
                i += 1;
            }
            // the word, lower-cased, with boundary marks, clipped to 64 bytes
            let len = (i - start).min(64);
            word[0] = b'<';
            for k in 0..len {
                word[k + 1] = bytes[start + k].to_ascii_lowercase();
            }
            word[len + 1] = b'>';
            let w = &word[..len + 2];
            let mut h = FNV_OFFSET;
            for &b in &w[1..len + 1] {
                h = (h ^ b as u64).wrapping_mul(FNV_PRIME);
            }
            emit(bucket(h, shift));
            if self.word_ngrams >= 2 && have_prev {
                emit(bucket(
                    prev_word.rotate_left(23).wrapping_mul(FNV_PRIME) ^ h ^ 0x5bd1_e995,
                    shift,
                ));
            }
            prev_word = h;
            have_prev = true;
            if self.char_min > 0 {
                let (lo, hi) = (self.char_min as usize, self.char_max as usize);
                let wl = w.len();
                for s in 0..wl.saturating_sub(lo - 1) {
                    let mut g = 0x84222325u64 ^ 0xabcd;
                    let end = (s + hi).min(wl);
                    for (k, &b) in w[s..end].iter().enumerate() {
                        g = (g ^ b as u64).wrapping_mul(FNV_PRIME);
                        if k + 1 >= lo {
                            emit(bucket(g ^ ((k as u64 + 1) << 56), shift));
                        }
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// A trained n-gram classifier: features, weights and the decision threshold.
#[derive(Clone, Debug)]
pub struct NgramModel {
    pub features: NgramFeatures,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl NgramModel {
    /// The logit of `text` being positive.
    #[inline]
    pub fn logit(&self, text: &str) -> f32 {
        let mut sum = 0f32;
        let mut count = 0u32;
        let w = &self.weights[..];
        self.features.for_each(text, |b| {
            // `b` is masked to the bucket count, which equals w.len()
            sum += w[b];
            count += 1;
        });
        self.bias + if count > 0 { sum / count as f32 } else { 0.0 }
    }

    /// The probability of `text` being positive.
    pub fn score(&self, text: &str) -> f32 {
        sigmoid(self.logit(text))
    }
}

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

/// A trained classifier of either method.
pub enum Classifier {
    Ngram(NgramModel),
    Embed(Box<EmbedModel>),
}

impl Classifier {
    /// The probability of `text` being positive; an error only for `embed`
    /// (a document the tokenizer or model cannot take).
    pub fn score(&self, text: &str) -> Result<f32, String> {
        match self {
            Classifier::Ngram(m) => Ok(m.score(text)),
            Classifier::Embed(m) => m.logit(text).map(sigmoid),
        }
    }
}

fn model_dir_of(v: &Value) -> OpResult<std::path::PathBuf> {
    match v {
        Value::Path(p) => Ok(p.clone()),
        Value::Str(s) if !s.is_empty() => Ok(s.into()),
        _ => Err(miette!(
            "parameter `model`: method \"embed\" needs a model directory"
        )),
    }
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

pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// What `classifier.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub method: String,
    pub positive: String,
    pub threshold: f64,
    pub features: Option<NgramFeatures>,
    pub bias: f32,
    /// File holding the weights (little-endian f32), relative to the directory.
    pub weights_file: String,
    pub train_documents: usize,
    pub valid_documents: usize,
    pub valid_positive: usize,
    pub threshold_rule: String,
    pub valid: Prf,
    pub valid_at_half: Prf,
    pub epochs: u32,
    pub seed: u64,
    /// `embed`: the model directory and the tokens embedded per document.
    #[serde(default)]
    pub model_dir: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

fn read_f32(path: &Path) -> OpResult<Vec<f32>> {
    let bytes = std::fs::read(path)
        .into_diagnostic()
        .wrap_err("cannot read classifier weights")?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Loads a classifier directory written by `train_classifier` (either method).
pub fn load_any_classifier(dir: &Path) -> OpResult<(ClassifierInfo, Classifier)> {
    let text = std::fs::read_to_string(dir.join("classifier.json"))
        .into_diagnostic()
        .wrap_err_with(|| format!("{} is not a train_classifier artifact", dir.display()))?;
    let info: ClassifierInfo = serde_json::from_str(&text)
        .into_diagnostic()
        .wrap_err("classifier.json is malformed")?;
    if info.method == "embed" {
        let model_dir = info
            .model_dir
            .clone()
            .ok_or_else(|| miette!("classifier.json: embed classifier without model_dir"))?;
        let weights = read_f32(&dir.join(&info.weights_file))?;
        let m = load_embedder(
            Path::new(&model_dir),
            weights,
            info.bias,
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
        return Ok((info, Classifier::Embed(Box::new(m))));
    }
    let (info, m) = load_classifier(dir)?;
    Ok((info, Classifier::Ngram(m)))
}

/// Loads an n-gram classifier directory written by `train_classifier`.
pub fn load_classifier(dir: &Path) -> OpResult<(ClassifierInfo, NgramModel)> {
    let info_path = dir.join("classifier.json");
    let info: ClassifierInfo = serde_json::from_str(
        &std::fs::read_to_string(&info_path)
            .into_diagnostic()
            .wrap_err_with(|| format!("{} is not a train_classifier artifact", dir.display()))?,
    )
    .into_diagnostic()
    .wrap_err_with(|| format!("{}: malformed", info_path.display()))?;
    let Some(features) = info.features.clone() else {
        return Err(miette!(
            "{}: method {:?} has no n-gram features",
            info_path.display(),
            info.method
        ));
    };
    let bytes = std::fs::read(dir.join(&info.weights_file))
        .into_diagnostic()
        .wrap_err("cannot read classifier weights")?;
    if bytes.len() != features.buckets as usize * 4 || !features.buckets.is_power_of_two() {
        return Err(miette!(
            "{}: weights file has {} bytes, expected {} buckets × 4",
            dir.display(),
            bytes.len(),
            features.buckets
        ));
    }
    let weights = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let bias = info.bias;
    Ok((
        info,
        NgramModel {
            features,
            weights,
            bias,
        },
    ))
}

/// Chooses the threshold on (score, is positive) pairs: the one maximising
/// F1, or with `target_precision` > 0 the lowest one whose precision reaches
/// it (most recall). Candidates are the scores themselves.
pub fn choose_threshold(scored: &[(f32, bool)], target_precision: f64) -> (f64, Prf) {
    let mut cands: Vec<f32> = scored.iter().map(|s| s.0).collect();
    cands.sort_by(|a, b| a.total_cmp(b));
    cands.dedup();
    let eval = |t: f32| Prf::from_pairs(scored.iter().map(|&(s, y)| (s >= t, y)));
    let mut best: Option<(f64, Prf)> = None;
    for &t in &cands {
        let p = eval(t);
        let better = match &best {
            None => target_precision <= 0.0 || p.precision >= target_precision,
            Some((_, b)) if target_precision > 0.0 => {
                p.precision >= target_precision && p.recall > b.recall
            }
            Some((_, b)) => p.f1 > b.f1,
        };
        if better {
            best = Some((t as f64, p));
        }
    }
    best.unwrap_or_else(|| (1.0, eval(1.0 + f32::EPSILON)))
}

/// The `train_classifier` op.
pub struct TrainClassifier;

impl Op for TrainClassifier {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "train_classifier",
            version: 1,
            doc: "Trains a binary document classifier (positive label vs the rest) on labelled documents of a corpus; writes classifier.json (threshold, validation precision/recall/F1) and the weights.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact holding the labelled documents' texts"),
                Param::required("labels", Type::Either(Box::new(Type::Dir), Box::new(Type::File)), "an annotate artifact, or a label file (CSV/JSONL: id, label[, annotator]; several annotators → majority vote)"),
                Param::required("positive", Type::Str, "the positive label"),
                Param::optional("method", Type::Enum(vec!["ngram".into(), "embed".into()]), Value::Str("ngram".into()), "ngram: hashed word/char n-grams + logistic regression; embed: model mean hidden state + logistic head"),
                Param::optional("model", Type::Any, Value::Str(String::new()), "model directory for method embed"),
                Param::optional("max_tokens", Type::Int, Value::Int(512), "embed: tokens of each document embedded (its beginning)"),
                Param::optional("valid_fraction", Type::Float, Value::Float(0.2), "held-out fraction (seeded by id) for threshold and scores"),
                Param::optional("target_precision", Type::Float, Value::Float(0.0), "0: threshold maximising F1; else the lowest threshold reaching this precision"),
                Param::optional("buckets", Type::Int, Value::Int(1 << 18), "hash buckets (power of two)"),
                Param::optional("word_ngrams", Type::Int, Value::Int(2), "word n-grams up to 1 or 2"),
                Param::optional("char_ngrams", Type::List(Box::new(Type::Int)), Value::List(vec![Value::Int(3), Value::Int(5)]), "[min, max] character n-gram length; [0, 0] disables"),
                Param::optional("epochs", Type::Int, Value::Int(20), "SGD epochs"),
                Param::optional("lr", Type::Float, Value::Float(2.0), "initial learning rate (decays linearly to 0)"),
                Param::optional("seed", Type::Int, Value::Int(0), "seed of the split and the SGD order"),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "info", ty: Type::File, doc: "classifier.json" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let positive = ctx.str("positive")?.to_string();
        let seed = ctx.int("seed")? as u64;
        let buckets = ctx.int("buckets")?;
        if buckets < 2 || !(buckets as u64).is_power_of_two() || buckets > (1 << 28) {
            return Err(miette!(
                "parameter `buckets`: expected a power of two between 2 and 2^28, got {buckets}"
            ));
        }
        let chars = ctx.list("char_ngrams")?;
        let (char_min, char_max) = match chars {
            [Value::Int(a), Value::Int(b)] if *a == 0 && *b == 0 => (0, 0),
            [Value::Int(a), Value::Int(b)] if 1 <= *a && a <= b && *b <= 8 => {
                (*a as u32, *b as u32)
            }
            _ => {
                return Err(miette!(
                "parameter `char_ngrams`: expected [min, max] with 1 <= min <= max <= 8, or [0, 0]"
            ))
            }
        };
        let features = NgramFeatures {
            buckets: buckets as u32,
            word_ngrams: ctx.int("word_ngrams")?.clamp(1, 2) as u32,
            char_min,
            char_max,
        };

        let labels_path = match ctx.value("labels")? {
            Value::Path(p) => p.clone(),
            other => {
                return Err(miette!(
                    "parameter `labels`: expected a path, got {}",
                    other.kind()
                ))
            }
        };
        let (rows, unlabelled) = read_labels(&labels_path)?;
        let labels: HashMap<String, bool> = majority(&rows)
            .into_iter()
            .filter_map(|(id, l)| Some((id, l? == positive)))
            .collect();
        if !labels.values().any(|&y| y) || !labels.values().any(|&y| !y) {
            return Err(miette!(
                help = "check `positive` against the labels in the file",
                "labels need both classes: {} documents labelled, {} as {positive:?}",
                labels.len(),
                labels.values().filter(|&&y| y).count()
            ));
        }
        if ctx.str("method")? == "embed" {
            return train_embed(ctx, &labels, positive, seed, unlabelled);
        }
        // collect the labelled texts' features
        let mut examples: Vec<(String, Vec<u32>, bool)> = Vec::with_capacity(labels.len());
        for shard in corpus_shards(ctx.path("corpus")?)? {
            ctx.check_cancelled()?;
            for_each_doc(&shard, |doc, _| {
                if let Some(&y) = labels.get(doc.id.as_ref()) {
                    let mut f = Vec::new();
                    features.for_each(&doc.text, |b| f.push(b as u32));
                    examples.push((doc.id.to_string(), f, y));
                }
                Ok(())
            })?;
        }
        let missing = labels.len() - examples.len();
        if missing > 0 {
            ctx.log(&format!("{missing} labelled ids are not in the corpus"));
        }
        let frac = ctx.float("valid_fraction")?.clamp(0.0, 0.9);
        let cut = (frac * u64::MAX as f64) as u64;
        let (valid, train): (Vec<_>, Vec<_>) = examples
            .into_iter()
            .partition(|e| sample_score(seed ^ 0x5eed, &e.0) < cut);
        if train.is_empty() || valid.is_empty() {
            return Err(miette!(
                "too few labelled documents for a split: {} train, {} validation",
                train.len(),
                valid.len()
            ));
        }

        // SGD on the logistic loss of bias + mean(weights[features])
        let mut weights = vec![0f32; features.buckets as usize];
        let mut bias = 0f32;
        let epochs = ctx.int("epochs")?.max(1) as u32;
        let lr0 = ctx.float("lr")? as f32;
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let total = (epochs as usize * train.len()) as f32;
        let mut step = 0f32;
        ctx.progress.set_total(epochs as u64, "epochs");
        for _ in 0..epochs {
            ctx.check_cancelled()?;
            order.shuffle(&mut rng);
            for &i in &order {
                let (_, f, y) = &train[i];
                let lr = lr0 * (1.0 - step / total).max(0.01);
                step += 1.0;
                if f.is_empty() {
                    continue;
                }
                let inv = 1.0 / f.len() as f32;
                let z = bias + f.iter().map(|&b| weights[b as usize]).sum::<f32>() * inv;
                let g = sigmoid(z) - if *y { 1.0 } else { 0.0 };
                bias -= lr * g * 0.1;
                let gw = lr * g * inv * 10.0;
                for &b in f {
                    weights[b as usize] -= gw;
                }
            }
            ctx.progress.inc(1);
        }
        let model = NgramModel {
            features: features.clone(),
            weights,
            bias,
        };
        let score_of = |f: &[u32]| {
            let s: f32 = f.iter().map(|&b| model.weights[b as usize]).sum();
            sigmoid(
                model.bias
                    + if f.is_empty() {
                        0.0
                    } else {
                        s / f.len() as f32
                    },
            )
        };
        let scored: Vec<(f32, bool)> = valid.iter().map(|(_, f, y)| (score_of(f), *y)).collect();
        let target = ctx.float("target_precision")?;
        let (threshold, at_threshold) = choose_threshold(&scored, target);
        let at_half = Prf::from_pairs(scored.iter().map(|&(s, y)| (s >= 0.5, y)));
        let mut weight_bytes = Vec::with_capacity(model.weights.len() * 4);
        for w in &model.weights {
            weight_bytes.extend_from_slice(&w.to_le_bytes());
        }
        write_bytes_atomic(&ctx.out_dir.join("weights.f32"), &weight_bytes)?;
        let info = ClassifierInfo {
            method: "ngram".into(),
            positive,
            threshold,
            features: Some(features),
            bias: model.bias,
            weights_file: "weights.f32".into(),
            train_documents: train.len(),
            valid_documents: valid.len(),
            valid_positive: valid.iter().filter(|e| e.2).count(),
            threshold_rule: if target > 0.0 {
                format!("lowest threshold with validation precision >= {target}")
            } else {
                "maximum validation F1".into()
            },
            valid: at_threshold,
            valid_at_half: at_half,
            epochs,
            seed,
            model_dir: None,
            max_tokens: None,
        };
        let mut json = serde_json::to_value(&info).into_diagnostic()?;
        json["unlabelled_rows"] = unlabelled.into();
        json["labelled_ids_not_in_corpus"] = missing.into();
        write_json_atomic(&ctx.out_dir.join("classifier.json"), &json)?;
        ctx.log(&format!(
            "threshold {:.3}: precision {:.3} recall {:.3} F1 {:.3} on {} held-out documents",
            threshold, info.valid.precision, info.valid.recall, info.valid.f1, info.valid_documents
        ));
        Ok(BTreeMap::from([(
            "info".to_string(),
            Value::Path("classifier.json".into()),
        )]))
    }
}

/// `method: "embed"`: a logistic head on the model's mean hidden state,
/// trained full-batch by Adam (500 steps, L2 1e-4).
fn train_embed(
    ctx: &OpContext,
    labels: &HashMap<String, bool>,
    positive: String,
    seed: u64,
    unlabelled: u64,
) -> OpResult<Outputs> {
    let dir = model_dir_of(ctx.value("model")?)?;
    let dir = dir
        .canonicalize()
        .into_diagnostic()
        .wrap_err_with(|| format!("model directory {} not found", dir.display()))?;
    let max_tokens = ctx.int("max_tokens")?.max(1) as usize;
    let mut embedder = load_embedder(&dir, Vec::new(), 0.0, max_tokens)?;
    let hidden = embedder.model.config.hidden_size;
    let mut examples: Vec<(String, Vec<f32>, bool)> = Vec::new();
    let mut failed = 0u64;
    ctx.progress.set_total(labels.len() as u64, "documents");
    for shard in corpus_shards(ctx.path("corpus")?)? {
        for_each_doc(&shard, |doc, _| {
            if let Some(&y) = labels.get(doc.id.as_ref()) {
                ctx.check_cancelled()?;
                match embedder.embed(&doc.text) {
                    Ok(h) => examples.push((doc.id.to_string(), h, y)),
                    Err(e) => {
                        failed += 1;
                        ctx.log(&format!("document {}: {e}", doc.id));
                    }
                }
                ctx.progress.inc(1);
            }
            Ok(())
        })?;
    }
    let frac = ctx.float("valid_fraction")?.clamp(0.0, 0.9);
    let cut = (frac * u64::MAX as f64) as u64;
    let (valid, train): (Vec<_>, Vec<_>) = examples
        .into_iter()
        .partition(|e| sample_score(seed ^ 0x5eed, &e.0) < cut);
    if train.is_empty() || valid.is_empty() {
        return Err(miette!(
            "too few labelled documents for a split: {} train, {} validation",
            train.len(),
            valid.len()
        ));
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
    let scored: Vec<(f32, bool)> = valid
        .iter()
        .map(|(_, x, y)| {
            (
                sigmoid(
                    b + x
                        .iter()
                        .zip(&embedder.weights)
                        .map(|(a, c)| a * c)
                        .sum::<f32>(),
                ),
                *y,
            )
        })
        .collect();
    let target = ctx.float("target_precision")?;
    let (threshold, at_threshold) = choose_threshold(&scored, target);
    let at_half = Prf::from_pairs(scored.iter().map(|&(s, y)| (s >= 0.5, y)));
    let bytes: Vec<u8> = embedder
        .weights
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_bytes_atomic(&ctx.out_dir.join("weights.f32"), &bytes)?;
    let info = ClassifierInfo {
        method: "embed".into(),
        positive,
        threshold,
        features: None,
        bias: b,
        weights_file: "weights.f32".into(),
        train_documents: train.len(),
        valid_documents: valid.len(),
        valid_positive: valid.iter().filter(|e| e.2).count(),
        threshold_rule: if target > 0.0 {
            format!("lowest threshold with validation precision >= {target}")
        } else {
            "maximum validation F1".into()
        },
        valid: at_threshold,
        valid_at_half: at_half,
        epochs: 500,
        seed,
        model_dir: Some(dir.display().to_string()),
        max_tokens: Some(max_tokens),
    };
    let mut json = serde_json::to_value(&info).into_diagnostic()?;
    json["unlabelled_rows"] = unlabelled.into();
    json["embedding_failures"] = failed.into();
    write_json_atomic(&ctx.out_dir.join("classifier.json"), &json)?;
    ctx.log(&format!(
        "embed classifier: threshold {threshold:.3}, validation F1 {:.3}",
        info.valid.f1
    ));
    Ok(BTreeMap::from([(
        "info".to_string(),
        Value::Path("classifier.json".into()),
    )]))
}

#[cfg(test)]
mod tests {
    use super::super::corpus::testutil::*;
    use super::*;

    #[test]
    fn features_follow_the_hashing_rules() {
        let f = NgramFeatures {
            buckets: 1 << 20,
            word_ngrams: 2,
            char_min: 3,
            char_max: 5,
        };
        let mut a = Vec::new();
        f.for_each("Herz", |b| a.push(b));
        // one word: 1 unigram; "<herz>" has 6 bytes: 4 trigrams, 3 four-grams, 2 five-grams
        assert_eq!(a.len(), 1 + 4 + 3 + 2);
        let mut b = Vec::new();
        f.for_each("  HERZ!! ", |x| b.push(x));
        assert_eq!(a, b, "case and punctuation do not change features");
        let mut c = Vec::new();
        f.for_each("Herz Lunge", |x| c.push(x));
        // two words: 2 unigrams + 1 bigram + char n-grams of both (<lunge>: 5+4+3)
        assert_eq!(c.len(), 2 + 1 + 9 + 12);
        let mut d = Vec::new();
        f.for_each("Lunge Herz", |x| d.push(x));
        let (mut cs, mut ds) = (c.clone(), d.clone());
        cs.sort();
        ds.sort();
        assert_ne!(cs, ds, "the bigram depends on word order");
        let mut u = Vec::new();
        f.for_each("Übelkeit", |x| u.push(x));
        assert_eq!(
            u.len(),
            1 + 9 + 8 + 7,
            "umlaut bytes stay in the word (10 bytes + marks)"
        );
    }

    #[test]
    fn threshold_choice_maximises_f1_or_meets_precision() {
        let scored = [
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.4, false),
            (0.3, true),
            (0.1, false),
        ];
        let (t, p) = choose_threshold(&scored, 0.0);
        // t=0.6: tp 3 fp 1 fn 1 → F1 0.75; t=0.3: tp 4 fp 2 → F1 0.8
        assert!((t - 0.3f32 as f64).abs() < 1e-6, "{t}");
        assert!((p.f1 - 0.8).abs() < 1e-9);
        let (t, p) = choose_threshold(&scored, 1.0);
        assert!((t - 0.8f32 as f64).abs() < 1e-6 && p.precision == 1.0 && p.tp == 2);
    }

    #[test]
    fn ngram_classifier_learns_demo_labels() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = demo_corpus(&tmp.path().join("c"));
        // trained on the human labels of the demo subset (majority of 3 annotators)
        let docs = read_corpus(&corpus);
        let human = demo_dir().join("labels.csv");
        let out = tmp.path().join("clf");
        run_op(
            &TrainClassifier,
            &[
                ("corpus", Value::Path(corpus.clone())),
                ("labels", Value::Path(human.clone())),
                ("positive", Value::Str("medizinisch".into())),
                ("valid_fraction", Value::Float(0.3)),
            ],
            &out,
        )
        .unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("classifier.json")).unwrap())
                .unwrap();
        assert!(info["valid"]["f1"].as_f64().unwrap() >= 0.8, "{info}");
        let (_, model) = load_classifier(&out).unwrap();
        let med = "Bei Asthma bronchiale helfen Salbutamol und ein Lungenfunktionstest klärt die Diagnose. Die Lunge reagiert auf Kälte mit Atemnot.";
        let non = "Der FC Bergheim gewann im Handball, die Zuschauer in Leipzig feierten bis spät in die Nacht.";
        assert!(
            model.score(med) > model.score(non),
            "{} vs {}",
            model.score(med),
            model.score(non)
        );
        assert!(docs.len() > 300);
        // the stored logit is bias + mean of the weights of its features (recomputed here)
        let mut sum = 0f64;
        let mut n = 0;
        model.features.for_each(med, |b| {
            sum += model.weights[b] as f64;
            n += 1;
        });
        assert!((model.logit(med) as f64 - (model.bias as f64 + sum / n as f64)).abs() < 1e-4);
    }

    #[test]
    fn embed_classifier_is_a_logistic_head_on_the_mean_hidden_state() {
        let tmp = tempfile::tempdir().unwrap();
        let model_dir = tiny_model(&tmp.path().join("m"), &demo_words());
        let corpus = demo_corpus(&tmp.path().join("c"));
        let out = tmp.path().join("clf");
        run_op(
            &TrainClassifier,
            &[
                ("corpus", Value::Path(corpus.clone())),
                ("labels", Value::Path(demo_dir().join("labels.csv"))),
                ("positive", Value::Str("medizinisch".into())),
                ("method", Value::Str("embed".into())),
                ("model", Value::Path(model_dir.clone())),
                ("max_tokens", Value::Int(64)),
            ],
            &out,
        )
        .unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("classifier.json")).unwrap())
                .unwrap();
        assert_eq!(info["method"], "embed");
        assert!(
            info["train_documents"].as_u64().unwrap() + info["valid_documents"].as_u64().unwrap()
                >= 60
        );
        let (_, clf) = load_any_classifier(&out).unwrap();
        // recompute a score through flow-model directly
        let model = flow_model::Model::load(&model_dir).unwrap();
        let tok = flow_model::Tokenizer::load(&model_dir).unwrap();
        let w: Vec<f32> = std::fs::read(out.join("weights.f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(w.len(), 32);
        let text = read_corpus(&corpus)[0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let mut ids = tok.encode(&text, false).unwrap();
        ids.truncate(64);
        let h = model.mean_hidden_state(&ids);
        let z = info["bias"].as_f64().unwrap() as f32
            + h.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>();
        let expected = 1.0 / (1.0 + (-z).exp());
        assert!((clf.score(&text).unwrap() - expected).abs() < 1e-5);
        // the head fits the labelled documents (mostly its training data) well above the base rate
        let (rows, _) = read_labels(&demo_dir().join("labels.csv")).unwrap();
        let truth: HashMap<String, bool> = majority(&rows)
            .into_iter()
            .filter_map(|(id, l)| Some((id, l? == "medizinisch")))
            .collect();
        let docs = read_corpus(&corpus);
        let (mut right, mut total) = (0, 0);
        for d in docs
            .iter()
            .filter(|d| truth.contains_key(d["id"].as_str().unwrap()))
        {
            let y = truth[d["id"].as_str().unwrap()];
            right += ((clf.score(d["text"].as_str().unwrap()).unwrap() >= 0.5) == y) as usize;
            total += 1;
        }
        let base = truth
            .values()
            .filter(|y| !**y)
            .count()
            .max(truth.values().filter(|y| **y).count());
        assert!(
            right as f64 / total as f64 > base as f64 / truth.len() as f64 + 0.1,
            "{right}/{total}, base {base}"
        );
    }
}
