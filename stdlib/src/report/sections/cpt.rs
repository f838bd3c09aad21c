//! CPT alone vs CPT + SLERP (004 Fig. 3): the raw training checkpoints and
//! their merges with the source, benchmark by benchmark.

use super::*;

/// A checkpoint's step, tokens, FLOPs and accuracy.
type Scored = (u64, Option<f64>, Option<f64>, f64);

fn scored(paths: &[PathBuf], metric: &str, param: &str) -> OpResult<Vec<Scored>> {
    let mut out = Vec::new();
    for p in paths {
        let j = McqaResult::read(p).wrap_err_with(|| format!("report: parameter `{param}`"))?;
        let ck = j.checkpoint.as_ref();
        let Some(step) = step_of(ck) else {
            return Err(miette!(
                help = "pass the mcqa nodes of training checkpoints (or of their merges), not of the source",
                "report: parameter `{param}`: {} has no checkpoint step (flow_checkpoint.json lineage)",
                p.display()
            ));
        };
        let (value, _) = j
            .metric(metric)
            .ok_or_else(|| miette!("report: no metric `{metric}` in an mcqa result"))?;
        out.push((step, tokens_of(ck), flops_of(ck), value));
    }
    out.sort_by_key(|s| s.0);
    Ok(out)
}

/// `cpt[i]` and `merged[i]`: the mcqa artifacts of benchmark `names[i]` for
/// the raw checkpoints and for their merges, paired by training step.
pub(in crate::report) fn cpt_vs_merged_section(
    doc: &mut Doc,
    dir: &Path,
    cpt: &[Vec<PathBuf>],
    merged: &[Vec<PathBuf>],
    names: &[String],
    metric: &str,
) -> OpResult<()> {
    if cpt.is_empty() {
        return Ok(());
    }
    doc.heading("CPT alone vs CPT + SLERP");
    doc.para(&format!(
        "Accuracy ({metric}) of each raw continued-pre-training checkpoint (CPT) and of its SLERP merge with the source (CPT + SLERP), paired by training step (the training-dynamics paper's Fig. 3). Δ = CPT + SLERP − CPT: what merging back towards the source recovers or costs."
    ));
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for (i, (c, m)) in cpt.iter().zip(merged).enumerate() {
        let bench = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("benchmark {}", i + 1));
        let raw = scored(c, metric, "cpt")?;
        let mer = scored(m, metric, "cpt_merged")?;
        let merged_at = |step: u64| mer.iter().find(|x| x.0 == step).map(|x| x.3);
        // A row per raw checkpoint beside its merge, then one per merge
        // without a raw checkpoint of its step.
        let raw_rows = raw
            .iter()
            .map(|&(step, tokens, _, a)| (step, tokens, Some(a), merged_at(step)));
        let merged_only = mer
            .iter()
            .filter(|x| !raw.iter().any(|r| r.0 == x.0))
            .map(|&(step, tokens, _, b)| (step, tokens, None, Some(b)));
        for (step, tokens, a, b) in raw_rows.chain(merged_only) {
            let delta = match (a, b) {
                (Some(a), Some(b)) => format!("{:+.4}", b - a),
                _ => "–".into(),
            };
            rows.push(vec![
                bench.clone(),
                step.to_string(),
                tokens.map_or("–".into(), human),
                fmt_opt(a, 4),
                fmt_opt(b, 4),
                delta,
            ]);
        }
        for (series, list) in [("CPT", &raw), ("CPT + SLERP", &mer)] {
            for &(step, tokens, flops, value) in list {
                points.push(Point {
                    series: format!("{bench} {series}"),
                    label: format!("{bench} {series} @ step {step}"),
                    tokens,
                    flops,
                    value,
                    interval: None,
                });
            }
        }
    }
    doc.table(
        &[
            "benchmark",
            "step",
            "tokens seen",
            "CPT",
            "CPT + SLERP",
            "Δ",
        ],
        rows,
    );
    trajectories(
        doc,
        dir,
        "cpt_vs_slerp",
        "CPT vs CPT + SLERP accuracy",
        &format!("MCQA {metric}"),
        &points,
        &[],
    )
}
