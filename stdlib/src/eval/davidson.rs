//! `davidson(verdicts)`: ranks models from pairwise verdicts with the
//! Davidson (1970) model, Bradley–Terry extended to ties:
//!
//! P(i beats j) = πᵢ / D, P(tie) = ν·√(πᵢπⱼ) / D, D = πᵢ + πⱼ + ν·√(πᵢπⱼ).
//!
//! The maximum-likelihood fit uses Davidson's iteration: the stationarity
//! conditions ∂ℓ/∂πᵢ = 0 and ∂ℓ/∂ν = 0 rearranged into fixed points
//! πᵢ = (Wᵢ + Tᵢ/2) / Σⱼ nᵢⱼ (1 + ν/2·√(πⱼ/πᵢ)) / Dᵢⱼ and
//! ν = T / Σ_{i<j} nᵢⱼ √(πᵢπⱼ) / Dᵢⱼ, with π renormalised to sum to 1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::artifacts::eval::{Bootstrap, Counts, DavidsonIntervals, DavidsonResult};
use crate::artifacts::{finite, CheckpointLineage, Interval, JsonFile, OrderedMap};
use crate::op::{
    NodeItem, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources,
    Type, Value,
};

/// One pairwise outcome between two models (by index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub a: usize,
    pub b: usize,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    AWins,
    BWins,
    Tie,
}

/// A fitted Davidson model.
#[derive(Clone, Debug, PartialEq)]
pub struct DavidsonFit {
    /// Strengths πᵢ, summing to 1.
    pub strengths: Vec<f64>,
    /// The tie parameter ν; infinite when every comparison is a tie (the
    /// likelihood then grows without bound in ν and says nothing about
    /// the strengths, which are left equal).
    pub tie: f64,
    pub loglik: f64,
    pub iterations: usize,
    pub converged: bool,
}

impl DavidsonFit {
    /// (P(i beats j), P(tie), P(j beats i)).
    pub fn probabilities(&self, i: usize, j: usize) -> (f64, f64, f64) {
        probabilities(self.strengths[i], self.strengths[j], self.tie)
    }

    /// πᵢ / (πᵢ + πⱼ): `i`'s strength normalised against `j` (0.5 = parity).
    pub fn relative_strength(&self, i: usize, j: usize) -> f64 {
        let (pi, pj) = (self.strengths[i], self.strengths[j]);
        if pi + pj > 0.0 {
            pi / (pi + pj)
        } else {
            0.5
        }
    }

    /// P(i beats j) + P(tie)/2: `i`'s expected score against `j`.
    pub fn score(&self, i: usize, j: usize) -> f64 {
        let (w, t, _) = self.probabilities(i, j);
        w + t / 2.0
    }
}

/// Davidson's outcome probabilities for strengths `pi`, `pj` and tie parameter `nu`.
pub fn probabilities(pi: f64, pj: f64, nu: f64) -> (f64, f64, f64) {
    if nu == f64::INFINITY {
        return (0.0, 1.0, 0.0);
    }
    let g = nu * (pi * pj).sqrt();
    let d = pi + pj + g;
    if d <= 0.0 {
        return (0.0, 1.0, 0.0);
    }
    (pi / d, g / d, pj / d)
}

/// Per-pair counts: (i won, j won, ties) for i < j.
fn pair_counts(n: usize, data: &[Comparison]) -> BTreeMap<(usize, usize), [f64; 3]> {
    let mut m: BTreeMap<(usize, usize), [f64; 3]> = BTreeMap::new();
    for c in data {
        if c.a == c.b || c.a >= n || c.b >= n {
            continue;
        }
        let (i, j, swap) = if c.a < c.b {
            (c.a, c.b, false)
        } else {
            (c.b, c.a, true)
        };
        let e = m.entry((i, j)).or_default();
        match (c.outcome, swap) {
            (Outcome::Tie, _) => e[2] += 1.0,
            (Outcome::AWins, false) | (Outcome::BWins, true) => e[0] += 1.0,
            (Outcome::BWins, false) | (Outcome::AWins, true) => e[1] += 1.0,
        }
    }
    m
}

