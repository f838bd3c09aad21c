//! Against the larger model: the win rate of every checkpoint from the
//! source's starting point, the ratio after/before adaptation (004 §5.3),
//! and the per-prompt flow of verdict categories from the source (BL) to
//! the adapted model (FT) (004 Figs 7/8).

use super::*;
use crate::artifacts::eval::{JudgeSummary, Verdict};
use crate::artifacts::{JsonFile, JsonLines};
use crate::report::plots::FlowChart;

/// The verdict categories in model A's view, in the flow figure's order.
pub(in crate::report) const CATEGORIES: [&str; 4] = ["win", "tie", "loss", "no verdict"];

/// Model A's category in a combined verdict: "A" a win, "0" a tie, "B" a
/// loss, anything else (unreadable) no verdict.
pub(in crate::report) fn category(winner: Option<&str>) -> usize {
    match winner {
        Some("A") => 0,
        Some("0") => 1,
        Some("B") => 2,
        _ => 3,
    }
}

/// counts[bl][ft]: prompts whose verdict against the larger model was
/// category `bl` for the source and `ft` for the adapted model, joined by
/// prompt id (prompts judged in only one of the two runs are left out).
pub(in crate::report) fn category_flows(start: &[Verdict], adapted: &[Verdict]) -> [[u64; 4]; 4] {
    let before: BTreeMap<&str, usize> = start
        .iter()
        .map(|v| (v.id.as_str(), category(v.winner.as_deref())))
        .collect();
    let mut counts = [[0u64; 4]; 4];
    for v in adapted {
        if let Some(&bl) = before.get(v.id.as_str()) {
            counts[bl][category(v.winner.as_deref())] += 1;
        }
    }
    counts
}

/// wins / judged, from the summary (or its counts).
fn win_rate(j: &JudgeSummary) -> Option<f64> {
    j.win_rate.or_else(|| {
        let judged = (j.wins + j.ties + j.losses) as f64;
        (judged > 0.0).then(|| j.wins as f64 / judged)
    })
}

/// The latest checkpoint's tokens seen, win rate, score, name and artifact.
type Latest = (f64, Option<f64>, Option<f64>, String, PathBuf);

fn ratio(after: Option<f64>, before: Option<f64>) -> String {
    match (after, before) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        (Some(_), Some(_)) => "undefined (starts at 0)".to_owned(),
        _ => "–".to_owned(),
    }
}

