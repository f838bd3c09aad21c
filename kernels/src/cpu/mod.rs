//! CPU implementations: the reference every CUDA kernel is checked against.
//! All tensors are row-major `f32` slices; "set" outputs are overwritten,
//! "acc" outputs are added into.

pub mod adamw;
pub mod attention;
pub mod convert;
pub mod cross_entropy;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
mod par;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod skinny;
pub mod slerp;
pub mod swiglu;

pub use adamw::{adamw_step, AdamW};
pub use attention::{attention_backward, attention_forward, AttnParams};
pub use convert::{bf16_to_f32, f16_to_f32, f32_to_bf16};
pub use cross_entropy::{cross_entropy, log_softmax_rows, token_logprobs, IGNORE_INDEX};
pub use embedding::{embedding_backward, embedding_forward};
pub use gelu::{gelu_backward, gelu_forward};
pub use layernorm::{layernorm_backward, layernorm_forward};
pub use matmul::{gemm, linear_backward, linear_forward};
pub use reduce::{scale_in_place, sum_of_squares};
pub use rmsnorm::{rmsnorm_backward, rmsnorm_forward};
pub use rope::{rope_backward, rope_forward, RopeTable};
pub use skinny::{linear_forward_bf16, skinny_product, skinny_products, SKINNY_ROWS};
pub use slerp::{slerp, SLERP_DOT_THRESHOLD, SLERP_NORM_EPS};
pub use swiglu::{swiglu_backward, swiglu_forward};