fn loglik(pairs: &BTreeMap<(usize, usize), [f64; 3]>, pi: &[f64], nu: f64) -> f64 {
    let mut ll = 0.0;
    for (&(i, j), c) in pairs {
        let (pw, pt, pl) = probabilities(pi[i], pi[j], nu);
        for (count, p) in [(c[0], pw), (c[2], pt), (c[1], pl)] {
            if count > 0.0 {
                ll += count * p.ln();
            }
        }
    }
    ll
}

/// Maximum-likelihood fit of the Davidson model over `n` models.
pub fn fit(n: usize, data: &[Comparison]) -> DavidsonFit {
    let pairs = pair_counts(n, data);
    let mut score = vec![0.0f64; n]; // Wᵢ + Tᵢ/2
    let mut total_ties = 0.0;
    for (&(i, j), c) in &pairs {
        score[i] += c[0] + c[2] / 2.0;
        score[j] += c[1] + c[2] / 2.0;
        total_ties += c[2];
    }
    let mut pi = vec![1.0 / n.max(1) as f64; n];
    let decisive: f64 = pairs.values().map(|c| c[0] + c[1]).sum();
    if decisive == 0.0 && total_ties > 0.0 {
        // Only ties: each update raises ν by about 2 forever (the MLE is at
        // ν = ∞, where every tie has probability 1).
        return DavidsonFit {
            strengths: pi,
            tie: f64::INFINITY,
            loglik: 0.0,
            iterations: 0,
            converged: false,
        };
    }
    let mut nu = if total_ties > 0.0 { 1.0 } else { 0.0 };
    let mut converged = false;
    let mut iterations = 0;
    const MAX_ITER: usize = 100_000;
    while iterations < MAX_ITER {
        iterations += 1;
        let mut denom = vec![0.0f64; n];
        for (&(i, j), c) in &pairs {
            let nij = c[0] + c[1] + c[2];
            let (a, b) = (pi[i], pi[j]);
            let d = a + b + nu * (a * b).sqrt();
            if d <= 0.0 {
                continue;
            }
            if a > 0.0 {
                denom[i] += nij * (1.0 + nu / 2.0 * (b / a).sqrt()) / d;
            }
            if b > 0.0 {
                denom[j] += nij * (1.0 + nu / 2.0 * (a / b).sqrt()) / d;
            }
        }
        let mut new_pi: Vec<f64> = (0..n)
            .map(|i| {
                if score[i] > 0.0 && denom[i] > 0.0 {
                    score[i] / denom[i]
                } else {
                    0.0
                }
            })
            .collect();
        let sum: f64 = new_pi.iter().sum();
        if sum <= 0.0 {
            break;
        }
        new_pi.iter_mut().for_each(|p| *p /= sum);
        let new_nu = if total_ties > 0.0 {
            let s: f64 = pairs
                .iter()
                .map(|(&(i, j), c)| {
                    let (a, b) = (new_pi[i], new_pi[j]);
                    let g = (a * b).sqrt();
                    let d = a + b + nu * g;
                    if d > 0.0 {
                        (c[0] + c[1] + c[2]) * g / d
                    } else {
                        0.0
                    }
                })
                .sum();
            if s > 0.0 {
                total_ties / s
            } else {
                nu
            }
        } else {
            0.0
        };
        let change = new_pi
            .iter()
            .zip(&pi)
            .map(|(x, y)| (x - y).abs() / x.max(1e-300))
            .fold((new_nu - nu).abs() / new_nu.max(1e-12), f64::max);
        pi = new_pi;
        nu = new_nu;
        if change < 1e-12 {
            converged = true;
            break;
        }
    }
    let ll = loglik(&pairs, &pi, nu);
    DavidsonFit {
        strengths: pi,
        tie: nu,
        loglik: ll,
        iterations,
        converged,
    }
}

