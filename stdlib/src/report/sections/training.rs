//! The training run (loss and learning rate) and the compute table.

use super::*;
use crate::artifacts::train::LossLine;
use crate::artifacts::JsonLines;

/// The lines of a train node's `losses.jsonl`, none when it has none.
fn read_losses(p: &Path) -> OpResult<Vec<LossLine>> {
    let file = p.join(LossLine::NAME);
    if !file.is_file() {
        return Ok(Vec::new());
    }
    LossLine::read_all(&file).wrap_err("report: parameter `train`")
}

/// `names`: one per path, or empty (the run's own name).
pub(in crate::report) fn compute_section(
    doc: &mut Doc,
    paths: &[PathBuf],
    names: &[String],
    default_device: &str,
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Compute");
    let mut rows = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let ck = CheckpointLineage::read(p).map_err(|e| miette!("report: {e}"))?;
        let last = read_losses(p)?.pop();
        // flow's train writes its timing as run facts; older artifacts and
        // other tools' runs have it at the top.
        let facts = [
            Path::new(RUN_FACTS_DIR).join(TrainRunFacts::NAME),
            "train.json".into(),
            "metadata.json".into(),
        ]
        .iter()
        .map(|n| p.join(n))
        .find(|q| q.is_file())
        .map(|q| TrainRunFacts::read(&q))
        .transpose()
        .wrap_err("report: parameter `train`")?
        .unwrap_or_default();
        // The run's facts first, then the last losses.jsonl line, then the
        // lineage (which has no timing).
        let in_last = |k: fn(&LossLine) -> Option<f64>| last.as_ref().and_then(k);
        let tokens = facts
            .tokens_seen
            .or_else(|| in_last(|l| l.tokens_seen.map(|t| t as f64)))
            .or_else(|| tokens_of(ck.as_ref()));
        let flops = facts
            .flops
            .or_else(|| in_last(|l| l.flops))
            .or_else(|| flops_of(ck.as_ref()));
        let params = match (flops, tokens) {
            (Some(fl), Some(t)) if t > 0.0 => Some(fl / (6.0 * t)),
            _ => facts.params.or_else(|| in_last(|l| l.params)),
        };
        let wall = facts
            .wall_s
            .or_else(|| in_last(|l| l.wall_s))
            .or(facts.elapsed_s)
            .or_else(|| in_last(|l| l.elapsed_s))
            .or(facts.seconds)
            .or_else(|| in_last(|l| l.seconds));
        let devices = facts
            .devices
            .map(|d| d as f64)
            .or_else(|| in_last(|l| l.devices))
            .unwrap_or(1.0);
        let device = facts
            .device
            .clone()
            .or_else(|| last.as_ref().and_then(|l| l.device.clone()))
            .unwrap_or_else(|| {
                if default_device.is_empty() {
                    "–".into()
                } else {
                    default_device.to_owned()
                }
            });
        let name = names.get(i).cloned().unwrap_or_else(|| {
            ck.as_ref()
                .and_then(|c| c.source.clone())
                .unwrap_or_else(|| short_model_name(&p.display().to_string()))
        });
        rows.push(vec![
            name,
            params.map_or("–".into(), human),
            tokens.map_or("–".into(), human),
            sci(flops),
            wall.map_or("–".into(), |w| {
                format!("{:.2}h × {}", w / 3600.0, devices)
            }),
            wall.map_or("–".into(), |w| format!("{:.2}", w / 3600.0 * devices)),
            device,
        ]);
    }
    doc.table(
        &[
            "run",
            "parameters",
            "tokens",
            "training FLOPs",
            "wall-clock × devices",
            "device-hours",
            "device",
        ],
        rows,
    );
    doc.para("FLOPs = 6 · parameters · tokens seen. Device-hours = wall-clock time × number of devices (– where the run recorded no timing).");
    Ok(())
}

/// The training run itself: loss and learning rate per optimizer step from
/// each train node's `losses.jsonl` (issue 13, item 6). `names`: one per
/// path, or empty.
pub(in crate::report) fn training_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    names: &[String],
) -> OpResult<()> {
    let mut runs = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let mut rows = Vec::new();
        for l in read_losses(p)? {
            if let (Some(step), Some(loss)) = (l.step, l.loss) {
                rows.push((step as f64, loss, l.lr, l.tokens_seen.map(|t| t as f64)));
            }
        }
        if rows.is_empty() {
            continue;
        }
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| short_model_name(&p.display().to_string()));
        runs.push((name, rows));
    }
    if runs.is_empty() {
        return Ok(());
    }
    doc.heading("Training: loss and learning rate");
    doc.para("Training loss of each optimizer step (the mean next-token cross-entropy of that step's batch, in nats; not a held-out loss) and the learning rate the step used (warmup, then the decay schedule).");
    let mut table = Vec::new();
    for (name, rows) in &runs {
        let first = rows[0].1;
        let last = rows[rows.len() - 1].1;
        let min = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
        let peak = rows.iter().filter_map(|r| r.2).fold(0.0, f64::max);
        let peak_step = rows
            .iter()
            .find(|r| r.2 == Some(peak))
            .map_or("–".into(), |r| format!("{}", r.0));
        table.push(vec![
            name.clone(),
            rows.len().to_string(),
            format!("{first:.4}"),
            format!("{last:.4}"),
            format!("{min:.4}"),
            format!("{:+.4}", last - first),
            format!("{peak:.3e}"),
            peak_step,
        ]);
    }
    doc.table(
        &[
            "run",
            "steps",
            "first loss",
            "last loss",
            "lowest loss",
            "change",
            "peak lr",
            "peak at step",
        ],
        table,
    );
    let loss = Chart::Lines(LineChart {
        title: "Training loss".into(),
        x_label: "Optimizer step".into(),
        y_label: "loss (nats/token)".into(),
        series: runs
            .iter()
            .map(|(name, rows)| Series {
                name: name.clone(),
                points: rows.iter().map(|r| (r.0, r.1, None)).collect(),
            })
            .collect(),
        references: Vec::new(),
        x_log10: false,
    });
    doc.figure(
        dir,
        "training_loss",
        &loss,
        "Training loss per optimizer step",
    )?;
    let lr_series: Vec<Series> = runs
        .iter()
        .map(|(name, rows)| Series {
            name: name.clone(),
            points: rows
                .iter()
                .filter_map(|r| r.2.map(|lr| (r.0, lr, None)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !lr_series.is_empty() {
        let lr = Chart::Lines(LineChart {
            title: "Learning-rate schedule".into(),
            x_label: "Optimizer step".into(),
            y_label: "learning rate".into(),
            series: lr_series,
            references: Vec::new(),
            x_log10: false,
        });
        doc.figure(
            dir,
            "learning_rate",
            &lr,
            "Learning rate of each optimizer step",
        )?;
    }
    Ok(())
}
