//! `flow slurm-worker SPEC`: what a Slurm job runs. The driver writes the
//! unit it is to build as a unit file (`slurm/units/KEY.json`: op, key,
//! resolved args in a tagged wire form, threads, device, and for a sharded
//! op its shard tasks); the worker recomputes the key with its own op
//! registry, refuses a mismatch (a different binary), and builds the unit
//! with the same [`Job`] as a local run, or one shard task's part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::job::{input_ids_of, params_of, run_guarded, Shards};
use super::super::Job;
use crate::device::{resolve_device, CudaProbe};
use crate::keys::{unit_key, RVal, TPart, UnitKey};
use crate::memo::InputStamp;
use crate::op::{run_part_into, Device, NoProgress, Op, OpContext, Registry, Value};
use crate::progress::Display;
use crate::store::Store;

/// What a worker builds: written by the driver, read by `flow slurm-worker`.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct WorkerSpec {
    pub(super) cache: PathBuf,
    pub(super) workdir: PathBuf,
    pub(super) op: String,
    pub(super) display: String,
    pub(super) key: UnitKey,
    pub(super) args: BTreeMap<String, serde_json::Value>,
    pub(super) element: Option<serde_json::Value>,
    /// The inputs as the driver stamped them before hashing: the job
    /// checks them again after the op ran, as a local run does.
    #[serde(default)]
    pub(super) inputs: Vec<InputStamp>,
    /// CPU threads; 0: every CPU of the job's node.
    pub(super) threads: usize,
    pub(super) device: String,
    /// A sharded op's shard tasks; 1 (and for every other op): the whole
    /// unit in this one job.
    #[serde(default = "one")]
    pub(super) tasks: usize,
    /// The pieces the driver planned (each shard task checks its own count).
    #[serde(default)]
    pub(super) pieces: usize,
    /// Where the shard tasks write their parts (`tasks` > 1).
    #[serde(default)]
    pub(super) parts: Option<PathBuf>,
    /// `Some(i)`: this job is shard task `i` and writes its part; `None`:
    /// the unit (with `tasks` > 1: the merge of the parts).
    #[serde(default)]
    pub(super) part: Option<usize>,
}

fn one() -> usize {
    1
}

/// `flow slurm-worker SPEC`: builds one unit (or one shard task's part)
/// into the cache the spec names; exit 0 when its artifact (or part) is
/// there afterwards, 1 otherwise.
pub fn worker(spec_path: &Path, registry: &Registry, probe: CudaProbe) -> i32 {
    match worker_inner(spec_path, registry, probe) {
        Ok(()) => 0,
        Err(report) => {
            eprintln!("{report:?}");
            1
        }
    }
}

/// Reads a unit file back: the op, and the args and element decoded.
type Decoded = (
    WorkerSpec,
    Arc<dyn Op>,
    BTreeMap<String, RVal>,
    Option<RVal>,
);

fn read_spec(spec_path: &Path, registry: &Registry) -> miette::Result<Decoded> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| miette::miette!("cannot read unit file {}: {e}", spec_path.display()))?;
    let spec: WorkerSpec = serde_json::from_str(&text)
        .map_err(|e| miette::miette!("bad unit file {}: {e}", spec_path.display()))?;
    let op = registry.get(&spec.op).cloned().ok_or_else(|| {
        miette::miette!(
            help = "the jobs must run the same flow binary as the driver",
            "this flow binary has no op `{}`",
            spec.op
        )
    })?;
    let decode = |v: &serde_json::Value| {
        rval_from_wire(v).ok_or_else(|| {
            miette::miette!("bad unit file {}: unreadable argument", spec_path.display())
        })
    };
    let mut args = BTreeMap::new();
    for (k, v) in &spec.args {
        args.insert(k.clone(), decode(v)?);
    }
    let element = spec.element.as_ref().map(decode).transpose()?;
    Ok((spec, op, args, element))
}

