//! `slerp(base, other, t)`: spherical linear interpolation of two models of
//! the same architecture, tensor by tensor, with mergekit's rules.
//!
//! * `t = 0` gives `base`, `t = 1` gives `other`.
//! * `t` is a number, a list (a gradient over the layers: layer `i` of `L`
//!   sits at `i/(L-1)`, or at 1 when `L = 1`, and the list's values are
//!   spread evenly over [0, 1] and interpolated piecewise-linearly), or a list
//!   of `{filter: "substring", value: number|list}` records where the first
//!   record whose filter occurs in the tensor name wins and a record without a
//!   filter (or with `"*"`) matches every tensor.
//! * Tensors outside the layer stack (embeddings, final norm, `lm_head`) sit
//!   at position 0, as mergekit plans its pre- and post-weights with `t = 0`.
//! * Each tensor is normalised as a whole (mergekit 0.1.5 batches several
//!   output tensors along a leading axis, but each is still one vector).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use safetensors::Dtype;
use serde::Deserialize;

use crate::artifacts::CheckpointLineage;
use crate::op::{
    Device, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type,
    Value,
};

pub mod tensors;

use tensors::{copy_tokenizer_files, read_json, write_json, ModelTensors, ShardWriter};

/// How the values of one `t` entry depend on the layer position.
#[derive(Clone, Debug, PartialEq)]
pub enum TValue {
    Scalar(f64),
    /// Values spread evenly over positions [0, 1].
    Gradient(Vec<f64>),
}

impl TValue {
    /// The value at a layer position in [0, 1], interpolated as mergekit does.
    pub fn at(&self, pos: f64) -> f64 {
        match self {
            TValue::Scalar(v) => *v,
            TValue::Gradient(vals) => {
                let scaled = pos * (vals.len() - 1) as f64;
                let i0 = (scaled.floor() as usize).min(vals.len() - 1);
                let i1 = (i0 + 1).min(vals.len() - 1);
                let frac = scaled - i0 as f64;
                (1.0 - frac) * vals[i0] + frac * vals[i1]
            }
        }
    }
}

/// One entry of a `t` setting: an optional tensor-name filter and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct TEntry {
    /// `None` (or `"*"` in the input) matches every tensor.
    pub filter: Option<String>,
    pub value: TValue,
}

/// A parsed `t` parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct TSetting(pub Vec<TEntry>);

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// `t` weighs the two models: outside [0, 1] SLERP extrapolates, and far
/// outside it the weights overflow to NaN (`t: 1e308` wrote an all-NaN model).
fn in_unit_range(x: f64, what: &str) -> OpResult<f64> {
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(miette!(
            help = "t = 0 gives the base model, t = 1 the other; choose a value between",
            "{what}: t must lie in [0, 1], got {x}"
        ))
    }
}

fn parse_value(v: &Value, what: &str) -> OpResult<TValue> {
    if let Some(x) = number(v) {
        return Ok(TValue::Scalar(in_unit_range(x, what)?));
    }
    if let Value::List(items) = v {
        if items.is_empty() {
            return Err(miette!("{what}: an empty list has no value"));
        }
        let vals: Option<Vec<f64>> = items.iter().map(number).collect();
        let vals =
            vals.ok_or_else(|| miette!("{what}: a list of values must hold numbers only"))?;
        for &x in &vals {
            in_unit_range(x, what)?;
        }
        return Ok(TValue::Gradient(vals));
    }
    Err(miette!(
        "{what}: expected a number or a list of numbers, got {}",
        v.kind()
    ))
}

fn parse_entry(v: &Value, i: usize) -> OpResult<TEntry> {
    let Value::Record(r) = v else {
        return Err(miette!(
            "parameter `t`, entry {i}: expected a record {{filter, value}}, got {}",
            v.kind()
        ));
    };
    for k in r.keys() {
        if k != "filter" && k != "value" {
            return Err(miette!(
                help = "entries have the fields `filter` (optional) and `value`",
                "parameter `t`, entry {i}: unknown field `{k}`"
            ));
        }
    }
    let filter = match r.get("filter") {
        None => None,
        Some(Value::Str(s)) if s == "*" => None,
        Some(Value::Str(s)) => Some(s.clone()),
        Some(other) => {
            return Err(miette!(
                "parameter `t`, entry {i}: `filter` must be a string, got {}",
                other.kind()
            ))
        }
    };
    let value = r
        .get("value")
        .ok_or_else(|| miette!("parameter `t`, entry {i}: missing `value`"))?;
    Ok(TEntry {
        filter,
        value: parse_value(value, &format!("parameter `t`, entry {i}"))?,
    })
}

