//! Training runs on disk: drive a trainer's `step()`, log every step to `metrics.jsonl`, select
//! checkpoints on validation, resume an interrupted run, and load trained models back.
//!
//! May import `data`, `model`, `train` and `eval` (validation metrics).

mod checkpoint;
mod fit;
mod load;

pub use checkpoint::{RunState, has_checkpoint};
pub use fit::{
    FitOptions, can_resume, fit_goalrank, fit_pointwise, fit_reward, generator_metrics,
    same_settings,
};
pub use load::{
    check_run_config, check_run_requests, load_generator, load_pointwise, load_reward, run_config,
    run_kind,
};
