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
        for &(step, tokens, flops, a) in &raw {
            let merged_acc = mer.iter().find(|x| x.0 == step).map(|x| x.3);
            rows.push(vec![
                bench.clone(),
                step.to_string(),
                tokens.map_or("–".into(), human),
                format!("{a:.4}"),
                fmt_opt(merged_acc, 4),
                merged_acc.map_or("–".into(), |b| format!("{:+.4}", b - a)),
            ]);
            points.push(Point {
                series: format!("{bench} CPT"),
                label: format!("{bench} CPT @ step {step}"),
                tokens,
                flops,
                value: a,
                interval: None,
            });
        }
        for &(step, tokens, flops, b) in &mer {
            if !raw.iter().any(|x| x.0 == step) {
                rows.push(vec![
                    bench.clone(),
                    step.to_string(),
                    tokens.map_or("–".into(), human),
                    "–".into(),
                    format!("{b:.4}"),
                    "–".into(),
                ]);
            }
            points.push(Point {
                series: format!("{bench} CPT + SLERP"),
                label: format!("{bench} CPT + SLERP @ step {step}"),
                tokens,
                flops,
                value: b,
                interval: None,
            });
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