impl TSetting {
    /// Parses a number, a list of numbers, a record or a list of records.
    pub fn parse(v: &Value) -> OpResult<TSetting> {
        match v {
            Value::Record(_) => Ok(TSetting(vec![parse_entry(v, 0)?])),
            Value::List(items) if items.iter().any(|x| matches!(x, Value::Record(_))) => {
                let entries = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| parse_entry(x, i))
                    .collect::<OpResult<Vec<_>>>()?;
                Ok(TSetting(entries))
            }
            _ => Ok(TSetting(vec![TEntry {
                filter: None,
                value: parse_value(v, "parameter `t`")?,
            }])),
        }
    }

    /// `t` for a tensor at a layer position: the first entry whose filter
    /// occurs in the name (or that has none) decides.
    pub fn resolve(&self, tensor: &str, pos: f64) -> Option<f64> {
        self.0
            .iter()
            .find(|e| e.filter.as_deref().is_none_or(|f| tensor.contains(f)))
            .map(|e| e.value.at(pos))
    }
}

/// The layer index of a tensor named `...layers.N....`, if it is in the stack.
pub fn layer_index(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    while let Some(p) = parts.next() {
        if p == "layers" || p == "h" || p == "blocks" {
            if let Some(Ok(i)) = parts.clone().next().map(str::parse::<usize>) {
                return Some(i);
            }
        }
    }
    None
}

/// The position in [0, 1] that mergekit gives a tensor: layer `i` of
/// `layers` at `i/(layers-1)` (1 for a single layer); tensors outside the
/// stack at 0.
pub fn layer_position(name: &str, layers: usize) -> f64 {
    match layer_index(name) {
        Some(i) if layers > 1 => i as f64 / (layers - 1) as f64,
        Some(_) => 1.0,
        None => 0.0,
    }
}

/// Where the tensors of one merge are interpolated.
enum SlerpOn {
    Cpu,
    /// `kernels/cuda/slerp.cu` through [`flow_kernels::cuda::Gpu::slerp_f32`].
    Cuda(flow_kernels::cuda::Gpu),
}

impl SlerpOn {
    /// The node's device; a GPU that does not open falls back to the CPU
    /// with one notice in the log.
    fn open(ctx: &OpContext) -> SlerpOn {
        match ctx.device {
            Device::Cpu => SlerpOn::Cpu,
            Device::Cuda(ordinal) => match flow_kernels::cuda::Gpu::new(ordinal) {
                Ok(gpu) => SlerpOn::Cuda(gpu),
                Err(e) => {
                    ctx.log(&format!(
                        "notice: CUDA device {ordinal} did not open ({e}); merging on the CPU"
                    ));
                    SlerpOn::Cpu
                }
            },
        }
    }

    fn slerp(&self, name: &str, t: f32, a: &[f32], b: &[f32]) -> OpResult<Vec<f32>> {
        match self {
            SlerpOn::Cpu => {
                let mut out = vec![0f32; a.len()];
                flow_kernels::cpu::slerp(t, a, b, &mut out);
                Ok(out)
            }
            SlerpOn::Cuda(gpu) => gpu
                .slerp_f32(t, a, b)
                .map(|(out, _linear)| out)
                .map_err(|e| miette!("CUDA SLERP of tensor `{name}`: {e}")),
        }
    }
}

/// The `dtype` param of the merges: the written tensors' dtype, by its
/// Hugging Face name, or `auto` to keep the first model's.
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MergeDtype {
    Auto,
    Float32,
    Bfloat16,
    Float16,
}

