//! `train_classifier`: a binary document classifier trained on labels
//! (from `annotate`, or a label file) over a corpus, in one of three methods:
//!
//! - `ngram` (`ngram.rs`): hashed word and character n-grams, a logistic
//!   output, SGD — the fast default for hundreds of millions of documents;
//! - `embed` (`embed.rs`): a logistic head on a decoder's mean hidden state;
//! - `encoder` (`encoder.rs`): a BERT / RoBERTa / XLM-RoBERTa encoder
//!   fine-tuned whole with a classification head, as the seeds do with
//!   XLM-RoBERTa-base; the artifact is a Hugging Face
//!   `*ForSequenceClassification` directory.
//!
//! All three share the splits and the threshold rule of `split.rs`: fitted
//! on train, threshold on validation, metrics reported on test.

mod embed;
mod encoder;
mod ngram;
mod split;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::agreement::{majority, read_labels};
use super::corpus::{corpus_shards, for_each_doc, write_bytes_atomic};
use crate::artifacts::{JsonFile, JsonLines};
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub use embed::EmbedModel;
pub use encoder::EncoderClassifier;
pub use ngram::{NgramFeatures, NgramModel};
pub use split::{choose_threshold, evaluate, Evaluation, Split, Splitter};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(TrainClassifier)]
}

pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// A trained classifier of any method.
pub enum Classifier {
    Ngram(NgramModel),
    Embed(Box<EmbedModel>),
    Encoder(Box<EncoderClassifier>),
}

impl Classifier {
    /// The probability of `text` being positive; an error for a document the
    /// model cannot take (embed, encoder).
    pub fn score(&self, text: &str) -> Result<f32, String> {
        match self {
            Classifier::Ngram(m) => Ok(m.score(text)),
            Classifier::Embed(m) => m.logit(text).map(sigmoid),
            Classifier::Encoder(m) => m.score_batch(&[text]).pop().expect("one score"),
        }
    }

    /// Scores of many documents, in parallel on the current rayon pool
    /// (the encoder batches them by length).
    pub fn score_batch(&self, texts: &[&str]) -> Vec<Result<f32, String>> {
        match self {
            Classifier::Encoder(m) => m.score_batch(texts),
            _ => texts.par_iter().map(|t| self.score(t)).collect(),
        }
    }
}

/// `classifier.json`: the trained classifier's settings, its threshold and
/// metrics ([`Evaluation`], flattened), the split and what only its method
/// records (written by `train_classifier`, every method; read by `filter`
/// through [`load_any_classifier`] and by the report's curation section).
/// Readers are lenient: a field a hand-written file lacks takes its default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassifierInfo {
    pub method: String,
    pub positive: String,
    pub features: Option<NgramFeatures>,
    /// The logistic output's bias (0 for encoder): an f32 widened to f64,
    /// as the file has always held it.
    pub bias: f64,
    /// File holding the weights, relative to the directory (little-endian
    /// f32 for ngram/embed, `model.safetensors` for encoder).
    pub weights_file: String,
    pub epochs: u32,
    pub seed: u64,
    /// `embed`: the model directory; `encoder`: the base model fine-tuned.
    pub model_dir: Option<String>,
    /// Tokens read per document (embed, encoder).
    pub max_tokens: Option<usize>,
    #[serde(flatten)]
    pub eval: Evaluation,
    /// Label rows without a label.
    pub unlabelled_rows: u64,
    pub valid_fraction: f64,
    pub test_fraction: f64,
    /// What the method records of its training; `None` for a file without.
    #[serde(flatten)]
    pub training: Option<MethodFacts>,
}

