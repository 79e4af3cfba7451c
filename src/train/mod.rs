//! Training: the reward model, GoalRank's group-relative step, checkpoints.
//!
//! Training is a value you step: each trainer's `step()` does one update and returns a plain
//! record. Callers decide when to log, evaluate, checkpoint or yield.

mod adam;
mod goalrank;
pub mod group;
mod pointwise;
mod profile;
mod reward;
mod sampler;

pub use adam::{AdamSettings, FusedAdam};
pub use goalrank::{GoalRankConfig, GoalRankTrainer, GroupSampling, Objective, Reward, StepRecord};
pub use pointwise::{PointwiseTrainer, PointwiseTrainingConfig};
pub use profile::{KernelCount, Launches, Phase};
pub use reward::{
    RewardRecord, RewardSelection, RewardTrainer, RewardTrainingConfig, bce_with_logits,
    bce_with_probs, imitation_loss, listwise_loss,
};
pub use sampler::BatchSampler;
