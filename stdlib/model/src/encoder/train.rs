//! Fine-tuning an encoder classifier: cross-entropy on the head's logits,
//! AdamW as torch.optim.AdamW (the kernels' `adamw_step`), weight decay on
//! all but biases and LayerNorm weights (HF Trainer's rule), global-norm
//! clipping (torch's `clip_grad_norm_`), linear decay after a linear warmup
//! (transformers' `get_linear_schedule_with_warmup`), and dropout with the
//! config's probabilities as `model.train()` applies it. The masks of step
//! n come from (dropout seed, n), so a run is reproducible for a given seed
//! and data order. Written once over [`EncoderBackend`]: [`FineTuner`] is
//! the CPU's.

use flow_kernels::cpu::AdamW;

use super::backward::{backward_on, cross_entropy};
use super::dropout::Dropout;
use super::forward::{forward_on, Batch};
use super::{EncoderOn, EncoderParams};
use crate::backend::{infallible, CpuBackend, EncoderBackend};
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

/// Fine-tuning state of an encoder on backend `B`: gradients and AdamW moments beside the
/// parameters.
pub struct FineTunerOn<B: EncoderBackend> {
    pub encoder: EncoderOn<B>,
    pub cfg: FineTuneConfig,
    grads: B::Grads,
    m: B::Grads,
    v: B::Grads,
    pub step: u64,
}

/// Fine-tuning on the CPU.
pub type FineTuner = FineTunerOn<CpuBackend>;

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Whether HF Trainer decays parameter `name`: every one but biases and
/// LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

impl FineTuner {
    pub fn new(encoder: super::Encoder, cfg: FineTuneConfig) -> FineTuner {
        infallible(FineTunerOn::open(encoder, cfg))
    }

    /// Loss and gradients (into `grads`, zeroed first) of one batch.
    pub fn gradients(&mut self, batch: &Batch, labels: &[u32]) -> f64 {
        infallible(self.try_gradients(batch, labels))
    }

    /// One optimizer step on one batch.
    pub fn step(&mut self, batch: &Batch, labels: &[u32]) -> StepInfo {
        infallible(self.try_step(batch, labels))
    }

    pub fn grads(&self) -> &EncoderParams {
        &self.grads
    }
}

impl<B: EncoderBackend> FineTunerOn<B> {
    /// Zeroed gradients and moments for `encoder`, on its backend.
    pub fn open(encoder: EncoderOn<B>, cfg: FineTuneConfig) -> Result<FineTunerOn<B>, B::Error> {
        let b = encoder.backend();
        let grads = b.grads_zeroed(&encoder.params)?;
        let m = b.grads_zeroed(&encoder.params)?;
        let v = b.grads_zeroed(&encoder.params)?;
        Ok(FineTunerOn {
            grads,
            m,
            v,
            encoder,
            cfg,
            step: 0,
        })
    }

    /// Loss and gradients (into the gradients, zeroed first) of one batch.
    pub fn try_gradients(&mut self, batch: &Batch, labels: &[u32]) -> Result<f64, B::Error> {
        let b = &self.encoder.backend;
        b.zero_grads(&mut self.grads)?;
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
        let (logits, cache) = forward_on(
            b,
            &self.encoder.config,
            &self.encoder.params,
            batch,
            true,
            dropout.as_ref(),
        )?;
        // the head's B×2 logits: the loss on the host
        let (loss, dlogits) = cross_entropy(&logits, labels);
        if let Some(cache) = cache {
            backward_on(
                b,
                &self.encoder.config,
                &self.encoder.params,
                batch,
                &cache,
                &dlogits,
                &mut self.grads,
            )?;
        }
        Ok(loss)
    }

    /// The gradients of the last [`FineTunerOn::try_gradients`], as f32 on the host.
    pub fn grads_to_host(&self) -> Result<std::borrow::Cow<'_, EncoderParams>, B::Error> {
        self.encoder.backend.grads_to_host(&self.grads)
    }

    /// One optimizer step on one batch.
    pub fn try_step(&mut self, batch: &Batch, labels: &[u32]) -> Result<StepInfo, B::Error> {
        let loss = self.try_gradients(batch, labels)?;
        let b = &self.encoder.backend;
        let norm = b.grad_norm_in_element_order(&self.grads)?;
        if self.cfg.max_grad_norm > 0.0 {
            let coef = (self.cfg.max_grad_norm / (norm + 1e-6)).min(1.0) as f32;
            if coef < 1.0 {
                b.scale_grads(&mut self.grads, coef)?;
            }
        }
        let lr = self.cfg.lr
            * Schedule::Linear.factor(
                self.step as usize,
                self.cfg.warmup_steps,
                self.cfg.total_steps,
            );
        self.step += 1;
        let hp = |weight_decay: f64| AdamW {
            lr: lr as f32,
            beta1: self.cfg.beta1 as f32,
            beta2: self.cfg.beta2 as f32,
            eps: self.cfg.eps as f32,
            weight_decay: weight_decay as f32,
        };
        // the backend decays tensors of 2 or more dimensions: for an encoder
        // classifier exactly those `decays` names (checked by a test)
        b.adamw(
            &hp(self.cfg.weight_decay),
            &hp(0.0),
            self.step,
            &mut self.encoder.params,
            &self.grads,
            &mut self.m,
            &mut self.v,
        )?;
        Ok(StepInfo {
            loss,
            grad_norm: norm,
            lr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::EncoderConfig;
    use super::super::params::zeros;
    use super::decays;

    /// The backend's AdamW decays tensors of 2 or more dimensions; HF Trainer
    /// decays by name. For both families' classifiers the two rules agree.
    #[test]
    fn the_backends_decay_rule_is_hf_trainers_for_encoder_classifiers() {
        for model_type in ["bert", "xlm-roberta"] {
            let raw = serde_json::json!({
                "model_type": model_type, "vocab_size": 10, "hidden_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 20, "type_vocab_size": 1, "pad_token_id": 1
            });
            let c = EncoderConfig::from_raw(
                raw.as_object().cloned().unwrap(),
                std::path::Path::new("config.json"),
            )
            .unwrap();
            let p = zeros(&c);
            for (name, shape) in p.names.iter().zip(&p.shapes) {
                assert_eq!(decays(name), shape.len() >= 2, "{model_type}: {name}");
            }
        }
    }
}
