//! `mcqa`: multiple-choice accuracy by log-likelihood, with the prompt and
//! scoring rules of EleutherAI's lm-evaluation-harness.
//!
//! Prompt (lm-eval `mmlu/default/_default_template_yaml` and the per-subject
//! yamls): description `The following are multiple choice questions (with
//! answers) about {subject}.\n\n`, then the first `shots` items of the dev
//! split of the same subject (`fewshot_config.sampler: first_n`; MedQA has no
//! fewshot_config, so lm-eval draws its shots from the train split with the
//! default sampler, `random.Random(1234).sample`, see [`py_random`]), each
//! rendered as `doc_to_text + " " + letter + "\n\n"`, then the question's
//! `doc_to_text`, which ends in `Answer:`. Continuations are `" A"`, `" B"`,
//! ... (`target_delimiter` + choice). Tokenisation follows lm-eval's
//! `_encode_pair`: trailing whitespace of the context moves onto the
//! continuation, and the continuation's tokens are
//! `enc(ctx + cont)[len(enc(ctx)):]`, without special tokens.
//!
//! `mmlux` (openGPT-X's `ogx_mmlux_de-*` tasks) has the same layout with the
//! cue `Antwort:` and a German description per subject that ends without a
//! line break (see [`MMLUX_DE_DESCRIPTIONS`]).
//!
//! Scores: `acc` takes the argmax of the summed log-likelihoods, `acc_norm`
//! the argmax of log-likelihood divided by the character length of the
//! choice text (lm-eval's `completion_len`, the `doc_to_choice` string without
//! the delimiter). Both take the first index among ties, as `np.argmax`.
//! The top-level figures are micro averages over items (lm-eval's MMLU group
//! aggregates with `weight_by_size: True`); `*_macro` are means over subjects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use serde::Deserialize;

use crate::artifacts::{finite, CheckpointLineage, JsonFile, JsonLines};
use crate::model::runtime;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

mod items;
mod prompt;
pub mod py_random;
mod score;
#[cfg(test)]
mod tests;

pub use items::*;
pub use prompt::*;
pub use score::*;

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Mcqa)]
}

/// `mcqa`'s params (see its spec).
#[derive(Deserialize)]
struct McqaParams {
    model: PathBuf,
    bench: PathBuf,
    dev: PathBuf,
    format: Format,
    shots: usize,
    fewshot: Fewshot,
    fewshot_seed: u64,
    limit: usize,
    batch_items: std::num::NonZeroUsize,
    dtype: runtime::WeightDtype,
}

/// How few-shot examples are chosen (see the `fewshot` param).
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Fewshot {
    LmEval,
    FirstN,
    Random,
}

/// The `mcqa` op.
pub struct Mcqa;

