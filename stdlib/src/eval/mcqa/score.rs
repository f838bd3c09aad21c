//! Scoring: log-likelihoods of every choice, `acc` and `acc_norm`, the
//! summary figures and the `mcqa.json` document.

use std::collections::BTreeMap;

use miette::miette;
use serde::{Deserialize, Serialize};

use crate::artifacts::{JsonFile, JsonLines};
use crate::model::runtime::{LanguageModel, LogLikelihood};
use crate::op::OpResult;

use super::py_random::PyRandom;
use super::*;

/// What `mcqa` needs of a model: tokenisation and scoring.
pub trait Scorer {
    /// Tokens of `text` without special tokens (lm-eval's `tok_encode` for
    /// causal models).
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
    /// Fails only when the device does.
    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String>;
    /// The longest input; longer requests lose context tokens on the left.
    fn max_context(&self) -> usize;
}

impl<M: LanguageModel + ?Sized> Scorer for M {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        LanguageModel::encode(self, text, false)
    }
    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String> {
        LanguageModel::loglikelihood(self, requests)
    }
    fn max_context(&self) -> usize {
        LanguageModel::max_context(self)
    }
}

/// Index of the largest value, the first among ties (`np.argmax`).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// The scored result of one item.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemResult {
    pub loglikelihoods: Vec<f64>,
    pub is_greedy: Vec<bool>,
    pub pred: usize,
    pub pred_norm: usize,
}

/// Predictions from per-choice log-likelihoods (`acc`) and from
/// log-likelihoods divided by the choice text's character length (`acc_norm`).
/// The choice texts are lm-eval's `doc_to_choice`, the letters.
pub fn predict(item: &McItem, lls: &[LogLikelihood]) -> ItemResult {
    let labels: Vec<String> = (0..item.choices.len()).map(letter).collect();
    predict_with_labels(&labels, lls)
}

/// [`predict`] for any choice texts: lm-eval's
/// `completion_len = [len(c) for c in choices]`, in Python characters.
pub fn predict_with_labels(labels: &[String], lls: &[LogLikelihood]) -> ItemResult {
    let loglikelihoods: Vec<f64> = lls.iter().map(|l| l.logprob).collect();
    let normed: Vec<f64> = loglikelihoods
        .iter()
        .zip(labels)
        .map(|(l, c)| l / c.chars().count().max(1) as f64)
        .collect();
    ItemResult {
        pred: argmax(&loglikelihoods),
        pred_norm: argmax(&normed),
        loglikelihoods,
        is_greedy: lls.iter().map(|l| l.is_greedy).collect(),
    }
}

/// How the few-shot examples are chosen (lm-eval's `fewshot_config.sampler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// `first_n`: the first `shots` dev items of the question's subject (MMLU's rule).
    FirstN,
    /// lm-eval's default `ContextSampler`: `random.Random(seed).sample(pool, shots)`
    /// over the whole pool, one draw per question in order (MedQA's rule; seed 1234).
    Random(u64),
}

/// The dev items of each subject, in file order.
pub fn fewshot_pool(dev: &[McItem]) -> BTreeMap<String, Vec<&McItem>> {
    let mut pool: BTreeMap<String, Vec<&McItem>> = BTreeMap::new();
    for item in dev {
        pool.entry(item.subject.clone()).or_default().push(item);
    }
    pool
}

