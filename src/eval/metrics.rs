//! Offline ranking metrics against logged feedback, as pure functions on slices.
//!
//! `chosen` is the list a policy returns (item ids, best first); `logged` and `gains` are the
//! logged list and its per-item feedback (a label of 0 is a negative). Only the first `k` chosen
//! items count. A request whose logged list has no positive has no H, NDCG, MAP or F1: those
//! functions return `None` and the evaluator counts the request as skipped.

/// Gain of `item` from the logged feedback; 0 when it was not logged.
fn gain(item: u32, logged: &[u32], gains: &[f32]) -> f32 {
    logged
        .iter()
        .position(|&l| l == item)
        .map_or(0.0, |p| gains[p])
}

fn positives(gains: &[f32]) -> usize {
    gains.iter().filter(|&&g| g > 0.0).count()
}

fn hits(chosen: &[u32], logged: &[u32], gains: &[f32], k: usize) -> usize {
    chosen
        .iter()
        .take(k)
        .filter(|&&c| gain(c, logged, gains) > 0.0)
        .count()
}

/// 1 / log2(rank + 1) for a 0-based position.
fn discount(position: usize) -> f64 {
    1.0 / ((position + 2) as f64).log2()
}

/// H@k: logged positives that the first `k` chosen items recover, over logged positives.
///
/// ```
/// use goalrank::eval::metrics::hit_ratio;
/// // Logged [1, 2, 3] with labels [1, 0, 1]; the chosen list finds item 3 only.
/// assert_eq!(hit_ratio(&[3, 9], &[1, 2, 3], &[1.0, 0.0, 1.0], 2), Some(0.5));
/// // No logged positive: undefined.
/// assert_eq!(hit_ratio(&[3, 9], &[1, 2, 3], &[0.0; 3], 2), None);
/// ```
pub fn hit_ratio(chosen: &[u32], logged: &[u32], gains: &[f32], k: usize) -> Option<f64> {
    let p = positives(gains);
    (p > 0).then(|| hits(chosen, logged, gains, k) as f64 / p as f64)
}

/// NDCG@k with linear gains; the ideal list puts the logged items in decreasing gain first.
pub fn ndcg(chosen: &[u32], logged: &[u32], gains: &[f32], k: usize) -> Option<f64> {
    if positives(gains) == 0 {
        return None;
    }
    let dcg: f64 = chosen
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &c)| f64::from(gain(c, logged, gains)) * discount(i))
        .sum();
    let mut ideal: Vec<f32> = gains.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| f64::from(g) * discount(i))
        .sum();
    Some(dcg / idcg)
}

/// MAP@k: mean of precision@i at each relevant position i ≤ k, over min(positives, k).
pub fn average_precision(chosen: &[u32], logged: &[u32], gains: &[f32], k: usize) -> Option<f64> {
    let p = positives(gains);
    if p == 0 {
        return None;
    }
    let mut found = 0usize;
    let mut sum = 0.0;
    for (i, &c) in chosen.iter().take(k).enumerate() {
        if gain(c, logged, gains) > 0.0 {
            found += 1;
            sum += found as f64 / (i + 1) as f64;
        }
    }
    Some(sum / p.min(k) as f64)
}

/// F1@k of precision (hits / k) and recall (hits / positives).
pub fn f1(chosen: &[u32], logged: &[u32], gains: &[f32], k: usize) -> Option<f64> {
    let p = positives(gains);
    if p == 0 {
        return None;
    }
    let h = hits(chosen, logged, gains, k) as f64;
    if h == 0.0 {
        return Some(0.0);
    }
    let precision = h / k as f64;
    let recall = h / p as f64;
    Some(2.0 * precision * recall / (precision + recall))
}

