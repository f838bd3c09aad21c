//! Failure modes (language mixing, verbosity, repetition).

use super::*;

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
        let j = artifact(p, "failure_modes.json")?;
        let name = j["model"].as_str().unwrap_or("?").to_owned();
        let lm = &j["language_mixing"];
        let vb = &j["verbosity"];
        let rp = &j["repetition"];
        rows.push(vec![
            name.clone(),
            fmt_opt(f(&lm["flagged_share"]), 3),
            fmt_opt(f(&lm["mean_foreign_share"]), 3),
            fmt_opt(f(&vb["mean_ratio"]), 2),
            fmt_opt(f(&vb["longer_share"]), 3),
            fmt_opt(f(&vb["truncated_share"]), 3),
            fmt_opt(f(&rp["flagged_share"]), 3),
        ]);
        cats.push(name);
        values.push(vec![
            f(&lm["flagged_share"]).unwrap_or(0.0),
            f(&vb["longer_share"]).unwrap_or(0.0),
            f(&rp["flagged_share"]).unwrap_or(0.0),
        ]);
    }
    doc.table(&Table {
        header: [
            "model",
            "responses with language mixing",
            "foreign word share",
            "length ratio vs baseline",
            "longer than baseline",
            "truncated",
            "repetitive",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
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
