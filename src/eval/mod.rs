//! Evaluation: metrics, simple policies and the evaluator that scores a policy on a split.

mod bench;
mod device_check;
mod evaluate;
mod fit;
mod generator;
pub mod metrics;
mod policy;
mod rank;
mod ranking;

pub use bench::{BenchOptions, BenchRow, bench_device};
pub use device_check::{DeviceCheck, check_device};
pub use evaluate::{MetricAccumulator, Metrics, evaluate, score_rankings};
pub use fit::{FitOptions, RunState, fit_goalrank, fit_pointwise, fit_reward, generator_metrics};
pub use generator::{
    RewardQuality, generator_rankings, mean_reward, multi_generator_rankings, pointwise_rankings,
    reward_quality,
};
pub use policy::SimplePolicy;
pub use rank::{RankAnswer, RankRequest, rank_file, read_rank_requests};
pub use ranking::Ranking;
