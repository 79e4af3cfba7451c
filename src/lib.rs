//! # goalrank
//!
//! A Rust implementation of GoalRank (Zhang et al., "GoalRank: Group-Relative Optimization for a
//! Large Ranking Model", ICLR 2026) on Burn.
//!
//! A re-ranker receives a request (a user with their history and `N` candidate items) and returns
//! an ordered list of `L` distinct items. This crate holds everything around that task:
//!
//! - [`data`]: MovieLens loaders, the stage-1 retriever and the re-ranking requests built from
//!   real rating logs, with an on-disk cache;
//! - [`eval`]: the offline metrics (H@k, NDCG@k, MAP@k, F1@k, AUC) as pure functions, simple
//!   non-learned policies and the evaluator that scores any policy on a split.
//!
//! Dependency direction: `data` <- `eval`. Nothing below imports from above.

pub mod app;
pub mod data;
pub mod error;
pub mod eval;
pub mod model;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
