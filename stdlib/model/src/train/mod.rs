//! Training: the hand-written backward pass, AdamW with clipping and
//! transformers' schedules, gradient accumulation, checkpoints and resume.

pub mod backward;
pub mod optim;
pub mod run;

pub use backward::Sequence;
pub use optim::{OptimConfig, Schedule, StepStats, Trainer, TrainerOn};
pub use run::warmup_steps;
pub use run::{
    checkpoint_steps, total_steps, train, train_on, NoMonitor, PackedData, TrainConfig,
    TrainMonitor, TrainSummary,
};
