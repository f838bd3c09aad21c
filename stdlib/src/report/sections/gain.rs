//! Relative gain G_rel per benchmark and its mean.

use super::*;
use crate::artifacts::eval::RelativeGainResult;
use crate::artifacts::JsonFile;

/// Tokens, FLOPs and the gains of one checkpoint step.
type StepGains = (Option<f64>, Option<f64>, Vec<f64>);

/// G_rel(Cᵢ) = Acc(Cᵢ) / Acc(M_bl) (004 eq. 1) per benchmark, from
/// `relative_gain` nodes, and its mean over the benchmarks that share a
/// baseline model, per checkpoint step; plotted over tokens and FLOPs.
/// `names`: one benchmark name per path, or empty.
pub(in crate::report) fn gain_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    names: &[String],
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Relative gain G_rel");
    doc.para("G_rel(Cᵢ) = Acc(Cᵢ) / Acc(M_bl) (the training-dynamics paper's eq. 1): each checkpoint's accuracy over its baseline's (1 = no change), per benchmark, and the mean over the benchmarks that share a baseline model at the same checkpoint step.");
    let mut rows = Vec::new();
    let mut points = Vec::new();
    // (baseline model, step) -> (tokens, flops, gains)
    let mut mean: BTreeMap<(String, u64), StepGains> = BTreeMap::new();
    for (i, p) in paths.iter().enumerate() {
        let j = RelativeGainResult::read(p).wrap_err("report: parameter `gain`")?;
        let bench = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("benchmark {}", i + 1));
        // Grouped by the baseline's full path (one artifact), shown by its name.
        let baseline_key = if j.baseline.source.is_empty() {
            "baseline".to_owned()
        } else {
            j.baseline.source.clone()
        };
        let baseline = base_name(&baseline_key);
        let base_acc = j.baseline.acc;
        for g in &j.scores {
            let Some(value) = g.g_rel else {
                continue;
            };
            let ck = g.checkpoint.as_ref().and_then(Json::as_object);
            let step = ck.and_then(|c| c.get("step")).and_then(Json::as_u64);
            let tokens = ck.and_then(|c| c.get("tokens_seen")).and_then(f);
            let flops = ck.and_then(|c| c.get("flops")).and_then(f);
            let label = match step {
                Some(s) => format!("{bench} @ step {s}"),
                None => bench.clone(),
            };
            rows.push(vec![
                label.clone(),
                baseline.clone(),
                fmt_opt(g.acc, 4),
                fmt_opt(base_acc, 4),
                format!("{value:.4}"),
                tokens.map_or("–".into(), human),
            ]);
            points.push(Point {
                series: if names.is_empty() {
                    format!("{bench} vs {baseline}")
                } else {
                    bench.clone()
                },
                label,
                tokens,
                flops,
                value,
                interval: None,
            });
            if let Some(s) = step {
                let e =
                    mean.entry((baseline_key.clone(), s))
                        .or_insert((tokens, flops, Vec::new()));
                e.2.push(value);
            }
        }
    }
    for ((baseline_key, step), (tokens, flops, gains)) in &mean {
        if gains.len() < 2 {
            continue;
        }
        let baseline = base_name(baseline_key);
        let m = gains.iter().sum::<f64>() / gains.len() as f64;
        rows.push(vec![
            format!("mean of {} benchmarks @ step {step}", gains.len()),
            baseline.clone(),
            String::new(),
            String::new(),
            format!("{m:.4}"),
            tokens.map_or("–".into(), human),
        ]);
        points.push(Point {
            series: format!("mean vs {baseline}"),
            label: format!("mean @ step {step}"),
            tokens: *tokens,
            flops: *flops,
            value: m,
            interval: None,
        });
    }
    doc.table(&Table {
        header: [
            "checkpoint",
            "baseline",
            "acc",
            "baseline acc",
            "G_rel",
            "tokens seen",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    trajectories(
        doc,
        dir,
        "gain",
        "G_rel",
        "Acc(checkpoint) / Acc(baseline)",
        &points,
        &[("no change (1.0)".to_owned(), 1.0)],
    )
}