/// Whether every model is linked to every other through comparisons.
pub fn connected(n: usize, data: &[Comparison]) -> bool {
    if n == 0 {
        return true;
    }
    let mut adj = vec![Vec::new(); n];
    for c in data {
        if c.a < n && c.b < n {
            adj[c.a].push(c.b);
            adj[c.b].push(c.a);
        }
    }
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(v) = stack.pop() {
        for &w in &adj[v] {
            if !seen[w] {
                seen[w] = true;
                stack.push(w);
            }
        }
    }
    seen.into_iter().all(|s| s)
}

/// Verdicts read from JSONL files: model names, comparisons, per-model
/// lineage (`checkpoint_a`/`checkpoint_b` fields), and skipped-line counts.
#[derive(Debug, Default)]
pub struct VerdictSet {
    pub models: Vec<String>,
    pub comparisons: Vec<Comparison>,
    pub checkpoints: BTreeMap<String, CheckpointLineage>,
    /// Lines without a usable winner (unparseable judge answers).
    pub skipped: usize,
}

impl VerdictSet {
    fn index(&mut self, name: &str) -> usize {
        if let Some(i) = self.models.iter().position(|m| m == name) {
            return i;
        }
        self.models.push(name.to_owned());
        self.models.len() - 1
    }

    /// Adds the lines of one `verdicts.jsonl`.
    pub fn read_file(&mut self, path: &Path) -> OpResult<()> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| miette!("reading {}: {e}", path.display()))?;
        for (lineno, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| miette!("{}:{}: invalid JSON: {e}", path.display(), lineno + 1))?;
            let name = |k: &str| -> OpResult<String> {
                v.get(k).and_then(|x| x.as_str()).map(str::to_owned).ok_or_else(|| {
                    miette!(help = "verdict lines look like {{\"model_a\": NAME, \"model_b\": NAME, \"winner\": \"A\"|\"B\"|\"0\"}}", "{}:{}: missing string field `{k}`", path.display(), lineno + 1)
                })
            };
            let (ma, mb) = (name("model_a")?, name("model_b")?);
            let outcome = match v.get("winner").and_then(|w| w.as_str()) {
                Some("A") => Outcome::AWins,
                Some("B") => Outcome::BWins,
                Some("0") => Outcome::Tie,
                _ => {
                    self.skipped += 1;
                    continue;
                }
            };
            let (a, b) = (self.index(&ma), self.index(&mb));
            for (m, key) in [(&ma, "checkpoint_a"), (&mb, "checkpoint_b")] {
                if let Some(c) = v.get(key).filter(|c| !c.is_null()) {
                    let c = CheckpointLineage::deserialize(c).map_err(|e| {
                        miette!(
                            "{}:{}: `{key}` is not a checkpoint lineage: {e}",
                            path.display(),
                            lineno + 1
                        )
                    })?;
                    self.checkpoints.entry(m.clone()).or_insert(c);
                }
            }
            self.comparisons.push(Comparison { a, b, outcome });
        }
        Ok(())
    }
}

