//! Win/tie/loss distributions of the judge runs and the flows between
//! the two orders.

use super::*;
use crate::artifacts::eval::{JudgeSummary, OrderVerdict, Verdict};
use crate::artifacts::JsonLines;

pub(in crate::report) fn judge_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
) -> OpResult<()> {
    let runs: Vec<JudgeSummary> = read_param(paths, "judge")?;
    if runs.is_empty() {
        return Ok(());
    }
    doc.heading("Pairwise judgements: wins, ties, losses");
    let name = |j: &JudgeSummary| format!("{} vs {}", j.model_a, j.model_b);
    // Shares of the judged prompts (at least one, so an empty run is 0s).
    let shares = |j: &JudgeSummary| {
        let (w, t, l) = (j.wins as f64, j.ties as f64, j.losses as f64);
        let total = (w + t + l).max(1.0);
        [w / total, t / total, l / total]
    };
    let rows = runs
        .iter()
        .map(|j| {
            vec![
                name(j),
                j.wins.to_string(),
                j.ties.to_string(),
                j.losses.to_string(),
                j.unparseable.to_string(),
                j.inconsistent.to_string(),
                format!("{:.3}", shares(j)[0]),
            ]
        })
        .collect();
    doc.table(
        &[
            "pair (A vs B)",
            "A wins",
            "ties",
            "A losses",
            "unparseable",
            "inconsistent orders",
            "win rate",
        ],
        rows,
    );
    order_flows(doc, paths)?;
    let chart = Chart::Bars(BarChart {
        title: "Win / tie / loss distribution (model A's view)".into(),
        x_label: "share of judged prompts".into(),
        categories: runs.iter().map(name).collect(),
        groups: vec!["win".into(), "tie".into(), "loss".into()],
        values: runs.iter().map(|j| shares(j).to_vec()).collect(),
        stacked: true,
    });
    doc.figure(
        dir,
        "judge_wtl",
        &chart,
        "Share of wins, ties and losses per judged pair",
    )
}

/// Model A's outcome in one order's raw verdict: in the first order A is
/// shown first ("A" = model A), in the swapped order "A" is model B.
fn order_outcome(v: &OrderVerdict, swapped: bool) -> usize {
    match (v.winner.as_deref(), swapped) {
        (Some("A"), false) | (Some("B"), true) => 0,
        (Some("0"), _) => 1,
        (Some("B"), false) | (Some("A"), true) => 2,
        _ => 3,
    }
}

/// Per-prompt flows between the two orders of each judged pair (issue 13,
/// item 4; 004 Figs 7/8 show such flows): how the verdict with model A shown
/// first maps onto the verdict with model B shown first, and the rule that
/// combines them.
pub(in crate::report) fn order_flows(doc: &mut Doc, paths: &[PathBuf]) -> OpResult<()> {
    const CAT: [&str; 4] = ["win", "tie", "loss", "unreadable"];
    let mut rows = Vec::new();
    for p in paths {
        let file = p.join(Verdict::NAME);
        if !file.is_file() {
            continue;
        }
        let verdicts = Verdict::read_all(&file).wrap_err("report")?;
        let mut flow = [[0u64; 4]; 4];
        let name = verdicts
            .first()
            .map(|v| format!("{} vs {}", v.model_a, v.model_b))
            .unwrap_or_default();
        for v in &verdicts {
            flow[order_outcome(&v.a_first, false)][order_outcome(&v.b_first, true)] += 1;
        }
        for (i, r) in flow.iter().enumerate() {
            if r.iter().sum::<u64>() == 0 {
                continue;
            }
            let mut row = vec![name.clone(), CAT[i].to_owned()];
            row.extend(r.iter().map(u64::to_string));
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    doc.para("Per-prompt flows between the two orders, in model A's view: each prompt is judged with A shown first and with B shown first. Rule combining them (the verdict Davidson is fed): both orders agree → that verdict; they disagree → a tie; either unreadable → no verdict (counted unparseable, left out of the fit).");
    doc.table(
        &[
            "pair (A vs B)",
            "A shown first",
            "→ B first: win",
            "tie",
            "loss",
            "unreadable",
        ],
        rows,
    );
    Ok(())
}
