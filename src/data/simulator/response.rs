//! The simulated users' list-wise response: a cascade with position-dependent examination,
//! satisfaction after a click and a penalty for repeating a category.
//!
//! For user u and list l = (l_1, …, l_L):
//! - attraction a_j = σ(affinity · ⟨θ_u, φ_{l_j}⟩ + q_{l_j} + bias) · (1 − redundancy)^{m_j},
//!   where m_j counts the items above position j with the same category as l_j;
//! - the user examines position 1; after examining position j they click with probability a_j,
//!   then go on to position j + 1 with probability β_u (patience) when they did not click and
//!   β_u (1 − satisfaction) when they did;
//! - so P(examine j + 1) = P(examine j) · β_u · (1 − satisfaction · a_j), exactly, and the
//!   expected number of clicks is U(l) = Σ_j P(examine j) · a_j.

use rand::{Rng, RngExt};

use super::World;

impl World {
    /// Attraction of `item` for `user` on its own (no redundancy penalty).
    pub fn attraction(&self, user: u32, item: u32) -> f64 {
        let d = self.config.dim;
        let (u, i) = (user as usize * d, item as usize * d);
        let dot: f64 = self.user_vectors[u..u + d]
            .iter()
            .zip(&self.item_vectors[i..i + d])
            .map(|(a, b)| f64::from(a * b))
            .sum();
        let logit =
            self.config.affinity * dot + f64::from(self.quality[item as usize]) + self.config.bias;
        1.0 / (1.0 + (-logit).exp())
    }

    /// Positions of `candidates` by their true attraction for `user`, highest first (ties keep
    /// candidate order): the list a perfect pointwise model would rank.
    pub fn attraction_order(&self, user: u32, candidates: &[u32]) -> Vec<usize> {
        let attraction: Vec<f64> = candidates
            .iter()
            .map(|&item| self.attraction(user, item))
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| attraction[b].total_cmp(&attraction[a]));
        order
    }

    /// Patience β_u: the chance of examining the next position after a non-click.
    pub fn patience(&self, user: u32) -> f64 {
        f64::from(self.patience[user as usize])
    }

    /// Per-position attraction of `list`, redundancy penalty included.
    pub fn list_attractions(&self, user: u32, list: &[u32]) -> Vec<f64> {
        self.penalised(list, |item| self.attraction(user, item))
    }

    /// Per-position attraction of `list` when each item's own attraction is `attraction(item)`,
    /// redundancy penalty included.
    fn penalised(&self, list: &[u32], attraction: impl Fn(u32) -> f64) -> Vec<f64> {
        let keep = 1.0 - self.config.redundancy;
        list.iter()
            .enumerate()
            .map(|(j, &item)| {
                let category = self.category[item as usize];
                let repeats = list[..j]
                    .iter()
                    .filter(|&&above| self.category[above as usize] == category)
                    .count();
                attraction(item) * keep.powi(repeats as i32)
            })
            .collect()
    }

    /// Probability that each position is examined.
    pub fn examination(&self, user: u32, list: &[u32]) -> Vec<f64> {
        self.examined(user, &self.list_attractions(user, list))
    }

    /// Probability that each position is examined, given the per-position attractions.
    fn examined(&self, user: u32, attractions: &[f64]) -> Vec<f64> {
        let beta = self.patience(user);
        let mut e = 1.0;
        attractions
            .iter()
            .map(|&a| {
                let here = e;
                e *= beta * (1.0 - self.config.satisfaction * a);
                here
            })
            .collect()
    }

    /// The exact expected number of clicks on `list`.
    pub fn utility(&self, user: u32, list: &[u32]) -> f64 {
        self.utility_given(user, list, |item| self.attraction(user, item))
    }

    /// The expected number of clicks on `list` under this world's list model (examination,
    /// redundancy, satisfaction) when each item's own attraction is `attraction(item)` instead
    /// of the true one: what a model's attraction estimate is worth given the true list effects.
    pub fn utility_given(&self, user: u32, list: &[u32], attraction: impl Fn(u32) -> f64) -> f64 {
        let attractions = self.penalised(list, attraction);
        self.examined(user, &attractions)
            .iter()
            .zip(&attractions)
            .map(|(e, a)| e * a)
            .sum()
    }

    /// One draw of the user's clicks on `list` (0 after the user stopped).
    pub fn sample_clicks(&self, user: u32, list: &[u32], rng: &mut impl Rng) -> Vec<u8> {
        let beta = self.patience(user);
        let mut clicks = vec![0u8; list.len()];
        for (j, a) in self.list_attractions(user, list).into_iter().enumerate() {
            let click = rng.random::<f64>() < a;
            clicks[j] = u8::from(click);
            let go_on = if click {
                beta * (1.0 - self.config.satisfaction)
            } else {
                beta
            };
            if rng.random::<f64>() >= go_on {
                break;
            }
        }
        clicks
    }
}
