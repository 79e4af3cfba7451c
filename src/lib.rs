//! # goalrank
//!
//! A Rust implementation of GoalRank (Zhang et al., "GoalRank: Group-Relative Optimization for a
//! Large Ranking Model", ICLR 2026) on Burn.
//!
//! A re-ranker receives a request (a user with their history and `N` candidate items) and returns
//! an ordered list of `L` distinct items. GoalRank trains one large generator to output that list
//! directly, against a group-relative reference policy built from a frozen reward model.
//!
//! ## Layers
//!
//! Each layer may import the layers above it in this list, never one below it (the integration
//! test `layout::no_upward_imports` checks every `use crate::` line):
//!
//! - [`error`], [`files`] (atomic writes, JSON), [`device`] (device choice): the base;
//! - [`data`]: requests, MovieLens loaders, the stage-1 retriever, the simulator, batching;
//! - [`model`]: the reward model, the generator, the pointwise baselines, weights on disk;
//! - [`train`]: steppable trainers (reward model, GoalRank, pointwise) and the group maths;
//! - [`eval`]: metrics, policies, rankings, ground truth on the simulator, inspection;
//! - [`run`]: training runs on disk (checkpoints, resume, `metrics.jsonl`, loading runs);
//! - [`experiment`] (tables, studies, reports, plots, bench) and [`rank`] (serving);
//! - [`app`]: the egui app, which calls the library and re-implements none of it;
//! - entries: `main.rs` + `cli.rs` (the binary) and [`web`] (the wasm entry); nothing imports
//!   an entry.

/// A line on standard error that never panics: a closed or full stderr (`2>/dev/full`,
/// `2>&1 | head -1`) loses the message, not the run.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod app;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod files;
pub mod model;
pub mod rank;
pub mod run;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
