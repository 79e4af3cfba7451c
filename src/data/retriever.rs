//! Stage-1 retriever: matrix factorisation trained with BPR (Rendle et al., 2009) on implicit
//! train-split interactions, in plain Rust.
//!
//! Score of item `i` for user `u`: `b_i + p_u · q_i`. Trained by SGD on the pairwise loss
//! `-ln sigmoid(x_ui - x_uj)` with one uniformly sampled unseen item `j` per interaction.
//! Single-threaded and seeded: the same interactions and config give the same factors.

use burn::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Hyper-parameters of the BPR retriever.
#[derive(Config, Debug)]
pub struct RetrieverConfig {
    /// Latent dimension.
    #[config(default = 32)]
    pub dim: usize,
    /// Passes over the train interactions.
    #[config(default = 30)]
    pub epochs: usize,
    /// SGD step size.
    #[config(default = 0.05)]
    pub learning_rate: f32,
    /// L2 penalty on the factors and biases.
    #[config(default = 0.005)]
    pub regularization: f32,
}

/// Trained user and item factors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Retriever {
    pub dim: usize,
    /// `[users, dim]`, row-major.
    pub user_factors: Vec<f32>,
    /// `[items, dim]`, row-major.
    pub item_factors: Vec<f32>,
    /// `[items]`.
    pub item_bias: Vec<f32>,
    /// Items seen in training: the retrieval universe.
    pub known: Vec<bool>,
}

impl RetrieverConfig {
    /// Trains on `(user, item)` pairs; `users` and `items` size the tables.
    pub fn train(
        &self,
        users: usize,
        items: usize,
        interactions: &[(u32, u32)],
        seed: u64,
        progress: bool,
    ) -> crate::Result<Retriever> {
        if self.dim == 0 || self.epochs == 0 {
            return Err(Error::Invalid(
                "retriever dim and epochs must be positive".into(),
            ));
        }
        let mut known = vec![false; items];
        let mut seen: Vec<Vec<u32>> = vec![Vec::new(); users];
        for &(u, i) in interactions {
            known[i as usize] = true;
            seen[u as usize].push(i);
        }
        seen.iter_mut().for_each(|s| {
            s.sort_unstable();
            s.dedup();
        });
        let universe: Vec<u32> = (0..items as u32).filter(|&i| known[i as usize]).collect();
        if universe.len() < 2 {
            return Err(Error::Invalid(
                "the retriever needs at least two items in the train split".into(),
            ));
        }

        let d = self.dim;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut init =
            |n: usize| -> Vec<f32> { (0..n * d).map(|_| rng.random_range(-0.05..0.05)).collect() };
        let mut retriever = Retriever {
            dim: d,
            user_factors: init(users),
            item_factors: init(items),
            item_bias: vec![0.0; items],
            known,
        };

        let bar = if progress {
            ProgressBar::new(self.epochs as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("retriever {bar:30} epoch {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        // A user who has seen every item of the universe has no negative to sample: their
        // interactions teach nothing here (and the sampling below would never end).
        let has_negative: Vec<bool> = seen
            .iter()
            .map(|s| universe.iter().any(|j| s.binary_search(j).is_err()))
            .collect();
        let mut order: Vec<usize> = (0..interactions.len()).collect();
        let (lr, reg) = (self.learning_rate, self.regularization);
        let mut grad_u = vec![0.0f32; d];
        for _ in 0..self.epochs {
            order.shuffle(&mut rng);
            let mut loss = 0.0f64;
            for &k in &order {
                let (u, i) = interactions[k];
                let (u, i) = (u as usize, i as usize);
                if !has_negative[u] {
                    continue;
                }
                let j = loop {
                    let j = universe[rng.random_range(0..universe.len())];
                    if seen[u].binary_search(&j).is_err() {
                        break j as usize;
                    }
                };
                let r = &mut retriever;
                let (pu, qi, qj) = (u * d, i * d, j * d);
                let mut x = r.item_bias[i] - r.item_bias[j];
                for f in 0..d {
                    x += r.user_factors[pu + f] * (r.item_factors[qi + f] - r.item_factors[qj + f]);
                }
                // d/dx of ln sigmoid(x) = sigmoid(-x).
                let g = 1.0 / (1.0 + x.exp());
                loss += f64::from((1.0 + (-x).exp()).ln());
                for (f, grad) in grad_u.iter_mut().enumerate() {
                    let p = r.user_factors[pu + f];
                    let (a, b) = (r.item_factors[qi + f], r.item_factors[qj + f]);
                    *grad = g * (a - b) - reg * p;
                    r.item_factors[qi + f] += lr * (g * p - reg * a);
                    r.item_factors[qj + f] += lr * (-g * p - reg * b);
                }
                for (p, grad) in r.user_factors[pu..pu + d].iter_mut().zip(&grad_u) {
                    *p += lr * grad;
                }
                r.item_bias[i] += lr * (g - reg * r.item_bias[i]);
                r.item_bias[j] += lr * (-g - reg * r.item_bias[j]);
            }
            bar.set_message(format!("bpr loss {:.4}", loss / order.len().max(1) as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(retriever)
    }
}

impl Retriever {
    /// Score of one item for one user.
    pub fn score(&self, user: u32, item: u32) -> f32 {
        let (u, i) = (user as usize * self.dim, item as usize * self.dim);
        let dot: f32 = self.user_factors[u..u + self.dim]
            .iter()
            .zip(&self.item_factors[i..i + self.dim])
            .map(|(a, b)| a * b)
            .sum();
        self.item_bias[item as usize] + dot
    }

    /// Known items for `user`, best first (ties by item index).
    pub fn ranking(&self, user: u32) -> Vec<u32> {
        let mut scored: Vec<(f32, u32)> = (0..self.item_bias.len() as u32)
            .filter(|&i| self.known[i as usize])
            .map(|i| (self.score(user, i), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, i)| i).collect()
    }
}