impl MergeDtype {
    /// The dtype to write; `None` keeps the base's.
    pub(crate) fn dtype(self) -> Option<Dtype> {
        match self {
            MergeDtype::Auto => None,
            MergeDtype::Float32 => Some(Dtype::F32),
            MergeDtype::Bfloat16 => Some(Dtype::BF16),
            MergeDtype::Float16 => Some(Dtype::F16),
        }
    }
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        Dtype::F64 => "float64",
        _ => "float32",
    }
}

/// Config keys that must agree for two models to be merged.
const SHAPE_KEYS: &[&str] = &[
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
];

fn is_vocab_tensor(name: &str) -> bool {
    name.ends_with("embed_tokens.weight")
        || name == "lm_head.weight"
        || name.ends_with("wte.weight")
}

/// The name a model stores a tensor under: a tied model keeps `lm_head` in
/// its input embedding.
fn stored_name<'a>(model: &'a ModelTensors, name: &'a str) -> Option<&'a str> {
    if model.contains(name) {
        return Some(name);
    }
    if name == "lm_head.weight" {
        return model.names().find(|n| n.ends_with("embed_tokens.weight"));
    }
    None
}

/// What the combine function of a merge gets for one tensor.
pub(crate) struct TensorJob<'a> {
    pub name: &'a str,
    /// Position of the tensor in [0, 1] (see [`layer_position`]).
    pub position: f64,
    /// The tensor of every input model, cut to a common shape.
    pub inputs: &'a [Vec<f32>],
}

