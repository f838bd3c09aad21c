//! flow's transformer runtime: Hugging Face model directories (Qwen2, Qwen3,
//! Llama, Mistral) loaded into f32, a batched CPU forward pass with a KV cache,
//! scoring, generation, a hand-written backward pass and AdamW training.

pub mod config;
pub mod encoder;
pub mod error;
mod forward;
pub mod generate;
pub mod gguf;
pub mod model;
mod primitives;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use config::{Arch, Config};
pub use error::ModelError;
pub use generate::{FinishReason, GenerateOptions, Generation};
pub use model::{KvCache, LogLikelihood, Model, TokenLogprob};
pub use tokenizer::{copy_tokenizer_files, ChatMessage, ChatTemplate, Tokenizer};
pub use weights::{Params, SaveDtype};
