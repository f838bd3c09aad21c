//! Training: the hand-written backward pass, AdamW with clipping and
//! transformers' schedules, gradient accumulation, checkpoints and resume.

pub mod backward;
pub mod lineage;
pub mod losses;
pub mod optim;
pub mod packed;
pub mod run;

pub use backward::Sequence;
pub use lineage::CheckpointLineage;
pub use losses::LossLine;
pub use optim::{OptimConfig, Schedule, StepStats, Trainer, TrainerOn};
pub use packed::{ErrorLog, PackInfo, PackedData};
pub use run::warmup_steps;
pub use run::{
    checkpoint_steps, total_steps, train_on, NoMonitor, TrainConfig, TrainMonitor, TrainSummary,
};
