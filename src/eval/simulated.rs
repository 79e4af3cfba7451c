//! Ground-truth metrics on simulated requests: the exact expected clicks of each chosen list and
//! its regret to the exact best list.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::Ranking;
use crate::data::simulator::Optimum;
use crate::data::{Request, World};

/// Mean exact utility of the chosen lists and mean regret to the optimum.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UtilityMetrics {
    /// Mean expected clicks of the chosen lists.
    pub utility: f64,
    /// Mean expected clicks of the best lists.
    pub optimum: f64,
    /// Mean of (optimum − utility), ≥ 0.
    pub regret: f64,
    pub requests: usize,
}

/// The exact best list of every request (branch and bound; see `data::simulator`).
pub fn optimal_lists(world: &World, requests: &[Request], progress: bool) -> Vec<Optimum> {
    let bar = if progress {
        ProgressBar::new(requests.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("optimum   {bar:30} {pos}/{len} {elapsed}<{eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let l = world.config.list_len;
    let out = requests
        .iter()
        .map(|r| {
            bar.inc(1);
            world.best_list(r.user, &r.candidates, l)
        })
        .collect();
    bar.finish_and_clear();
    out
}

/// The best lists as rankings (candidate scores: 1 for the chosen items, 0 otherwise).
pub fn optimum_rankings(requests: &[Request], optima: &[Optimum]) -> Vec<Ranking> {
    requests
        .iter()
        .zip(optima)
        .map(|(r, o)| Ranking {
            list: o.list.clone(),
            scores: r
                .candidates
                .iter()
                .map(|c| f32::from(u8::from(o.list.contains(c))))
                .collect(),
        })
        .collect()
}

/// Mean exact utility of `rankings` (one per request), without the optimum.
pub fn mean_utility(world: &World, requests: &[Request], rankings: &[Ranking]) -> f64 {
    let l = world.config.list_len;
    let total: f64 = requests
        .iter()
        .zip(rankings)
        .map(|(r, ranking)| world.utility(r.user, &ranking.list[..ranking.list.len().min(l)]))
        .sum();
    total / requests.len().max(1) as f64
}

/// Exact utility and regret of `rankings` against `optima` (one per request).
pub fn utility_metrics(
    world: &World,
    requests: &[Request],
    rankings: &[Ranking],
    optima: &[Optimum],
) -> UtilityMetrics {
    let l = world.config.list_len;
    let mut utility = 0.0;
    let mut optimum = 0.0;
    for ((r, ranking), best) in requests.iter().zip(rankings).zip(optima) {
        let list = &ranking.list[..ranking.list.len().min(l)];
        utility += world.utility(r.user, list);
        optimum += best.utility;
    }
    let n = requests.len().max(1) as f64;
    UtilityMetrics {
        utility: utility / n,
        optimum: optimum / n,
        regret: (optimum - utility) / n,
        requests: requests.len(),
    }
}