/// Streams a merge of `dirs` (the first is the base): checks the models
/// agree, calls `combine` per tensor, writes shards, config, tokenizer files
/// and the lineage file of `lineage_from`. Returns the number of tensors.
pub(crate) fn run_merge(
    ctx: &OpContext,
    dirs: &[PathBuf],
    out_dtype: Option<Dtype>,
    shard_bytes: u64,
    lineage_from: Option<&Path>,
    combine: &(dyn Fn(&TensorJob) -> OpResult<Vec<f32>> + Sync),
) -> OpResult<usize> {
    let models = dirs
        .iter()
        .map(|d| ModelTensors::open(d))
        .collect::<OpResult<Vec<_>>>()?;
    let configs = dirs
        .iter()
        .map(|d| read_json(&d.join("config.json")))
        .collect::<OpResult<Vec<_>>>()?;
    let base_cfg = &configs[0];
    for (dir, cfg) in dirs.iter().zip(&configs).skip(1) {
        for key in SHAPE_KEYS {
            let (a, b) = (base_cfg.get(*key), cfg.get(*key));
            if a != b {
                return Err(miette!(
                    help = "only models of the same architecture and size can be merged",
                    "models differ in `{key}`: {} in {}/config.json, {} in {}/config.json",
                    a.map_or("absent".into(), |v| v.to_string()),
                    dirs[0].display(),
                    b.map_or("absent".into(), |v| v.to_string()),
                    dir.display()
                ));
            }
        }
    }
    let layers = base_cfg
        .get("num_hidden_layers")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as usize;

    // Output tensors: the base's, plus lm_head when any input has its own.
    let mut names: Vec<String> = models[0].names().map(str::to_owned).collect();
    let untie = !models[0].contains("lm_head.weight")
        && models.iter().any(|m| m.contains("lm_head.weight"));
    if untie {
        ctx.log("warning: the base ties lm_head to its embeddings but another input has its own lm_head; the merge writes lm_head and sets tie_word_embeddings = false");
        names.push("lm_head.weight".to_owned());
    }
    for (m, dir) in models.iter().zip(dirs).skip(1) {
        for n in m.names() {
            if !names.iter().any(|x| x == n) {
                return Err(miette!(
                    help = "only models of the same architecture can be merged",
                    "tensor `{n}` of {} has no counterpart in the base {}",
                    dir.display(),
                    dirs[0].display()
                ));
            }
        }
    }

    ctx.progress.set_total(names.len() as u64, "tensors");
    let mut writer = ShardWriter::new(&ctx.out_dir, shard_bytes);
    let mut vocab_rows: Option<usize> = None;
    for name in &names {
        ctx.check_cancelled()?;
        let mut shapes = Vec::new();
        let mut stored = Vec::new();
        for (m, dir) in models.iter().zip(dirs) {
            let sn = stored_name(m, name).ok_or_else(|| {
                miette!(
                    help = "only models of the same architecture can be merged",
                    "{} has no tensor `{name}`",
                    dir.display()
                )
            })?;
            let (dtype, shape) = m
                .info(sn)
                .ok_or_else(|| miette!("internal: tensor `{sn}` vanished"))?;
            shapes.push(shape.to_vec());
            stored.push((sn, dtype));
        }
        let mut shape = shapes[0].clone();
        let mut cut_rows = None;
        if shapes.iter().any(|s| s != &shapes[0]) {
            let same_tail = shapes
                .iter()
                .all(|s| s.len() == shape.len() && !s.is_empty() && s[1..] == shape[1..]);
            if is_vocab_tensor(name) && same_tail {
                let rows = shapes.iter().map(|s| s[0]).min().unwrap_or(0);
                ctx.log(&format!(
                    "warning: `{name}` has {} rows across the inputs; the vocabularies differ, so the merge keeps the {rows} rows they share",
                    shapes.iter().map(|s| s[0].to_string()).collect::<Vec<_>>().join(" / ")
                ));
                shape[0] = rows;
                cut_rows = Some(rows);
                vocab_rows = Some(vocab_rows.map_or(rows, |v: usize| v.min(rows)));
            } else {
                return Err(miette!(
                    help = "only models of the same architecture and size can be merged",
                    "tensor `{name}` has shape {:?} in {} but {:?} in {}",
                    shapes[0],
                    dirs[0].display(),
                    shapes
                        .iter()
                        .zip(dirs)
                        .find(|(s, _)| *s != &shapes[0])
                        .map(|(s, _)| s.clone())
                        .unwrap_or_default(),
                    shapes
                        .iter()
                        .zip(dirs)
                        .find(|(s, _)| *s != &shapes[0])
                        .map(|(_, d)| d.display().to_string())
                        .unwrap_or_default()
                ));
            }
        }
        let mut inputs = Vec::with_capacity(models.len());
        for (m, (sn, _)) in models.iter().zip(&stored) {
            let mut v = m.read_f32(sn)?;
            if let Some(rows) = cut_rows {
                let width: usize = shape[1..].iter().product();
                v.truncate(rows * width);
            }
            inputs.push(v);
        }
        let job = TensorJob {
            name,
            position: layer_position(name, layers),
            inputs: &inputs,
        };
        let merged = combine(&job)?;
        let dtype = out_dtype.unwrap_or(stored[0].1);
        let dtype = if matches!(dtype, Dtype::F64) {
            Dtype::F32
        } else {
            dtype
        };
        writer.add(name, dtype, &shape, &merged)?;
        ctx.progress.inc(1);
    }
    writer.finish()?;

    let mut cfg = base_cfg.clone();
    if let Some(obj) = cfg.as_object_mut() {
        if let Some(rows) = vocab_rows {
            obj.insert("vocab_size".into(), rows.into());
        }
        if untie {
            obj.insert("tie_word_embeddings".into(), false.into());
        }
        if let Some(d) = out_dtype {
            for key in ["torch_dtype", "dtype"] {
                if obj.contains_key(key) {
                    obj.insert(key.into(), dtype_name(d).into());
                }
            }
        }
    }
    write_json(&ctx.out_dir.join("config.json"), &cfg)?;
    flow_model::copy_tokenizer_files(&dirs[0], &ctx.out_dir)
        .map_err(|e| miette!("copying the tokenizer: {e}"))?;
    copy_tokenizer_files(&dirs[0], &ctx.out_dir)?;
    if let Some(src) = lineage_from {
        if let Some(lineage) = CheckpointLineage::read(src).map_err(|e| miette!("{e}"))? {
            lineage
                .write(&ctx.out_dir)
                .map_err(|e| miette!("writing the lineage: {e}"))?;
        }
    }
    Ok(names.len())
}

/// The `slerp` op.
pub struct Slerp;

/// `slerp`'s params (see its spec).
#[derive(Deserialize)]
struct SlerpParams {
    base: PathBuf,
    other: PathBuf,
    /// A number, a list or records: parsed by [`TSetting::parse`].
    t: Value,
    dtype: MergeDtype,
    shard_gb: f64,
}

