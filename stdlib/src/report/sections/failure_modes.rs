//! Failure modes (language mixing, verbosity, repetition).

use super::*;
use crate::artifacts::eval::FailureModesResult;

pub(in crate::report) fn failure_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
) -> OpResult<()> {
    let results: Vec<FailureModesResult> = read_param(paths, "failure_modes")?;
    if results.is_empty() {
        return Ok(());
    }
    doc.heading("Failure modes");
    let rows = results
        .iter()
        .map(|j| {
            let (lm, vb, rp) = (&j.language_mixing, &j.verbosity, &j.repetition);
            vec![
                j.model.clone(),
                fmt_opt(lm.flagged_share, 3),
                fmt_opt(lm.mean_foreign_share, 3),
                fmt_opt(vb.mean_ratio, 2),
                fmt_opt(vb.longer_share, 3),
                fmt_opt(vb.truncated_share, 3),
                fmt_opt(rp.flagged_share, 3),
            ]
        })
        .collect();
    // The three shares charted, no share counted as 0.
    let charted = |j: &FailureModesResult| {
        [
            j.language_mixing.flagged_share,
            j.verbosity.longer_share,
            j.repetition.flagged_share,
        ]
        .map(|s| s.unwrap_or(0.0))
        .to_vec()
    };
    doc.table(
        &[
            "model",
            "responses with language mixing",
            "foreign word share",
            "length ratio vs baseline",
            "longer than baseline",
            "truncated",
            "repetitive",
        ],
        rows,
    );
    let chart = Chart::Bars(BarChart {
        title: "Failure modes: share of responses".into(),
        x_label: "share of responses".into(),
        categories: results.iter().map(|j| j.model.clone()).collect(),
        groups: vec![
            "language mixing".into(),
            "longer than baseline".into(),
            "repetitive".into(),
        ],
        values: results.iter().map(charted).collect(),
        stacked: false,
    });
    doc.figure(
        dir,
        "failure_modes",
        &chart,
        "Share of responses with each failure mode",
    )
}
