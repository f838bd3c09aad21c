//! Fine-tuning an encoder classifier: cross-entropy on the head's logits,
//! AdamW as torch.optim.AdamW (the kernels' `adamw_step`), weight decay on
//! all but biases and LayerNorm weights (HF Trainer's rule), global-norm
//! clipping (torch's `clip_grad_norm_`), linear decay after a linear warmup
//! (transformers' `get_linear_schedule_with_warmup`), and dropout with the
//! config's probabilities as `model.train()` applies it. The masks of step
//! n come from (dropout seed, n), so a run is reproducible for a given seed
//! and data order.

use flow_kernels::cpu::{adamw_step, AdamW};

use super::backward::{backward, cross_entropy};
use super::dropout::Dropout;
use super::forward::{forward, Batch};
use super::params::EncoderParams;
use super::Encoder;
use crate::train::Schedule;

#[derive(Clone, Debug)]
pub struct FineTuneConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// 0 disables clipping.
    pub max_grad_norm: f64,
    /// Seed of the dropout masks; `None` trains without dropout (the eval
    /// forward, which the transformers goldens use).
    pub dropout_seed: Option<u64>,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        FineTuneConfig {
            lr: 2e-5,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            total_steps: 1,
            max_grad_norm: 1.0,
            dropout_seed: None,
        }
    }
}

pub struct FineTuner {
    pub encoder: Encoder,
    pub cfg: FineTuneConfig,
    grads: EncoderParams,
    m: EncoderParams,
    v: EncoderParams,
    pub step: u64,
}

/// What one step did.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

impl FineTuner {
    pub fn new(encoder: Encoder, cfg: FineTuneConfig) -> FineTuner {
        let grads = encoder.params.zeros_like();
        FineTuner {
            m: grads.clone(),
            v: grads.clone(),
            grads,
            encoder,
            cfg,
            step: 0,
        }
    }

    /// Loss and gradients (into `grads`, zeroed first) of one batch.
    pub fn gradients(&mut self, batch: &Batch, labels: &[u32]) -> f64 {
        for g in self.grads.data.iter_mut() {
            g.fill(0.0);
        }
        let dropout = self.cfg.dropout_seed.map(|seed| {
            // one seed a step, mixed so that neighbouring steps' masks are
            // unrelated streams
            let step_seed = seed
                ^ self
                    .step
                    .wrapping_add(1)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            Dropout::from_config(&self.encoder.config, step_seed)
        });
        let (logits, cache) = forward(
            &self.encoder.config,
            &self.encoder.params,
            batch,
            true,
            dropout.as_ref(),
        );
        let (loss, dlogits) = cross_entropy(&logits, labels);
        backward(
            &self.encoder.config,
            &self.encoder.params,
            batch,
            &cache.expect("kept"),
            &dlogits,
            &mut self.grads,
        );
        loss
    }

    pub fn grads(&self) -> &EncoderParams {
        &self.grads
    }

    /// One optimizer step on one batch.
    pub fn step(&mut self, batch: &Batch, labels: &[u32]) -> StepInfo {
        let loss = self.gradients(batch, labels);
        let norm = self
            .grads
            .data
            .iter()
            .flatten()
            .map(|&g| (g as f64) * (g as f64))
            .sum::<f64>()
            .sqrt();
        if self.cfg.max_grad_norm > 0.0 {
            let coef = (self.cfg.max_grad_norm / (norm + 1e-6)).min(1.0) as f32;
            if coef < 1.0 {
                for g in self.grads.data.iter_mut().flatten() {
                    *g *= coef;
                }
            }
        }
        let lr = self.cfg.lr
            * Schedule::Linear.factor(
                self.step as usize,
                self.cfg.warmup_steps,
                self.cfg.total_steps,
            );
        self.step += 1;
        for i in 0..self.grads.data.len() {
            let name = &self.encoder.params.names[i];
            let decay = !(name.ends_with(".bias") || name.contains("LayerNorm"));
            let hp = AdamW {
                lr: lr as f32,
                beta1: self.cfg.beta1 as f32,
                beta2: self.cfg.beta2 as f32,
                eps: self.cfg.eps as f32,
                weight_decay: if decay {
                    self.cfg.weight_decay as f32
                } else {
                    0.0
                },
            };
            adamw_step(
                &hp,
                self.step,
                &mut self.encoder.params.data[i],
                &self.grads.data[i],
                &mut self.m.data[i],
                &mut self.v.data[i],
            );
        }
        StepInfo {
            loss,
            grad_norm: norm,
            lr,
        }
    }
}