impl Op for Slerp {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "slerp",
            version: 2,
            doc: "Spherical linear interpolation of two models of the same architecture, tensor by tensor, with mergekit's rules: t = 0 is `base`, t = 1 is `other`; t is a number, a list interpolated over the layers, or a list of {filter, value} records (first filter found in the tensor name wins). Embeddings, final norm and lm_head take t at position 0. Writes a sharded safetensors model with base's config and tokenizer and other's flow_checkpoint.json.",
            params: vec![
                Param::required("base", Type::Model, "the model at t = 0 (e.g. the source instruct model); config and tokenizer come from it"),
                Param::required("other", Type::Model, "the model at t = 1 (e.g. a continued-pretraining checkpoint); its flow_checkpoint.json is copied"),
                Param::optional("t", Type::Any, Value::Float(0.5), "a number, a list of numbers (gradient over layers), or a list of {filter: \"substring\", value: number|list} records; a record without filter is the fallback").within(0.0, 1.0),
                Param::optional("dtype", Type::enum_of::<MergeDtype>(), Value::Str("auto".into()), "dtype of the written tensors; auto keeps the base's"),
                Param::optional("shard_gb", Type::Float, Value::Float(2.0), "maximum shard size in GB (1e9 bytes)"),
            ],
            produces: Type::Model,
            outputs: vec![Output { name: "tensors", ty: Type::Int, doc: "number of merged tensors" }],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<SlerpParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: SlerpParams = ctx.params()?;
        let (base, other) = (p.base, p.other);
        let t = TSetting::parse(&p.t)?;
        let dtype = p.dtype.dtype();
        let shard_bytes = shard_bytes(p.shard_gb)?;
        let on = SlerpOn::open(ctx);
        let combine = |job: &TensorJob| -> OpResult<Vec<f32>> {
            let tv = t.resolve(job.name, job.position).ok_or_else(|| {
                miette!(
                    help = "add an entry without `filter` as the fallback",
                    "parameter `t`: no entry matches tensor `{}`",
                    job.name
                )
            })?;
            on.slerp(job.name, tv as f32, &job.inputs[0], &job.inputs[1])
        };
        let n = run_merge(
            ctx,
            &[base, other.clone()],
            dtype,
            shard_bytes,
            Some(&other),
            &combine,
        )?;
        ctx.log(&format!("merged {n} tensors"));
        Ok(BTreeMap::from([(
            "tensors".to_owned(),
            Value::Int(n as i64),
        )]))
    }
}

