//! AdamW with global-norm clipping, the learning-rate schedules of
//! transformers, and the optimizer state that makes resuming bit-exact.

use std::collections::HashMap;
use std::path::Path;

use flow_kernels::cpu as k;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::backend::{infallible, model_error, Backend, CpuBackend};
use crate::error::{write_atomic, ModelError};
use crate::model::{Model, ModelOn};
use crate::train::backward::Sequence;
use crate::weights::Params;

/// Learning-rate decay after the warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// transformers' `get_cosine_schedule_with_warmup` (half a cosine down to 0).
    Cosine,
    /// transformers' `get_linear_schedule_with_warmup`.
    Linear,
    /// transformers' `get_constant_schedule_with_warmup`.
    Constant,
}

impl Schedule {
    /// The multiplier of the base learning rate at `step` (0-based: the number of optimizer steps
    /// already taken), exactly transformers' lambdas.
    pub fn factor(self, step: usize, warmup_steps: usize, total_steps: usize) -> f64 {
        if step < warmup_steps {
            return step as f64 / warmup_steps.max(1) as f64;
        }
        match self {
            Schedule::Constant => 1.0,
            Schedule::Linear => {
                (total_steps as f64 - step as f64).max(0.0)
                    / (total_steps.saturating_sub(warmup_steps)).max(1) as f64
            }
            Schedule::Cosine => {
                let progress = (step - warmup_steps) as f64
                    / (total_steps.saturating_sub(warmup_steps)).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
            }
        }
    }
}

/// Optimizer hyper-parameters.
#[derive(Clone, Debug)]
pub struct OptimConfig {
    pub lr: f64,
    /// Decoupled weight decay, applied to parameters with 2 or more dimensions only (matrices and
    /// embeddings); norm weights and biases are never decayed (as HF Trainer excludes biases and
    /// norm weights).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub schedule: Schedule,
    /// Global L2 norm clipping (torch's clip_grad_norm_ with its 1e-6); 0 disables it.
    pub max_grad_norm: f64,
    /// Recompute each layer's forward in the backward instead of keeping its activations.
    pub activation_checkpointing: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 2e-5,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            total_steps: 1,
            schedule: Schedule::Cosine,
            max_grad_norm: 1.0,
            activation_checkpointing: false,
        }
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean token loss over the effective batch (before the update).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Tokens that counted in the loss.
    pub tokens: usize,
}

/// Model + gradients + AdamW moments, on backend `B`.
pub struct TrainerOn<B: Backend> {
    pub model: ModelOn<B>,
    pub cfg: OptimConfig,
    grads: B::Grads,
    m: B::Grads,
    v: B::Grads,
    /// Optimizer steps taken.
    pub step: u64,
}

/// The trainer on the CPU.
pub type Trainer = TrainerOn<CpuBackend>;

impl Trainer {
    pub fn new(model: Model, cfg: OptimConfig) -> Trainer {
        infallible(TrainerOn::open(model, cfg))
    }

    /// The gradients of the last `accumulate` / `step` (after clipping, for `step`).
    pub fn grads(&self) -> &Params {
        &self.grads
    }
}

impl<B: Backend> TrainerOn<B> {
    /// A trainer of `model` with zeroed gradients and moments on the model's backend.
    pub fn open(model: ModelOn<B>, cfg: OptimConfig) -> Result<TrainerOn<B>, B::Error> {
        let b = model.backend();
        let grads = b.grads_zeroed(&model.params)?;
        let m = b.grads_zeroed(&model.params)?;
        let v = b.grads_zeroed(&model.params)?;
        Ok(TrainerOn {
            model,
            cfg,
            grads,
            m,
            v,
            step: 0,
        })
    }

    /// Zeroes the gradients, then accumulates the gradient of the mean token loss over all
    /// micro-batches (normalised by the total number of counted tokens, so the result does not
    /// depend on how the batch is split). Returns (mean loss, counted tokens).
    pub fn accumulate(
        &mut self,
        micro_batches: &[Vec<Sequence>],
    ) -> Result<(f64, usize), ModelError> {
        for s in micro_batches.iter().flatten() {
            self.model.check_tokens(&s.tokens)?;
            if s.targets.len() != s.tokens.len()
                || s.doc_ids
                    .as_ref()
                    .is_some_and(|d| d.len() != s.tokens.len())
            {
                return Err(ModelError::Input(
                    "a training sequence's targets/doc ids differ in length from its tokens".into(),
                ));
            }
            let v = self.model.config.vocab_size as i32;
            if let Some(bad) = s
                .targets
                .iter()
                .find(|&&t| t != k::IGNORE_INDEX && (t < 0 || t >= v))
            {
                return Err(ModelError::Input(format!(
                    "target id {bad} is outside the vocabulary (size {v})"
                )));
            }
        }
        self.accumulate_checked(micro_batches).map_err(model_error)
    }

    fn accumulate_checked(
        &mut self,
        micro_batches: &[Vec<Sequence>],
    ) -> Result<(f64, usize), B::Error> {
        self.model.backend().zero_grads(&mut self.grads)?;
        let total: usize = micro_batches.iter().flatten().map(|s| s.counted()).sum();
        let scale = 1.0 / total.max(1) as f32;
        let mut loss = 0.0;
        for mb in micro_batches {
            let (l, _) = self.model.loss_and_grad(
                mb,
                scale,
                &mut self.grads,
                self.cfg.activation_checkpointing,
            )?;
            loss += l;
        }
        Ok((loss / total.max(1) as f64, total))
    }

