//! Relative gain G_rel per benchmark and its mean over benchmarks, one
//! figure pair (tokens, FLOPs) per baseline.

use super::*;
use crate::artifacts::eval::RelativeGainResult;
use crate::artifacts::JsonFile;

/// Tokens, FLOPs, and the benchmarks' gains at one checkpoint step (`None`:
/// undefined).
type StepGains = (Option<f64>, Option<f64>, Vec<Option<f64>>);

/// G_rel(Cᵢ) = Acc(Cᵢ) / Acc(M_bl) (004 eq. 1) per benchmark, from
/// `relative_gain` nodes, and its mean over the benchmarks of one baseline
/// per checkpoint step (004 Figs 1a/1b, 2a/2b), plotted over tokens and
/// FLOPs, one figure pair per baseline. `names`: a benchmark name per path
/// (or empty); `baselines`: a baseline name per path (or empty: each
/// artifact's baseline is its own).
pub(in crate::report) fn gain_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    names: &[String],
    baselines: &[String],
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Relative gain G_rel");
    doc.para("G_rel(Cᵢ) = Acc(Cᵢ) / Acc(M_bl) (the training-dynamics paper's eq. 1): each checkpoint's accuracy over its baseline's (1 = no change), per benchmark, and the mean over the benchmarks of one baseline at the same checkpoint step (the papers' average). One figure pair per baseline: against the source model (004 Figs 1a/2a) and against the larger model (Figs 1b/2b).");
    let mut rows = Vec::new();
    // baseline name -> points, in the order baselines first appear
    let mut points: Vec<(String, Vec<Point>)> = Vec::new();
    // (baseline name, step) -> (tokens, flops, gains)
    let mut mean: BTreeMap<(String, u64), StepGains> = BTreeMap::new();
    let mut undefined: Vec<String> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let j = RelativeGainResult::read(p).wrap_err("report: parameter `gain`")?;
        let bench = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("benchmark {}", i + 1));
        let baseline = baselines.get(i).cloned().unwrap_or_else(|| {
            if j.baseline.source.is_empty() {
                "baseline".to_owned()
            } else {
                short_model_name(&j.baseline.source)
            }
        });
        let base_acc = j.baseline.acc;
        let slot = match points.iter().position(|(b, _)| *b == baseline) {
            Some(k) => k,
            None => {
                points.push((baseline.clone(), Vec::new()));
                points.len() - 1
            }
        };
        let mut bench_undefined = 0;
        for g in &j.scores {
            let ck = g.checkpoint.as_ref();
            let step = step_of(ck);
            let tokens = tokens_of(ck);
            let flops = flops_of(ck);
            let label = match step {
                Some(s) => format!("{bench} @ step {s}"),
                None => bench.clone(),
            };
            if g.g_rel.is_none() {
                bench_undefined += 1;
            }
            rows.push(vec![
                label.clone(),
                baseline.clone(),
                fmt_opt(g.acc, 4),
                fmt_opt(base_acc, 4),
                g.g_rel
                    .map_or_else(|| "undefined".to_owned(), |v| format!("{v:.4}")),
                tokens.map_or("–".into(), human),
            ]);
            if let Some(s) = step {
                mean.entry((baseline.clone(), s))
                    .or_insert((tokens, flops, Vec::new()))
                    .2
                    .push(g.g_rel);
            }
            let Some(value) = g.g_rel else {
                continue;
            };
            points[slot].1.push(Point {
                series: bench.clone(),
                label,
                tokens,
                flops,
                value,
                interval: None,
            });
        }
        if bench_undefined > 0 {
            let why = j
                .scores
                .iter()
                .find_map(|g| g.undefined.clone())
                .unwrap_or_else(|| "no G_rel in the artifact".to_owned());
            undefined.push(format!(
                "{bench} vs {baseline}: {bench_undefined} of {} ({why})",
                j.scores.len()
            ));
        }
    }
    for ((baseline, step), (tokens, flops, gains)) in &mean {
        if gains.len() < 2 {
            continue;
        }
        let defined: Vec<f64> = gains.iter().flatten().copied().collect();
        let label = if defined.len() == gains.len() {
            format!("mean of {} benchmarks @ step {step}", gains.len())
        } else {
            format!(
                "mean of {} of {} benchmarks (the rest undefined) @ step {step}",
                defined.len(),
                gains.len()
            )
        };
        let m = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
        rows.push(vec![
            label.clone(),
            baseline.clone(),
            String::new(),
            String::new(),
            m.map_or_else(|| "undefined".to_owned(), |v| format!("{v:.4}")),
            tokens.map_or("–".into(), human),
        ]);
        let slot = points.iter().position(|(b, _)| b == baseline);
        if let (Some(value), Some(slot)) = (m, slot) {
            points[slot].1.push(Point {
                series: "mean over benchmarks".to_owned(),
                label,
                tokens: *tokens,
                flops: *flops,
                value,
                interval: None,
            });
        }
    }
    doc.table(
        &[
            "checkpoint",
            "baseline",
            "acc",
            "baseline acc",
            "G_rel",
            "tokens seen",
        ],
        rows,
    );
    if !undefined.is_empty() {
        doc.para(&format!(
            "**G_rel is undefined for {} benchmark(s)**: {}. These are left out of the figures and of the means (a mean names how many benchmarks it averages). A baseline that answers no item correctly happens on a handful of demo items; on the full benchmarks it would mean a broken baseline.",
            undefined.len(),
            undefined.join("; ")
        ));
    }
    let mut stems = std::collections::BTreeSet::new();
    for (k, (baseline, pts)) in points.iter().enumerate() {
        let mut stem = format!("gain_vs_{}", slug(baseline));
        if !stems.insert(stem.clone()) {
            stem = format!("{stem}_{k}");
        }
        trajectories(
            doc,
            dir,
            &stem,
            &format!("G_rel against {baseline}"),
            "Acc(checkpoint) / Acc(baseline)",
            pts,
            &[("no change (1.0)".to_owned(), 1.0)],
        )?;
    }
    Ok(())
}

/// A file-name stem for `name`: its ASCII letters and digits, lower case,
/// anything else `_`.
pub(in crate::report) fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}
