//! `linear(models, weights)`: a weighted average of models of the same
//! architecture, tensor by tensor (mergekit's `linear`: Σ wᵢ·xᵢ, divided by
//! Σ wᵢ when `normalize` is true).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use miette::miette;
use serde::Deserialize;

use super::slerp::{run_merge, shard_bytes, MergeDtype, TensorJob};
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

/// Σ wᵢ·xᵢ (÷ Σ wᵢ when `normalize`), accumulated in f64.
pub fn linear_combination(inputs: &[Vec<f32>], weights: &[f64], normalize: bool) -> Vec<f32> {
    let total: f64 = if normalize { weights.iter().sum() } else { 1.0 };
    let n = inputs.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let acc: f64 = inputs
                .iter()
                .zip(weights)
                .map(|(x, w)| x[i] as f64 * w)
                .sum();
            (acc / total) as f32
        })
        .collect()
}

/// The `linear` op.
pub struct Linear;

/// `linear`'s params (see its spec).
#[derive(Deserialize)]
struct LinearParams {
    models: Vec<PathBuf>,
    weights: Vec<f64>,
    normalize: bool,
    dtype: MergeDtype,
    shard_gb: f64,
}

impl Op for Linear {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "linear",
            version: 1,
            doc: "Weighted average of models of the same architecture (mergekit's linear): sum of weight * tensor, divided by the sum of weights when `normalize`. Config and tokenizer come from the first model, flow_checkpoint.json from the last.",
            params: vec![
                Param::required("models", Type::List(Box::new(Type::Model)), "two or more models; the first gives config and tokenizer"),
                Param::required("weights", Type::List(Box::new(Type::Float)), "one weight per model"),
                Param::optional("normalize", Type::Bool, Value::Bool(true), "divide by the sum of the weights"),
                Param::optional("dtype", Type::enum_of::<MergeDtype>(), Value::Str("auto".into()), "dtype of the written tensors; auto keeps the first model's"),
                Param::optional("shard_gb", Type::Float, Value::Float(2.0), "maximum shard size in GB (1e9 bytes)"),
            ],
            produces: Type::Model,
            outputs: vec![Output { name: "tensors", ty: Type::Int, doc: "number of merged tensors" }],
            resources: Resources::ALL_THREADS,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<LinearParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: LinearParams = ctx.params()?;
        let (dirs, weights) = (p.models, p.weights);
        if dirs.len() < 2 {
            return Err(miette!(
                "parameter `models`: a merge needs at least two models, got {}",
                dirs.len()
            ));
        }
        if weights.len() != dirs.len() {
            return Err(miette!(
                "parameters `models` and `weights`: {} models but {} weights",
                dirs.len(),
                weights.len()
            ));
        }
        let normalize = p.normalize;
        if normalize && weights.iter().sum::<f64>().abs() < 1e-12 {
            return Err(miette!(
                help = "use weights with a non-zero sum, or normalize: false",
                "parameter `weights`: they sum to 0, so they cannot be normalised"
            ));
        }
        let dtype = p.dtype.dtype();
        let shard = shard_bytes(p.shard_gb)?;
        let combine = |job: &TensorJob| -> OpResult<Vec<f32>> {
            Ok(linear_combination(job.inputs, &weights, normalize))
        };
        let last = dirs.last().cloned();
        let n = run_merge(ctx, &dirs, dtype, shard, last.as_deref(), &combine)?;
        ctx.log(&format!("merged {n} tensors of {} models", dirs.len()));
        Ok(BTreeMap::from([(
            "tensors".to_owned(),
            Value::Int(n as i64),
        )]))
    }
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Linear)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::slerp::tensors::{read_json, write_json, ModelTensors, ShardWriter};
    use crate::op::testing::run_op;
    use safetensors::Dtype;
    use std::path::Path;

    fn model(dir: &Path, w: Vec<f32>) {
        std::fs::create_dir_all(dir).unwrap();
        let mut s = ShardWriter::new(dir, 1 << 30);
        s.add("model.layers.0.w", Dtype::F32, &[w.len()], &w)
            .unwrap();
        s.finish().unwrap();
        write_json(
            &dir.join("config.json"),
            &serde_json::json!({"model_type": "llama", "hidden_size": 3, "num_hidden_layers": 1}),
        )
        .unwrap();
    }

    #[test]
    fn weighted_average_matches_hand_computation() {
        let tmp = tempfile::tempdir().unwrap();
        model(&tmp.path().join("a"), vec![1.0, 2.0, 3.0]);
        model(&tmp.path().join("b"), vec![3.0, 0.0, -1.0]);
        std::fs::write(tmp.path().join("b/flow_checkpoint.json"), r#"{"step": 3}"#).unwrap();
        let models = Value::List(vec![
            Value::Path(tmp.path().join("a")),
            Value::Path(tmp.path().join("b")),
        ]);
        let out = tmp.path().join("o");
        let res = run_op(
            &Linear,
            &[
                ("models", models.clone()),
                (
                    "weights",
                    Value::List(vec![Value::Float(1.0), Value::Float(3.0)]),
                ),
            ],
            &out,
        );
        res.unwrap();
        let m = ModelTensors::open(&out).unwrap();
        // (1·a + 3·b) / 4
        assert_eq!(m.read_f32("model.layers.0.w").unwrap(), vec![2.5, 0.5, 0.0]);
        assert_eq!(
            read_json(&out.join("flow_checkpoint.json")).unwrap()["step"],
            3
        );
        let out2 = tmp.path().join("o2");
        let res = run_op(
            &Linear,
            &[
                ("models", models.clone()),
                (
                    "weights",
                    Value::List(vec![Value::Float(1.0), Value::Float(3.0)]),
                ),
                ("normalize", Value::Bool(false)),
            ],
            &out2,
        );
        res.unwrap();
        assert_eq!(
            ModelTensors::open(&out2)
                .unwrap()
                .read_f32("model.layers.0.w")
                .unwrap(),
            vec![10.0, 2.0, 0.0]
        );
        let res = run_op(
            &Linear,
            &[
                ("models", models),
                ("weights", Value::List(vec![Value::Float(1.0)])),
            ],
            &tmp.path().join("o3"),
        );
        assert!(format!("{:?}", res.unwrap_err()).contains("2 models but 1 weights"));
    }
}
