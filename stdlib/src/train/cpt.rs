//! `train`: continued pre-training (causal LM loss) of a model on a packed
//! token dataset, with AdamW, warmup + decay, gradient accumulation, clipping
//! and checkpoints covering every decade of tokens. The node's directory is the final model.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flow_model::train::{self, Schedule, TrainConfig, TrainMonitor};
use flow_model::SaveDtype;
use miette::miette;
use serde::Deserialize;

use crate::artifacts::train::TrainRunFacts;
use crate::artifacts::JsonFile;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

/// The `train` op.
pub struct Train;

struct Monitor<'a, 'b> {
    ctx: &'a OpContext<'b>,
}

impl TrainMonitor for Monitor<'_, '_> {
    fn on_step(&self, step: usize, total: usize, loss: f64, lr: f64) {
        self.ctx.progress.inc(1);
        self.ctx
            .progress
            .message(&format!("loss {loss:.4} lr {lr:.2e}"));
        if step == total || step.is_multiple_of(10) {
            self.ctx
                .log(&format!("step {step}/{total} loss {loss:.6} lr {lr:.3e}"));
        }
    }
    fn log(&self, line: &str) {
        self.ctx.log(line);
    }
    fn cancelled(&self) -> bool {
        self.ctx.cancel.load(Ordering::Relaxed)
    }
}

/// `train`'s params (see its spec). Sizes that must be positive are
/// `NonZeroUsize`: 0 fails here even when no literal was checked.
#[derive(Deserialize)]
struct TrainParams {
    model: PathBuf,
    data: PathBuf,
    lr: f64,
    weight_decay: f64,
    warmup_ratio: f64,
    warmup_steps: i64,
    schedule: ScheduleParam,
    effective_batch: NonZeroUsize,
    micro_batch: NonZeroUsize,
    epochs: NonZeroUsize,
    checkpoints: usize,
    max_grad_norm: f64,
    seed: i64,
    dtype: SaveDtypeParam,
    activation_checkpointing: bool,
    max_steps: usize,
    save_optimizer: bool,
}

/// The decay after warmup, by its transformers name.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ScheduleParam {
    Cosine,
    Linear,
    Constant,
}

impl From<ScheduleParam> for Schedule {
    fn from(s: ScheduleParam) -> Schedule {
        match s {
            ScheduleParam::Cosine => Schedule::Cosine,
            ScheduleParam::Linear => Schedule::Linear,
            ScheduleParam::Constant => Schedule::Constant,
        }
    }
}

/// A [`SaveDtype`] read by its Hugging Face name: an enum param whose
/// strings are flow-model's own list, [`SaveDtype::ALL`].
struct SaveDtypeParam(SaveDtype);

const SAVE_DTYPE_NAMES: [&str; 3] = [
    SaveDtype::ALL[0].0,
    SaveDtype::ALL[1].0,
    SaveDtype::ALL[2].0,
];

impl<'de> Deserialize<'de> for SaveDtypeParam {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = SaveDtypeParam;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "one of {}", SAVE_DTYPE_NAMES.join(", "))
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(
                self,
                a: A,
            ) -> Result<SaveDtypeParam, A::Error> {
                use serde::de::VariantAccess;
                let (name, variant): (String, A::Variant) = a.variant()?;
                variant.unit_variant()?;
                SaveDtype::parse(&name)
                    .map(SaveDtypeParam)
                    .map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_enum("SaveDtype", &SAVE_DTYPE_NAMES, Names)
    }
}

/// The warmup from the two params (-1 = unset): `warmup_steps` (002's rule,
/// absolute) or `warmup_ratio` (004's rule, a share of the steps); both set
/// is an error, neither gives 004's ratio 0.1.
fn warmup(ratio: f64, steps: i64) -> OpResult<(f64, Option<usize>)> {
    let ratio_set = ratio != -1.0;
    let steps_set = steps != -1;
    if ratio_set && !(ratio.is_finite() && (0.0..=1.0).contains(&ratio)) {
        return Err(miette!(
            "parameter `warmup_ratio`: expected 0 to 1 (or -1 for unset), got {ratio}"
        ));
    }
    if steps_set && steps < 0 {
        return Err(miette!(
            "parameter `warmup_steps`: expected >= 0 (or -1 for unset), got {steps}"
        ));
    }
    match (ratio_set, steps_set) {
        (true, true) => Err(miette!(
            help = "set `warmup_steps` (absolute, as the DeFineMed paper's 500) or `warmup_ratio` (a share of the steps, as the training-dynamics paper's 0.1), and leave the other at -1",
            "parameters `warmup_ratio` ({ratio}) and `warmup_steps` ({steps}) are both set"
        )),
        (false, true) => Ok((0.0, Some(steps as usize))),
        (true, false) => Ok((ratio, None)),
        (false, false) => Ok((0.1, None)),
    }
}

