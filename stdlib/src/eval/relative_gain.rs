//! `relative_gain`: the ratio of a checkpoint's accuracy to a baseline's
//! (DeFineMed's G_rel).

use std::path::PathBuf;
use std::sync::Arc;

use miette::{miette, WrapErr};
use serde::{Deserialize, Serialize};

use crate::artifacts::eval::{GainBaseline, GainScore, RelativeGainResult};
use crate::artifacts::{CheckpointLineage, JsonFile};
use crate::eval::mcqa::McqaResult;
use crate::op::{
    variant_name, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources,
    Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(RelativeGain)]
}

/// A score as `relative_gain` takes it: a number, an `mcqa.json` file, or a
/// directory holding one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Score {
    Int(i64),
    Float(f64),
    Path(PathBuf),
}

/// The accuracy `relative_gain` compares (an `McqaResult::metric` name).
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum GainMetric {
    Acc,
    AccNorm,
    AccMacro,
    AccNormMacro,
}

/// `relative_gain`'s params (see its spec).
#[derive(Deserialize)]
struct RelativeGainParams {
    scores: Vec<Score>,
    baseline: Score,
    metric: GainMetric,
}

/// A score's source (as results name it), value and checkpoint lineage.
fn read_score(
    ctx: &OpContext,
    value: &Score,
    metric: &str,
    what: &str,
) -> OpResult<(String, f64, Option<CheckpointLineage>)> {
    match value {
        Score::Float(f) => Ok((format!("{f}"), *f, None)),
        Score::Int(i) => Ok((format!("{i}"), *i as f64, None)),
        Score::Path(p) => {
            let doc = McqaResult::read(p).wrap_err_with(|| format!("relative_gain: {what}"))?;
            let (acc, _) = doc.metric(metric).ok_or_else(|| {
                miette!("relative_gain: no metric `{metric}` in an mcqa result: use acc, acc_norm, acc_macro or acc_norm_macro")
            })?;
            Ok((ctx.input_name(p), acc, doc.checkpoint))
        }
    }
}

/// Why G_rel is undefined when the baseline scored 0 (a small source on a
/// few demo items can): the ratio has no value, which is an outcome to
/// count and report, not an error.
pub const ZERO_BASELINE: &str =
    "the baseline's accuracy is 0, so Acc(checkpoint) / Acc(baseline) is undefined";

/// G_rel = Acc(checkpoint) / Acc(baseline) for each score; `Err(reason)`
/// for every score when the baseline is 0. A negative or NaN baseline is not
/// an accuracy: an error.
pub fn relative_gains(scores: &[f64], baseline: f64) -> OpResult<Vec<Result<f64, &'static str>>> {
    if baseline.is_nan() || baseline < 0.0 {
        return Err(miette!(
            "relative_gain: the baseline accuracy is {baseline}; an accuracy is a number in [0, 1]"
        ));
    }
    if baseline == 0.0 {
        return Ok(vec![Err(ZERO_BASELINE); scores.len()]);
    }
    Ok(scores.iter().map(|s| Ok(s / baseline)).collect())
}

/// The `relative_gain` op.
pub struct RelativeGain;