pub(in crate::report) fn larger_section(
    doc: &mut Doc,
    dir: &Path,
    runs: &[Vec<PathBuf>],
    starts: &[PathBuf],
    names: &[String],
) -> OpResult<()> {
    if runs.is_empty() {
        return Ok(());
    }
    doc.heading("Against the larger model: win rate and per-prompt flows");
    doc.para("Each checkpoint (after the merge) judged against the larger general model, from the starting point of the source judged against the same model (the training-dynamics paper's §5.3 reports the start and end of such curves, e.g. 0.055 → 0.142 for Qwen2.5-3B against 7B). Win rate = wins / judged prompts (ties count as not won); score = (wins + ties/2) / judged. Ratio = the last checkpoint's value over the source's: the gain of adaptation against the larger model. The relative gain in MCQA against the larger model is in the G_rel section (the figures against `larger`).");
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let mut refs = Vec::new();
    let mut summary = Vec::new();
    let mut flows = Vec::new();
    // Decisive verdicts (wins + losses) over every run of the section.
    let mut decisive = 0;
    for (i, (group, start)) in runs.iter().zip(starts).enumerate() {
        let s = JudgeSummary::read(start).wrap_err("report: parameter `larger_judge_start`")?;
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("{} vs {}", s.model_a, s.model_b));
        let (s_rate, s_score) = (win_rate(&s), s.score);
        decisive += s.wins + s.losses;
        rows.push(vec![
            name.clone(),
            format!("{} (start)", s.model_a),
            "–".into(),
            fmt_opt(s_rate, 3),
            fmt_opt(s_score, 3),
            format!("{}/{}/{}", s.wins, s.ties, s.losses),
        ]);
        if let Some(v) = s_rate {
            refs.push((format!("{name}: source"), v));
        }
        let start_verdicts = Verdict::read_all(start).ok();
        let mut last: Option<Latest> = None;
        for p in group {
            let j = JudgeSummary::read(p).wrap_err("report: parameter `larger_judge`")?;
            let ck = j.checkpoint_a.as_ref();
            let tokens = tokens_of(ck);
            let flops = flops_of(ck);
            let rate = win_rate(&j);
            decisive += j.wins + j.losses;
            rows.push(vec![
                name.clone(),
                j.model_a.clone(),
                tokens.map_or("–".into(), human),
                fmt_opt(rate, 3),
                fmt_opt(j.score, 3),
                format!("{}/{}/{}", j.wins, j.ties, j.losses),
            ]);
            if let Some(v) = rate {
                points.push(Point {
                    series: name.clone(),
                    label: j.model_a.clone(),
                    tokens,
                    flops,
                    value: v,
                    interval: None,
                });
            }
            if let Some(t) = tokens {
                if last.as_ref().is_none_or(|l| t >= l.0) {
                    last = Some((t, rate, j.score, j.model_a.clone(), p.clone()));
                }
            }
        }
        if let Some((t, rate, score, model, path)) = last {
            summary.push(vec![
                name.clone(),
                fmt_opt(s_rate, 3),
                fmt_opt(rate, 3),
                ratio(rate, s_rate),
                fmt_opt(s_score, 3),
                fmt_opt(score, 3),
                ratio(score, s_score),
                format!("{model} ({} tokens)", human(t)),
            ]);
            if let (Some(before), Ok(after)) = (&start_verdicts, Verdict::read_all(&path)) {
                flows.push((name.clone(), model, category_flows(before, &after)));
            }
        }
    }
    doc.table(
        &[
            "series",
            "model",
            "tokens seen",
            "win rate",
            "score",
            "W/T/L",
        ],
        rows,
    );
    if decisive == 0 {
        doc.para("**The judge could not discriminate against the larger model: every verdict is a tie** (or unreadable), so every win rate is 0 and every prompt flows tie → tie — this says nothing about the models. Use a judge that can tell responses apart (see the Davidson section).");
    }
    if !summary.is_empty() {
        doc.para("Before and after adaptation (the source, then the last checkpoint):");
        doc.table(
            &[
                "series",
                "win rate before",
                "after",
                "ratio",
                "score before",
                "after",
                "ratio",
                "last checkpoint",
            ],
            summary,
        );
    }
    let mut with_start: Vec<Point> = points;
    // The sources' win rates are the dashed starting lines.
    with_start.extend(refs.iter().map(|(label, v)| Point {
        series: label.clone(),
        label: label.clone(),
        tokens: None,
        flops: None,
        value: *v,
        interval: None,
    }));
    trajectories(
        doc,
        dir,
        "win_rate_vs_larger",
        "Win rate against the larger model",
        "wins / judged prompts",
        &with_start,
        &[],
    )?;
    flow_figures(doc, dir, &flows)
}

/// The per-prompt category flows, BL (the source against the larger model)
/// → FT (the last checkpoint against it): a table and a parallel-categories
/// figure per series.
fn flow_figures(
    doc: &mut Doc,
    dir: &Path,
    flows: &[(String, String, [[u64; 4]; 4])],
) -> OpResult<()> {
    if flows.is_empty() {
        return Ok(());
    }
    doc.para("Per-prompt flows (the training-dynamics paper's Figs 7/8): each prompt's verdict against the larger model for the source (BL) and for the last checkpoint (FT), joined by prompt id. Each verdict is the combination of the two orders (both agree → that verdict; they disagree → a tie; either unreadable → no verdict).");
    let mut rows = Vec::new();
    for (name, model, counts) in flows {
        for (bl, r) in counts.iter().enumerate() {
            if r.iter().sum::<u64>() == 0 {
                continue;
            }
            let mut row = vec![name.clone(), model.clone(), CATEGORIES[bl].to_owned()];
            row.extend(r.iter().map(u64::to_string));
            rows.push(row);
        }
    }
    doc.table(
        &[
            "series",
            "FT model",
            "BL (source) verdict",
            "→ FT: win",
            "tie",
            "loss",
            "no verdict",
        ],
        rows,
    );
    let mut stems = std::collections::BTreeSet::new();
    for (k, (name, model, counts)) in flows.iter().enumerate() {
        let mut stem = format!("flow_{}", slug(name));
        if !stems.insert(stem.clone()) {
            stem = format!("{stem}_{k}");
        }
        let chart = Chart::Flow(FlowChart {
            title: format!("{name}: verdicts against the larger model, BL → FT"),
            left: "BL (source)".to_owned(),
            right: format!("FT ({model})"),
            categories: CATEGORIES.map(String::from).to_vec(),
            counts: counts.iter().map(|r| r.to_vec()).collect(),
        });
        doc.figure(
            dir,
            &stem,
            &chart,
            &format!("{name}: how each prompt's verdict against the larger model moves from the source (left) to {model} (right); band width = prompts"),
        )?;
    }
    Ok(())
}