/// Validates the shard size parameter.
pub(crate) fn shard_bytes(gb: f64) -> OpResult<u64> {
    if gb.is_nan() || gb <= 0.0 || gb.is_infinite() {
        return Err(miette!(
            "parameter `shard_gb`: must be a positive number, got {gb}"
        ));
    }
    Ok(((gb * 1e9) as u64).max(1))
}

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Slerp)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::testing::{run_op, run_op_logged};
    use std::collections::HashMap;

    fn rec(filter: Option<&str>, value: Value) -> Value {
        let mut m = BTreeMap::new();
        if let Some(f) = filter {
            m.insert("filter".to_owned(), Value::Str(f.to_owned()));
        }
        m.insert("value".to_owned(), value);
        Value::Record(m)
    }
    fn floats(v: &[f64]) -> Value {
        Value::List(v.iter().map(|x| Value::Float(*x)).collect())
    }
    fn slerp_cpu(t: f32, a: &[f32], b: &[f32]) -> Vec<f32> {
        SlerpOn::Cpu.slerp("t", t, a, b).unwrap()
    }
    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    /// The golden's `t` setting (tests/golden/mergekit/make_golden.py).
    fn golden_t() -> Value {
        Value::List(vec![
            rec(Some("self_attn"), floats(&[0.0, 0.5, 0.3, 1.0])),
            rec(Some("mlp"), floats(&[1.0, 0.5, 0.0])),
            rec(None, floats(&[0.2, 0.7])),
        ])
    }

    #[test]
    fn gradient_is_piecewise_linear_over_layers() {
        let t = TSetting::parse(&golden_t()).unwrap();
        // 5 layers: positions 0, .25, .5, .75, 1. self_attn list of 4 values
        // spans [0,1] in thirds: pos .5 -> index 1.5 -> (0.5+0.3)/2.
        assert!(
            (t.resolve("model.layers.2.self_attn.q_proj.weight", 0.5)
                .unwrap()
                - 0.4)
                .abs()
                < 1e-12
        );
        // pos .25 -> index .75 -> 0.25*0 + 0.75*0.5.
        let p = layer_position("model.layers.1.self_attn.k_proj.weight", 5);
        assert_eq!(p, 0.25);
        assert!(
            (t.resolve("model.layers.1.self_attn.k_proj.weight", p)
                .unwrap()
                - 0.375)
                .abs()
                < 1e-12
        );
        // mlp at the last layer -> last value.
        assert_eq!(
            t.resolve("model.layers.4.mlp.up_proj.weight", 1.0),
            Some(0.0)
        );
        // Fallback for norms; embeddings and lm_head at position 0.
        assert_eq!(layer_position("model.embed_tokens.weight", 5), 0.0);
        assert_eq!(layer_position("lm_head.weight", 5), 0.0);
        assert_eq!(layer_position("model.norm.weight", 5), 0.0);
        assert_eq!(t.resolve("model.norm.weight", 0.0), Some(0.2));
        assert!(
            (t.resolve("model.layers.3.input_layernorm.weight", 0.75)
                .unwrap()
                - (0.2 + 0.75 * 0.5))
                .abs()
                < 1e-12
        );
        // A single layer sits at 1 (mergekit).
        assert_eq!(layer_position("model.layers.0.mlp.up_proj.weight", 1), 1.0);
        // Without a fallback an unmatched tensor has no t.
        let only =
            TSetting::parse(&Value::List(vec![rec(Some("mlp"), Value::Float(0.3))])).unwrap();
        assert_eq!(only.resolve("model.norm.weight", 0.0), None);
        assert_eq!(
            TSetting::parse(&Value::Int(1)).unwrap().resolve("x", 0.3),
            Some(1.0)
        );
    }

    #[test]
    fn bad_t_is_an_error() {
        assert!(TSetting::parse(&Value::Str("x".into())).is_err());
        // t outside [0, 1] (1e308 once wrote an all-NaN model), NaN included
        for bad in [1e308, -0.1, 1.5, f64::NAN] {
            let e = TSetting::parse(&Value::Float(bad)).unwrap_err().to_string();
            assert!(e.contains("t must lie in [0, 1]"), "{bad}: {e}");
            assert!(
                TSetting::parse(&Value::List(vec![Value::Float(0.5), Value::Float(bad)])).is_err()
            );
        }
        assert!(TSetting::parse(&Value::List(vec![])).is_err());
        assert!(
            TSetting::parse(&Value::List(vec![rec(Some("a"), Value::Str("b".into()))])).is_err()
        );
    }

    #[test]
    fn identical_tensors_are_unchanged() {
        let a = [0.3f32, -1.2, 2.5, 0.0, 4.0];
        for t in [0.0, 0.3, 0.5, 1.0] {
            assert!(close(&slerp_cpu(t, &a, &a), &a, 1e-6));
        }
    }

    #[test]
    fn dot_under_threshold_is_spherical_and_over_is_linear() {
        // Unit vectors at angle θ: SLERP at t = 0.5 is the unit bisector,
        // linear interpolation is shorter by cos(θ/2).
        for (cos, spherical) in [(0.9994f64, true), (0.9996f64, false)] {
            let th = cos.acos();
            let a = [1.0f32, 0.0];
            let b = [cos as f32, th.sin() as f32];
            let out = slerp_cpu(0.5, &a, &b);
            let want = if spherical {
                [(th / 2.0).cos() as f32, (th / 2.0).sin() as f32]
            } else {
                [0.5 * (1.0 + cos as f32), 0.5 * th.sin() as f32]
            };
            assert!(close(&out, &want, 1e-6), "cos {cos}: {out:?} vs {want:?}");
        }
        // Scaling a side does not change the branch: the dot is of normalised copies,
        // while the formula applies to the original tensors.
        let th = 0.9994f64.acos();
        let a = [2.0f32, 0.0];
        let b = [3.0 * 0.9994f32, 3.0 * th.sin() as f32];
        let out = slerp_cpu(0.25, &a, &b);
        let s0 = ((0.75 * th).sin() / th.sin()) as f32;
        let s1 = ((0.25 * th).sin() / th.sin()) as f32;
        assert!(close(
            &out,
            &[s0 * a[0] + s1 * b[0], s0 * a[1] + s1 * b[1]],
            1e-6
        ));
    }

    #[test]
    fn zero_norm_side_is_not_normalised() {
        // a = 0 stays unnormalised, so the dot is 0 and θ = π/2:
        // out = sin(tπ/2)·b.
        let a = [0.0f32, 0.0];
        let b = [3.0f32, 4.0];
        let out = slerp_cpu(0.5, &a, &b);
        let s = (std::f64::consts::FRAC_PI_4).sin() as f32;
        assert!(close(&out, &[3.0 * s, 4.0 * s], 1e-6), "{out:?}");
    }

    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/mergekit")
    }

    fn load(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        let m = ModelTensors::open(dir).unwrap();
        m.names()
            .map(|n| {
                (
                    n.to_owned(),
                    (m.info(n).unwrap().1.to_vec(), m.read_f32(n).unwrap()),
                )
            })
            .collect()
    }

    /// Compares with mergekit 0.1.5's merge (tests/golden/mergekit/make_golden.py):
    /// every element within 1e-6 of the tensor's largest magnitude.
    fn check_golden(suffix: &str) {
        let g = golden_dir();
        let out = tempfile::tempdir().unwrap();
        let params = [
            ("base", Value::Path(g.join(format!("base{suffix}")))),
            ("other", Value::Path(g.join(format!("other{suffix}")))),
            ("t", golden_t()),
        ];
        let res = run_op(&Slerp, &params, out.path());
        res.unwrap();
        let ours = load(out.path());
        let want = load(&g.join(format!("merged{suffix}")));
        assert_eq!(ours.len(), want.len(), "tensor count");
        for (name, (shape, w)) in &want {
            let (s, o) = ours.get(name).unwrap_or_else(|| panic!("missing {name}"));
            assert_eq!(s, shape, "{name}");
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
            for (i, (x, y)) in o.iter().zip(w).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-6 * scale,
                    "{name}[{i}]: ours {x}, mergekit {y}"
                );
            }
        }
    }

    #[test]
    fn matches_mergekit_golden() {
        check_golden("");
    }

    #[test]
    fn matches_mergekit_golden_tied_embeddings() {
        check_golden("_tied");
        // No lm_head is invented for tied models.
        let g = golden_dir();
        let out = tempfile::tempdir().unwrap();
        let res = run_op(
            &Slerp,
            &[
                ("base", Value::Path(g.join("base_tied"))),
                ("other", Value::Path(g.join("other_tied"))),
            ],
            out.path(),
        );
        res.unwrap();
        assert!(!ModelTensors::open(out.path())
            .unwrap()
            .contains("lm_head.weight"));
    }

    fn write_model(
        dir: &Path,
        tensors: &[(&str, Vec<usize>, Vec<f32>)],
        config: serde_json::Value,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let mut w = ShardWriter::new(dir, u64::MAX / 4);
        for (n, s, v) in tensors {
            w.add(n, Dtype::F32, s, v).unwrap();
        }
        w.finish().unwrap();
        write_json(&dir.join("config.json"), &config).unwrap();
    }

    fn cfg(vocab: usize, hidden: usize) -> serde_json::Value {
        serde_json::json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "num_hidden_layers": 1, "vocab_size": vocab, "tie_word_embeddings": false})
    }

    #[test]
    fn vocabularies_are_cut_to_the_common_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let base: Vec<f32> = (0..12).map(|x| x as f32).collect(); // 6 rows × 2
        let other: Vec<f32> = (0..8).map(|x| -(x as f32)).collect(); // 4 rows × 2
        write_model(
            &tmp.path().join("a"),
            &[
                ("model.embed_tokens.weight", vec![6, 2], base.clone()),
                ("model.layers.0.w", vec![2], vec![1.0, 2.0]),
            ],
            cfg(6, 2),
        );
        std::fs::write(tmp.path().join("a/tokenizer.json"), "{}").unwrap();
        write_model(
            &tmp.path().join("b"),
            &[
                ("model.embed_tokens.weight", vec![4, 2], other),
                ("model.layers.0.w", vec![2], vec![1.0, 2.0]),
            ],
            cfg(4, 2),
        );
        std::fs::write(
            tmp.path().join("b/flow_checkpoint.json"),
            r#"{"step": 7, "tokens_seen": 70}"#,
        )
        .unwrap();
        let out = tmp.path().join("out");
        let (res, log) = run_op_logged(
            &Slerp,
            &[
                ("base", Value::Path(tmp.path().join("a"))),
                ("other", Value::Path(tmp.path().join("b"))),
                ("t", Value::Float(0.0)),
            ],
            &out,
        );
        res.unwrap();
        assert!(
            log.iter()
                .any(|l| l.contains("warning") && l.contains("4 rows")),
            "{log:?}"
        );
        let m = load(&out);
        let (shape, emb) = &m["model.embed_tokens.weight"];
        assert_eq!(shape, &vec![4, 2]);
        assert_eq!(emb, &base[..8].to_vec()); // t = 0 is the base
        let c = read_json(&out.join("config.json")).unwrap();
        assert_eq!(c["vocab_size"], 4);
        assert!(out.join("tokenizer.json").is_file());
        assert_eq!(
            read_json(&out.join("flow_checkpoint.json")).unwrap()["step"],
            7
        );
    }

    #[test]
    fn different_architectures_are_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_model(
            &tmp.path().join("a"),
            &[("model.layers.0.w", vec![2], vec![1.0, 2.0])],
            cfg(4, 2),
        );
        write_model(
            &tmp.path().join("b"),
            &[("model.layers.0.w", vec![3], vec![1.0, 2.0, 3.0])],
            cfg(4, 3),
        );
        let res = run_op(
            &Slerp,
            &[
                ("base", Value::Path(tmp.path().join("a"))),
                ("other", Value::Path(tmp.path().join("b"))),
            ],
            &tmp.path().join("o1"),
        );
        let msg = format!("{:?}", res.unwrap_err());
        assert!(msg.contains("hidden_size"), "{msg}");
        // Same config, different tensor shape.
        write_model(
            &tmp.path().join("c"),
            &[("model.layers.0.w", vec![3], vec![1.0, 2.0, 3.0])],
            cfg(4, 2),
        );
        let res = run_op(
            &Slerp,
            &[
                ("base", Value::Path(tmp.path().join("a"))),
                ("other", Value::Path(tmp.path().join("c"))),
            ],
            &tmp.path().join("o2"),
        );
        let msg = format!("{:?}", res.unwrap_err());
        assert!(
            msg.contains("model.layers.0.w") && msg.contains("[3]"),
            "{msg}"
        );
    }

    #[test]
    fn shards_and_index_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let ts: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
            ("model.layers.0.a", vec![100], vec![1.0; 100]),
            ("model.layers.0.b", vec![100], vec![2.0; 100]),
            ("model.layers.0.c", vec![100], vec![3.0; 100]),
        ];
        write_model(&tmp.path().join("a"), &ts, cfg(4, 2));
        write_model(&tmp.path().join("b"), &ts, cfg(4, 2));
        let out = tmp.path().join("out");
        // 1000-byte shards: two 400-byte tensors fit in the first, the third opens a second.
        let res = run_op(
            &Slerp,
            &[
                ("base", Value::Path(tmp.path().join("a"))),
                ("other", Value::Path(tmp.path().join("b"))),
                ("shard_gb", Value::Float(1e-6)),
            ],
            &out,
        );
        res.unwrap();
        let index = read_json(&out.join("model.safetensors.index.json")).unwrap();
        assert_eq!(
            index["weight_map"]["model.layers.0.c"],
            "model-00002-of-00002.safetensors"
        );
        assert_eq!(
            index["weight_map"]["model.layers.0.a"],
            "model-00001-of-00002.safetensors"
        );
        let m = load(&out);
        assert_eq!(m["model.layers.0.b"].1, vec![2.0; 100]);
    }
}
