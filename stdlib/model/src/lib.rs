//! flow's transformer runtime: Hugging Face model directories (Qwen2, Qwen3,
//! Llama, Mistral) loaded into f32, one batched forward pass with a KV cache,
//! scoring, generation, a hand-written backward pass and AdamW training,
//! written once over a [`Backend`] (the CPU's kernels; a CUDA device).

pub mod backend;
pub mod config;
pub mod encoder;
pub mod error;
mod forward;
pub mod generate;
pub mod gguf;
pub mod host_memory;
pub mod model;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use backend::{Backend, CpuBackend};
pub use config::{Arch, Config};
pub use error::ModelError;
pub use generate::{FinishReason, GenerateOptions, Generation};
pub use model::{KvCache, KvCacheOn, LogLikelihood, Model, ModelOn, TokenLogprob};
pub use tokenizer::{copy_tokenizer_files, ChatMessage, ChatTemplate, Tokenizer};
pub use weights::{Params, SaveDtype};
