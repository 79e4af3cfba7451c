//! Evaluation: metrics, simple policies and the evaluator that scores a policy on a split.

mod evaluate;
pub mod metrics;
mod policy;
mod ranking;

pub use evaluate::{MetricAccumulator, Metrics, evaluate};
pub use policy::SimplePolicy;
pub use ranking::Ranking;
