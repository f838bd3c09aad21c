//! `report`: a Markdown and a self-contained HTML report of a pipeline's
//! evaluation artifacts, with charts as PNG and SVG files beside them (the
//! HTML inlines the SVGs).
//!
//! Sections (each only when its artifacts are given):
//! * MCQA accuracy per model and checkpoint, and its trajectory over tokens
//!   seen and over training FLOPs (6·N·tokens, N without the input embedding, from `flow_checkpoint.json`
//!   lineage that the eval ops copy under `checkpoint`); models without
//!   lineage (the source model, a larger reference) are reference lines.
//! * G_rel per benchmark and its mean over benchmarks, one figure pair per
//!   baseline (source, larger model), undefined ratios named and counted.
//! * CPT alone vs CPT + SLERP per checkpoint and benchmark.
//! * Against the larger model: win rate over training from the source's
//!   starting point, the ratio after/before, and the per-prompt flow of
//!   verdict categories from the source to the adapted model.
//! * Held-out domain loss of the source and every checkpoint.
//! * Davidson scores against each ranking's baseline, and their trajectories.
//! * Win/tie/loss distributions of the judge runs.
//! * Failure modes (language mixing, verbosity, repetition).
//! * The training run: loss and learning rate per step (losses.jsonl).
//! * A compute table like the DeFineMed papers' Table 2: FLOPs, tokens,
//!   device-hours, device, from the train artifacts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, WrapErr};
use serde::{Deserialize, Serialize};

use crate::artifacts::train::TrainRunFacts;
use crate::artifacts::{CheckpointLineage, JsonFile};
use crate::eval::mcqa::McqaResult;
use crate::merge::slerp::tensors::write_atomic;
use crate::op::{
    variant_name, NodeItem, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape,
    Resources, Type, Value, RUN_FACTS_DIR,
};

mod doc;
mod plots;
mod sections;
#[cfg(test)]
mod tests;

use doc::*;
use plots::{human, render, BarChart, Chart, LineChart, Series};
use sections::*;

/// The artifacts of a list parameter, grouped by the list's items: an item
/// is one node (a directory) or a map node (the list of its elements).
fn dir_groups(items: &[NodeItem]) -> Vec<Vec<PathBuf>> {
    items.iter().map(|i| i.paths().to_vec()).collect()
}

fn dirs(items: &[NodeItem]) -> Vec<PathBuf> {
    items
        .iter()
        .flat_map(|i| i.paths().iter().cloned())
        .collect()
}

/// The names of list param `param`: none, or one per item.
fn series_names(
    names: &[String],
    param: &str,
    items: usize,
    what: &str,
    help: &str,
) -> OpResult<Vec<String>> {
    if !names.is_empty() && names.len() != items {
        return Err(miette!(
            help = help.to_owned(),
            "parameter `{param}`: {} names for {items} {what}",
            names.len()
        ));
    }
    Ok(names.to_vec())
}

/// `report`'s params (see its spec).
#[derive(Deserialize)]
struct ReportParams {
    mcqa: Vec<NodeItem>,
    mcqa_series: Vec<String>,
    metric: ReportMetric,
    davidson: Vec<NodeItem>,
    curation: Vec<NodeItem>,
    gain: Vec<NodeItem>,
    gain_series: Vec<String>,
    gain_baseline: Vec<String>,
    cpt: Vec<NodeItem>,
    cpt_merged: Vec<NodeItem>,
    cpt_series: Vec<String>,
    larger_judge: Vec<NodeItem>,
    larger_judge_start: Vec<NodeItem>,
    larger_series: Vec<String>,
    heldout: Vec<NodeItem>,
    heldout_series: Vec<String>,
    davidson_metric: DavidsonMetric,
    judge: Vec<NodeItem>,
    failure_modes: Vec<NodeItem>,
    train: Vec<NodeItem>,
    train_series: Vec<String>,
    device: String,
    title: String,
}

/// The MCQA figure the report plots (an `McqaResult::metric` name).
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportMetric {
    Acc,
    AccNorm,
}