fn worker_inner(spec_path: &Path, registry: &Registry, probe: CudaProbe) -> miette::Result<()> {
    let (spec, op, args, element) = read_spec(spec_path, registry)?;
    let s = op.spec();
    let key = unit_key(s.name, s.version, &args, element.as_ref());
    if key.key != spec.key.key {
        return Err(miette::miette!(
            help = "run the jobs with the driver's binary (a shared file system path)",
            "unit `{}`: this flow binary computes key {} where the driver computed {} (a different op version?)",
            spec.display,
            key.key,
            spec.key.key
        ));
    }
    let store = Store::existing(&spec.cache);
    if store.lookup(&key.key).is_some() {
        eprintln!("flow: {} is already in the cache", spec.display);
        return Ok(());
    }
    let threads = match spec.threads {
        0 => std::env::var("SLURM_CPUS_ON_NODE")
            .ok()
            .and_then(|v| v.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1),
        n => n,
    };
    let request =
        crate::device::parse_device(&spec.device).unwrap_or(crate::ir::DeviceRequest::Cpu);
    let (device, notice) = resolve_device(request, probe);
    if let Some(n) = notice {
        eprintln!("{n}");
    }
    let host = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    if let Some(index) = spec.part {
        eprintln!(
            "flow: shard task {index} of {} of {} (key {}) on {host} with {threads} threads, {device:?}",
            spec.tasks, spec.display, key.key
        );
        return shard_task(&spec, op.as_ref(), &args, index, threads, device);
    }
    eprintln!(
        "flow: building {} (key {}) on {host} with {threads} threads, {device:?}",
        spec.display, key.key
    );
    let shards = match &spec.parts {
        Some(root) if spec.tasks > 1 => Shards::Merge {
            root: root.clone(),
            tasks: spec.tasks,
        },
        _ => Shards::Here(Some(spec.tasks)),
    };
    let display = Display::new(true);
    let job = Job {
        unit: 0,
        op,
        store,
        build_under: "slurm/build",
        display: spec.display.clone(),
        key: spec.key,
        args,
        inputs: spec.inputs,
        threads,
        device,
        cancel: Arc::new(AtomicBool::new(false)),
        workdir: spec.workdir,
        progress: display.start(&spec.display),
        echo: true,
        shards,
    };
    let f = job.execute();
    match f.result {
        Ok(meta) => {
            eprintln!(
                "flow: built {} ({:.2}s), content hash {}",
                spec.display, f.seconds, meta.content_hash
            );
            Ok(())
        }
        Err(failure) => Err(failure.report),
    }
}

