//! The evaluation ops' files: `davidson.json`, `judge.json`,
//! `verdicts.jsonl`, `failure_modes.json`, `failure_modes.jsonl`, `relative_gain.json`,
//! `heldout_loss.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{CheckpointLineage, FailedRequest, Interval, JsonFile, JsonLines, OrderedMap};

/// `davidson.json`: the joint Davidson fit of a set of verdicts (written by
/// `davidson`, read by `report`). Per-model maps follow `models`' order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DavidsonResult {
    pub models: Vec<String>,
    /// Strengths πᵢ, summing to 1.
    pub strengths: OrderedMap<Option<f64>>,
    /// The tie parameter ν; `None` (null) when every comparison is a tie.
    pub tie: Option<f64>,
    pub loglik: Option<f64>,
    pub baseline: String,
    /// P(win) + P(tie)/2 against the baseline.
    pub score: OrderedMap<Option<f64>>,
    /// π / (π + π_baseline); older artifacts lack it.
    pub relative_strength: OrderedMap<Option<f64>>,
    pub ci: OrderedMap<DavidsonIntervals>,
    pub tie_ci: Interval,
    pub counts: OrderedMap<Counts>,
    pub comparisons: usize,
    /// Verdict lines without a usable winner.
    pub skipped: usize,
    pub bootstrap: Bootstrap,
    pub iterations: usize,
    pub converged: bool,
    /// Each model's training lineage (`flow_checkpoint.json`), as the
    /// verdicts carried it.
    pub checkpoints: BTreeMap<String, CheckpointLineage>,
}

/// Bootstrap percentile intervals of one model's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DavidsonIntervals {
    pub strength: Interval,
    pub score: Interval,
    pub relative_strength: Interval,
}

impl DavidsonIntervals {
    /// The interval of a figure by its name in the file.
    pub fn of(&self, figure: &str) -> &Interval {
        match figure {
            "score" => &self.score,
            "strength" => &self.strength,
            _ => &self.relative_strength,
        }
    }
}

/// One model's wins, ties and losses over all its comparisons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub wins: u64,
    pub ties: u64,
    pub losses: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: u64,
    pub seed: u64,
    pub level: f64,
}

impl JsonFile for DavidsonResult {
    const NAME: &'static str = "davidson.json";
    const WHAT: &'static str = "a davidson result";
    const FINAL_NEWLINE: bool = false;
}

/// `judge.json`: a judge run's counts in model A's view (written by
/// `judge`, read by `report`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeSummary {
    pub model_a: String,
    pub model_b: String,
    pub wins: u64,
    pub ties: u64,
    pub losses: u64,
    pub unparseable: u64,
    /// Ties that come from the two orders disagreeing.
    pub inconsistent: u64,
    /// Prompts left out because a request failed.
    pub failed: usize,
    pub failed_requests: usize,
    pub max_failures: usize,
    /// Up to 20 failed requests.
    pub failed_examples: Vec<FailedRequest>,
    pub n: usize,
    /// wins / judged; `None` when nothing was judged.
    pub win_rate: Option<f64>,
    /// (wins + ties/2) / judged.
    pub score: Option<f64>,
    /// The judge backend's description.
    pub judge: Json,
    pub checkpoint_a: Option<CheckpointLineage>,
    pub checkpoint_b: Option<CheckpointLineage>,
}

impl JsonFile for JudgeSummary {
    const NAME: &'static str = "judge.json";
    const WHAT: &'static str = "a judge summary";
    const FINAL_NEWLINE: bool = false;
}

/// One line of `verdicts.jsonl` (written by `judge`, read by `davidson` and
/// `report`). `davidson` also takes hand-made lines of just `model_a`,
/// `model_b` and `winner`, so everything else has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    #[serde(default)]
    pub id: String,
    pub model_a: String,
    pub model_b: String,
    /// "A" (model a), "B" (model b), "0" (a tie), or `None`: unreadable.
    #[serde(default)]
    pub winner: Option<String>,
    /// Whether both orders gave the same verdict.
    #[serde(default)]
    pub consistent: bool,
    /// The verdict with model a's response shown first.
    #[serde(default)]
    pub a_first: OrderVerdict,
    /// The verdict with model b's response shown first ("A" = model b).
    #[serde(default)]
    pub b_first: OrderVerdict,
    #[serde(default)]
    pub checkpoint_a: Option<CheckpointLineage>,
    #[serde(default)]
    pub checkpoint_b: Option<CheckpointLineage>,
}