impl Op for RelativeGain {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "relative_gain",
            version: 3,
            doc: "Relative performance gain G_rel = Acc(checkpoint) / Acc(baseline) for each score (DeFineMed eq. 1). A baseline accuracy of 0 leaves every G_rel undefined: null, with the reason, counted in `undefined`.",
            params: vec![
                Param::required("scores", Type::List(Box::new(Type::Any)), "mcqa nodes (or mcqa.json files, or numbers)"),
                Param::required("baseline", Type::Any, "the baseline's mcqa node (or file, or number)"),
                Param::optional(
                    "metric",
                    Type::enum_of::<GainMetric>(),
                    Value::Str("acc".into()),
                    "which accuracy to compare",
                ),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "result", ty: Type::File, doc: "relative_gain.json" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<RelativeGainParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: RelativeGainParams = ctx.params()?;
        let metric = variant_name(&p.metric);
        let metric = metric.as_str();
        let (base_src, base_acc, base_ckpt) = read_score(ctx, &p.baseline, metric, "baseline")?;
        let scores = p
            .scores
            .iter()
            .map(|v| read_score(ctx, v, metric, "score"))
            .collect::<OpResult<Vec<_>>>()?;
        let gains = relative_gains(&scores.iter().map(|s| s.1).collect::<Vec<_>>(), base_acc)?;
        let undefined = gains.iter().filter(|g| g.is_err()).count();
        if undefined > 0 {
            ctx.log(&format!(
                "{undefined} of {} G_rel undefined: {ZERO_BASELINE}",
                gains.len()
            ));
        }
        let doc = RelativeGainResult {
            metric: metric.to_owned(),
            baseline: GainBaseline {
                source: base_src,
                acc: Some(base_acc),
                checkpoint: base_ckpt,
            },
            scores: scores
                .into_iter()
                .zip(gains)
                .map(|((source, acc, checkpoint), g)| GainScore {
                    source,
                    acc: Some(acc),
                    g_rel: g.ok(),
                    undefined: g.err().map(str::to_owned),
                    checkpoint,
                })
                .collect(),
            undefined,
        };
        doc.write(&ctx.out_dir)?;
        let mut out = Outputs::new();
        out.insert("result".into(), Value::Path("relative_gain.json".into()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::{full_params, with_context, RunOptions};
    use serde_json::Value as Json;
    use std::path::Path;
    use std::path::PathBuf;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the op on `scores` against `baseline` (metric acc) into
    /// `out_dir`; returns the relative_gain.json it wrote.
    fn run_acc(out_dir: &Path, scores: Vec<Value>, baseline: PathBuf) -> Json {
        let params = full_params(
            &RelativeGain,
            &[
                ("scores", Value::List(scores)),
                ("baseline", Value::Path(baseline)),
                ("metric", Value::Str("acc".into())),
            ],
        );
        with_context(params, out_dir, one_thread(), |ctx| RelativeGain.run(ctx))
            .0
            .unwrap();
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("relative_gain.json")).unwrap())
            .unwrap()
    }

    /// An `mcqa.json` as the mcqa op writes it, with accuracy `acc`.
    fn mcqa_json(acc: f64, checkpoint: Option<CheckpointLineage>) -> String {
        let doc = McqaResult {
            format: "mmlu".into(),
            shots: 1,
            n: 10,
            acc,
            acc_norm: acc,
            acc_stderr: 0.1,
            acc_norm_stderr: 0.1,
            acc_macro: acc,
            acc_norm_macro: acc,
            averaging: String::new(),
            subjects: Default::default(),
            model: None,
            checkpoint,
        };
        serde_json::to_string(&doc).unwrap()
    }

    fn one_thread() -> RunOptions {
        RunOptions {
            threads: 1,
            ..RunOptions::default()
        }
    }

    #[test]
    fn relative_gain_is_the_accuracy_ratio() {
        let g = relative_gains(&[0.5, 0.6, 0.4], 0.5).unwrap();
        assert_eq!(g, vec![Ok(1.0), Ok(1.2), Ok(0.8)]);
        assert!(relative_gains(&[0.5], -0.1).is_err());
        assert!(relative_gains(&[0.5], f64::NAN).is_err());

        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let ck = dir.path().join("ck");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&ck).unwrap();
        write(&base, "mcqa.json", &mcqa_json(0.4, None));
        write(
            &ck,
            "mcqa.json",
            &mcqa_json(
                0.5,
                Some(CheckpointLineage {
                    tokens_seen: Some(100),
                    ..Default::default()
                }),
            ),
        );
        let out_dir = dir.path().join("out");
        let scores = vec![Value::Path(ck.clone()), Value::Float(0.2)];
        let doc = run_acc(&out_dir, scores, base.clone());
        assert!((doc["scores"][0]["g_rel"].as_f64().unwrap() - 1.25).abs() < 1e-12);
        assert!((doc["scores"][1]["g_rel"].as_f64().unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(doc["scores"][0]["checkpoint"]["tokens_seen"], 100);
        assert!(doc.get("undefined").is_none(), "nothing undefined: {doc}");
        assert!(doc["scores"][0].get("undefined").is_none(), "{doc}");
    }

    /// A source that answers nothing right (0 of 6 demo MedQA items) leaves
    /// G_rel undefined: the op succeeds, writes null with the reason and
    /// counts it, rather than failing the pipeline.
    #[test]
    fn a_zero_baseline_gives_null_gains_with_the_reason_and_a_count() {
        assert_eq!(
            relative_gains(&[0.5, 0.0], 0.0).unwrap(),
            vec![Err(ZERO_BASELINE), Err(ZERO_BASELINE)]
        );
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        write(&base, "mcqa.json", &mcqa_json(0.0, None));
        let out_dir = dir.path().join("out");
        let doc = run_acc(
            &out_dir,
            vec![Value::Float(1.0 / 6.0), Value::Float(0.0)],
            base,
        );
        assert_eq!(doc["undefined"], 2, "{doc}");
        for s in doc["scores"].as_array().unwrap() {
            assert!(s["g_rel"].is_null(), "{doc}");
            assert!(
                s["undefined"].as_str().unwrap().contains("accuracy is 0"),
                "{doc}"
            );
        }
        assert_eq!(doc["scores"][0]["acc"], 1.0 / 6.0);
    }
}