impl Op for Train {
    fn spec(&self) -> OpSpec {
        let s = |x: &str| Value::Str(x.to_string());
        OpSpec {
            name: "train",
            version: 8,
            doc: "Continued pre-training on a packed dataset (AdamW, warmup then cosine/linear decay, gradient accumulation, global-norm clipping); writes the final model, checkpoints (one per decade of tokens, the rest evenly spaced) and losses.jsonl",
            params: vec![
                Param::required("model", Type::Model, "the model to train"),
                Param::required("data", Type::Dir, "a packed dataset (the `pack` op's output)"),
                Param::optional("lr", Type::Float, Value::Float(2e-5), "peak learning rate").at_least(0.0),
                Param::optional("weight_decay", Type::Float, Value::Float(0.1), "AdamW decoupled weight decay (matrices and embeddings only; never norms or biases)").at_least(0.0),
                Param::optional("warmup_ratio", Type::Float, Value::Float(-1.0), "linear warmup over ceil(ratio × steps) steps (004: 0.1); -1 = unset. When neither this nor `warmup_steps` is set: 0.1").within(-1.0, 1.0),
                Param::optional("warmup_steps", Type::Int, Value::Int(-1), "linear warmup over this many steps (002: 500); -1 = unset. Set either this or `warmup_ratio`, not both").at_least(-1.0),
                Param::optional("schedule", Type::enum_of::<ScheduleParam>(), s("cosine"), "decay after warmup (transformers' schedules)"),
                Param::optional("effective_batch", Type::Int, Value::Int(128), "sequences per optimizer step").at_least(1.0),
                Param::optional("micro_batch", Type::Int, Value::Int(4), "sequences per forward/backward (gradient accumulation up to effective_batch)").at_least(1.0),
                Param::optional("epochs", Type::Int, Value::Int(1), "passes over the data").at_least(1.0),
                Param::optional("checkpoints", Type::Int, Value::Int(18), "number of checkpoints: one per decade of tokens, the rest evenly spaced; never step 1 when it trained at lr 0 (see flow_model::train::checkpoint_steps)").at_least(0.0),
                Param::optional("max_grad_norm", Type::Float, Value::Float(1.0), "global gradient-norm clipping; 0 disables").at_least(0.0),
                Param::optional("seed", Type::Int, Value::Int(0), "data order seed"),
                Param::optional("dtype", Type::enum_of::<SaveDtypeParam>(), s("float32"), "storage dtype of saved models (training is f32)"),
                Param::optional("activation_checkpointing", Type::Bool, Value::Bool(false), "recompute layer activations in backward to save memory"),
                Param::optional("max_steps", Type::Int, Value::Int(0), "stop after this many optimizer steps; 0 = all").at_least(0.0),
                Param::optional("save_optimizer", Type::Bool, Value::Bool(false), "also write optimizer.safetensors (AdamW moments, f32 weights, data position) into each checkpoint, to resume from it"),
            ],
            produces: Type::Model,
            outputs: vec![
                Output { name: "checkpoints", ty: Type::List(Box::new(Type::Model)), doc: "the checkpoint model directories, in step order" },
                Output { name: "losses", ty: Type::File, doc: "losses.jsonl: step, loss, lr, grad_norm, tokens_seen per optimizer step" },
            ],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<TrainParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: TrainParams = ctx.params()?;
        let model_dir = p.model.clone();
        let data_dir = p.data.clone();
        let (warmup_ratio, warmup_steps) = warmup(p.warmup_ratio, p.warmup_steps)?;
        let cfg = TrainConfig {
            lr: p.lr,
            weight_decay: p.weight_decay,
            warmup_ratio,
            warmup_steps,
            schedule: p.schedule.into(),
            effective_batch: p.effective_batch.get(),
            micro_batch: p.micro_batch.get(),
            epochs: p.epochs.get(),
            checkpoints: p.checkpoints,
            max_grad_norm: p.max_grad_norm,
            // A negative seed is its two's-complement bits, as it always was.
            seed: p.seed as u64,
            save_dtype: p.dtype.0,
            activation_checkpointing: p.activation_checkpointing,
            max_steps: p.max_steps,
            save_optimizer: p.save_optimizer,
        };
        let data = train::PackedData::load(&data_dir).map_err(|e| miette!("{e}"))?;
        let total = train::total_steps(data.sequences, &cfg);
        drop(data);
        ctx.progress.set_total(total as u64, "steps");
        ctx.log(&format!(
            "training {} on {} for {total} steps (effective batch {}, micro batch {})",
            model_dir.display(),
            data_dir.display(),
            cfg.effective_batch,
            cfg.micro_batch
        ));
        let monitor = Monitor { ctx };
        let started = std::time::Instant::now();
        let out = &ctx.out_dir;
        let summary =
            match crate::model::runtime::cuda_backend(ctx.device, &|line| ctx.log(line)) {
                Some(gpu) => train::train_on(gpu, &model_dir, &data_dir, out, &cfg, None, &monitor),
                None => train::train_on(
                    flow_model::CpuBackend,
                    &model_dir,
                    &data_dir,
                    out,
                    &cfg,
                    None,
                    &monitor,
                ),
            }
            .map_err(|e| match e {
                flow_model::ModelError::Cancelled => miette!("cancelled"),
                other => miette!("{other}"),
            })?;
        // The compute table of the report (the papers' Table 2) reads this.
        // Wall time and device differ between two runs of the same inputs,
        // so they are run facts, outside the artifact's content hash: a
        // rerun (locally or on a cluster) that trains the same weights gives
        // the same hash, and its dependents stay cached.
        TrainRunFacts {
            wall_s: Some(started.elapsed().as_secs_f64()),
            devices: Some(1),
            device: Some(cpu_name(rayon::current_num_threads())),
            steps: Some(total as u64),
            ..TrainRunFacts::default()
        }
        .write(&ctx.run_facts_dir()?)?;
        let mut out = Outputs::new();
        out.insert(
            "checkpoints".into(),
            Value::List(summary.checkpoints.into_iter().map(Value::Path).collect()),
        );
        out.insert("losses".into(), Value::Path(PathBuf::from("losses.jsonl")));
        Ok(out)
    }
}

/// The CPU the run used, as the compute table names devices: the model
/// name from /proc/cpuinfo and the thread count.
fn cpu_name(threads: usize) -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "CPU".to_string());
    format!("{model} ({threads} threads)")
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Train)]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::artifacts::train::LossLine;
    use crate::artifacts::JsonLines;
    use crate::op::testing::{full_params, with_context, RunOptions};

    fn golden(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/golden")
            .join(name)
    }

    fn write_packed(dir: &Path, sequences: usize, seq_len: usize) {
        let tokens: Vec<u32> = (0..sequences * seq_len)
            .map(|i| (3 + (i * 37) % 290) as u32)
            .collect();
        let docs: Vec<u32> = (0..sequences * seq_len)
            .map(|i| ((i % seq_len) / 5) as u32)
            .collect();
        let bytes = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        std::fs::write(dir.join("tokens.bin"), bytes(&tokens)).unwrap();
        std::fs::write(dir.join("doc_ids.bin"), bytes(&docs)).unwrap();
        let meta = format!(
            r#"{{"seq_len": {seq_len}, "sequences": {sequences}, "tokens": 0, "documents": 0, "eos_id": 2, "pad_id": 0, "tokenizer_hash": ""}}"#
        );
        std::fs::write(dir.join("pack.json"), meta).unwrap();
    }

    fn run(params: BTreeMap<String, Value>, out: &Path, cancel: bool) -> OpResult<Outputs> {
        let options = RunOptions {
            threads: 2,
            cancelled: cancel,
            ..RunOptions::default()
        };
        with_context(params, out, options, |ctx| Train.run(ctx)).0
    }

    fn params(data: &Path) -> BTreeMap<String, Value> {
        full_params(
            &Train,
            &[
                ("model", Value::Path(golden("llama"))),
                ("data", Value::Path(data.to_path_buf())),
                ("lr", Value::Float(1e-3)),
                ("effective_batch", Value::Int(2)),
                ("micro_batch", Value::Int(1)),
                ("checkpoints", Value::Int(2)),
                ("dtype", Value::Str("bfloat16".into())),
            ],
        )
    }

    #[test]
    fn train_op_writes_model_checkpoints_and_losses() {
        let data = tempfile::tempdir().unwrap();
        write_packed(data.path(), 6, 12);
        let out = tempfile::tempdir().unwrap();
        let outputs = run(params(data.path()), out.path(), false).unwrap();
        let Value::List(ck) = &outputs["checkpoints"] else {
            panic!("checkpoints is not a list")
        };
        assert_eq!(
            ck,
            &vec![
                // step 1 trained at warmup factor 0 (a copy of the source): never a checkpoint
                Value::Path("checkpoints/step-000002".into()),
                Value::Path("checkpoints/step-000003".into())
            ]
        );
        let losses = LossLine::read_all(out.path()).unwrap();
        assert_eq!(losses.len(), 3);
        let model = flow_model::Model::load(out.path()).unwrap();
        assert_eq!(model.config.vocab_size, 300);
        assert!(out.path().join("tokenizer.json").is_file());
        let lineage: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                out.path()
                    .join("checkpoints/step-000003/flow_checkpoint.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(lineage["step"], 3);
        // 6 sequences × 12 positions; targets exist inside each 5-token document: 4+4+1 per sequence
        assert_eq!(lineage["tokens_seen"], 6 * 9);
        // 004 Table 2's rule: 6 · non-embedding parameters · tokens
        let n = model.config.non_embedding_param_count() as f64;
        assert_eq!(lineage["flops"].as_f64().unwrap(), 6.0 * n * 54.0);
        // The run's timing and device, for the report's compute table.
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.path().join("run-facts/train.json")).unwrap(),
        )
        .unwrap();
        assert!(record["wall_s"].as_f64().unwrap() > 0.0, "{record}");
        assert_eq!(record["devices"], 1);
        assert_eq!(record["steps"], 3);
        assert!(
            record["device"].as_str().unwrap().ends_with("(2 threads)"),
            "{record}"
        );
    }

    #[test]
    fn warmup_steps_or_ratio_one_wins_both_is_an_error() {
        assert_eq!(warmup(-1.0, -1).unwrap(), (0.1, None));
        assert_eq!(warmup(-1.0, 500).unwrap(), (0.0, Some(500)));
        assert_eq!(warmup(0.25, -1).unwrap(), (0.25, None));
        assert_eq!(warmup(0.0, -1).unwrap(), (0.0, None));
        let e = warmup(0.1, 500).unwrap_err().to_string();
        assert!(e.contains("both set"), "{e}");
        assert!(warmup(1.5, -1).is_err());
        assert!(warmup(-1.0, -7).is_err());
        // 500 absolute warmup steps out of 4: the lr rises over all 4 steps
        // (transformers' rule: lr · step / warmup at 0-based step).
        let data = tempfile::tempdir().unwrap();
        write_packed(data.path(), 8, 12);
        let out = tempfile::tempdir().unwrap();
        let mut p = params(data.path());
        p.insert("warmup_steps".into(), Value::Int(500));
        p.insert("schedule".into(), Value::Str("linear".into()));
        run(p, out.path(), false).unwrap();
        let lrs: Vec<f64> = LossLine::read_all(out.path())
            .unwrap()
            .iter()
            .map(|l| l.lr.unwrap())
            .collect();
        let want: Vec<f64> = (0..4).map(|s| 1e-3 * s as f64 / 500.0).collect();
        for (a, b) in lrs.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?} vs {want:?}");
        }
    }

    #[test]
    fn train_op_rejects_bad_input_and_honours_cancel() {
        let data = tempfile::tempdir().unwrap();
        write_packed(data.path(), 2, 8);
        let out = tempfile::tempdir().unwrap();
        let mut p = params(data.path());
        p.insert("micro_batch".into(), Value::Int(0));
        assert!(run(p, out.path(), false)
            .unwrap_err()
            .to_string()
            .contains("micro_batch"));
        let e = run(params(data.path()), out.path(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cancelled"), "{e}");
        std::fs::write(data.path().join("tokens.bin"), [0u8; 6]).unwrap();
        let e = run(params(data.path()), out.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokens.bin"), "{e}");
    }
}