/// Shard task `index`: writes its part under the spec's parts directory
/// (the job succeeded when the part is there). Parts are scratch: never
/// hashed, never an artifact; the merge job reads them.
fn shard_task(
    spec: &WorkerSpec,
    op: &dyn Op,
    args: &BTreeMap<String, RVal>,
    index: usize,
    threads: usize,
    device: Device,
) -> miette::Result<()> {
    let sharded = op.sharding().ok_or_else(|| {
        miette::miette!(
            "unit `{}`: op `{}` has no shard tasks in this flow binary",
            spec.display,
            spec.op
        )
    })?;
    let root = spec
        .parts
        .clone()
        .ok_or_else(|| miette::miette!("bad unit file: a shard task without a parts directory"))?;
    std::fs::create_dir_all(&root)
        .map_err(|e| miette::miette!("cannot create {}: {e}", root.display()))?;
    let log = |line: &str| eprintln!("{line}");
    let cancel = AtomicBool::new(false);
    let ctx = OpContext {
        params: params_of(args, &root),
        out_dir: root.clone(),
        workdir: spec.workdir.clone(),
        threads,
        device,
        progress: &NoProgress,
        log: &log,
        cancel: &cancel,
        input_ids: input_ids_of(args),
    };
    let t0 = std::time::Instant::now();
    let result = run_guarded(&spec.op, threads, || {
        let pieces = sharded.pieces(&ctx)?;
        if pieces != spec.pieces {
            return Err(miette::miette!(
                help = "an input changed after the driver planned the unit; run again",
                "unit `{}`: {pieces} pieces to shard where the driver planned {}",
                spec.display,
                spec.pieces
            ));
        }
        run_part_into(sharded, &ctx, pieces, spec.tasks, index, &root)
    });
    let part = result?;
    eprintln!(
        "flow: wrote {} ({:.2}s)",
        part.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

// The wire form of resolved arguments: tagged, so a path never reads back
// as a string, and floats by their bits, so keys recompute exactly.

fn value_to_wire(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Bool(b) => json!({ "b": b }),
        Value::Int(i) => json!({ "i": i }),
        Value::Float(f) => json!({ "f": f.to_bits().to_string() }),
        Value::Str(s) => json!({ "s": s }),
        Value::Path(p) => json!({ "p": p.to_string_lossy() }),
        Value::List(items) => json!({ "l": items.iter().map(value_to_wire).collect::<Vec<_>>() }),
        Value::Record(f) => json!({
            "r": f.iter().map(|(k, v)| (k.clone(), value_to_wire(v))).collect::<serde_json::Map<_, _>>()
        }),
    }
}

fn value_from_wire(v: &serde_json::Value) -> Option<Value> {
    let (tag, x) = v.as_object()?.iter().next()?;
    Some(match tag.as_str() {
        "b" => Value::Bool(x.as_bool()?),
        "i" => Value::Int(x.as_i64()?),
        "f" => Value::Float(f64::from_bits(x.as_str()?.parse().ok()?)),
        "s" => Value::Str(x.as_str()?.to_string()),
        "p" => Value::Path(PathBuf::from(x.as_str()?)),
        "l" => Value::List(
            x.as_array()?
                .iter()
                .map(value_from_wire)
                .collect::<Option<_>>()?,
        ),
        "r" => Value::Record(
            x.as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), value_from_wire(v)?)))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

pub(super) fn rval_to_wire(v: &RVal) -> serde_json::Value {
    use serde_json::json;
    match v {
        RVal::Lit(x) => json!({ "lit": value_to_wire(x) }),
        RVal::Path { path, key } => json!({ "path": [path.to_string_lossy(), key] }),
        RVal::List(items) => json!({ "list": items.iter().map(rval_to_wire).collect::<Vec<_>>() }),
        RVal::Record(f) => json!({
            "record": f.iter().map(|(k, v)| (k.clone(), rval_to_wire(v))).collect::<serde_json::Map<_, _>>()
        }),
        RVal::Template(parts) => json!({
            "template": parts.iter().map(|p| match p {
                TPart::Text(t) => json!({ "text": t }),
                TPart::Out => json!("out"),
                TPart::Val(v) => json!({ "val": rval_to_wire(v) }),
            }).collect::<Vec<_>>()
        }),
        RVal::Param { name, value } => json!({ "param": [name, value_to_wire(value)] }),
    }
}

fn rval_from_wire(v: &serde_json::Value) -> Option<RVal> {
    let (tag, x) = v.as_object()?.iter().next()?;
    Some(match tag.as_str() {
        "lit" => RVal::Lit(value_from_wire(x)?),
        "path" => {
            let a = x.as_array()?;
            RVal::Path {
                path: PathBuf::from(a.first()?.as_str()?),
                key: a.get(1)?.as_str()?.to_string(),
            }
        }
        "list" => RVal::List(
            x.as_array()?
                .iter()
                .map(rval_from_wire)
                .collect::<Option<_>>()?,
        ),
        "record" => RVal::Record(
            x.as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), rval_from_wire(v)?)))
                .collect::<Option<_>>()?,
        ),
        "template" => RVal::Template(
            x.as_array()?
                .iter()
                .map(|p| {
                    if p.as_str() == Some("out") {
                        return Some(TPart::Out);
                    }
                    let (t, y) = p.as_object()?.iter().next()?;
                    match t.as_str() {
                        "text" => Some(TPart::Text(y.as_str()?.to_string())),
                        "val" => Some(TPart::Val(rval_from_wire(y)?)),
                        _ => None,
                    }
                })
                .collect::<Option<_>>()?,
        ),
        "param" => {
            let a = x.as_array()?;
            RVal::Param {
                name: a.first()?.as_str()?.to_string(),
                value: value_from_wire(a.get(1)?)?,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_survive_the_wire_exactly() {
        let mut rec = BTreeMap::new();
        rec.insert("x".to_string(), Value::Float(0.1 + 0.2));
        rec.insert("p".to_string(), Value::Path(PathBuf::from("/a/b")));
        let v = RVal::List(vec![
            RVal::Lit(Value::Record(rec)),
            RVal::Lit(Value::Str("/a/b".into())),
            RVal::Lit(Value::Float(f64::MIN_POSITIVE)),
            RVal::Lit(Value::Int(-3)),
            RVal::Path {
                path: PathBuf::from("/c"),
                key: "artifact:abc".into(),
            },
            RVal::Template(vec![
                TPart::Text("echo ".into()),
                TPart::Out,
                TPart::Val(RVal::Lit(Value::Bool(true))),
            ]),
            RVal::Param {
                name: "lr".into(),
                value: Value::Float(3e-4),
            },
        ]);
        let back = rval_from_wire(&rval_to_wire(&v)).expect("decodes");
        assert_eq!(back, v);
        // A string that looks like a path stays a string, a path a path.
        let RVal::List(items) = &back else { panic!() };
        assert_eq!(items[1], RVal::Lit(Value::Str("/a/b".into())));
    }
}
