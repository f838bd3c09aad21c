//! One function a report section, each reading its artifacts.

use super::*;

/// A point of a trajectory.
pub(super) struct Point {
    pub(super) series: String,
    pub(super) label: String,
    pub(super) tokens: Option<f64>,
    pub(super) flops: Option<f64>,
    pub(super) value: f64,
    pub(super) interval: Option<(f64, f64)>,
}

pub(super) fn trajectories(
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

/// One benchmark's (format, value, label) for a model.
type Scored = (String, f64, String);

pub(super) fn mcqa_section(
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
        let ck = j.checkpoint.as_ref().filter(|c| c.is_object());
        let model = j
            .model
            .as_deref()
            .map(base_name)
            .unwrap_or_else(|| base_name(&p.display().to_string()));
        let series = series_names.get(i).cloned().unwrap_or_else(|| {
            if ck.is_some() {
                "checkpoints".into()
            } else {
                model.clone()
            }
        });
        let label = match ck.and_then(|c| c.get("step")).and_then(Json::as_u64) {
            Some(step) => format!("{series} @ step {step}"),
            None => series.clone(),
        };
        let tokens = ck.and_then(|c| f(&c["tokens_seen"]));
        let flops = ck.and_then(|c| f(&c["flops"]));
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
                ck.and_then(|c| c.get("step")).and_then(Json::as_u64),
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
    doc.table(&Table {
        header: [
            "model",
            "tokens seen",
            "FLOPs",
            "acc",
            "acc_norm",
            &format!("{metric} stderr"),
            "n",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
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
        doc.table(&Table {
            header: [
                "model",
                "step",
                "benchmarks",
                &format!("average {metric} (%)"),
            ]
            .map(String::from)
            .to_vec(),
            rows: avg_rows,
        });
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

pub(super) fn davidson_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    metric: &str,
) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Generative quality: Davidson ranking");
    let (what, y_label) = if metric == "score" {
        ("Davidson score", "P(win) + P(tie)/2 vs baseline")
    } else {
        ("Davidson normalised strength", "π / (π + π_baseline)")
    };
    doc.para(&format!(
        "Two figures per model from one joint Davidson fit, both 0.5 at parity with the ranking's baseline: the normalised strength π / (π + π_baseline), and the score P(win) + P(tie)/2 under the fitted model. Plotted: **{}** (report param `davidson_metric`). Intervals are bootstrap percentiles.",
        if metric == "score" { "the score P(win) + P(tie)/2" } else { "the normalised strength π / (π + π_baseline)" }
    ));
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for p in paths {
        let j = artifact(p, "davidson.json")?;
        let baseline = j["baseline"].as_str().unwrap_or("baseline").to_owned();
        let series = format!("vs {baseline}");
        let models: Vec<String> = j["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let (mut wins, mut losses) = (0.0, 0.0);
        // A model without lineage besides the baseline (the source judged
        // against the larger model) is the curve's starting point.
        let mut start: Option<(String, f64)> = None;
        let mut last: Option<(String, f64, f64)> = None;
        for m in &models {
            let score = f(&j["score"][m.as_str()]);
            // Older artifacts have no normalised strength: from the strengths.
            let rel = f(&j["relative_strength"][m.as_str()]).or_else(|| {
                let (pi, pb) = (
                    f(&j["strengths"][m.as_str()])?,
                    f(&j["strengths"][baseline.as_str()])?,
                );
                (pi + pb > 0.0).then(|| pi / (pi + pb))
            });
            let key = if metric == "score" {
                "score"
            } else {
                "relative_strength"
            };
            let ci = j["ci"][m.as_str()][key]
                .as_array()
                .and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)));
            let ck = j["checkpoints"].get(m.as_str()).filter(|c| c.is_object());
            let c = &j["counts"][m.as_str()];
            wins += f(&c["wins"]).unwrap_or(0.0);
            losses += f(&c["losses"]).unwrap_or(0.0);
            rows.push(vec![
                m.clone(),
                baseline.clone(),
                fmt_opt(f(&j["strengths"][m.as_str()]), 4),
                fmt_opt(rel, 3),
                fmt_opt(score, 3),
                ci.map_or("–".into(), |(a, b)| format!("[{a:.3}, {b:.3}]")),
                format!("{}/{}/{}", c["wins"], c["ties"], c["losses"]),
                ck.and_then(|c| f(&c["tokens_seen"]))
                    .map_or("–".into(), human),
            ]);
            if m == &baseline {
                continue;
            }
            let v = if metric == "score" { score } else { rel };
            let tokens = ck.and_then(|c| f(&c["tokens_seen"]));
            match (v, tokens) {
                (Some(v), None) => start = Some((m.clone(), v)),
                (Some(v), Some(t))
                    if last.as_ref().is_none_or(|l: &(String, f64, f64)| t >= l.1) =>
                {
                    last = Some((m.clone(), t, v))
                }
                _ => {}
            }
            if let Some(v) = v {
                points.push(Point {
                    series: series.clone(),
                    label: m.clone(),
                    tokens: ck.and_then(|c| f(&c["tokens_seen"])),
                    flops: ck.and_then(|c| f(&c["flops"])),
                    value: v,
                    interval: ci,
                });
            }
        }
        rows.push(vec![
            format!("ν (tie) = {}", fmt_opt(f(&j["tie"]), 3)),
            baseline.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!("{} comparisons", j["comparisons"]),
            String::new(),
        ]);
        if let (Some((m0, v0)), Some((m1, t1, v1))) = (&start, &last) {
            doc.para(&format!(
                "Against {baseline}: {m0} starts at {v0:.3}; the last checkpoint ({m1}, {} tokens) reaches {v1:.3}, {} the starting value (the training-dynamics paper's §5.3 reports e.g. 0.055 → 0.142 for Qwen2.5-3B against 7B).",
                human(*t1),
                if *v0 > 0.0 { format!("{:.2}×", v1 / v0) } else { "undefined times".to_owned() }
            ));
        }
        if wins + losses == 0.0 && f(&j["comparisons"]).unwrap_or(0.0) > 0.0 {
            doc.para(&format!(
                "**The judge could not discriminate against {baseline}: every one of its {} comparisons is a tie**, so every strength is equal and every value is 0.5 — this says nothing about the models. Use a judge that can tell responses apart: a large instruction-tuned model through an endpoint (the training-dynamics paper used gpt-4.1-mini; `judge_model`, `judge_url`, `judge_key_env` in the pipeline), or at least a larger local model than the ones judged.",
                j["comparisons"]
            ));
        }
    }
    doc.table(&Table {
        header: [
            "model",
            "baseline",
            "strength π",
            "π / (π + π_bl)",
            "P(win) + P(tie)/2",
            &format!(
                "95% CI ({})",
                if metric == "score" {
                    "score"
                } else {
                    "π / (π + π_bl)"
                }
            ),
            "W/T/L",
            "tokens seen",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    trajectories(
        doc,
        dir,
        "davidson",
        what,
        y_label,
        &points,
        &[("parity (0.5)".to_owned(), 0.5)],
    )
}

pub(super) fn judge_section(doc: &mut Doc, dir: &Path, paths: &[PathBuf]) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Pairwise judgements: wins, ties, losses");
    let mut rows = Vec::new();
    let mut cats = Vec::new();
    let mut values = Vec::new();
    for p in paths {
        let j = artifact(p, "judge.json")?;
        let (w, t, l) = (
            f(&j["wins"]).unwrap_or(0.0),
            f(&j["ties"]).unwrap_or(0.0),
            f(&j["losses"]).unwrap_or(0.0),
        );
        let total = (w + t + l).max(1.0);
        let name = format!(
            "{} vs {}",
            j["model_a"].as_str().unwrap_or("?"),
            j["model_b"].as_str().unwrap_or("?")
        );
        rows.push(vec![
            name.clone(),
            format!("{w}"),
            format!("{t}"),
            format!("{l}"),
            format!("{}", j["unparseable"]),
            format!("{}", j["inconsistent"]),
            format!("{:.3}", w / total),
        ]);
        cats.push(name);
        values.push(vec![w / total, t / total, l / total]);
    }
    doc.table(&Table {
        header: [
            "pair (A vs B)",
            "A wins",
            "ties",
            "A losses",
            "unparseable",
            "inconsistent orders",
            "win rate",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    order_flows(doc, paths)?;
    let chart = Chart::Bars(BarChart {
        title: "Win / tie / loss distribution (model A's view)".into(),
        x_label: "share of judged prompts".into(),
        categories: cats,
        groups: vec!["win".into(), "tie".into(), "loss".into()],
        values,
        stacked: true,
    });
    doc.figure(
        dir,
        "judge_wtl",
        &chart,
        "Share of wins, ties and losses per judged pair",
    )
}

pub(super) fn failure_section(doc: &mut Doc, dir: &Path, paths: &[PathBuf]) -> OpResult<()> {
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

/// `names`: one per path, or empty (the run's own name).
pub(super) fn compute_section(
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
        let lineage = p.join("flow_checkpoint.json");
        let ck = if lineage.is_file() {
            Some(read_json(&lineage)?)
        } else {
            None
        };
        let losses = p.join("losses.jsonl");
        let last: Option<Json> = std::fs::read_to_string(&losses).ok().and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| serde_json::from_str(l).ok())
        });
        let meta = ["train.json", "metadata.json"]
            .iter()
            .map(|n| p.join(n))
            .find(|q| q.is_file())
            .map(|q| read_json(&q))
            .transpose()?;
        let pick = |k: &str| -> Option<f64> {
            [meta.as_ref(), last.as_ref(), ck.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|v| f(&v[k]))
        };
        let tokens = pick("tokens_seen");
        let flops = pick("flops");
        let params = match (flops, tokens) {
            (Some(fl), Some(t)) if t > 0.0 => Some(fl / (6.0 * t)),
            _ => pick("params"),
        };
        let wall = pick("wall_s")
            .or_else(|| pick("elapsed_s"))
            .or_else(|| pick("seconds"));
        let devices = pick("devices").unwrap_or(1.0);
        let device = [meta.as_ref(), last.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|v| v["device"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                if default_device.is_empty() {
                    "–".into()
                } else {
                    default_device.to_owned()
                }
            });
        let name = names.get(i).cloned().unwrap_or_else(|| {
            ck.as_ref()
                .and_then(|c| c["source"].as_str().map(str::to_owned))
                .unwrap_or_else(|| base_name(&p.display().to_string()))
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
    doc.table(&Table {
        header: [
            "run",
            "parameters",
            "tokens",
            "training FLOPs",
            "wall-clock × devices",
            "device-hours",
            "device",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    doc.para("FLOPs = 6 · parameters · tokens seen. Device-hours = wall-clock time × number of devices (– where the run recorded no timing).");
    Ok(())
}

/// The training run itself: loss and learning rate per optimizer step from
/// each train node's `losses.jsonl` (issue 13, item 6). `names`: one per
/// path, or empty.
pub(super) fn training_section(
    doc: &mut Doc,
    dir: &Path,
    paths: &[PathBuf],
    names: &[String],
) -> OpResult<()> {
    let mut runs = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let file = p.join("losses.jsonl");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Json = serde_json::from_str(line).map_err(|e| {
                miette!("report: {}:{}: not a JSON line: {e}", file.display(), n + 1)
            })?;
            if let (Some(step), Some(loss)) = (f(&v["step"]), f(&v["loss"])) {
                rows.push((step, loss, f(&v["lr"]), f(&v["tokens_seen"])));
            }
        }
        if rows.is_empty() {
            continue;
        }
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| base_name(&p.display().to_string()));
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
    doc.table(&Table {
        header: [
            "run",
            "steps",
            "first loss",
            "last loss",
            "lowest loss",
            "change",
            "peak lr",
            "peak at step",
        ]
        .map(String::from)
        .to_vec(),
        rows: table,
    });
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

/// G_rel(Cᵢ) = Acc(Cᵢ) / Acc(M_bl) (004 eq. 1) per benchmark, from
/// `relative_gain` nodes, and its mean over the benchmarks that share a
/// baseline model, per checkpoint step; plotted over tokens and FLOPs.
/// `names`: one benchmark name per path, or empty.
/// Tokens, FLOPs and the gains of one checkpoint step.
type StepGains = (Option<f64>, Option<f64>, Vec<f64>);

pub(super) fn gain_section(
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
        let j = artifact(p, "relative_gain.json")?;
        let bench = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("benchmark {}", i + 1));
        // Grouped by the baseline's full path (one artifact), shown by its name.
        let baseline_key = j["baseline"]["source"]
            .as_str()
            .unwrap_or("baseline")
            .to_owned();
        let baseline = base_name(&baseline_key);
        let base_acc = f(&j["baseline"]["acc"]);
        for g in j["scores"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(value) = f(&g["g_rel"]) else {
                continue;
            };
            let ck = g["checkpoint"].as_object();
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
                fmt_opt(f(&g["acc"]), 4),
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

/// Model A's outcome in one order's raw verdict: in the first order A is
/// shown first ("A" = model A), in the swapped order "A" is model B.
fn order_outcome(v: &Json, swapped: bool) -> usize {
    match (v["winner"].as_str(), swapped) {
        (Some("A"), false) | (Some("B"), true) => 0,
        (Some("0"), _) => 1,
        (Some("B"), false) | (Some("A"), true) => 2,
        _ => 3,
    }
}

/// Per-prompt flows between the two orders of each judged pair (issue 13,
/// item 4; 004 Figs 7/8 show such flows): how the verdict with model A shown
/// first maps onto the verdict with model B shown first, and the rule that
/// combines them.
pub(super) fn order_flows(doc: &mut Doc, paths: &[PathBuf]) -> OpResult<()> {
    const CAT: [&str; 4] = ["win", "tie", "loss", "unreadable"];
    let mut rows = Vec::new();
    for p in paths {
        let file = p.join("verdicts.jsonl");
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let mut flow = [[0u64; 4]; 4];
        let mut name = String::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Json = serde_json::from_str(line).map_err(|e| {
                miette!("report: {}:{}: not a JSON line: {e}", file.display(), n + 1)
            })?;
            if name.is_empty() {
                name = format!(
                    "{} vs {}",
                    v["model_a"].as_str().unwrap_or("?"),
                    v["model_b"].as_str().unwrap_or("?")
                );
            }
            flow[order_outcome(&v["a_first"], false)][order_outcome(&v["b_first"], true)] += 1;
        }
        for (i, r) in flow.iter().enumerate() {
            if r.iter().sum::<u64>() == 0 {
                continue;
            }
            let mut row = vec![name.clone(), CAT[i].to_owned()];
            row.extend(r.iter().map(u64::to_string));
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    doc.para("Per-prompt flows between the two orders, in model A's view: each prompt is judged with A shown first and with B shown first. Rule combining them (the verdict Davidson is fed): both orders agree → that verdict; they disagree → a tie; either unreadable → no verdict (counted unparseable, left out of the fit).");
    doc.table(&Table {
        header: [
            "pair (A vs B)",
            "A shown first",
            "→ B first: win",
            "tie",
            "loss",
            "unreadable",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    Ok(())
}

/// Curation statistics (004 Appendix C; 002's filtering pipeline): one row
/// per figure found in the given curation artifacts (annotate, agreement,
/// train_classifier, filter, dedup, pack), beside the paper's value.
pub(super) fn curation_section(doc: &mut Doc, paths: &[PathBuf]) -> OpResult<()> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |what: &str, value: String, paper: &str| {
        rows.push(vec![what.to_owned(), value, paper.to_owned()]);
    };
    // Counts: whole numbers as they are below a thousand (`4`, not `4.000`).
    let num = |v: &Json| {
        f(v).map_or("–".into(), |x| {
            if x.fract() == 0.0 && x.abs() < 1e3 {
                format!("{x:.0}")
            } else {
                human(x)
            }
        })
    };
    let frac = |v: &Json| fmt_opt(f(v), 3);
    for p in paths {
        let read = |name: &str| -> OpResult<Option<Json>> {
            let q = p.join(name);
            if q.is_file() {
                Ok(Some(read_json(&q)?))
            } else {
                Ok(None)
            }
        };
        let mut known = false;
        if let Some(j) = read("annotate.json")? {
            known = true;
            row(
                "documents sampled and labelled by the LLM",
                num(&j["n"]),
                "260k (Mixtral-8x7B-Instruct, zero-shot)",
            );
            if let Some(labels) = j["labels"].as_object() {
                for (label, n) in labels {
                    row(&format!("  labelled {label}"), num(n), "");
                }
            }
            row("  unparseable answers", num(&j["unparseable"]), "");
        }
        if let Some(j) = read("agreement.json")? {
            known = true;
            row(
                "documents checked by human annotators",
                num(&j["compared"]),
                "100 (three annotators)",
            );
            row(
                "LLM vs human majority: F1",
                frac(&j["majority"]["f1"]),
                "0.911",
            );
            row(
                "LLM vs human majority: precision",
                frac(&j["majority"]["precision"]),
                "",
            );
            row(
                "LLM vs human majority: recall",
                frac(&j["majority"]["recall"]),
                "",
            );
        }
        if let Some(j) = read("classifier.json")? {
            known = true;
            let (split, m) = if j["test"].is_object() {
                ("test", &j["test"])
            } else {
                ("validation", &j["valid"])
            };
            row(
                &format!("classifier precision ({split} split)"),
                frac(&m["precision"]),
                "0.95 (test set)",
            );
            row(
                &format!("classifier recall ({split} split)"),
                frac(&m["recall"]),
                "0.80 (test set)",
            );
            row(
                &format!("classifier F1 ({split} split)"),
                frac(&m["f1"]),
                "",
            );
            row("classifier threshold", frac(&j["threshold"]), "");
        }
        if let Some(j) = read("filter.json")? {
            known = true;
            row(
                "documents classified",
                num(&j["documents_in"]),
                "428M (German FineWeb-2)",
            );
            row(
                "documents kept as medical",
                num(&j["documents_out"]),
                "7.3M",
            );
        }
        if let Some(j) = read("dedup.json")? {
            known = true;
            row(
                "documents after deduplication",
                num(&j["documents_out"]),
                "7.3M unique",
            );
            row(
                "  exact duplicates removed",
                num(&j["exact_duplicates"]),
                "",
            );
            row("  near duplicates removed", num(&j["near_duplicates"]), "");
        }
        if let Some(j) = read("pack.json")? {
            known = true;
            row(
                "tokens after packing",
                num(&j["tokens"]),
                "9.5B (Qwen2.5 tokenizer)",
            );
            row("  packed sequences", num(&j["sequences"]), "");
        }
        if !known {
            return Err(miette!(
                help = "pass annotate, agreement, train_classifier, filter, dedup or pack nodes",
                "report: parameter `curation`: {} holds none of annotate.json, agreement.json, classifier.json, filter.json, dedup.json, pack.json",
                p.display()
            ));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    doc.heading("Curation");
    doc.para("From web corpus to domain corpus: LLM annotation of a sample, its agreement with human labels, the classifier trained on it, the filtered, deduplicated and packed corpus. The paper column gives the training-dynamics paper's Appendix C (and DeFineMed's 428M classified documents).");
    doc.table(&Table {
        header: ["statistic", "this run", "paper"]
            .map(String::from)
            .to_vec(),
        rows,
    });
    Ok(())
}
