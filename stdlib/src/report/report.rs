//! `report`: a Markdown and a self-contained HTML report of a pipeline's
//! evaluation artifacts, with charts as PNG and SVG files beside them (the
//! HTML inlines the SVGs).
//!
//! Sections (each only when its artifacts are given):
//! * MCQA accuracy per model and checkpoint, and its trajectory over tokens
//!   seen and over training FLOPs (6·N·tokens, from `flow_checkpoint.json`
//!   lineage that the eval ops copy under `checkpoint`); models without
//!   lineage (the source model, a larger reference) are reference lines.
//! * Davidson scores against each ranking's baseline, and their trajectories.
//! * Win/tie/loss distributions of the judge runs.
//! * Failure modes (language mixing, verbosity, repetition).
//! * A compute table like the DeFineMed papers' Table 2: FLOPs, tokens,
//!   device-hours, device, from the train artifacts.

// The group `report` holds the op `report` (the one-op-a-file layout).
#![allow(clippy::module_inception)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, WrapErr};
use serde_json::Value as Json;

use crate::eval::mcqa::McqaResult;
use crate::merge::slerp::tensors::{read_json, write_atomic};
use crate::op::{Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value};

mod plots;

use plots::{human, render, BarChart, Chart, LineChart, Series};

/// The artifacts of a list parameter, grouped by the list's items: an item
/// is one node (a directory) or a map node (the list of its elements).
fn dir_groups(ctx: &OpContext, name: &str) -> OpResult<Vec<Vec<PathBuf>>> {
    let one = |i: usize, v: &Value| match v {
        Value::Path(p) => Ok(p.clone()),
        other => Err(miette!(
            "parameter `{name}`, item {i}: expected a node or a directory, got {}",
            other.kind()
        )),
    };
    ctx.list(name)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::List(items) => items.iter().map(|x| one(i, x)).collect(),
            other => Ok(vec![one(i, other)?]),
        })
        .collect()
}

fn dirs(ctx: &OpContext, name: &str) -> OpResult<Vec<PathBuf>> {
    Ok(dir_groups(ctx, name)?.into_iter().flatten().collect())
}

fn strings(ctx: &OpContext, name: &str) -> OpResult<Vec<String>> {
    ctx.list(name)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Str(s) => Ok(s.clone()),
            other => Err(miette!(
                "parameter `{name}`, item {i}: expected a string, got {}",
                other.kind()
            )),
        })
        .collect()
}

/// The names of list param `param`: none, or one per item.
fn series_names(
    ctx: &OpContext,
    param: &str,
    items: usize,
    what: &str,
    help: &str,
) -> OpResult<Vec<String>> {
    let names = strings(ctx, param)?;
    if !names.is_empty() && names.len() != items {
        return Err(miette!(
            help = help.to_owned(),
            "parameter `{param}`: {} names for {items} {what}",
            names.len()
        ));
    }
    Ok(names)
}

/// The JSON document of an artifact: `dir/file`, or the path itself when it is a file.
fn artifact(path: &Path, file: &str) -> OpResult<Json> {
    if path.is_dir() {
        read_json(&path.join(file))
    } else {
        read_json(path)
    }
}

fn base_name(s: &str) -> String {
    Path::new(s)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| s.to_owned())
}

fn f(v: &Json) -> Option<f64> {
    v.as_f64()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

fn sci(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |x| format!("{x:.3e}"))
}