/// Scores every item of `bench`; `on_done` is told how many items finished
/// and may stop the run by returning an error.
#[allow(clippy::too_many_arguments)]
pub fn score_items<S: Scorer + ?Sized>(
    scorer: &S,
    format: Format,
    bench: &[McItem],
    dev: &[McItem],
    shots: usize,
    sampler: Sampler,
    batch_items: usize,
    on_done: &mut dyn FnMut(usize) -> OpResult<()>,
) -> OpResult<Vec<ItemResult>> {
    let pool = fewshot_pool(dev);
    let all: Vec<&McItem> = dev.iter().collect();
    let mut rng = match sampler {
        Sampler::Random(seed) => Some(PyRandom::new(seed)),
        Sampler::FirstN => None,
    };
    if rng.is_some() && shots > all.len() {
        return Err(miette!(
            "mcqa: the few-shot pool has {} item(s), {shots} shot(s) were asked for; add items to `dev` or lower `shots`",
            all.len()
        ));
    }
    let max_len = scorer.max_context().max(2);
    let mut results = Vec::with_capacity(bench.len());
    for chunk in bench.chunks(batch_items.max(1)) {
        let mut requests = Vec::new();
        for item in chunk {
            let drawn: Vec<&McItem>;
            let examples: &[&McItem] = if shots == 0 {
                &[]
            } else if let Some(rng) = rng.as_mut() {
                // lm-eval's ContextSampler: rnd.sample(docs, shots), one draw
                // per evaluated document, in document order.
                drawn = rng
                    .sample(all.len(), shots)
                    .into_iter()
                    .map(|i| all[i])
                    .collect();
                &drawn
            } else {
                let available = pool
                    .get(&item.subject)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                if available.len() < shots {
                    return Err(miette!(
                        "{}: subject `{}` has {} dev item(s), {shots} shot(s) were asked for; add dev items or lower `shots`",
                        item.source,
                        item.subject,
                        available.len()
                    ));
                }
                &available[..shots]
            };
            let context = build_context(format, item, examples)
                .map_err(|e| miette!("{}: {e}", item.source))?;
            for cont in continuations(item) {
                let (mut ctx, cont_enc) = encode_pair(&|t| scorer.encode(t), &context, &cont)
                    .map_err(|e| miette!("{}: tokenising the prompt: {e}", item.source))?;
                if cont_enc.is_empty() {
                    return Err(miette!(
                        "{}: continuation `{cont}` encodes to no tokens",
                        item.source
                    ));
                }
                // lm-eval truncates the input on the left to the model's length.
                let total = ctx.len() + cont_enc.len();
                if total > max_len {
                    let cut = (total - max_len).min(ctx.len());
                    ctx.drain(..cut);
                }
                requests.push((ctx, cont_enc));
            }
        }
        let lls = scorer
            .loglikelihood(&requests)
            .map_err(|e| miette!("mcqa: scoring failed: {e}"))?;
        if lls.len() != requests.len() {
            return Err(miette!(
                "internal: the model returned {} scores for {} requests",
                lls.len(),
                requests.len()
            ));
        }
        let mut at = 0;
        for item in chunk {
            let n = item.choices.len();
            results.push(predict(item, &lls[at..at + n]));
            at += n;
        }
        on_done(chunk.len())?;
    }
    Ok(results)
}

/// Accuracy figures of a set of items.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub acc: f64,
    pub acc_norm: f64,
    /// lm-eval's `mean_stderr`: sample standard deviation / sqrt(n).
    pub acc_stderr: f64,
    pub acc_norm_stderr: f64,
}

pub(super) fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

pub fn summarize(items: &[&McItem], results: &[&ItemResult]) -> Summary {
    let acc: Vec<f64> = items
        .iter()
        .zip(results)
        .map(|(i, r)| f64::from(u8::from(r.pred == i.gold)))
        .collect();
    let norm: Vec<f64> = items
        .iter()
        .zip(results)
        .map(|(i, r)| f64::from(u8::from(r.pred_norm == i.gold)))
        .collect();
    let (acc, acc_stderr) = mean_stderr(&acc);
    let (acc_norm, acc_norm_stderr) = mean_stderr(&norm);
    Summary {
        n: items.len(),
        acc,
        acc_norm,
        acc_stderr,
        acc_norm_stderr,
    }
}

/// One subject's figures in `mcqa.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectScores {
    pub n: usize,
    pub acc: f64,
    pub acc_norm: f64,
    pub acc_stderr: f64,
    pub acc_norm_stderr: f64,
}

