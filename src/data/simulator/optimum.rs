//! The exact best list of a simulated request: branch and bound with a proven bound, and plain
//! enumeration of all P(N, L) lists to check it on small cases.
//!
//! The bound: after a prefix with examination probability e for the next position, position
//! t further down is examined with probability at most e · β^t (every step multiplies by
//! β (1 − satisfaction · a) ≤ β), and an item's attraction is at most its attraction without the
//! redundancy penalty. By the rearrangement inequality the rest of the list is therefore worth
//! at most e · Σ_t β^t · a_(t), where a_(t) are the remaining candidates' unpenalised attractions
//! in decreasing order. A branch whose value plus this bound cannot beat the best list found so
//! far is cut; nothing better can be inside it, so the search is exact.

use serde::Serialize;

use super::World;

/// The best list for one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Optimum {
    pub list: Vec<u32>,
    /// Its exact expected clicks.
    pub utility: f64,
    /// Search nodes visited (prefixes for branch and bound, full lists for enumeration).
    pub nodes: usize,
}

struct Search<'a> {
    world: &'a World,
    beta: f64,
    keep: f64,
    satisfaction: f64,
    /// Candidates sorted by unpenalised attraction, best first: (item, attraction, category).
    sorted: Vec<(u32, f64, u16)>,
    len: usize,
    used: Vec<bool>,
    prefix: Vec<u32>,
    best: Optimum,
}

impl Search<'_> {
    /// Upper bound on what the remaining `r` positions can add when the next is examined with
    /// probability `e`.
    fn bound(&self, e: f64, r: usize) -> f64 {
        let mut weight = e;
        let mut total = 0.0;
        for (_, a, _) in self
            .sorted
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(c, _)| c)
            .take(r)
        {
            total += weight * a;
            weight *= self.beta;
        }
        total
    }

    fn dive(&mut self, e: f64, value: f64) {
        self.best.nodes += 1;
        let depth = self.prefix.len();
        if depth == self.len {
            if value > self.best.utility {
                self.best.utility = value;
                self.best.list = self.prefix.clone();
            }
            return;
        }
        if value + self.bound(e, self.len - depth) <= self.best.utility + 1e-12 {
            return;
        }
        for c in 0..self.sorted.len() {
            if self.used[c] {
                continue;
            }
            let (item, raw, category) = self.sorted[c];
            let repeats = self
                .prefix
                .iter()
                .filter(|&&above| self.world.category[above as usize] == category)
                .count();
            let a = raw * self.keep.powi(repeats as i32);
            self.used[c] = true;
            self.prefix.push(item);
            self.dive(e * self.beta * (1.0 - self.satisfaction * a), value + e * a);
            self.prefix.pop();
            self.used[c] = false;
        }
    }
}

impl World {
    /// The greedy list: at each position the candidate that adds the most expected clicks now.
    pub fn greedy_list(&self, user: u32, candidates: &[u32], len: usize) -> Vec<u32> {
        let mut list: Vec<u32> = Vec::with_capacity(len);
        for _ in 0..len.min(candidates.len()) {
            let next = candidates
                .iter()
                .filter(|c| !list.contains(c))
                .map(|&c| {
                    let mut trial = list.clone();
                    trial.push(c);
                    (self.utility(user, &trial), c)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
            if let Some((_, c)) = next {
                list.push(c);
            }
        }
        list
    }

    /// The exact best list of `len` distinct candidates, by branch and bound (module docs).
    pub fn best_list(&self, user: u32, candidates: &[u32], len: usize) -> Optimum {
        let len = len.min(candidates.len());
        let greedy = self.greedy_list(user, candidates, len);
        let mut sorted: Vec<(u32, f64, u16)> = candidates
            .iter()
            .map(|&c| (c, self.attraction(user, c), self.category[c as usize]))
            .collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut search = Search {
            world: self,
            beta: self.patience(user),
            keep: 1.0 - self.config.redundancy,
            satisfaction: self.config.satisfaction,
            used: vec![false; sorted.len()],
            sorted,
            len,
            prefix: Vec::with_capacity(len),
            best: Optimum {
                utility: self.utility(user, &greedy),
                list: greedy,
                nodes: 0,
            },
        };
        search.dive(1.0, 0.0);
        search.best
    }

    /// The best list by trying all P(N, len) lists (ties: the first in enumeration order).
    pub fn best_by_enumeration(&self, user: u32, candidates: &[u32], len: usize) -> Optimum {
        let len = len.min(candidates.len());
        let mut best = Optimum {
            list: Vec::new(),
            utility: f64::NEG_INFINITY,
            nodes: 0,
        };
        let mut list = Vec::with_capacity(len);
        fn walk(
            world: &World,
            user: u32,
            candidates: &[u32],
            len: usize,
            list: &mut Vec<u32>,
            best: &mut Optimum,
        ) {
            if list.len() == len {
                best.nodes += 1;
                let u = world.utility(user, list);
                if u > best.utility {
                    best.utility = u;
                    best.list = list.clone();
                }
                return;
            }
            for &c in candidates {
                if !list.contains(&c) {
                    list.push(c);
                    walk(world, user, candidates, len, list, best);
                    list.pop();
                }
            }
        }
        walk(self, user, candidates, len, &mut list, &mut best);
        best
    }
}