/// One table: a header and rows, rendered as Markdown and HTML.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let mut s = format!(
            "| {} |\n|{}\n",
            self.header.join(" | "),
            " --- |".repeat(self.header.len())
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} |",
                r.iter()
                    .map(|c| c.replace('|', "\\|"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        s
    }
    fn html(&self) -> String {
        let mut s = String::from("<table><thead><tr>");
        for h in &self.header {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            s.push_str("<tr>");
            for c in r {
                let _ = write!(s, "<td>{}</td>", esc(c));
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table>\n");
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Accumulates both documents section by section.
struct Doc {
    md: String,
    html: String,
    figures: Vec<String>,
}

impl Doc {
    fn heading(&mut self, text: &str) {
        let _ = writeln!(self.md, "\n## {text}\n");
        let _ = writeln!(self.html, "<h2>{}</h2>", esc(text));
    }
    fn para(&mut self, text: &str) {
        let _ = writeln!(self.md, "{text}\n");
        let _ = writeln!(self.html, "<p>{}</p>", esc(text));
    }
    fn table(&mut self, t: &Table) {
        self.md.push_str(&t.markdown());
        self.md.push('\n');
        self.html.push_str(&t.html());
    }
    fn figure(&mut self, dir: &Path, stem: &str, chart: &Chart, caption: &str) -> OpResult<()> {
        let svg = render(dir, stem, chart).map_err(|e| miette!("drawing {stem}: {e}"))?;
        let _ = writeln!(
            self.md,
            "![{caption}]({stem}.png)\n\n*{caption}* ([SVG]({stem}.svg))\n"
        );
        let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        let _ = writeln!(
            self.html,
            "<figure>{body}<figcaption>{}</figcaption></figure>",
            esc(caption)
        );
        self.figures.push(stem.to_owned());
        Ok(())
    }
}

/// A point of a trajectory.
struct Point {
    series: String,
    label: String,
    tokens: Option<f64>,
    flops: Option<f64>,
    value: f64,
    interval: Option<(f64, f64)>,
}

fn trajectories(
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
        ("flops", "Training FLOPs (6·N·tokens)", true),
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

fn mcqa_section(
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

fn davidson_section(doc: &mut Doc, dir: &Path, paths: &[PathBuf]) -> OpResult<()> {
    if paths.is_empty() {
        return Ok(());
    }
    doc.heading("Generative quality: Davidson ranking");
    doc.para("Score = P(win) + P(tie)/2 against the ranking's baseline under the fitted Davidson model (0.5 = parity); intervals are bootstrap percentiles.");
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for p in paths {
        let j = artifact(p, "davidson.json")?;
        let baseline = j["baseline"].as_str().unwrap_or("baseline").to_owned();
        let series = format!("score vs {baseline}");
        let models: Vec<String> = j["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for m in &models {
            let score = f(&j["score"][m.as_str()]);
            let ci = j["ci"][m.as_str()]["score"]
                .as_array()
                .and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)));
            let ck = j["checkpoints"].get(m.as_str()).filter(|c| c.is_object());
            let c = &j["counts"][m.as_str()];
            rows.push(vec![
                m.clone(),
                baseline.clone(),
                fmt_opt(f(&j["strengths"][m.as_str()]), 4),
                fmt_opt(score, 3),
                ci.map_or("–".into(), |(a, b)| format!("[{a:.3}, {b:.3}]")),
                format!("{}/{}/{}", c["wins"], c["ties"], c["losses"]),
                ck.and_then(|c| f(&c["tokens_seen"]))
                    .map_or("–".into(), human),
            ]);
            if m == &baseline {
                continue;
            }
            if let Some(v) = score {
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
            baseline,
            String::new(),
            String::new(),
            String::new(),
            format!("{} comparisons", j["comparisons"]),
            String::new(),
        ]);
    }
    doc.table(&Table {
        header: [
            "model",
            "baseline",
            "strength",
            "score",
            "95% CI",
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
        "Davidson score",
        "score vs baseline",
        &points,
        &[("parity (0.5)".to_owned(), 0.5)],
    )
}

fn judge_section(doc: &mut Doc, dir: &Path, paths: &[PathBuf]) -> OpResult<()> {
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

fn failure_section(doc: &mut Doc, dir: &Path, paths: &[PathBuf]) -> OpResult<()> {
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
fn compute_section(
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

/// The `report` op.
pub struct Report;

impl Op for Report {
    fn spec(&self) -> OpSpec {
        // Each item is a node, a file, or a map node (all its elements).
        let dirs = || {
            Type::List(Box::new(Type::Either(
                Box::new(Type::Either(Box::new(Type::Dir), Box::new(Type::File))),
                Box::new(Type::List(Box::new(Type::Dir))),
            )))
        };
        OpSpec {
            name: "report",
            version: 3,
            doc: "Markdown (report.md) and self-contained HTML (report.html) report with PNG/SVG charts: MCQA accuracy per model and its trajectory over tokens and FLOPs, Davidson scores and trajectories, win/tie/loss distributions, failure modes, and a compute table. Every list may be empty.",
            params: vec![
                Param::optional("mcqa", dirs(), Value::List(vec![]), "mcqa nodes"),
                Param::optional("mcqa_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "series name per item of `mcqa` (a map node is one item), e.g. source, cpt+slerp, 14B; empty: checkpoints vs model names"),
                Param::optional("metric", Type::Enum(vec!["acc".into(), "acc_norm".into()]), Value::Str("acc".into()), "the MCQA figure to plot"),
                Param::optional("davidson", dirs(), Value::List(vec![]), "davidson nodes"),
                Param::optional("judge", dirs(), Value::List(vec![]), "judge nodes"),
                Param::optional("failure_modes", dirs(), Value::List(vec![]), "failure_modes nodes"),
                Param::optional("train", Type::List(Box::new(Type::Dir)), Value::List(vec![]), "train nodes (compute table)"),
                Param::optional("train_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "a name per train node for the compute table, e.g. Qwen2.5-0.5B; empty: the run's own name"),
                Param::optional("device", Type::Str, Value::Str(String::new()), "device name for runs that did not record one"),
                Param::optional("title", Type::Str, Value::Str("Domain adaptation report".into()), "report title"),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "markdown", ty: Type::File, doc: "report.md" },
                Output { name: "html", ty: Type::File, doc: "report.html" },
            ],
            resources: Resources::ONE_THREAD,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let title = ctx.str("title")?.to_owned();
        let mut doc = Doc {
            md: format!("# {title}\n"),
            html: String::new(),
            figures: Vec::new(),
        };
        let dir = ctx.out_dir.clone();
        // A series name stands for every artifact of its item.
        let mcqa_groups = dir_groups(ctx, "mcqa")?;
        let names = series_names(
            ctx,
            "mcqa_series",
            mcqa_groups.len(),
            "mcqa items",
            "give one name per item of `mcqa` (a map node is one item)",
        )?;
        let series: Vec<String> = names
            .iter()
            .zip(&mcqa_groups)
            .flat_map(|(n, g)| std::iter::repeat_n(n.clone(), g.len()))
            .collect();
        mcqa_section(
            &mut doc,
            &dir,
            &mcqa_groups.concat(),
            &series,
            ctx.str("metric")?,
        )?;
        davidson_section(&mut doc, &dir, &dirs(ctx, "davidson")?)?;
        judge_section(&mut doc, &dir, &dirs(ctx, "judge")?)?;
        failure_section(&mut doc, &dir, &dirs(ctx, "failure_modes")?)?;
        let train = dirs(ctx, "train")?;
        let train_names = series_names(
            ctx,
            "train_series",
            train.len(),
            "train runs",
            "give one name per train node",
        )?;
        compute_section(&mut doc, &train, &train_names, ctx.str("device")?)?;
        if doc.md.trim() == format!("# {title}") {
            doc.para("No artifacts were given.");
        }
        let html = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
             body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\
             table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
             td:first-child,th:first-child{{text-align:left}}figure{{margin:1.5em 0}}figure svg{{max-width:100%;height:auto}}\
             figcaption{{font-style:italic;color:#555}}</style></head><body><h1>{t}</h1>\n{body}</body></html>\n",
            t = esc(&title),
            body = doc.html
        );
        write_atomic(&dir.join("report.md"), doc.md.as_bytes())?;
        write_atomic(&dir.join("report.html"), html.as_bytes())?;
        ctx.log(&format!("report with {} charts", doc.figures.len()));
        Ok(BTreeMap::from([
            ("markdown".to_owned(), Value::Path("report.md".into())),
            ("html".to_owned(), Value::Path("report.html".into())),
        ]))
    }
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Report)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::run_op;
    use serde_json::json;

    fn put(dir: &Path, file: &str, v: &Json) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), serde_json::to_string_pretty(v).unwrap()).unwrap();
    }

    /// Builds artifacts of every kind under `root`; returns the report params.
    /// An `mcqa.json` as the mcqa op writes it.
    fn mcqa_result(acc: f64, model: &str, checkpoint: Option<Json>) -> Json {
        serde_json::to_value(crate::eval::mcqa::McqaResult {
            format: "mmlux".into(),
            shots: 1,
            n: 1000,
            acc,
            acc_norm: acc + 0.01,
            acc_stderr: 0.01,
            acc_norm_stderr: 0.01,
            acc_macro: acc,
            acc_norm_macro: acc + 0.01,
            averaging: String::new(),
            subjects: Default::default(),
            model: Some(model.to_owned()),
            checkpoint,
        })
        .unwrap()
    }

    pub(crate) fn sample_artifacts(root: &Path) -> Vec<(&'static str, Value)> {
        let mut mcqa = Vec::new();
        let mut series = Vec::new();
        let n_params = 5.0e8;
        for (k, (name, acc)) in [
            ("cpt", [0.41, 0.45, 0.47, 0.48]),
            ("cpt+slerp", [0.44, 0.49, 0.51, 0.52]),
        ]
        .iter()
        .enumerate()
        {
            for (i, a) in acc.iter().enumerate() {
                let tokens = 1.0e9 * (1u64 << i) as f64;
                let d = root.join(format!("mcqa_{k}_{i}"));
                put(
                    &d,
                    "mcqa.json",
                    &mcqa_result(
                        *a,
                        &format!("/store/{name}-{i}"),
                        Some(
                            json!({"step": 100 * (i + 1), "tokens_seen": tokens, "flops": 6.0 * n_params * tokens}),
                        ),
                    ),
                );
                mcqa.push(Value::Path(d));
                series.push(Value::Str((*name).into()));
            }
        }
        for (name, acc) in [("source 0.5B", 0.43), ("reference 1.5B", 0.55)] {
            let d = root.join(format!("mcqa_{}", name.replace(' ', "_")));
            put(&d, "mcqa.json", &mcqa_result(acc, "/store/x", None));
            mcqa.push(Value::Path(d));
            series.push(Value::Str(name.into()));
        }
        let mut scores = serde_json::Map::new();
        let mut ci = serde_json::Map::new();
        let mut cks = serde_json::Map::new();
        let mut counts = serde_json::Map::new();
        let mut models = vec![json!("source")];
        for i in 0..4 {
            let m = format!("ckpt-{i}");
            let s = 0.5 + 0.05 * i as f64;
            scores.insert(m.clone(), json!(s));
            ci.insert(m.clone(), json!({"score": [s - 0.04, s + 0.04]}));
            cks.insert(m.clone(), json!({"tokens_seen": 1.0e9 * (1u64 << i) as f64, "flops": 6.0 * n_params * 1.0e9 * (1u64 << i) as f64}));
            counts.insert(
                m.clone(),
                json!({"wins": 10 + i, "ties": 5, "losses": 10 - i}),
            );
            models.push(json!(m));
        }
        scores.insert("source".into(), json!(0.5));
        counts.insert(
            "source".into(),
            json!({"wins": 34, "ties": 20, "losses": 46}),
        );
        let dav = root.join("davidson");
        put(
            &dav,
            "davidson.json",
            &json!({"models": models, "baseline": "source", "score": scores, "ci": ci, "checkpoints": cks,
            "counts": counts, "strengths": {}, "tie": 0.8, "comparisons": 100}),
        );
        let jd = root.join("judge");
        put(
            &jd,
            "judge.json",
            &json!({"model_a": "ckpt-3", "model_b": "source", "wins": 12, "ties": 5, "losses": 8, "unparseable": 1, "inconsistent": 3}),
        );
        let fm = root.join("fm");
        put(
            &fm,
            "failure_modes.json",
            &json!({"model": "ckpt-3", "language_mixing": {"flagged_share": 0.2, "mean_foreign_share": 0.05},
            "verbosity": {"mean_ratio": 1.4, "longer_share": 0.3, "truncated_share": 0.1}, "repetition": {"flagged_share": 0.05}}),
        );
        let tr = root.join("train");
        put(
            &tr,
            "flow_checkpoint.json",
            &json!({"step": 400, "tokens_seen": 8.0e9, "flops": 6.0 * n_params * 8.0e9, "source": "qwen-0.5b"}),
        );
        std::fs::write(
            tr.join("losses.jsonl"),
            "{\"step\": 400, \"loss\": 2.0, \"tokens_seen\": 8000000000, \"elapsed_s\": 7200}\n",
        )
        .unwrap();
        vec![
            ("mcqa", Value::List(mcqa)),
            ("mcqa_series", Value::List(series)),
            ("davidson", Value::List(vec![Value::Path(dav)])),
            ("judge", Value::List(vec![Value::Path(jd)])),
            ("failure_modes", Value::List(vec![Value::Path(fm)])),
            ("train", Value::List(vec![Value::Path(tr)])),
            ("device", Value::Str("NVIDIA H100".into())),
        ]
    }

    fn is_png(path: &Path) -> bool {
        std::fs::read(path)
            .map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 5000)
            .unwrap_or(false)
    }

    #[test]
    fn train_series_name_the_compute_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let mut params = sample_artifacts(tmp.path());
        params.push((
            "train_series",
            Value::List(vec![Value::Str("Qwen2.5-0.5B".into())]),
        ));
        let out = tmp.path().join("out");
        run_op(&Report, &params, &out).unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(
            md.contains("| Qwen2.5-0.5B | 500.0M | 8.0B | 2.400e19 | 2.00h × 1 |"),
            "{md}"
        );
        params.pop();
        let two = Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]);
        params.push(("train_series", two));
        let err = run_op(&Report, &params, &tmp.path().join("out2")).unwrap_err();
        assert!(
            err.to_string()
                .contains("parameter `train_series`: 2 names for 1 train runs"),
            "{err}"
        );
    }

    #[test]
    fn report_has_every_section_chart_and_table() {
        let tmp = tempfile::tempdir().unwrap();
        let params = sample_artifacts(tmp.path());
        let out = tmp.path().join("out");
        let res = run_op(&Report, &params, &out);
        res.unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        for stem in [
            "mcqa_accuracy",
            "mcqa_tokens",
            "mcqa_flops",
            "davidson_tokens",
            "davidson_flops",
            "judge_wtl",
            "failure_modes",
        ] {
            assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}.png");
            let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
            assert!(
                svg.contains("<svg") && svg.contains("<text"),
                "{stem}.svg has no text"
            );
            assert!(
                md.contains(&format!("({stem}.png)")),
                "{stem} not in report.md"
            );
        }
        // Tables: MCQA rows, the Davidson interval, the compute row (FLOPs = 6·N·tokens, 2 h on 1 device).
        assert!(
            md.contains("| cpt+slerp @ step 400 | 8.0B | 2.400e19 | 0.5200 |"),
            "{md}"
        );
        assert!(
            md.contains("| ckpt-2 | source | – | 0.600 | [0.560, 0.640] | 12/5/8 | 4.0B |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| qwen-0.5b | 500.0M | 8.0B | 2.400e19 | 2.00h × 1 | 2.00 | NVIDIA H100 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ckpt-3 vs source | 12 | 5 | 8 | 1 | 3 | 0.480 |"),
            "{md}"
        );
        // FLOW_KEEP_REPORT=DIR keeps the report for looking at the charts.
        if let Ok(keep) = std::env::var("FLOW_KEEP_REPORT") {
            std::fs::create_dir_all(&keep).unwrap();
            for e in std::fs::read_dir(&out).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), Path::new(&keep).join(e.file_name())).unwrap();
            }
        }
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert_eq!(html.matches("<svg").count(), 7);
        assert!(
            !html.contains("<img"),
            "the HTML must not depend on files beside it"
        );
        // Axis labels and legends are in the charts.
        let svg = std::fs::read_to_string(out.join("mcqa_tokens.svg")).unwrap();
        for text in ["Tokens seen", "cpt+slerp", "reference 1.5B", "acc"] {
            assert!(svg.contains(text), "mcqa_tokens.svg lacks {text}");
        }
    }

    #[test]
    fn report_tolerates_missing_kinds() {
        let tmp = tempfile::tempdir().unwrap();
        let res = run_op(&Report, &[], &tmp.path().join("out"));
        res.unwrap();
        let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
        assert!(md.contains("No artifacts were given."));
        let res = run_op(
            &Report,
            &[(
                "mcqa",
                Value::List(vec![Value::Path(tmp.path().join("nope"))]),
            )],
            &tmp.path().join("o2"),
        );
        assert!(format!("{:?}", res.unwrap_err()).contains("nope"));
    }
}
