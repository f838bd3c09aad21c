//! A whole training run over a packed dataset: data order, micro-batching,
//! gradient accumulation, checkpoints at log-spaced steps, losses.jsonl,
//! and resuming from a checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::backend::{model_error, Backend};
use crate::error::ModelError;
use crate::model::{Model, ModelOn};
use crate::tokenizer::copy_tokenizer_files;
use crate::train::backward::Sequence;
use crate::train::lineage::CheckpointLineage;
use crate::train::losses::LossLine;
use crate::train::optim::{OptimConfig, Schedule, TrainerOn};
use crate::train::packed::PackedData;
use crate::weights::SaveDtype;

/// Everything the `train` op sets.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub lr: f64,
    pub weight_decay: f64,
    /// Warmup steps = ceil(warmup_ratio × total steps), as transformers' `get_warmup_steps`.
    pub warmup_ratio: f64,
    /// Absolute warmup steps; when set it wins over `warmup_ratio` (see [`warmup_steps`]).
    pub warmup_steps: Option<usize>,
    pub schedule: Schedule,
    /// Sequences per optimizer step.
    pub effective_batch: usize,
    /// Sequences per forward/backward.
    pub micro_batch: usize,
    pub epochs: usize,
    /// Number of checkpoints (see [`checkpoint_steps`]).
    pub checkpoints: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub save_dtype: SaveDtype,
    pub activation_checkpointing: bool,
    /// 0 = all steps of `epochs`.
    pub max_steps: usize,
    /// Write optimizer.safetensors into every checkpoint (needed to resume from it).
    pub save_optimizer: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 2e-5,
            weight_decay: 0.1,
            warmup_ratio: 0.1,
            warmup_steps: None,
            schedule: Schedule::Cosine,
            effective_batch: 128,
            micro_batch: 4,
            epochs: 1,
            checkpoints: 18,
            max_grad_norm: 1.0,
            seed: 0,
            save_dtype: SaveDtype::F32,
            activation_checkpointing: false,
            max_steps: 0,
            save_optimizer: true,
        }
    }
}

/// Callbacks of a run: progress, log lines, cancellation.
pub trait TrainMonitor: Sync {
    fn on_step(&self, _step: usize, _total: usize, _loss: f64, _lr: f64) {}
    fn log(&self, _line: &str) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// A monitor that ignores everything.
pub struct NoMonitor;
impl TrainMonitor for NoMonitor {}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Checkpoint directories relative to the output directory, in step order.
    pub checkpoints: Vec<PathBuf>,
    pub losses: Vec<f64>,
    pub total_steps: usize,
}

/// The checkpoint steps of a run of `total` optimizer steps whose warmup
/// lasts `warmup` steps: `n` distinct steps, the last one `total`.
///
/// The rule (chosen for the seeds' findings, which sit between 1B and
/// 9.5B tokens, i.e. in the last decade of a run):
/// * **Never a copy of the source.** Step `s` (1-based) applies the update
///   at learning rate `lr · factor(s − 1)`, and the warmup factor of the
///   first update is 0: with `warmup > 0` step 1 equals the source model and
///   is never a checkpoint (the first allowed step is 2).
/// * **Every decade of tokens.** Tokens grow in proportion to steps, so one
///   checkpoint per decade of steps, counted back from the end:
///   `round(total / 10^j)` for j = 1, 2, … while that is at least the first
///   allowed step, at most `n / 2` of them (the latest decades first).
/// * **The rest evenly in tokens**: `round(total · k / m)` for k = 1..=m,
///   with m = n − (the decade checkpoints), so the last decade, where
///   training spends 90% of its tokens, gets most of them.
/// * Steps that coincide are merged; the missing ones fill the widest gap
///   (largest ratio of its ends) at its geometric middle, until there are
///   `n`. When fewer than `n` steps are allowed, all of them are checkpoints.
///
/// For 18 checkpoints of an 18,000-step run with 1,800 warmup steps (one
/// epoch of FineMed-de at batch 128 × 4096): 2, 18, 180, 1286, 1800, 2571,
/// …, 18000 — four decade checkpoints and 14 evenly spaced, 13 of them after
/// 1B tokens.
pub fn checkpoint_steps(total: usize, n: usize, warmup: usize) -> Vec<usize> {
    let first = if warmup > 0 { 2 } else { 1 };
    if total == 0 || n == 0 || total < first {
        return Vec::new();
    }
    if total + 1 - first <= n {
        return (first..=total).collect();
    }
    let mut steps: Vec<usize> = Vec::with_capacity(n + 8);
    let mut scale = 10.0f64;
    while steps.len() < n / 2 {
        let s = (total as f64 / scale).round() as usize;
        if s < first {
            break;
        }
        steps.push(s);
        scale *= 10.0;
    }
    let m = n - steps.len();
    for k in 1..=m {
        steps.push((((total as f64) * k as f64 / m as f64).round() as usize).max(first));
    }
    steps.sort_unstable();
    steps.dedup();
    while steps.len() < n {
        // The widest gap between consecutive checkpoints (and below the first
        // one, from the source at step first − 1) that holds a free step.
        let mut best: Option<(f64, usize)> = None;
        let mut prev = first - 1;
        for (i, &s) in steps.iter().enumerate() {
            if s - prev >= 2 {
                let ratio = s as f64 / prev.max(1) as f64 + if prev == 0 { 1e9 } else { 0.0 };
                if best.is_none_or(|(r, _)| ratio > r) {
                    best = Some((ratio, i));
                }
            }
            prev = s;
        }
        let Some((_, i)) = best else { break };
        let hi = steps[i];
        let lo = if i == 0 { first - 1 } else { steps[i - 1] };
        let mid = ((lo.max(1) as f64 * hi as f64).sqrt().round() as usize).clamp(lo + 1, hi - 1);
        steps.insert(i, mid);
    }
    steps
}