    /// The learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        self.cfg.lr
            * self.cfg.schedule.factor(
                self.step as usize,
                self.cfg.warmup_steps,
                self.cfg.total_steps,
            )
    }

    /// One optimizer step on an effective batch split into micro-batches.
    pub fn step(&mut self, micro_batches: &[Vec<Sequence>]) -> Result<StepStats, ModelError> {
        let (loss, tokens) = self.accumulate(micro_batches)?;
        self.update(loss, tokens).map_err(model_error)
    }

    /// Clipping and the AdamW update, after the gradients were accumulated.
    fn update(&mut self, loss: f64, tokens: usize) -> Result<StepStats, B::Error> {
        let b = self.model.backend();
        let norm = b.grad_norm(&self.grads)?;
        if self.cfg.max_grad_norm > 0.0 {
            let coef = self.cfg.max_grad_norm / (norm + 1e-6);
            if coef < 1.0 {
                b.scale_grads(&mut self.grads, coef as f32)?;
            }
        }
        let lr = self.current_lr();
        self.step += 1;
        let decay = k::AdamW {
            lr: lr as f32,
            beta1: self.cfg.beta1 as f32,
            beta2: self.cfg.beta2 as f32,
            eps: self.cfg.eps as f32,
            weight_decay: self.cfg.weight_decay as f32,
        };
        let no_decay = k::AdamW {
            weight_decay: 0.0,
            ..decay
        };
        let b = &self.model.backend;
        b.adamw(
            &decay,
            &no_decay,
            self.step,
            &mut self.model.params,
            &self.grads,
            &mut self.m,
            &mut self.v,
        )?;
        Ok(StepStats {
            loss,
            grad_norm: norm,
            lr,
            tokens,
        })
    }

    /// The gradients of the last `accumulate` / `step`, as f32 on the host.
    pub fn host_grads(&self) -> Result<Params, ModelError> {
        let g = self.model.backend().grads_to_host(&self.grads);
        Ok(g.map_err(model_error)?.into_owned())
    }

    /// Writes `optimizer.safetensors`: m and v of every parameter, the f32 master weights (so a
    /// bf16-stored checkpoint still resumes exactly), and `extra` (JSON strings: step, data
    /// position, rng state) in the metadata.
    pub fn save_optimizer(
        &self,
        path: &Path,
        extra: &HashMap<String, String>,
    ) -> Result<(), ModelError> {
        let mut meta = extra.clone();
        meta.insert("step".into(), self.step.to_string());
        let b = self.model.backend();
        let m = b.grads_to_host(&self.m).map_err(model_error)?;
        let v = b.grads_to_host(&self.v).map_err(model_error)?;
        let params = b.params_to_host(&self.model.params).map_err(model_error)?;
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = ["m", "v", "param"]
            .iter()
            .flat_map(|kind| {
                let src: &Params = match *kind {
                    "m" => &m,
                    "v" => &v,
                    _ => &params,
                };
                src.names
                    .iter()
                    .zip(&src.data)
                    .zip(&src.shapes)
                    .map(move |((n, d), s)| {
                        (
                            format!("{kind}.{n}"),
                            d.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                            s.clone(),
                        )
                    })
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, b, s)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("consistent"),
                )
            })
            .collect();
        let out = safetensors::serialize(views, Some(meta))
            .map_err(|e| ModelError::invalid(path, e.to_string()))?;
        write_atomic(path, &out)
    }

    /// Restores m, v, the master weights and the step from `optimizer.safetensors`; returns its metadata.
    pub fn load_optimizer(&mut self, path: &Path) -> Result<HashMap<String, String>, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::invalid(path, format!("not valid safetensors: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| ModelError::invalid(path, e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let b = self.model.backend();
        let mut m = b.grads_to_host(&self.m).map_err(model_error)?.into_owned();
        let mut v = b.grads_to_host(&self.v).map_err(model_error)?.into_owned();
        let mut params = b
            .params_to_host(&self.model.params)
            .map_err(model_error)?
            .into_owned();
        for kind in ["m", "v", "param"] {
            let dst = match kind {
                "m" => &mut m,
                "v" => &mut v,
                _ => &mut params,
            };
            for (i, name) in dst.names.iter().enumerate() {
                let key = format!("{kind}.{name}");
                let view = st
                    .tensor(&key)
                    .map_err(|_| ModelError::invalid(path, format!("missing tensor `{key}`")))?;
                if view.dtype() != Dtype::F32 || view.shape() != dst.shapes[i].as_slice() {
                    return Err(ModelError::invalid(
                        path,
                        format!("tensor `{key}` is not f32 of shape {:?}", dst.shapes[i]),
                    ));
                }
                dst.data[i] = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
        }
        let b = &self.model.backend;
        self.m = b.grads_from_host(m).map_err(model_error)?;
        self.v = b.grads_from_host(v).map_err(model_error)?;
        self.model.params = b.params_from_host(params).map_err(model_error)?;
        self.step = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ModelError::invalid(path, "metadata has no `step`"))?;
        Ok(meta)
    }
}