/// AUC of `scores` against binary `labels`: the probability that a random positive scores above a
/// random negative, ties counting one half. `None` without both classes.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&y| y).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Mann-Whitney U from average ranks (1-based), ties sharing their mean rank.
    let values: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    let rank_sum: f64 = average_ranks(&values)
        .iter()
        .zip(labels)
        .filter(|(_, y)| **y)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// 1-based ranks of `values`, ties sharing their mean rank.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = mean_rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation (Pearson on average ranks); `None` when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_and_reversed() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(spearman(&a, &[10.0, 20.0, 30.0, 40.0]), Some(1.0));
        assert_eq!(spearman(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&a, &[1.0, 1.0, 1.0, 1.0]), None);
        assert_eq!(average_ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
    }

    // Logged list [10, 11, 12, 13] with labels [1, 0, 1, 0]: positives {10, 12}.
    const LOGGED: [u32; 4] = [10, 11, 12, 13];
    const GAINS: [f32; 4] = [1.0, 0.0, 1.0, 0.0];
    // Chosen [12, 99, 10]: positive at ranks 1 and 3.
    const CHOSEN: [u32; 3] = [12, 99, 10];

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("metric defined");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn hit_ratio_by_hand() {
        // k = 3: both positives found -> 2/2. k = 2: only 12 -> 1/2.
        close(hit_ratio(&CHOSEN, &LOGGED, &GAINS, 3), 1.0);
        close(hit_ratio(&CHOSEN, &LOGGED, &GAINS, 2), 0.5);
    }

    #[test]
    fn ndcg_by_hand() {
        // DCG@3 = 1/log2(2) + 0 + 1/log2(4) = 1 + 0.5 = 1.5.
        // IDCG@3 = 1/log2(2) + 1/log2(3) = 1 + 0.6309298 = 1.6309298.
        close(
            ndcg(&CHOSEN, &LOGGED, &GAINS, 3),
            1.5 / (1.0 + 1.0 / 3f64.log2()),
        );
        // A perfect list scores 1.
        close(ndcg(&[10, 12], &LOGGED, &GAINS, 2), 1.0);
    }

    #[test]
    fn average_precision_by_hand() {
        // Hits at ranks 1 and 3: (1/1 + 2/3) / min(2, 3) = 5/6.
        close(average_precision(&CHOSEN, &LOGGED, &GAINS, 3), 5.0 / 6.0);
        // k = 1: (1/1) / min(2, 1) = 1.
        close(average_precision(&CHOSEN, &LOGGED, &GAINS, 1), 1.0);
    }

    #[test]
    fn f1_by_hand() {
        // k = 3: precision 2/3, recall 2/2 -> 2 * (2/3) / (5/3) = 0.8.
        close(f1(&CHOSEN, &LOGGED, &GAINS, 3), 0.8);
        // No hit -> 0.
        close(f1(&[99, 98], &LOGGED, &GAINS, 2), 0.0);
    }

    #[test]
    fn no_positive_is_undefined() {
        let zeros = [0.0; 4];
        assert_eq!(hit_ratio(&CHOSEN, &LOGGED, &zeros, 3), None);
        assert_eq!(ndcg(&CHOSEN, &LOGGED, &zeros, 3), None);
        assert_eq!(average_precision(&CHOSEN, &LOGGED, &zeros, 3), None);
        assert_eq!(f1(&CHOSEN, &LOGGED, &zeros, 3), None);
    }

    #[test]
    fn auc_by_hand() {
        // Scores 0.9(+) 0.8(-) 0.7(+) 0.1(-): positive-negative pairs (0.9,0.8) (0.9,0.1)
        // (0.7,0.8) (0.7,0.1) -> 3 of 4 ordered -> 0.75.
        close(
            auc(&[0.9, 0.8, 0.7, 0.1], &[true, false, true, false]),
            0.75,
        );
        // A tie between a positive and a negative counts one half: (1 + 0.5) / 2 = 0.75.
        close(auc(&[0.5, 0.5, 0.1], &[true, false, false]), 0.75);
        // Perfect and reversed orders.
        close(auc(&[2.0, 1.0], &[true, false]), 1.0);
        close(auc(&[1.0, 2.0], &[true, false]), 0.0);
        assert_eq!(auc(&[1.0, 2.0], &[true, true]), None);
    }
}
