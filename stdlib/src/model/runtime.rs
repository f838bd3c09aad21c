//! The model runtime as the model ops (`mcqa`, `generate`) and `flow serve`
//! see it: one object that tokenizes, renders the chat template, scores and
//! generates.
//!
//! [`LanguageModel`] puts flow-model's `Model`, `Tokenizer` and
//! `ChatTemplate` behind one trait, in flow-model's own types (re-exported
//! here), so that the ops and the server do not depend on how the runtime is
//! split into types, and so that their logic is tested against `ToyModel`
//! (tests only, `runtime/toy.rs`), a deterministic model small enough to check
//! by hand.
//! [`load`] opens a model directory with the real runtime.

use std::path::Path;

use flow_model::backend::{Backend, CpuBackend, CpuBf16Backend, CudaBackend};
use flow_model::{ModelError, ModelOn};
use serde::Deserialize;

use crate::op::{Device, OpContext, Param, Type, Value};

use crate::artifacts::CheckpointLineage;

pub use flow_model::{
    ChatMessage, FinishReason, GenerateOptions, Generation, LogLikelihood, TokenLogprob,
};

/// A language model with its tokenizer and chat template.
///
/// Errors are messages that name what failed; they go to the user as they are.
pub trait LanguageModel: Send + Sync {
    /// Token ids of `text`; `add_special_tokens` adds what the tokenizer
    /// adds by default (e.g. a BOS token).
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String>;
    /// Text of `ids`.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String>;
    fn vocab_size(&self) -> usize;
    /// Tokens that end generation.
    fn eos_token_ids(&self) -> Vec<u32>;
    /// The longest sequence (prompt and generated tokens) the model takes.
    fn max_context(&self) -> usize;
    /// Summed log-probability of each continuation given its context.
    /// The scoring and generation calls fail only when the device does.
    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String>;
    /// The log-probability of every token of `tokens` given those before it
    /// (position 0 gets `None`), with the `top_k` most likely alternatives.
    fn token_logprobs(
        &self,
        tokens: &[u32],
        top_k: usize,
    ) -> Result<Vec<Option<TokenLogprob>>, String>;
    /// One generation per prompt.
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>, String>;
    /// One generation of `prompt`, `on_token` called with each new token as
    /// it is made; generation ends early (`FinishReason::Length`) when it
    /// returns false. The default generates in full, then replays the tokens;
    /// runtimes that can stop early override it.
    fn generate_each(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation, String> {
        let mut generation = only_generation(self.generate(&[prompt.to_vec()], opts)?);
        if let Some(cut) = generation.tokens.iter().position(|&t| !on_token(t)) {
            generation.tokens.truncate(cut + 1);
            generation.logprobs.truncate(cut + 1);
            generation.finish_reason = FinishReason::Length;
        }
        Ok(generation)
    }
    /// The chat template applied to `messages`.
    fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String>;
}

/// The generation of a one-prompt call; an empty one (stopped at once)
/// where the runtime returned none.
fn only_generation(mut generations: Vec<Generation>) -> Generation {
    generations.pop().unwrap_or(Generation {
        tokens: Vec::new(),
        finish_reason: FinishReason::Stop,
        logprobs: Vec::new(),
    })
}

/// The type a model's weights are kept in for inference on the CPU: the
/// `dtype` param of the model ops, and `flow serve --dtype`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightDtype {
    /// The checkpoint's own: bf16 when every weight tensor is stored in bf16
    /// (exact), else f32.
    #[default]
    Auto,
    /// f32 (bf16 and f16 checkpoints are widened, exactly).
    Float32,
    /// bf16: f32 weights are rounded to it, as `model.to(torch.bfloat16)`
    /// does; half the memory and about half the time of a decoding step.
    Bfloat16,
}

impl WeightDtype {
    /// The `dtype` param, the same on every op that runs a model.
    pub fn param() -> Param {
        Param::optional(
            "dtype",
            Type::enum_of::<WeightDtype>(),
            Value::Str("auto".into()),
            "the type of the weights for inference on the CPU: `auto` keeps the checkpoint's (bf16 when every tensor is stored in bf16, else f32), `bfloat16` rounds f32 weights to bf16 (half the memory and about half the decoding time), `float32` widens; on a GPU the weights are bf16",
        )
    }
}

/// Opens the model directory `model_dir` (config.json, safetensors weights,
/// tokenizer.json, and a chat template when there is one) with flow's
/// runtime, on the CPU, with f32 weights.
pub fn load(model_dir: &Path) -> Result<Box<dyn LanguageModel>, String> {
    load_on(model_dir, None, WeightDtype::Float32, &|_| {})
}

