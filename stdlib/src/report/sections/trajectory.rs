//! Trajectories: a figure over tokens seen and over training FLOPs.

use super::*;

/// A point of a trajectory.
pub(in crate::report) struct Point {
    pub(in crate::report) series: String,
    pub(in crate::report) label: String,
    pub(in crate::report) tokens: Option<f64>,
    pub(in crate::report) flops: Option<f64>,
    pub(in crate::report) value: f64,
    pub(in crate::report) interval: Option<(f64, f64)>,
}

pub(in crate::report) fn trajectories(
    doc: &mut Doc,
    dir: &Path,
    stem: &str,
    what: &str,
    y_label: &str,
    points: &[Point],
    extra_refs: &[(String, f64)],
) -> OpResult<()> {
    let with_lineage: Vec<&Point> = points.iter().filter(|p| p.tokens.is_some()).collect();
    if with_lineage.is_empty() {
        return Ok(());
    }
    let mut refs: Vec<(String, f64)> = points
        .iter()
        .filter(|p| p.tokens.is_none())
        .map(|p| (p.label.clone(), p.value))
        .collect();
    refs.extend(extra_refs.iter().cloned());
    let mut by_series: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in &with_lineage {
        by_series.entry(&p.series).or_default().push(p);
    }
    for (axis, x_label, log) in [
        ("tokens", "Tokens seen (domain data)", false),
        ("flops", "Training FLOPs (6·N_non-emb·tokens)", true),
    ] {
        let series: Vec<Series> = by_series
            .iter()
            .map(|(name, ps)| Series {
                name: (*name).to_owned(),
                points: ps
                    .iter()
                    .filter_map(|p| {
                        let x = if axis == "tokens" {
                            p.tokens
                        } else {
                            p.flops.filter(|v| *v > 0.0).map(f64::log10)
                        };
                        x.map(|x| (x, p.value, p.interval))
                    })
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let chart = Chart::Lines(LineChart {
            title: format!(
                "{what} over {}",
                if axis == "tokens" {
                    "tokens seen"
                } else {
                    "training compute"
                }
            ),
            x_label: x_label.to_owned(),
            y_label: y_label.to_owned(),
            series,
            references: refs.clone(),
            x_log10: log,
        });
        doc.figure(
            dir,
            &format!("{stem}_{axis}"),
            &chart,
            &format!(
                "{what} against {}; dashed lines: models without training lineage",
                if axis == "tokens" {
                    "tokens seen"
                } else {
                    "training FLOPs"
                }
            ),
        )?;
    }
    Ok(())
}
