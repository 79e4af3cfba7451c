//! Scores any policy on a set of requests with the metrics of [`super::metrics`].

use serde::Serialize;

use super::{Ranking, metrics};
use crate::data::Request;

/// Mean metrics over a set of requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub k: usize,
    pub hit_ratio: f64,
    pub ndcg: f64,
    pub map: f64,
    pub f1: f64,
    pub auc: f64,
    /// Requests scored.
    pub requests: usize,
    /// Requests without a logged positive: excluded from H, NDCG, MAP, F1 and AUC.
    pub without_positives: usize,
}

/// Running sums of per-request metrics.
#[derive(Clone, Debug, Default)]
pub struct MetricAccumulator {
    k: usize,
    sums: [f64; 5],
    defined: [usize; 5],
    requests: usize,
    without_positives: usize,
}

impl MetricAccumulator {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// Adds one request and the policy's answer for it. A list that repeats an item or names
    /// an item that is not a candidate is refused: no metric is computed from it.
    pub fn add(&mut self, request: &Request, ranking: &Ranking) -> crate::Result<()> {
        check_list(request, &ranking.list)?;
        let k = self.k;
        let gains: Vec<f32> = request.labels.iter().map(|&y| f32::from(y)).collect();
        let logged = &request.logged;
        let list = &ranking.list;
        let labels: Vec<bool> = request.candidate_labels().iter().map(|&y| y > 0).collect();
        let values = [
            metrics::hit_ratio(list, logged, &gains, k),
            metrics::ndcg(list, logged, &gains, k),
            metrics::average_precision(list, logged, &gains, k),
            metrics::f1(list, logged, &gains, k),
            metrics::auc(&ranking.scores, &labels),
        ];
        for (i, value) in values.into_iter().enumerate() {
            if let Some(v) = value {
                self.sums[i] += v;
                self.defined[i] += 1;
            }
        }
        self.requests += 1;
        if request.positives() == 0 {
            self.without_positives += 1;
        }
        Ok(())
    }

    pub fn finish(&self) -> Metrics {
        let mean = |i: usize| self.sums[i] / self.defined[i].max(1) as f64;
        Metrics {
            k: self.k,
            hit_ratio: mean(0),
            ndcg: mean(1),
            map: mean(2),
            f1: mean(3),
            auc: mean(4),
            requests: self.requests,
            without_positives: self.without_positives,
        }
    }
}

/// Runs `policy` on every request and averages the metrics at `k`.
pub fn evaluate(
    requests: &[Request],
    k: usize,
    mut policy: impl FnMut(&Request) -> Ranking,
) -> crate::Result<Metrics> {
    let mut acc = MetricAccumulator::new(k);
    for request in requests {
        acc.add(request, &policy(request))?;
    }
    Ok(acc.finish())
}

/// A chosen list must hold distinct candidates of its request.
pub fn check_list(request: &Request, list: &[u32]) -> crate::Result<()> {
    for (i, item) in list.iter().enumerate() {
        if list[..i].contains(item) {
            return Err(crate::Error::Invalid(format!(
                "a chosen list {list:?} (item indices) repeats item {item}: lists must hold \
                 distinct items"
            )));
        }
        if !request.candidates.contains(item) {
            return Err(crate::Error::Invalid(format!(
                "a chosen list {list:?} (item indices) holds item {item}, which is not one of \
                 the request's candidates"
            )));
        }
    }
    Ok(())
}

/// Averages the metrics at `k` of precomputed rankings, one per request.
pub fn score_rankings(
    requests: &[Request],
    rankings: &[Ranking],
    k: usize,
) -> crate::Result<Metrics> {
    let mut acc = MetricAccumulator::new(k);
    for (request, ranking) in requests.iter().zip(rankings) {
        acc.add(request, ranking)?;
    }
    Ok(acc.finish())
}
