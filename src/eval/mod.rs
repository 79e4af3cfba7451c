//! Evaluation: the offline metrics (pure functions on slices), simple policies, the rankings a
//! model gives a split, ground-truth metrics on the simulator, scoring lists with a reward model,
//! and the inspection of one request's group that the app draws.
//!
//! May import `data`, `model` and `train`; nothing here writes files.

mod evaluate;
mod generator;
mod inspect;
pub mod metrics;
mod policy;
mod ranking;
mod reward_diagnostics;
mod simulated;

pub use evaluate::{MetricAccumulator, Metrics, evaluate, score_rankings};
pub use generator::{
    ListSource, Picker, Proposer, RewardQuality, best_of_rankings, generator_ladder,
    generator_rankings, generator_rankings_async, mean_reward, pointwise_rankings,
    pointwise_rankings_async, reward_quality,
};
pub use inspect::{
    GroupMember, ScoredList, inspect_group, inspect_group_async, score_lists, score_lists_async,
};
pub use policy::SimplePolicy;
pub use ranking::Ranking;
pub use reward_diagnostics::{
    DIAGNOSTIC_REQUESTS, ExactDiagnostics, GroupDiagnostics, RANDOM_LISTS, RewardDiagnostics,
    diagnostic_probe, group_diagnostics, logged_beats_random, pair_measures, reward_diagnostics,
};
pub use simulated::{
    UtilityMetrics, mean_utility, optimal_lists, optimum_rankings, utility_metrics,
};