/// The judge's answer for one order of a pair.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderVerdict {
    /// "A", "B" or "0" as the judge saw them, `None` if unreadable.
    #[serde(default)]
    pub winner: Option<String>,
    /// The judge's whole answer.
    #[serde(default)]
    pub raw: String,
}

impl JsonLines for Verdict {
    const NAME: &'static str = "verdicts.jsonl";
    const WHAT: &'static str =
        "a verdict line ({\"model_a\": NAME, \"model_b\": NAME, \"winner\": \"A\"|\"B\"|\"0\"})";
}

/// `failure_modes.json`: one model's language mixing, verbosity and
/// repetition (written by `failure_modes`, read by `report`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureModesResult {
    pub model: String,
    pub n: usize,
    pub language: String,
    pub language_mixing: LanguageMixing,
    pub verbosity: Verbosity,
    pub repetition: Repetition,
    pub checkpoint: Option<CheckpointLineage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LanguageMixing {
    /// Mean share of words in clauses of another language (`None`: no responses).
    pub mean_foreign_share: Option<f64>,
    pub flagged: usize,
    pub flagged_share: Option<f64>,
    pub min_span: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verbosity {
    pub mean_length: Option<f64>,
    pub baseline_mean_length: Option<f64>,
    pub mean_ratio: Option<f64>,
    pub median_ratio: Option<f64>,
    /// Share of compared responses longer than `verbose_ratio` × the baseline's.
    pub longer_share: Option<f64>,
    pub compared: usize,
    pub truncated_share: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Repetition {
    pub ngram: usize,
    pub mean_ratio: Option<f64>,
    pub flagged: usize,
    pub flagged_share: Option<f64>,
    pub threshold: f64,
}

impl JsonFile for FailureModesResult {
    const NAME: &'static str = "failure_modes.json";
    const WHAT: &'static str = "a failure_modes result";
    const FINAL_NEWLINE: bool = false;
}

/// `relative_gain.json`: G_rel of each score against the baseline
/// (written by `relative_gain`, read by `report`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelativeGainResult {
    pub metric: String,
    pub baseline: GainBaseline,
    pub scores: Vec<GainScore>,
    /// How many scores have no G_rel (a baseline accuracy of 0); absent
    /// when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub undefined: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GainBaseline {
    /// The mcqa artifact (or the number) the accuracy came from.
    pub source: String,
    pub acc: Option<f64>,
    pub checkpoint: Option<CheckpointLineage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GainScore {
    pub source: String,
    pub acc: Option<f64>,
    /// acc / the baseline's acc; `None` (null) where undefined.
    pub g_rel: Option<f64>,
    /// Why `g_rel` is undefined; absent when it is a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undefined: Option<String>,
    pub checkpoint: Option<CheckpointLineage>,
}

impl JsonFile for RelativeGainResult {
    const NAME: &'static str = "relative_gain.json";
    const WHAT: &'static str = "a relative_gain result";
    const FINAL_NEWLINE: bool = false;
}

/// `heldout_loss.json` (written by `heldout_loss`, read by `report`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeldoutLossResult {
    /// Mean next-token cross-entropy, nats per predicted token.
    pub loss: Option<f64>,
    pub perplexity: Option<f64>,
    /// Predicted tokens the mean is over.
    pub tokens: usize,
    pub sequences: usize,
    /// Document pieces scored (a document cut between sequences is two).
    pub pieces: usize,
    pub model: String,
    /// The model's training lineage (`flow_checkpoint.json`), if any.
    pub checkpoint: Option<CheckpointLineage>,
}

impl JsonFile for HeldoutLossResult {
    const NAME: &'static str = "heldout_loss.json";
    const WHAT: &'static str = "a heldout_loss result";
    const FINAL_NEWLINE: bool = false;
}

/// One line of `failure_modes.jsonl`: one response's figures (written by
/// `failure_modes`, a line per response in the responses' order).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureModesLine {
    pub id: String,
    pub words: usize,
    pub foreign_words: usize,
    /// foreign_words / words (0 for a response without words).
    pub foreign_share: f64,
    pub longest_foreign_span: usize,
    pub foreign_languages: Vec<String>,
    /// Whether a foreign span has `min_span` or more words.
    pub mixed: bool,
    /// Tokens as `generate` counted them, else words.
    pub length: f64,
    /// length / the baseline's; `None` (null) without a baseline response.
    pub length_ratio: Option<f64>,
    /// 1 - distinct word n-grams / n-grams.
    pub repetition: f64,
    pub repetitive: bool,
    pub truncated: bool,
}

impl JsonLines for FailureModesLine {
    const NAME: &'static str = "failure_modes.jsonl";
    const WHAT: &'static str = "a failure_modes line";
}
