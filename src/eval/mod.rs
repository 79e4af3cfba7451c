//! Evaluation: metrics, simple policies and the evaluator that scores a policy on a split.

mod bench;
mod device_check;
mod evaluate;
mod experiment;
mod fit;
mod generator;
mod inspect;
pub mod metrics;
mod plot;
mod policy;
mod rank;
mod ranking;
mod report;
mod runs;
mod simulated;
mod study;

pub use bench::{BenchOptions, BenchRow, bench_device};
#[cfg(not(target_arch = "wasm32"))]
pub use device_check::vulkan_device;
pub use device_check::{DeviceCheck, check_device};
pub use evaluate::{MetricAccumulator, Metrics, evaluate, score_rankings};
pub use experiment::{ExperimentOptions, MainExperimentConfig, run_main};
pub use fit::{FitOptions, RunState, fit_goalrank, fit_pointwise, fit_reward, generator_metrics};
pub use generator::{
    ListSource, Proposer, RewardQuality, best_of_rankings, generator_ladder, generator_rankings,
    generator_rankings_async, mean_reward, pointwise_rankings, pointwise_rankings_async,
    reward_quality,
};
pub use inspect::{
    GroupMember, ScoredList, inspect_group, inspect_group_async, score_lists, score_lists_async,
};
pub use plot::{LinePlot, Series};
pub use policy::SimplePolicy;
pub use rank::{RankAnswer, RankRequest, rank_file, read_rank_requests};
pub use ranking::Ranking;
pub use report::{Column, Goal, Report, ReportRow, mean_std};
pub use runs::{
    check_run_config, load_generator, load_pointwise, load_reward, run_config, run_kind,
};
pub use simulated::{UtilityMetrics, optimal_lists, optimum_rankings, utility_metrics};
pub use study::{GROUP_SIZES, NOISE_LEVELS, SCALING_SIZES, Study, run_study};