/// The figures only one method records, after the shared ones.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MethodFacts {
    // Tried in this order on reading: each has a field the ones after lack.
    Encoder(EncoderFacts),
    Embed(EmbedFacts),
    Ngram(NgramFacts),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NgramFacts {
    pub labelled_ids_not_in_corpus: usize,
    /// The SGD learning rate: an f32 widened to f64.
    pub lr: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmbedFacts {
    /// Documents the model could not embed (left out).
    pub embedding_failures: u64,
    pub labelled_ids_not_in_corpus: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncoderFacts {
    /// The transformers class of the saved classifier.
    pub architecture: String,
    /// The class names, index 0 negative and 1 positive.
    pub labels: Vec<String>,
    pub batch: usize,
    pub lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub weight_decay: f64,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Head tensors that were freshly initialised.
    pub initialised: Vec<String>,
    /// Documents the tokenizer failed on (left out).
    pub tokenization_failures: u64,
    pub labelled_ids_not_in_corpus: usize,
    pub train_seconds: f64,
}

impl JsonFile for ClassifierInfo {
    const NAME: &'static str = "classifier.json";
    const WHAT: &'static str = "a train_classifier info file";
    const FINAL_NEWLINE: bool = true;
}

/// One line of `train_log.jsonl`: one fine-tuning step of the encoder
/// classifier (written by `train_classifier` with `method: "encoder"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLogLine {
    /// The optimizer step, from 1.
    pub step: u64,
    /// The epoch, from 1.
    pub epoch: u32,
    /// The batch's mean cross-entropy; `None` (null) when not finite.
    pub loss: Option<f64>,
    pub lr: f64,
    /// The gradient norm before clipping; `None` (null) when not finite.
    pub grad_norm: Option<f64>,
}

impl JsonLines for TrainLogLine {
    const NAME: &'static str = "train_log.jsonl";
    const WHAT: &'static str = "a train_log line";
}

impl ClassifierInfo {
    pub fn threshold(&self) -> f64 {
        self.eval.threshold
    }
}

pub(crate) fn read_f32(path: &Path) -> OpResult<Vec<f32>> {
    let bytes = std::fs::read(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read classifier weights {}", path.display()))?;
    if bytes.len() % 4 != 0 {
        return Err(miette!(
            "{}: {} bytes, not a whole number of little-endian f32 weights",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_info(dir: &Path) -> OpResult<ClassifierInfo> {
    if !dir.join(ClassifierInfo::NAME).is_file() {
        return Err(miette!(
            help = "pass a train_classifier node",
            "{} is not a train_classifier artifact (no {})",
            dir.display(),
            ClassifierInfo::NAME
        ));
    }
    ClassifierInfo::read(dir)
}

/// Loads a classifier directory written by `train_classifier` (any method).
pub fn load_any_classifier(dir: &Path) -> OpResult<(ClassifierInfo, Classifier)> {
    let info = read_info(dir)?;
    match info.method.as_str() {
        "embed" => {
            let m = embed::load(dir, &info)?;
            Ok((info, Classifier::Embed(Box::new(m))))
        }
        "encoder" => {
            let m = EncoderClassifier::load(dir, info.max_tokens.unwrap_or(512))?;
            Ok((info, Classifier::Encoder(Box::new(m))))
        }
        _ => {
            let m = ngram_model(dir, &info)?;
            Ok((info, Classifier::Ngram(m)))
        }
    }
}

/// Loads an n-gram classifier directory written by `train_classifier`.
pub fn load_classifier(dir: &Path) -> OpResult<(ClassifierInfo, NgramModel)> {
    let info = read_info(dir)?;
    let m = ngram_model(dir, &info)?;
    Ok((info, m))
}

/// The n-gram model of `dir`, whose `classifier.json` is `info`.
fn ngram_model(dir: &Path, info: &ClassifierInfo) -> OpResult<NgramModel> {
    let Some(features) = info.features.clone() else {
        return Err(miette!(
            "{}: method {:?} has no n-gram features",
            dir.join(ClassifierInfo::NAME).display(),
            info.method
        ));
    };
    let weights = read_f32(&dir.join(&info.weights_file))?;
    if weights.len() != features.buckets as usize || !features.buckets.is_power_of_two() {
        return Err(miette!(
            "{}: weights file has {} values, expected {} buckets of f32",
            dir.display(),
            weights.len(),
            features.buckets
        ));
    }
    Ok(NgramModel {
        features,
        weights,
        bias: info.bias as f32,
    })
}

/// A labelled document: id, text, split, is positive.
pub(super) type LabelledDoc = (String, String, Split, bool);

/// `train_classifier`'s params (see its spec).
#[derive(Deserialize)]
pub(super) struct TrainClassifierParams {
    pub corpus: PathBuf,
    pub labels: PathBuf,
    pub positive: String,
    pub method: Method,
    /// embed: the model directory.
    pub model: String,
    /// encoder: the encoder directory.
    pub encoder: String,
    pub max_tokens: usize,
    pub max_len: usize,
    pub batch: usize,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub dropout: bool,
    pub valid_fraction: f64,
    pub test_fraction: f64,
    pub target_precision: f64,
    pub buckets: u64,
    pub word_ngrams: u32,
    pub char_ngrams: Vec<i64>,
    /// 0 or less: the method's default.
    pub epochs: i64,
    /// 0 or less: the method's default.
    pub lr: f64,
    pub seed: i64,
}

/// The classifier `train_classifier` trains.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Method {
    Ngram,
    Embed,
    Encoder,
}

/// What every method shares: the params, the labels, the split and the
/// threshold rule.
pub(super) struct Common {
    pub params: TrainClassifierParams,
    pub positive: String,
    /// The name of the other class (the one other label, or `not-<positive>`).
    pub negative: String,
    pub labels: HashMap<String, bool>,
    pub seed: u64,
    pub unlabelled: u64,
    pub splitter: Splitter,
    pub target_precision: f64,
}

impl Common {
    /// The labelled documents of the corpus as (id, text, split, is positive);
    /// counts the labelled ids the corpus lacks.
    pub fn labelled_docs(&self, ctx: &OpContext) -> OpResult<(Vec<LabelledDoc>, usize)> {
        let mut out = Vec::with_capacity(self.labels.len());
        for shard in corpus_shards(&self.params.corpus)? {
            ctx.check_cancelled()?;
            for_each_doc(&shard, |doc, _| {
                if let Some(&y) = self.labels.get(doc.id.as_ref()) {
                    let id = doc.id.to_string();
                    out.push((
                        id.clone(),
                        doc.text.to_string(),
                        self.splitter.split_of(&id),
                        y,
                    ));
                }
                Ok(())
            })?;
        }
        let missing = self.labels.len().saturating_sub(out.len());
        if missing > 0 {
            ctx.log(&format!("{missing} labelled ids are not in the corpus"));
        }
        let pairs: Vec<(Split, bool)> = out.iter().map(|e| (e.2, e.3)).collect();
        self.splitter.check_counts(&pairs)?;
        Ok((out, missing))
    }

    /// The fields of `classifier.json` every method fills the same way.
    pub fn info(&self) -> ClassifierInfo {
        ClassifierInfo {
            positive: self.positive.clone(),
            seed: self.seed,
            ..ClassifierInfo::default()
        }
    }

    /// Chooses the threshold, measures the splits, writes classifier.json
    /// (`info` with the evaluation and the split filled in) and logs the
    /// test scores.
    pub fn finish(
        &self,
        ctx: &OpContext,
        scored: &[(Split, f32, bool)],
        mut info: ClassifierInfo,
    ) -> OpResult<Outputs> {
        info.eval = evaluate(scored, self.target_precision);
        if !info.eval.target_reached {
            ctx.log(&format!(
                "warning: no threshold reaches validation precision {}; using the maximum-F1 threshold",
                self.target_precision
            ));
        }
        info.unlabelled_rows = self.unlabelled;
        info.valid_fraction = self.splitter.valid_fraction;
        info.test_fraction = self.splitter.test_fraction;
        info.write(&ctx.out_dir)?;
        let e = &info.eval;
        ctx.log(&format!(
            "{}: threshold {:.3} ({}); validation P {:.3} R {:.3} F1 {:.3} on {}; test P {:.3} R {:.3} F1 {:.3} on {} documents",
            info.method, e.threshold, e.threshold_rule, e.valid.precision, e.valid.recall, e.valid.f1,
            e.valid_documents, e.test.precision, e.test.recall, e.test.f1, e.test_documents
        ));
        Ok(BTreeMap::from([(
            "info".to_string(),
            Value::Path(ClassifierInfo::NAME.into()),
        )]))
    }
}

/// The `train_classifier` op.
pub struct TrainClassifier;

impl Op for TrainClassifier {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "train_classifier",
            version: 7,
            doc: "Trains a binary document classifier (positive label vs the rest) on labelled documents of a corpus: fitted on a train split, threshold chosen on a validation split, precision/recall/F1 reported on a test split (classifier.json). method encoder writes a Hugging Face *ForSequenceClassification directory.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact holding the labelled documents' texts"),
                Param::required("labels", Type::Either(Box::new(Type::Dir), Box::new(Type::File)), "an annotate artifact, or a label file (CSV/JSONL: id, label[, annotator]; several annotators → majority vote)"),
                Param::required("positive", Type::Str, "the positive label"),
                Param::optional("method", Type::enum_of::<Method>(), Value::Str("ngram".into()), "ngram: hashed word/char n-grams + logistic regression; embed: decoder mean hidden state + logistic head; encoder: fine-tuned BERT/XLM-RoBERTa classifier"),
                Param::optional("model", Type::Any, Value::Str(String::new()), "model directory for method embed"),
                Param::optional("encoder", Type::Any, Value::Str(String::new()), "method encoder: a BERT / RoBERTa / XLM-RoBERTa Hugging Face directory (base model or classifier)"),
                Param::optional("max_tokens", Type::Int, Value::Int(512), "embed: tokens of each document embedded (its beginning)").at_least(1.0),
                Param::optional("max_len", Type::Int, Value::Int(256), "encoder: tokens per document, special tokens included (truncation as transformers')").at_least(2.0),
                Param::optional("batch", Type::Int, Value::Int(16), "encoder: documents per optimizer step").at_least(1.0),
                Param::optional("warmup_ratio", Type::Float, Value::Float(0.1), "encoder: fraction of steps with a linearly rising learning rate (then linear decay to 0)").within(0.0, 1.0),
                Param::optional("weight_decay", Type::Float, Value::Float(0.01), "encoder: AdamW decoupled weight decay (not on biases and LayerNorm weights)"),
                Param::optional("dropout", Type::Bool, Value::Bool(true), "encoder: train with the dropout of config.json (hidden_dropout_prob, attention_probs_dropout_prob, classifier_dropout), as transformers' Trainer does; false: without dropout"),
                Param::optional("valid_fraction", Type::Float, Value::Float(0.2), "validation fraction (by blake3 of seed and id): chooses the threshold"),
                Param::optional("test_fraction", Type::Float, Value::Float(0.2), "test fraction (by blake3 of seed and id): reported precision/recall/F1, used for nothing else"),
                Param::optional("target_precision", Type::Float, Value::Float(0.95), "the lowest threshold whose validation precision reaches this (the seeds' P 0.95); 0, or when no threshold reaches it: the one maximising validation F1").within(0.0, 1.0),
                Param::optional("buckets", Type::Int, Value::Int(1 << 18), "ngram: hash buckets (power of two)").within(2.0, (1u64 << 28) as f64),
                Param::optional("word_ngrams", Type::Int, Value::Int(2), "ngram: word n-grams up to 1 or 2").within(1.0, 2.0),
                Param::optional("char_ngrams", Type::List(Box::new(Type::Int)), Value::List(vec![Value::Int(3), Value::Int(5)]), "ngram: [min, max] character n-gram length; [0, 0] disables").within(0.0, 8.0),
                Param::optional("epochs", Type::Int, Value::Int(0), "training epochs; 0: the method's default (ngram 20, encoder 3)"),
                Param::optional("lr", Type::Float, Value::Float(0.0), "peak learning rate; 0: the method's default (ngram 2.0 SGD, encoder 2e-5 AdamW)"),
                Param::optional("seed", Type::Int, Value::Int(0), "seed of the split, the initialisation and the data order"),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "info", ty: Type::File, doc: "classifier.json" }],
            // method "encoder" fine-tunes on the node's CUDA device when there is one
            resources: Resources {
                gpu: true,
                ..Resources::ONE_THREAD
            },
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<TrainClassifierParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let params: TrainClassifierParams = ctx.params()?;
        let positive = params.positive.clone();
        // A negative seed is its two's-complement bits, as it always was.
        let seed = params.seed as u64;
        let labels_path = params.labels.clone();
        let (rows, unlabelled) = read_labels(&labels_path)?;
        let voted: Vec<(String, String)> = majority(&rows)
            .into_iter()
            .filter_map(|(id, l)| Some((id, l?)))
            .collect();
        let labels: HashMap<String, bool> = voted
            .iter()
            .map(|(id, l)| (id.clone(), *l == positive))
            .collect();
        if !labels.values().any(|&y| y) || !labels.values().any(|&y| !y) {
            return Err(miette!(
                help = "check `positive` against the labels in the file",
                "labels need both classes: {} documents labelled, {} as {positive:?}",
                labels.len(),
                labels.values().filter(|&&y| y).count()
            ));
        }
        let mut others: Vec<&str> = voted
            .iter()
            .map(|(_, l)| l.as_str())
            .filter(|l| *l != positive)
            .collect();
        others.sort();
        others.dedup();
        let negative = match others.as_slice() {
            [one] => one.to_string(),
            _ => format!("not-{positive}"),
        };
        let splitter = Splitter::new(seed, params.valid_fraction, params.test_fraction)?;
        let target_precision = params.target_precision;
        let method = params.method;
        let common = Common {
            params,
            positive,
            negative,
            labels,
            seed,
            unlabelled,
            splitter,
            target_precision,
        };
        match method {
            Method::Embed => embed::train_embed(ctx, &common),
            Method::Encoder => encoder::train_encoder(ctx, &common),
            Method::Ngram => run_ngram(ctx, &common),
        }
    }
}

fn run_ngram(ctx: &OpContext, common: &Common) -> OpResult<Outputs> {
    let p = &common.params;
    // The declared range bounds it; a power of two is the op's own rule.
    let buckets = p.buckets;
    if !buckets.is_power_of_two() {
        return Err(miette!(
            "parameter `buckets`: expected a power of two between 2 and 2^28, got {buckets}"
        ));
    }
    let (char_min, char_max) = match p.char_ngrams.as_slice() {
        [0, 0] => (0, 0),
        [a, b] if 1 <= *a && a <= b && *b <= 8 => (*a as u32, *b as u32),
        _ => {
            return Err(miette!(
                "parameter `char_ngrams`: expected [min, max] with 1 <= min <= max <= 8, or [0, 0]"
            ))
        }
    };
    let features = NgramFeatures {
        buckets: buckets as u32,
        word_ngrams: p.word_ngrams,
        char_min,
        char_max,
    };
    let (docs, missing) = common.labelled_docs(ctx)?;
    let examples: Vec<(Split, Vec<u32>, bool)> = docs
        .iter()
        .map(|(_, text, split, y)| {
            let mut f = Vec::new();
            features.for_each(text, |b| f.push(b as u32));
            (*split, f, *y)
        })
        .collect();
    let train: Vec<(&[u32], bool)> = examples
        .iter()
        .filter(|e| e.0 == Split::Train)
        .map(|e| (e.1.as_slice(), e.2))
        .collect();
    let epochs = match p.epochs {
        e if e <= 0 => 20,
        e => e as u32,
    };
    let lr = match p.lr {
        l if l <= 0.0 => 2.0,
        l => l as f32,
    };
    let model = ngram::train_ngram(ctx, &features, &train, epochs, lr, common.seed)?;
    let scored: Vec<(Split, f32, bool)> = examples
        .iter()
        .map(|(s, f, y)| (*s, model.score_features(f), *y))
        .collect();
    let bytes: Vec<u8> = model.weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    write_bytes_atomic(&ctx.out_dir.join("weights.f32"), &bytes)?;
    let info = ClassifierInfo {
        method: "ngram".into(),
        features: Some(features),
        bias: model.bias as f64,
        weights_file: "weights.f32".into(),
        epochs,
        training: Some(MethodFacts::Ngram(NgramFacts {
            labelled_ids_not_in_corpus: missing,
            lr: lr as f64,
        })),
        ..common.info()
    };
    common.finish(ctx, &scored, info)
}
