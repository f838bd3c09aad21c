//! Held-out domain loss of the source and every checkpoint (issue 13,
//! item 6), beside the training loss.

use super::*;
use crate::artifacts::eval::HeldoutLossResult;
use crate::artifacts::JsonFile;

/// `groups[i]`: the heldout_loss artifacts of series `names[i]`.
pub(in crate::report) fn heldout_section(
    doc: &mut Doc,
    dir: &Path,
    groups: &[Vec<PathBuf>],
    names: &[String],
) -> OpResult<()> {
    if groups.is_empty() {
        return Ok(());
    }
    doc.heading("Held-out domain loss");
    doc.para("Mean next-token loss (nats per token) on documents of the curated corpus held out from training (`holdout`), for the source (dashed) and every checkpoint, masked as in training. Unlike the training loss it is measured on the same text at every checkpoint, so a fall is learning of the domain, not of the batches seen.");
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for (i, group) in groups.iter().enumerate() {
        let series = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("series {}", i + 1));
        for p in group {
            let j = HeldoutLossResult::read(p).wrap_err("report: parameter `heldout`")?;
            let ck = j.checkpoint.as_ref();
            let step = step_of(ck);
            let tokens = tokens_of(ck);
            let label = match step {
                Some(s) => format!("{series} @ step {s}"),
                None => series.clone(),
            };
            rows.push(vec![
                label.clone(),
                tokens.map_or("–".into(), human),
                fmt_opt(j.loss, 4),
                fmt_opt(j.perplexity, 2),
                j.tokens.to_string(),
            ]);
            if let Some(value) = j.loss {
                points.push(Point {
                    series: series.clone(),
                    label,
                    tokens,
                    flops: flops_of(ck),
                    value,
                    interval: None,
                });
            }
        }
    }
    doc.table(
        &[
            "model",
            "tokens seen",
            "held-out loss",
            "perplexity",
            "tokens scored",
        ],
        rows,
    );
    trajectories(
        doc,
        dir,
        "heldout_loss",
        "Held-out domain loss",
        "loss (nats/token)",
        &points,
        &[],
    )
}