/// The number of warmup steps of a run of `total` steps: `warmup_steps`
/// when it is set (002 trains with 500), else ceil(warmup_ratio × total) as
/// transformers' `get_warmup_steps` (004: ratio 0.1). A warmup longer than
/// the run is kept as given (the lr then never reaches its peak), as transformers does.
pub fn warmup_steps(cfg: &TrainConfig, total: usize) -> usize {
    match cfg.warmup_steps {
        Some(w) => w,
        None => (cfg.warmup_ratio * total as f64).ceil() as usize,
    }
}

/// The number of optimizer steps of a run.
pub fn total_steps(sequences: usize, cfg: &TrainConfig) -> usize {
    let per_epoch = sequences.div_ceil(cfg.effective_batch.max(1));
    let all = per_epoch * cfg.epochs;
    if cfg.max_steps > 0 {
        all.min(cfg.max_steps)
    } else {
        all
    }
}

/// The order of sequences in `epoch`: a ChaCha8 shuffle seeded by (seed, epoch).
fn epoch_order(sequences: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sequences).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    order
}

/// The sequence indices of optimizer step `step` (0-based), in micro-batches.
fn step_batches(data: &PackedData, cfg: &TrainConfig, step: usize) -> Vec<Vec<usize>> {
    let per_epoch = data.sequences.div_ceil(cfg.effective_batch.max(1));
    let epoch = step / per_epoch;
    let within = step % per_epoch;
    let order = epoch_order(data.sequences, cfg.seed, epoch);
    let start = within * cfg.effective_batch;
    let end = (start + cfg.effective_batch).min(data.sequences);
    order[start..end]
        .chunks(cfg.micro_batch.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// Trains `model_dir` on `data_dir` with the model, its gradients and the
/// optimizer state on `backend` ([`crate::CpuBackend`] or a GPU's), writing
/// checkpoints under `out_dir/checkpoints/step-NNNNNN/`, the final model
/// into `out_dir` itself, and `out_dir/losses.jsonl` (one line per step).
/// With `resume`, continues from a checkpoint directory this function
/// wrote (its optimizer.safetensors).
pub fn train_on<B: Backend>(
    backend: B,
    model_dir: &Path,
    data_dir: &Path,
    out_dir: &Path,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    monitor: &dyn TrainMonitor,
) -> Result<TrainSummary, ModelError> {
    if cfg.effective_batch == 0 || cfg.micro_batch == 0 {
        return Err(ModelError::Input(
            "effective_batch and micro_batch must be positive".into(),
        ));
    }
    let data = PackedData::load(data_dir)?;
    let model = ModelOn::place(backend, Model::load(resume.unwrap_or(model_dir))?)?;
    let total = total_steps(data.sequences, cfg);
    if total == 0 {
        return Err(ModelError::Input(format!(
            "{}: the dataset has no sequences to train on",
            data_dir.display()
        )));
    }
    let warmup = warmup_steps(cfg, total);
    let optim = OptimConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        warmup_steps: warmup,
        total_steps: total,
        schedule: cfg.schedule,
        max_grad_norm: cfg.max_grad_norm,
        activation_checkpointing: cfg.activation_checkpointing,
        ..OptimConfig::default()
    };
    let n_params = model.config.non_embedding_param_count();
    let mut trainer = TrainerOn::open(model, optim).map_err(model_error)?;
    let mut tokens_seen: u64 = 0;
    let mut losses = Vec::new();
    std::fs::create_dir_all(out_dir.join("checkpoints")).map_err(|e| ModelError::io(out_dir, e))?;
    let losses_path = out_dir.join(LossLine::FILE);
    if let Some(r) = resume {
        let meta = trainer.load_optimizer(&r.join("optimizer.safetensors"))?;
        tokens_seen = meta
            .get("tokens_seen")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if let Some(l) = meta
            .get("losses")
            .and_then(|s| serde_json::from_str::<Vec<f64>>(s).ok())
        {
            losses = l;
        }
    }
    let mut losses_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&losses_path)
        .map_err(|e| ModelError::io(&losses_path, e))?;
    let ckpt_steps = checkpoint_steps(total, cfg.checkpoints, warmup);
    let mut written = Vec::new();
    let first = trainer.step as usize;
    for step in first..total {
        if monitor.cancelled() {
            return Err(ModelError::Cancelled);
        }
        let batches: Vec<Vec<Sequence>> = step_batches(&data, cfg, step)
            .into_iter()
            .map(|mb| mb.into_iter().map(|i| data.sequence(i)).collect())
            .collect();
        let stats = trainer.step(&batches)?;
        tokens_seen += stats.tokens as u64;
        losses.push(stats.loss);
        // One write a line: a run stopped mid-step leaves whole lines only.
        let line = serde_json::to_string(&LossLine::of_step(step + 1, &stats, tokens_seen))
            .map_err(|e| ModelError::io(&losses_path, e.into()))?;
        writeln!(losses_file, "{line}").map_err(|e| ModelError::io(&losses_path, e))?;
        monitor.on_step(step + 1, total, stats.loss, stats.lr);
        if ckpt_steps.contains(&(step + 1)) {
            let rel = PathBuf::from(format!("checkpoints/step-{:06}", step + 1));
            let dir = out_dir.join(&rel);
            let mut extra = HashMap::new();
            extra.insert("tokens_seen".to_string(), tokens_seen.to_string());
            extra.insert(
                "data_position".to_string(),
                json!({"step": step + 1, "seed": cfg.seed}).to_string(),
            );
            extra.insert(
                "rng".to_string(),
                json!({"kind": "chacha8 shuffle per epoch", "seed": cfg.seed}).to_string(),
            );
            extra.insert(
                "losses".to_string(),
                serde_json::to_string(&losses).expect("JSON"),
            );
            write_model_dir(
                &trainer,
                &dir,
                model_dir,
                cfg,
                step + 1,
                tokens_seen,
                n_params,
                stats.loss,
                &rel,
            )?;
            if cfg.save_optimizer {
                trainer.save_optimizer(&dir.join("optimizer.safetensors"), &extra)?;
            }
            monitor.log(&format!(
                "checkpoint {} (loss {:.4})",
                rel.display(),
                stats.loss
            ));
            written.push(rel);
        }
    }
    let last = losses.last().copied().unwrap_or(f64::NAN);
    write_model_dir(
        &trainer,
        out_dir,
        model_dir,
        cfg,
        total,
        tokens_seen,
        n_params,
        last,
        Path::new("final"),
    )?;
    Ok(TrainSummary {
        checkpoints: written,
        losses,
        total_steps: total,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_model_dir<B: Backend>(
    trainer: &TrainerOn<B>,
    dir: &Path,
    tokenizer_from: &Path,
    cfg: &TrainConfig,
    step: usize,
    tokens_seen: u64,
    n_params: u64,
    loss: f64,
    rel: &Path,
) -> Result<(), ModelError> {
    trainer.model.save(dir, cfg.save_dtype)?;
    copy_tokenizer_files(tokenizer_from, dir)?;
    CheckpointLineage {
        step: Some(step as u64),
        tokens_seen: Some(tokens_seen),
        flops: Some(6.0 * n_params as f64 * tokens_seen as f64),
        loss: Some(loss.is_finite().then_some(loss)),
        source: Some(rel.display().to_string()),
    }
    .write(dir)
}