/// `mcqa.json`: what the `mcqa` op writes and `report`, `relative_gain`
/// read. Field order is the file's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McqaResult {
    pub format: String,
    pub shots: usize,
    pub n: usize,
    pub acc: f64,
    pub acc_norm: f64,
    pub acc_stderr: f64,
    pub acc_norm_stderr: f64,
    pub acc_macro: f64,
    pub acc_norm_macro: f64,
    pub averaging: String,
    pub subjects: BTreeMap<String, SubjectScores>,
    /// The scored model directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The model's `flow_checkpoint.json` lineage (step, tokens, FLOPs), for
    /// checkpoints and merges of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointLineage>,
}

impl McqaResult {
    /// A metric by name (`acc`, `acc_norm`, `acc_macro`, `acc_norm_macro`)
    /// and its standard error where one exists.
    pub fn metric(&self, name: &str) -> Option<(f64, Option<f64>)> {
        match name {
            "acc" => Some((self.acc, Some(self.acc_stderr))),
            "acc_norm" => Some((self.acc_norm, Some(self.acc_norm_stderr))),
            "acc_macro" => Some((self.acc_macro, None)),
            "acc_norm_macro" => Some((self.acc_norm_macro, None)),
            _ => None,
        }
    }
}

impl JsonFile for McqaResult {
    const NAME: &'static str = "mcqa.json";
    const WHAT: &'static str = "an mcqa result (pass the artifact of an mcqa node)";
    const FINAL_NEWLINE: bool = false;
}

/// One line of `items.jsonl`: a scored item (written by `mcqa`, for
/// comparing item by item with lm-eval's samples).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McqaItemLine {
    /// The item's place in the benchmark file (after `limit`).
    pub index: usize,
    pub id: Option<String>,
    pub subject: String,
    /// `file:line` of the item.
    pub source: String,
    pub gold: usize,
    pub pred: usize,
    pub pred_norm: usize,
    pub correct: bool,
    /// One per choice; a non-finite one is `null`.
    pub loglikelihoods: Vec<Option<f64>>,
    pub is_greedy: Vec<bool>,
}

impl JsonLines for McqaItemLine {
    const NAME: &'static str = "items.jsonl";
    const WHAT: &'static str = "a scored mcqa item";
}

/// The `mcqa.json` document of scored items.
pub fn report(
    format: Format,
    shots: usize,
    bench: &[McItem],
    results: &[ItemResult],
) -> McqaResult {
    let all = summarize(
        &bench.iter().collect::<Vec<_>>(),
        &results.iter().collect::<Vec<_>>(),
    );
    let mut by_subject: BTreeMap<&str, (Vec<&McItem>, Vec<&ItemResult>)> = BTreeMap::new();
    for (item, r) in bench.iter().zip(results) {
        let e = by_subject.entry(item.subject.as_str()).or_default();
        e.0.push(item);
        e.1.push(r);
    }
    let mut subjects = BTreeMap::new();
    let (mut macro_acc, mut macro_norm) = (0.0, 0.0);
    for (name, (items, rs)) in &by_subject {
        let s = summarize(items, rs);
        macro_acc += s.acc;
        macro_norm += s.acc_norm;
        subjects.insert(
            name.to_string(),
            SubjectScores {
                n: s.n,
                acc: s.acc,
                acc_norm: s.acc_norm,
                acc_stderr: s.acc_stderr,
                acc_norm_stderr: s.acc_norm_stderr,
            },
        );
    }
    let k = by_subject.len().max(1) as f64;
    McqaResult {
        format: format.name().to_owned(),
        shots,
        n: all.n,
        acc: all.acc,
        acc_norm: all.acc_norm,
        acc_stderr: all.acc_stderr,
        acc_norm_stderr: all.acc_norm_stderr,
        acc_macro: macro_acc / k,
        acc_norm_macro: macro_norm / k,
        averaging: "acc and acc_norm are micro averages over items (lm-eval's weight_by_size); *_macro are means over subjects".to_owned(),
        subjects,
        model: None,
        checkpoint: None,
    }
}
