//! Failure modes (language mixing, verbosity, repetition).

use super::*;
use crate::artifacts::eval::FailureModesResult;
use crate::artifacts::JsonFile;

pub(in crate::report) fn failure_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Failure modes");
    let mut rows = Vec::new();
    let mut cats = Vec::new();
    let mut values = Vec::new();
    for p in paths {
        let j = FailureModesResult::read(p).wrap_err("report: parameter `failure_modes`")?;
        let (lm, vb, rp) = (&j.language_mixing, &j.verbosity, &j.repetition);
        rows.push(vec![
            j.model.clone(),
            fmt_opt(lm.flagged_share, 3),
            fmt_opt(lm.mean_foreign_share, 3),
            fmt_opt(vb.mean_ratio, 2),
            fmt_opt(vb.longer_share, 3),
            fmt_opt(vb.truncated_share, 3),
            fmt_opt(rp.flagged_share, 3),
        ]);
        cats.push(j.model.clone());
        values.push(vec![
            lm.flagged_share.unwrap_or(0.0),
            vb.longer_share.unwrap_or(0.0),
            rp.flagged_share.unwrap_or(0.0),
        ]);
    }
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
        categories: cats,
        groups: vec![
            "language mixing".into(),
            "longer than baseline".into(),
            "repetitive".into(),
        ],
        values,
        stacked: false,
    });
    doc.figure(
        dir,
        "failure_modes",
        &chart,
        "Share of responses with each failure mode",
    )
}