/// The Davidson figure the report plots.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DavidsonMetric {
    RelativeStrength,
    Score,
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
            version: 7,
            doc: "Markdown (report.md) and self-contained HTML (report.html) report with PNG/SVG charts: MCQA accuracy per model and its trajectory over tokens and FLOPs, G_rel per benchmark and baseline, CPT vs CPT + SLERP, win rate against the larger model and per-prompt verdict flows, Davidson scores and trajectories, win/tie/loss distributions, failure modes, training loss and learning rate, held-out loss, curation statistics and a compute table. Every list may be empty.",
            params: vec![
                Param::optional("mcqa", dirs(), Value::List(vec![]), "mcqa nodes"),
                Param::optional("mcqa_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "series name per item of `mcqa` (a map node is one item), e.g. source, cpt+slerp, 14B; empty: checkpoints vs model names"),
                Param::optional("metric", Type::enum_of::<ReportMetric>(), Value::Str("acc".into()), "the MCQA figure to plot"),
                Param::optional("davidson", dirs(), Value::List(vec![]), "davidson nodes"),
                Param::optional("curation", dirs(), Value::List(vec![]), "curation nodes (annotate, agreement, train_classifier, filter, dedup, pack): the curation statistics table"),
                Param::optional("gain", dirs(), Value::List(vec![]), "relative_gain nodes (one per benchmark and baseline)"),
                Param::optional("gain_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "a benchmark name per item of `gain`, e.g. MMLU-X, MedQA"),
                Param::optional("gain_baseline", Type::List(Box::new(Type::Str)), Value::List(vec![]), "a baseline name per item of `gain`, e.g. source, larger: the mean is over the benchmarks of one baseline, one figure per baseline; empty: each artifact's own baseline"),
                Param::optional("cpt", dirs(), Value::List(vec![]), "mcqa nodes of the raw training checkpoints, one item (a map node) per benchmark: CPT alone vs CPT + SLERP (004 Fig. 3)"),
                Param::optional("cpt_merged", dirs(), Value::List(vec![]), "mcqa nodes of the merged checkpoints, one item per item of `cpt`, same benchmarks in the same order"),
                Param::optional("cpt_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "a benchmark name per item of `cpt`, e.g. MMLU-X, MedQA"),
                Param::optional("larger_judge", dirs(), Value::List(vec![]), "judge nodes of the checkpoints against the larger model, one item (a map node) per adapted model: win rate over training and per-prompt flows (004 §5.3, Figs 7/8)"),
                Param::optional("larger_judge_start", dirs(), Value::List(vec![]), "the source judged against the same larger model, one judge node per item of `larger_judge`: the starting point"),
                Param::optional("larger_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "a name per item of `larger_judge`, e.g. 0.5B vs 1.5B"),
                Param::optional("heldout", dirs(), Value::List(vec![]), "heldout_loss nodes (items may be map nodes): held-out domain loss of the source and every checkpoint"),
                Param::optional("heldout_series", Type::List(Box::new(Type::Str)), Value::List(vec![]), "a series name per item of `heldout`, e.g. source, cpt, cpt+slerp"),
                Param::optional("davidson_metric", Type::enum_of::<DavidsonMetric>(), Value::Str("relative_strength".into()), "the Davidson figure to plot: the normalised strength π/(π+π_baseline) or the score P(win)+P(tie)/2 (both are in the table)"),
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

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<ReportParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: ReportParams = ctx.params()?;
        let metric = variant_name(&p.metric);
        let title = p.title.clone();
        let mut doc = Doc {
            md: format!("# {title}\n"),
            html: String::new(),
            figures: Vec::new(),
        };
        let dir = ctx.out_dir.clone();
        // A series name stands for every artifact of its item.
        let mcqa_groups = dir_groups(&p.mcqa);
        let names = series_names(
            &p.mcqa_series,
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
        mcqa_section(&mut doc, &dir, &mcqa_groups.concat(), &series, &metric)?;
        curation_section(&mut doc, &dirs(&p.curation))?;
        let gains = dirs(&p.gain);
        let gain_names = series_names(
            &p.gain_series,
            "gain_series",
            gains.len(),
            "relative_gain items",
            "give one benchmark name per item of `gain`",
        )?;
        let gain_baselines = series_names(
            &p.gain_baseline,
            "gain_baseline",
            gains.len(),
            "relative_gain items",
            "give one baseline name per item of `gain` (e.g. source, larger)",
        )?;
        gain_section(&mut doc, &dir, &gains, &gain_names, &gain_baselines)?;
        let cpt = dir_groups(&p.cpt);
        let cpt_merged = dir_groups(&p.cpt_merged);
        if cpt.len() != cpt_merged.len() {
            return Err(miette!(
                help = "give the merged checkpoints' mcqa nodes of each benchmark of `cpt`, in the same order",
                "parameters `cpt` and `cpt_merged`: {} and {} items",
                cpt.len(),
                cpt_merged.len()
            ));
        }
        let cpt_names = series_names(
            &p.cpt_series,
            "cpt_series",
            cpt.len(),
            "cpt items",
            "give one benchmark name per item of `cpt`",
        )?;
        cpt_vs_merged_section(&mut doc, &dir, &cpt, &cpt_merged, &cpt_names, &metric)?;
        davidson_section(
            &mut doc,
            &dir,
            &dirs(&p.davidson),
            &variant_name(&p.davidson_metric),
        )?;
        judge_section(&mut doc, &dir, &dirs(&p.judge))?;
        let larger = dir_groups(&p.larger_judge);
        let larger_start = dirs(&p.larger_judge_start);
        if larger.len() != larger_start.len() {
            return Err(miette!(
                help = "give, for each item of `larger_judge`, the judge node of the source against the same larger model",
                "parameters `larger_judge` and `larger_judge_start`: {} and {} items",
                larger.len(),
                larger_start.len()
            ));
        }
        let larger_names = series_names(
            &p.larger_series,
            "larger_series",
            larger.len(),
            "larger_judge items",
            "give one name per item of `larger_judge`",
        )?;
        larger_section(&mut doc, &dir, &larger, &larger_start, &larger_names)?;
        failure_section(&mut doc, &dir, &dirs(&p.failure_modes))?;
        let train = dirs(&p.train);
        let train_names = series_names(
            &p.train_series,
            "train_series",
            train.len(),
            "train runs",
            "give one name per train node",
        )?;
        training_section(&mut doc, &dir, &train, &train_names)?;
        let heldout = dir_groups(&p.heldout);
        let heldout_names = series_names(
            &p.heldout_series,
            "heldout_series",
            heldout.len(),
            "heldout items",
            "give one series name per item of `heldout` (a map node is one item)",
        )?;
        heldout_section(&mut doc, &dir, &heldout, &heldout_names)?;
        compute_section(&mut doc, &train, &train_names, &p.device)?;
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
