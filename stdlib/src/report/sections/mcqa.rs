//! MCQA accuracy per model and checkpoint.

use super::*;

/// One benchmark's (format, value, label) for a model.
type Scored = (String, f64, String);

pub(in crate::report) fn mcqa_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    series_names: &[String],
    metric: &str,
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    if !series_names.is_empty() && series_names.len() != paths.len() {
        return Err(miette!(
            "parameter `mcqa_series`: {} names for {} mcqa artifacts",
            series_names.len(),
            paths.len()
        ));
    }
    doc.heading("Knowledge: multiple-choice accuracy");
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let mut bars = Vec::new();
    // (model, step) -> (benchmark format, value, label): 002's average accuracy.
    let mut by_model: BTreeMap<(String, Option<u64>), Vec<Scored>> = BTreeMap::new();
    for (i, p) in paths.iter().enumerate() {
        let j = McqaResult::read(p).wrap_err("report: parameter `mcqa`")?;
        let ck = j.checkpoint.as_ref();
        let model = j
            .model
            .as_deref()
            .map(short_model_name)
            .unwrap_or_else(|| short_model_name(&p.display().to_string()));
        let series = series_names.get(i).cloned().unwrap_or_else(|| {
            if ck.is_some() {
                "checkpoints".into()
            } else {
                model.clone()
            }
        });
        let label = match step_of(ck) {
            Some(step) => format!("{series} @ step {step}"),
            None => series.clone(),
        };
        let tokens = tokens_of(ck);
        let flops = flops_of(ck);
        let (value, stderr) = j
            .metric(metric)
            .ok_or_else(|| miette!("report: no metric `{metric}` in an mcqa result"))?;
        rows.push(vec![
            label.clone(),
            tokens.map_or("–".into(), human),
            sci(flops),
            fmt_opt(Some(j.acc), 4),
            fmt_opt(Some(j.acc_norm), 4),
            fmt_opt(stderr, 4),
            j.n.to_string(),
        ]);
        by_model
            .entry((
                j.model.clone().unwrap_or_else(|| p.display().to_string()),
                step_of(ck),
            ))
            .or_default()
            .push((j.format.clone(), value, label.clone()));
        bars.push((label.clone(), value));
        points.push(Point {
            series,
            label,
            tokens,
            flops,
            value,
            interval: stderr.map(|s| (value - s, value + s)),
        });
    }
    doc.table(
        &[
            "model",
            "tokens seen",
            "FLOPs",
            "acc",
            "acc_norm",
            &format!("{metric} stderr"),
            "n",
        ],
        rows,
    );
    let mut avg_rows = Vec::new();
    for ((_, step), entries) in &by_model {
        let formats: std::collections::BTreeSet<&str> =
            entries.iter().map(|e| e.0.as_str()).collect();
        if formats.len() < 2 {
            continue;
        }
        let mean = entries.iter().map(|e| e.1).sum::<f64>() / entries.len() as f64;
        let labels: Vec<&str> = entries.iter().map(|e| e.2.as_str()).collect();
        avg_rows.push(vec![
            labels.join(" / "),
            step.map_or("–".into(), |s| s.to_string()),
            formats.into_iter().collect::<Vec<_>>().join(", "),
            format!("{:.2}", 100.0 * mean),
        ]);
    }
    if !avg_rows.is_empty() {
        doc.para(&format!("Average {metric} over the benchmarks each model was scored on (the DeFineMed paper's average-accuracy table, in percent; e.g. Qwen2.5-7B-Instruct 59.08 → DeFineMed-Qwen2.5-7B 64.91):"));
        doc.table(
            &[
                "model",
                "step",
                "benchmarks",
                &format!("average {metric} (%)"),
            ],
            avg_rows,
        );
    }
    let chart = Chart::Bars(BarChart {
        title: format!("MCQA {metric} per model and checkpoint"),
        x_label: metric.to_owned(),
        categories: bars.iter().map(|b| b.0.clone()).collect(),
        groups: vec![metric.to_owned()],
        values: bars.iter().map(|b| vec![b.1]).collect(),
        stacked: false,
    });
    doc.figure(
        dir,
        "mcqa_accuracy",
        &chart,
        &format!("MCQA {metric} per model"),
    )?;
    trajectories(
        doc,
        dir,
        "mcqa",
        &format!("MCQA {metric}"),
        metric,
        &points,
        &[],
    )
}
