//! Davidson scores against each ranking's baseline.

use super::*;
use crate::artifacts::eval::DavidsonResult;
use crate::artifacts::{interval_ends, JsonFile, OrderedMap};

pub(in crate::report) fn davidson_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    metric: &str,
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Generative quality: Davidson ranking");
    let (what, y_label) = if metric == "score" {
        ("Davidson score", "P(win) + P(tie)/2 vs baseline")
    } else {
        ("Davidson normalised strength", "π / (π + π_baseline)")
    };
    doc.para(&format!(
        "Two figures per model from one joint Davidson fit, both 0.5 at parity with the ranking's baseline: the normalised strength π / (π + π_baseline), and the score P(win) + P(tie)/2 under the fitted model. Plotted: **{}** (report param `davidson_metric`). Intervals are bootstrap percentiles.",
        if metric == "score" { "the score P(win) + P(tie)/2" } else { "the normalised strength π / (π + π_baseline)" }
    ));
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for p in paths {
        let j = DavidsonResult::read(p).wrap_err("report: parameter `davidson`")?;
        let baseline = j.baseline.clone();
        let series = format!("vs {baseline}");
        let (mut wins, mut losses) = (0.0, 0.0);
        // A model without lineage besides the baseline (the source judged
        // against the larger model) is the curve's starting point.
        let mut start: Option<(String, f64)> = None;
        let mut last: Option<(String, f64, f64)> = None;
        for m in &j.models {
            let figure = |map: &OrderedMap<Option<f64>>, m: &str| map.get(m).copied().flatten();
            let score = figure(&j.score, m);
            // Older artifacts have no normalised strength: from the strengths.
            let rel = figure(&j.relative_strength, m).or_else(|| {
                let (pi, pb) = (figure(&j.strengths, m)?, figure(&j.strengths, &baseline)?);
                (pi + pb > 0.0).then(|| pi / (pi + pb))
            });
            let key = if metric == "score" {
                "score"
            } else {
                "relative_strength"
            };
            let ci = j.ci.get(m).and_then(|i| interval_ends(i.of(key)));
            let ck = j.checkpoints.get(m.as_str());
            let c = j.counts.get(m).copied().unwrap_or_default();
            wins += c.wins as f64;
            losses += c.losses as f64;
            rows.push(vec![
                m.clone(),
                baseline.clone(),
                fmt_opt(figure(&j.strengths, m), 4),
                fmt_opt(rel, 3),
                fmt_opt(score, 3),
                ci.map_or("–".into(), |(a, b)| format!("[{a:.3}, {b:.3}]")),
                format!("{}/{}/{}", c.wins, c.ties, c.losses),
                tokens_of(ck).map_or("–".into(), human),
            ]);
            if m == &baseline {
                continue;
            }
            let v = if metric == "score" { score } else { rel };
            let tokens = tokens_of(ck);
            match (v, tokens) {
                (Some(v), None) => start = Some((m.clone(), v)),
                (Some(v), Some(t))
                    if last.as_ref().is_none_or(|l: &(String, f64, f64)| t >= l.1) =>
                {
                    last = Some((m.clone(), t, v))
                }
                _ => {}
            }
            if let Some(v) = v {
                points.push(Point {
                    series: series.clone(),
                    label: m.clone(),
                    tokens: tokens_of(ck),
                    flops: flops_of(ck),
                    value: v,
                    interval: ci,
                });
            }
        }
        rows.push(vec![
            format!("ν (tie) = {}", fmt_opt(j.tie, 3)),
            baseline.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!("{} comparisons", j.comparisons),
            String::new(),
        ]);
        if let (Some((m0, v0)), Some((m1, t1, v1))) = (&start, &last) {
            doc.para(&format!(
                "Against {baseline}: {m0} starts at {v0:.3}; the last checkpoint ({m1}, {} tokens) reaches {v1:.3}, {} the starting value (the training-dynamics paper's §5.3 reports e.g. 0.055 → 0.142 for Qwen2.5-3B against 7B).",
                human(*t1),
                if *v0 > 0.0 { format!("{:.2}×", v1 / v0) } else { "undefined times".to_owned() }
            ));
        }
        if wins + losses == 0.0 && j.comparisons > 0 {
            doc.para(&format!(
                "**The judge could not discriminate against {baseline}: every one of its {} comparisons is a tie**, so every strength is equal and every value is 0.5 — this says nothing about the models. Use a judge that can tell responses apart: a large instruction-tuned model through an endpoint (the training-dynamics paper used gpt-4.1-mini; `judge_model`, `judge_url`, `judge_key_env` in the pipeline), or at least a larger local model than the ones judged.",
                j.comparisons
            ));
        }
    }
    doc.table(
        &[
            "model",
            "baseline",
            "strength π",
            "π / (π + π_bl)",
            "P(win) + P(tie)/2",
            &format!(
                "95% CI ({})",
                if metric == "score" {
                    "score"
                } else {
                    "π / (π + π_bl)"
                }
            ),
            "W/T/L",
            "tokens seen",
        ],
        rows,
    );
    trajectories(
        doc,
        dir,
        "davidson",
        what,
        y_label,
        &points,
        &[("parity (0.5)".to_owned(), 0.5)],
    )
}
