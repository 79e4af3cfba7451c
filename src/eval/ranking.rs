//! What a policy returns for one request.

/// A policy's answer: the chosen list and a score for every candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    /// Chosen item ids, best first, distinct.
    pub list: Vec<u32>,
    /// One score per candidate, in the request's candidate order (used for AUC).
    pub scores: Vec<f32>,
}

impl Ranking {
    /// The `k` best-scoring candidates, ties broken by candidate position.
    pub fn from_scores(candidates: &[u32], scores: Vec<f32>, k: usize) -> Self {
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let list = order.iter().take(k).map(|&i| candidates[i]).collect();
        Self { list, scores }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_by_score_then_position() {
        let r = Ranking::from_scores(&[7, 8, 9, 10], vec![0.1, 0.5, 0.5, 0.9], 3);
        assert_eq!(r.list, vec![10, 8, 9]);
    }
}