/// Percentile of sorted values (linear interpolation).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Resolves the inputs (judge artifact directories or files) to JSONL paths.
pub fn verdict_files(items: &[NodeItem]) -> OpResult<Vec<PathBuf>> {
    // An item may be a map node of judges: its elements count one by one.
    let mut out = Vec::new();
    for p in items.iter().flat_map(NodeItem::paths) {
        if p.is_dir() {
            let f = p.join("verdicts.jsonl");
            if !f.is_file() {
                return Err(miette!(
                    help = "pass `judge` nodes or verdict JSONL files",
                    "{}: no verdicts.jsonl in this directory",
                    p.display()
                ));
            }
            out.push(f);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The `davidson` op.
pub struct Davidson;

/// `davidson`'s params (see its spec).
#[derive(Deserialize)]
struct DavidsonParams {
    verdicts: Vec<NodeItem>,
    baseline: String,
    bootstrap: u64,
    seed: i64,
    level: f64,
}

impl Op for Davidson {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "davidson",
            version: 3,
            doc: "Ranks models from pairwise verdicts (judge artifacts or JSONL files of {model_a, model_b, winner}) with the Davidson (1970) model: maximum-likelihood strengths (summing to 1), tie parameter, log-likelihood, each model's score against `baseline` (P(win) + P(tie)/2), its normalised strength π/(π + π_baseline) and seeded bootstrap confidence intervals. Writes davidson.json.",
            params: vec![
                Param::required(
                    "verdicts",
                    Type::List(Box::new(Type::Either(
                        Box::new(Type::Either(Box::new(Type::Dir), Box::new(Type::File))),
                        Box::new(Type::List(Box::new(Type::Dir))),
                    ))),
                    "judge nodes (or map nodes of judges) or verdict JSONL files",
                ),
                Param::optional("baseline", Type::Str, Value::Str(String::new()), "the model scores are computed against; empty: the model in the most comparisons"),
                Param::optional("bootstrap", Type::Int, Value::Int(200), "bootstrap resamples (0: no intervals)").at_least(0.0),
                Param::optional("seed", Type::Int, Value::Int(0), "seed of the bootstrap"),
                Param::optional("level", Type::Float, Value::Float(0.95), "confidence level of the intervals").within(0.0, 1.0),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "json", ty: Type::File, doc: "davidson.json" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<DavidsonParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: DavidsonParams = ctx.params()?;
        let files = verdict_files(&p.verdicts)?;
        let mut set = VerdictSet::default();
        for f in &files {
            set.read_file(f)?;
        }
        if set.skipped > 0 {
            ctx.log(&format!(
                "{} verdict lines without a winner (unparseable answers) are left out",
                set.skipped
            ));
        }
        let n = set.models.len();
        if n < 2 || set.comparisons.is_empty() {
            return Err(miette!(help = "check that the judge produced verdicts", "the verdicts name {n} model(s) and {} usable comparisons; ranking needs at least two models", set.comparisons.len()));
        }
        if !connected(n, &set.comparisons) {
            ctx.log("warning: the comparison graph is not connected; strengths of unlinked groups are not comparable");
        }
        let baseline_param = p.baseline;
        let baseline = if baseline_param.is_empty() {
            let mut counts = vec![0usize; n];
            for c in &set.comparisons {
                counts[c.a] += 1;
                counts[c.b] += 1;
            }
            (0..n)
                .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
                .unwrap_or(0)
        } else {
            set.models
                .iter()
                .position(|m| *m == baseline_param)
                .ok_or_else(|| {
                    miette!(
                        help = format!("models in the verdicts: {}", set.models.join(", ")),
                        "parameter `baseline`: no model named `{baseline_param}` in the verdicts"
                    )
                })?
        };
        let b = p.bootstrap;
        let level = p.level;
        // The declared range is [0, 1]; an interval needs a level between.
        if !(level > 0.0 && level < 1.0) {
            return Err(miette!("parameter `level`: must be in (0, 1), got {level}"));
        }
        // A negative seed is its two's-complement bits, as it always was.
        let seed = p.seed as u64;

        let main = fit(n, &set.comparisons);
        if main.tie == f64::INFINITY {
            ctx.log(
                "warning: every comparison is a tie: the tie parameter is unbounded (written as null) and the strengths are equal",
            );
        } else if !main.converged {
            ctx.log(&format!(
                "warning: the Davidson fit did not converge in {} iterations",
                main.iterations
            ));
        }
        let mut boot_strength: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut boot_score: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut boot_rel: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut boot_tie = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        ctx.progress.set_total(b, "resamples");
        for _ in 0..b {
            ctx.check_cancelled()?;
            let sample: Vec<Comparison> = (0..set.comparisons.len())
                .map(|_| set.comparisons[rng.random_range(0..set.comparisons.len())])
                .collect();
            let f = fit(n, &sample);
            for i in 0..n {
                boot_strength[i].push(f.strengths[i]);
                boot_score[i].push(f.score(i, baseline));
                boot_rel[i].push(f.relative_strength(i, baseline));
            }
            boot_tie.push(f.tie);
            ctx.progress.inc(1);
        }
        let (qlo, qhi) = ((1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0);
        let interval = |v: &mut Vec<f64>| -> Interval {
            if v.is_empty() {
                return None;
            }
            v.sort_by(|a, b| a.total_cmp(b));
            Some([finite(percentile(v, qlo)), finite(percentile(v, qhi))])
        };

        let mut counts: Vec<[u64; 3]> = vec![[0; 3]; n]; // wins, ties, losses
        for c in &set.comparisons {
            match c.outcome {
                Outcome::AWins => {
                    counts[c.a][0] += 1;
                    counts[c.b][2] += 1;
                }
                Outcome::BWins => {
                    counts[c.b][0] += 1;
                    counts[c.a][2] += 1;
                }
                Outcome::Tie => {
                    counts[c.a][1] += 1;
                    counts[c.b][1] += 1;
                }
            }
        }
        let mut strengths = OrderedMap::new();
        let mut scores = OrderedMap::new();
        let mut relative = OrderedMap::new();
        let mut ci = OrderedMap::new();
        let mut count_map = OrderedMap::new();
        for (i, m) in set.models.iter().enumerate() {
            strengths.insert(m.clone(), finite(main.strengths[i]));
            scores.insert(m.clone(), finite(main.score(i, baseline)));
            relative.insert(m.clone(), finite(main.relative_strength(i, baseline)));
            ci.insert(
                m.clone(),
                DavidsonIntervals {
                    strength: interval(&mut boot_strength[i]),
                    score: interval(&mut boot_score[i]),
                    relative_strength: interval(&mut boot_rel[i]),
                },
            );
            count_map.insert(
                m.clone(),
                Counts {
                    wins: counts[i][0],
                    ties: counts[i][1],
                    losses: counts[i][2],
                },
            );
        }
        let models: BTreeSet<&String> = set.models.iter().collect();
        let checkpoints: BTreeMap<String, CheckpointLineage> = set
            .checkpoints
            .iter()
            .filter(|(k, _)| models.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let out = DavidsonResult {
            models: set.models.clone(),
            strengths,
            tie: finite(main.tie),
            loglik: finite(main.loglik),
            baseline: set.models[baseline].clone(),
            score: scores,
            relative_strength: relative,
            ci,
            tie_ci: interval(&mut boot_tie),
            counts: count_map,
            comparisons: set.comparisons.len(),
            skipped: set.skipped,
            bootstrap: Bootstrap {
                resamples: b,
                seed,
                level,
            },
            iterations: main.iterations,
            converged: main.converged,
            checkpoints,
        };
        out.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "Davidson fit of {n} models on {} comparisons: ν = {:.4}, loglik = {:.4}",
            set.comparisons.len(),
            main.tie,
            main.loglik
        ));
        Ok(BTreeMap::from([(
            "json".to_owned(),
            Value::Path(PathBuf::from("davidson.json")),
        )]))
    }
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Davidson)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::run_op;

    fn comps(pairs: &[(usize, usize, usize, usize, usize)]) -> Vec<Comparison> {
        // (i, j, i wins, j wins, ties)
        let mut v = Vec::new();
        for &(i, j, w, l, t) in pairs {
            v.extend(std::iter::repeat_n(
                Comparison {
                    a: i,
                    b: j,
                    outcome: Outcome::AWins,
                },
                w,
            ));
            v.extend(std::iter::repeat_n(
                Comparison {
                    a: i,
                    b: j,
                    outcome: Outcome::BWins,
                },
                l,
            ));
            v.extend(std::iter::repeat_n(
                Comparison {
                    a: i,
                    b: j,
                    outcome: Outcome::Tie,
                },
                t,
            ));
        }
        v
    }

    #[test]
    fn only_ties_give_equal_strengths_and_an_unbounded_tie_parameter() {
        let f = fit(3, &comps(&[(0, 1, 0, 0, 4), (1, 2, 0, 0, 3)]));
        assert_eq!(f.tie, f64::INFINITY);
        assert_eq!(f.strengths, vec![1.0 / 3.0; 3]);
        assert_eq!(f.probabilities(0, 2), (0.0, 1.0, 0.0));
        assert_eq!(f.score(0, 1), 0.5);
        // One decisive outcome makes ν finite again.
        let g = fit(3, &comps(&[(0, 1, 1, 0, 4), (1, 2, 0, 0, 3)]));
        assert!(g.tie.is_finite() && g.tie > 0.0, "{}", g.tie);
    }

    #[test]
    fn two_models_have_the_closed_form_estimate() {
        // With two items the model is saturated, so the MLE reproduces the
        // observed frequencies: π₁/π₂ = w/l and ν = t/√(w·l) (Davidson 1970, §3).
        let f = fit(2, &comps(&[(0, 1, 30, 10, 20)]));
        assert!(f.converged);
        assert!((f.strengths[0] - 0.75).abs() < 1e-9, "{:?}", f.strengths);
        assert!((f.tie - 20.0 / 300f64.sqrt()).abs() < 1e-9, "{}", f.tie);
        let (pw, pt, pl) = f.probabilities(0, 1);
        assert!(
            (pw - 0.5).abs() < 1e-9
                && (pt - 1.0 / 3.0).abs() < 1e-9
                && (pl - 1.0 / 6.0).abs() < 1e-9
        );
        let ll = 30.0 * 0.5f64.ln() + 20.0 * (1.0f64 / 3.0).ln() + 10.0 * (1.0f64 / 6.0).ln();
        assert!((f.loglik - ll).abs() < 1e-9);
        // Score against the loser: P(win) + P(tie)/2.
        assert!((f.score(0, 1) - (0.5 + 1.0 / 6.0)).abs() < 1e-9);
    }

    #[test]
    fn balanced_design_ranks_as_two_points_per_win_one_per_tie() {
        // Davidson (1969, DTIC AD0695468 abstract; JASA 65:317-328, 1970): in a
        // balanced experiment the ML ranking agrees with the score 2W + T.
        let data = comps(&[
            (0, 1, 6, 3, 3),
            (0, 2, 5, 2, 5),
            (0, 3, 7, 1, 4),
            (1, 2, 4, 4, 4),
            (1, 3, 6, 2, 4),
            (2, 3, 5, 5, 2),
        ]);
        let f = fit(4, &data);
        let mut score = [0.0f64; 4];
        for c in &data {
            match c.outcome {
                Outcome::AWins => score[c.a] += 2.0,
                Outcome::BWins => score[c.b] += 2.0,
                Outcome::Tie => {
                    score[c.a] += 1.0;
                    score[c.b] += 1.0;
                }
            }
        }
        let mut by_fit: Vec<usize> = (0..4).collect();
        by_fit.sort_by(|&a, &b| f.strengths[b].total_cmp(&f.strengths[a]));
        let mut by_score: Vec<usize> = (0..4).collect();
        by_score.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
        assert_eq!(by_fit, by_score, "{:?} {:?}", f.strengths, score);
    }

    #[test]
    fn fit_is_a_stationary_point_of_the_likelihood() {
        let data = comps(&[
            (0, 1, 9, 4, 5),
            (1, 2, 3, 6, 2),
            (0, 2, 8, 2, 3),
            (2, 3, 4, 4, 6),
            (0, 3, 5, 1, 2),
        ]);
        let f = fit(4, &data);
        let pairs = pair_counts(4, &data);
        let h = 1e-6;
        // Directional derivatives along each log-strength and log ν vanish.
        for k in 0..5 {
            let at = |s: f64| {
                let mut pi = f.strengths.clone();
                let mut nu = f.tie;
                if k < 4 {
                    pi[k] *= s.exp();
                } else {
                    nu *= s.exp();
                }
                loglik(&pairs, &pi, nu)
            };
            let d = (at(h) - at(-h)) / (2.0 * h);
            assert!(d.abs() < 1e-5, "parameter {k}: derivative {d}");
        }
    }

    #[test]
    fn relabelling_and_swapping_sides_do_not_change_the_fit() {
        let data = comps(&[(0, 1, 9, 4, 5), (1, 2, 3, 6, 2), (0, 2, 8, 2, 3)]);
        let f = fit(3, &data);
        let perm = [2, 0, 1];
        let swapped: Vec<Comparison> = data
            .iter()
            .map(|c| Comparison {
                a: perm[c.b],
                b: perm[c.a],
                outcome: match c.outcome {
                    Outcome::AWins => Outcome::BWins,
                    Outcome::BWins => Outcome::AWins,
                    Outcome::Tie => Outcome::Tie,
                },
            })
            .collect();
        let g = fit(3, &swapped);
        for (i, &p) in perm.iter().enumerate() {
            assert!((f.strengths[i] - g.strengths[p]).abs() < 1e-9);
        }
        assert!((f.tie - g.tie).abs() < 1e-9 && (f.loglik - g.loglik).abs() < 1e-9);
    }

    #[test]
    fn recovers_simulated_strengths() {
        let truth = [0.4, 0.3, 0.2, 0.1];
        let nu = 0.6;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut data = Vec::new();
        for i in 0..4 {
            for j in (i + 1)..4 {
                let (pw, pt, _) = probabilities(truth[i], truth[j], nu);
                for _ in 0..6000 {
                    let u: f64 = rng.random();
                    let outcome = if u < pw {
                        Outcome::AWins
                    } else if u < pw + pt {
                        Outcome::Tie
                    } else {
                        Outcome::BWins
                    };
                    data.push(Comparison {
                        a: i,
                        b: j,
                        outcome,
                    });
                }
            }
        }
        let f = fit(4, &data);
        for (got, want) in f.strengths.iter().zip(truth) {
            assert!(
                (got - want).abs() < 0.04 * want.max(0.1),
                "{:?}",
                f.strengths
            );
        }
        assert!((f.tie - nu).abs() < 0.03, "{}", f.tie);
    }

    /// Davidson's own worked example: R. R. Davidson (1970), "On extending
    /// the Bradley-Terry model to accommodate ties in paired comparison
    /// experiments", JASA 65(329), 317–328, Example 2: six brands of
    /// chocolate pudding, every pair tasted, counts (i, j, wins of i, wins of
    /// j, ties) below. The counts are the `pudding` data set of the R package
    /// PlackettLuce (its first six rows are printed in the vignette; all 15
    /// rows also in d-a-henderson/GPL `puddings.txt`).
    ///
    /// The published estimates: the PlackettLuce vignette "Introduction to
    /// PlackettLuce" (H. Turner, J. van Etten, D. Firth, I. Kosmidis),
    /// §2.1.1 "Pudding example (with ties)", fits this table with the
    /// Davidson model and prints the worths, normalised to sum to 1 as ours,
    /// "to obtain the same worth parameters as Davidson (1970)":
    /// 0.1388005 0.1729985 0.1617420 0.1653930 0.1586805 0.2023855, tie
    /// parameter (ν, the same parameterisation) 0.7468147; its summary gives
    /// log ν = −0.2919 and residual deviance (−2 log-likelihood) 1619.4.
    /// Those figures stop after 7 iterations, as Davidson's table did, so
    /// they agree with the maximum-likelihood estimate to the 4 decimals
    /// Davidson published, not to all 7 digits; that is the precision
    /// checked here.
    #[test]
    fn reproduces_davidsons_pudding_example() {
        let table: [(usize, usize, usize, usize, usize); 15] = [
            (1, 2, 19, 22, 16),
            (1, 3, 16, 19, 12),
            (2, 3, 19, 19, 10),
            (1, 4, 18, 23, 13),
            (2, 4, 23, 19, 9),
            (3, 4, 19, 20, 15),
            (1, 5, 13, 19, 18),
            (2, 5, 16, 20, 12),
            (3, 5, 16, 15, 17),
            (4, 5, 17, 14, 16),
            (1, 6, 18, 21, 12),
            (2, 6, 22, 20, 12),
            (3, 6, 13, 18, 10),
            (4, 6, 14, 19, 18),
            (5, 6, 11, 21, 12),
        ];
        let rows: Vec<_> = table
            .iter()
            .map(|&(i, j, w, l, t)| (i - 1, j - 1, w, l, t))
            .collect();
        let f = fit(6, &comps(&rows));
        assert!(f.converged);
        let published = [0.1388, 0.1730, 0.1617, 0.1654, 0.1587, 0.2024];
        for (k, (got, want)) in f.strengths.iter().zip(published).enumerate() {
            assert!(
                (got - want).abs() <= 5e-5,
                "brand {}: {got} vs published {want}",
                k + 1
            );
        }
        assert!((f.tie - 0.7468).abs() <= 5e-5, "nu {}", f.tie);
        assert!(
            (f.tie.ln() - -0.2919).abs() <= 5e-5,
            "log nu {}",
            f.tie.ln()
        );
        assert!((-2.0 * f.loglik - 1619.4).abs() <= 0.05, "{}", f.loglik);
    }

    #[test]
    fn op_writes_strengths_scores_and_intervals() {
        let tmp = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        let add = |lines: &mut String, a: &str, b: &str, w: &str, n: usize| {
            for _ in 0..n {
                lines.push_str(&format!("{{\"model_a\": \"{a}\", \"model_b\": \"{b}\", \"winner\": \"{w}\", \"checkpoint_a\": {{\"tokens_seen\": 100}}}}\n"));
            }
        };
        add(&mut lines, "ckpt", "src", "A", 30);
        add(&mut lines, "ckpt", "src", "B", 10);
        add(&mut lines, "ckpt", "src", "0", 20);
        lines.push_str("{\"model_a\": \"ckpt\", \"model_b\": \"src\", \"winner\": null}\n");
        let judge_dir = tmp.path().join("judge");
        std::fs::create_dir_all(&judge_dir).unwrap();
        std::fs::write(judge_dir.join("verdicts.jsonl"), lines).unwrap();
        let out = tmp.path().join("out");
        let res = run_op(
            &Davidson,
            &[
                ("verdicts", Value::List(vec![Value::Path(judge_dir)])),
                ("baseline", Value::Str("src".into())),
                ("bootstrap", Value::Int(50)),
            ],
            &out,
        );
        res.unwrap();
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("davidson.json")).unwrap())
                .unwrap();
        let s = j["strengths"]["ckpt"].as_f64().unwrap() + j["strengths"]["src"].as_f64().unwrap();
        assert!((s - 1.0).abs() < 1e-9);
        assert!((j["strengths"]["ckpt"].as_f64().unwrap() - 0.75).abs() < 1e-9);
        assert!((j["score"]["ckpt"].as_f64().unwrap() - (0.5 + 1.0 / 6.0)).abs() < 1e-9);
        assert!((j["score"]["src"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        // Normalised strength: for two models Davidson's MLE has π₁/π₂ = W₁/W₂
        // (the likelihood equations with a single pair), so π₁/(π₁+π₂) = 30/(30+10).
        assert!((j["relative_strength"]["ckpt"].as_f64().unwrap() - 0.75).abs() < 1e-9);
        assert!((j["relative_strength"]["src"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        let rci = j["ci"]["ckpt"]["relative_strength"].as_array().unwrap();
        assert!(rci[0].as_f64().unwrap() < 0.75 && 0.75 < rci[1].as_f64().unwrap());
        assert_eq!(j["skipped"], 1);
        assert_eq!(j["counts"]["ckpt"]["wins"], 30);
        assert_eq!(j["checkpoints"]["ckpt"]["tokens_seen"], 100);
        let ci = j["ci"]["ckpt"]["score"].as_array().unwrap();
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo < 0.6667 && 0.6667 < hi && hi - lo < 0.3, "{lo} {hi}");
        // A baseline that is not in the verdicts is an error naming the models.
        let res = run_op(
            &Davidson,
            &[
                (
                    "verdicts",
                    Value::List(vec![Value::Path(tmp.path().join("judge"))]),
                ),
                ("baseline", Value::Str("nope".into())),
            ],
            &tmp.path().join("o2"),
        );
        assert!(format!("{:?}", res.unwrap_err()).contains("nope"));
    }
}