impl Op for Mcqa {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "mcqa",
            version: 6,
            doc: "Multiple-choice accuracy by log-likelihood with lm-evaluation-harness's prompts and scoring (MMLU, openGPT-X MMLUX German, MedQA).",
            params: vec![
                Param::required("model", Type::Model, "the model to evaluate"),
                Param::required("bench", Type::File, "the questions: JSONL (or CSV for MMLU)"),
                Param::required("dev", Type::File, "the few-shot pool (lm-eval's fewshot split: MMLU's dev, MedQA's train), drawn from by `fewshot`"),
                Param::optional(
                    "format",
                    Type::enum_of::<Format>(),
                    Value::Str("mmlu".into()),
                    "prompt and input format",
                ),
                Param::optional("shots", Type::Int, Value::Int(1), "few-shot examples per question").at_least(0.0),
                Param::optional("fewshot", Type::enum_of::<Fewshot>(), Value::Str("lm_eval".into()), "how shots are chosen: `first_n` (the first `shots` items of the question's subject), `random` (lm-eval's default sampler: random.Random(fewshot_seed).sample(pool, shots), one draw per question in order), `lm_eval` (each task's lm-eval rule: first_n for mmlu/mmlux, random for medqa)"),
                Param::optional("fewshot_seed", Type::Int, Value::Int(1234), "seed of the `random` sampler (lm-eval's fewshot seed: 1234)").at_least(0.0),
                Param::optional("limit", Type::Int, Value::Int(0), "score only the first N items (0: all)").at_least(0.0),
                Param::optional("batch_items", Type::Int, Value::Int(16), "items scored per model call (results do not depend on it)").at_least(1.0),
                runtime::WeightDtype::param(),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "result", ty: Type::File, doc: "mcqa.json: acc, acc_norm, n, per-subject figures, checkpoint" },
                Output { name: "items", ty: Type::File, doc: "items.jsonl: per-choice log-likelihoods, gold and prediction of each item" },
                Output { name: "acc", ty: Type::Float, doc: "accuracy (micro average over items)" },
                Output { name: "acc_norm", ty: Type::Float, doc: "length-normalised accuracy (micro average)" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<McqaParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: McqaParams = ctx.params()?;
        let model_dir = p.model.as_path();
        let format = p.format;
        let (shots, limit, batch_items) = (p.shots, p.limit, p.batch_items.get());
        let mut bench = load_items(&p.bench, format)?;
        if limit > 0 {
            bench.truncate(limit);
        }
        let dev = if shots > 0 {
            load_items(&p.dev, format)?
        } else {
            Vec::new()
        };
        let seed = p.fewshot_seed;
        let sampler = match (p.fewshot, format) {
            (Fewshot::FirstN, _) => Sampler::FirstN,
            (Fewshot::Random, _) | (Fewshot::LmEval, Format::Medqa) => Sampler::Random(seed),
            (Fewshot::LmEval, _) => Sampler::FirstN,
        };
        let checkpoint = runtime::read_checkpoint(model_dir).map_err(|e| miette!("mcqa: {e}"))?;
        let model = runtime::load_for(ctx, model_dir, p.dtype).map_err(|e| miette!("mcqa: {e}"))?;
        ctx.progress.set_total(bench.len() as u64, "items");
        let results = score_items(
            model.as_ref(),
            format,
            &bench,
            &dev,
            shots,
            sampler,
            batch_items,
            &mut |n| {
                ctx.progress.inc(n as u64);
                ctx.check_cancelled()
            },
        )?;
        // Scored: from here the items' `file:line` places name the benchmark
        // by its identity, as results must (see `OpContext::input_name`).
        let (bench_at, bench_name) = (p.bench.to_string_lossy(), ctx.input_name(&p.bench));
        for item in &mut bench {
            if let Some(line) = item.source.strip_prefix(bench_at.as_ref()) {
                item.source = format!("{bench_name}{line}");
            }
        }
        let outputs = write_results(
            &ctx.out_dir,
            format,
            shots,
            &bench,
            &results,
            checkpoint,
            &ctx.input_name(model_dir),
        )?;
        ctx.log(&format!(
            "mcqa {}: n={} acc={:.4} acc_norm={:.4}",
            format.name(),
            bench.len(),
            outputs
                .get("acc")
                .and_then(|v| if let Value::Float(f) = v {
                    Some(*f)
                } else {
                    None
                })
                .unwrap_or(0.0),
            outputs
                .get("acc_norm")
                .and_then(|v| if let Value::Float(f) = v {
                    Some(*f)
                } else {
                    None
                })
                .unwrap_or(0.0),
        ));
        Ok(outputs)
    }
}

/// Writes `mcqa.json` and `items.jsonl` and returns the op's outputs.
pub fn write_results(
    out_dir: &Path,
    format: Format,
    shots: usize,
    bench: &[McItem],
    results: &[ItemResult],
    checkpoint: Option<CheckpointLineage>,
    model_name: &str,
) -> OpResult<Outputs> {
    let mut doc = report(format, shots, bench, results);
    doc.model = Some(model_name.to_owned());
    doc.checkpoint = checkpoint;
    let lines: Vec<McqaItemLine> = bench
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (item, r))| McqaItemLine {
            index: i,
            id: item.id.clone(),
            subject: item.subject.clone(),
            source: item.source.clone(),
            gold: item.gold,
            pred: r.pred,
            pred_norm: r.pred_norm,
            correct: r.pred == item.gold,
            loglikelihoods: r.loglikelihoods.iter().map(|&x| finite(x)).collect(),
            is_greedy: r.is_greedy.clone(),
        })
        .collect();
    McqaItemLine::write_all(&lines, out_dir)?;
    doc.write(out_dir)?;
    let mut out = Outputs::new();
    out.insert("result".into(), Value::Path(McqaResult::NAME.into()));
    out.insert("items".into(), Value::Path(McqaItemLine::NAME.into()));
    out.insert("acc".into(), Value::Float(doc.acc));
    out.insert("acc_norm".into(), Value::Float(doc.acc_norm));
    Ok(out)
}