/// [`load`] on the node's device, weights in `dtype` on the CPU: with
/// `Device::Cuda(n)` the weights go to that GPU and every pass runs there; a
/// device that does not open says so in the node's log and the model runs on
/// the CPU. The log also says which weights the CPU keeps.
pub fn load_for(
    ctx: &OpContext,
    model_dir: &Path,
    dtype: WeightDtype,
) -> Result<Box<dyn LanguageModel>, String> {
    let log = |line: &str| ctx.log(line);
    load_on(model_dir, cuda_backend(ctx.device, &log), dtype, &log)
}

/// [`load`] on `gpu` when given, else on the CPU with weights in `dtype`;
/// `notice` hears which.
pub fn load_on(
    model_dir: &Path,
    gpu: Option<CudaBackend>,
    dtype: WeightDtype,
    notice: &dyn Fn(&str),
) -> Result<Box<dyn LanguageModel>, String> {
    if !model_dir.join("config.json").is_file() {
        return Err(format!(
            "{}: not a model directory (no config.json); pass a directory written by a model op or a Hugging Face model directory",
            model_dir.display()
        ));
    }
    let bf16 = match dtype {
        WeightDtype::Float32 => false,
        WeightDtype::Bfloat16 => true,
        WeightDtype::Auto => {
            flow_model::weights::stored_in_bf16(model_dir).map_err(|e| e.to_string())?
        }
    };
    let model = flow_model::Model::load(model_dir).map_err(|e| e.to_string())?;
    let tokenizer = flow_model::Tokenizer::load(model_dir).map_err(|e| e.to_string())?;
    // A model without a chat template still scores and completes text.
    let template = flow_model::ChatTemplate::load(model_dir).map_err(|e| e.to_string());
    Ok(match gpu {
        Some(gpu) => Box::new(FlowModel {
            model: ModelOn::place(gpu, model).map_err(|e| e.to_string())?,
            tokenizer,
            template,
        }),
        None if bf16 => {
            notice("weights: bf16 on the CPU");
            Box::new(FlowModel {
                model: ModelOn::place(CpuBf16Backend, model).map_err(|e| e.to_string())?,
                tokenizer,
                template,
            })
        }
        None => {
            notice("weights: f32 on the CPU");
            Box::new(FlowModel {
                model,
                tokenizer,
                template,
            })
        }
    })
}

/// flow-model's runtime behind [`LanguageModel`], on backend `B` (the CPU
/// unless said otherwise).
pub struct FlowModel<B: Backend = CpuBackend> {
    pub model: ModelOn<B>,
    pub tokenizer: flow_model::Tokenizer,
    /// The chat template, or why there is none.
    pub template: Result<flow_model::ChatTemplate, String>,
}

/// A backend error as the ops report it.
fn device_error<E: Into<ModelError>>(e: E) -> String {
    e.into().to_string()
}

impl<B: Backend + Send + Sync> LanguageModel for FlowModel<B>
where
    ModelOn<B>: Send + Sync,
{
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| e.to_string())
    }
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| e.to_string())
    }
    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.model.config.eos_token_ids.clone()
    }
    fn max_context(&self) -> usize {
        self.model.config.max_position_embeddings
    }
    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String> {
        self.model.try_loglikelihood(requests).map_err(device_error)
    }
    fn token_logprobs(
        &self,
        tokens: &[u32],
        top_k: usize,
    ) -> Result<Vec<Option<TokenLogprob>>, String> {
        self.model
            .try_token_logprobs(tokens, top_k)
            .map_err(device_error)
    }
    fn generate_each(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation, String> {
        let generations = self
            .model
            .try_generate_each(&[prompt.to_vec()], opts, &mut |_, t| on_token(t))
            .map_err(device_error)?;
        Ok(only_generation(generations))
    }
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>, String> {
        self.model
            .try_generate_each(prompts, opts, &mut |_, _| true)
            .map_err(device_error)
    }
    fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let template = self
            .template
            .as_ref()
            .map_err(|e| format!("no chat template: {e}"))?;
        template
            .render(messages, add_generation_prompt)
            .map_err(|e| e.to_string())
    }
}

/// The CUDA backend of `device`, or `None` on the CPU: a device that does
/// not open (no driver, no NVRTC, no cuBLASLt) is said once through
/// `notice` (the node's log), and the work runs on the CPU.
pub fn cuda_backend(device: Device, notice: &dyn Fn(&str)) -> Option<CudaBackend> {
    match device {
        Device::Cpu => None,
        Device::Cuda(ordinal) => match CudaBackend::open(ordinal) {
            Ok(backend) => Some(backend),
            Err(e) => {
                notice(&format!(
                    "notice: CUDA device {ordinal} did not open ({e}); running on the CPU"
                ));
                None
            }
        },
    }
}

/// Reads `flow_checkpoint.json` of a model directory, when there is one, so
/// that results can say which training checkpoint they measure.
pub fn read_checkpoint(model_dir: &Path) -> Result<Option<CheckpointLineage>, String> {
    CheckpointLineage::read(model_dir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod toy;
#[cfg(test)]
pub use toy::ToyModel;
