//! A simulated re-ranking world whose ground truth we own.
//!
//! Items have latent vectors, a category and a quality; users have latent vectors and their own
//! patience. The response to a list is a cascade (see [`response`]): position-dependent
//! examination, satisfaction after a click, and a penalty for an item whose category already
//! appeared above it, so that sorting by attraction is not the best list. The world gives the
//! exact expected clicks of any list and the exact best list ([`optimum`]).
//!
//! Requests are shaped like the MovieLens ones: each user has a sequence of requests; a request's
//! history is the user's earlier logged items with their clicks, its N candidates come from a
//! noisy retrieval step, and its logged list is drawn from them by a noisy logging policy, with
//! sampled clicks as labels. Splits are per user in time order, as for MovieLens.

mod optimum;
mod response;

use burn::config::Config;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use serde::{Deserialize, Serialize};

pub use optimum::Optimum;

use super::{Dataset, Item, Layout, Request, RequestConfig, RetrievalQuality, Retriever};
use crate::Error;

/// Everything that shapes a simulated world and its logged data.
#[derive(Config, Debug, PartialEq)]
pub struct SimConfig {
    /// Preset name (the dataset is called `sim-<name>`).
    #[config(default = "String::from(\"custom\")")]
    pub name: String,
    #[config(default = 1000)]
    pub users: usize,
    #[config(default = 500)]
    pub items: usize,
    #[config(default = 10)]
    pub categories: usize,
    /// Latent dimension of users and items.
    #[config(default = 8)]
    pub dim: usize,
    /// Candidates per request (N).
    #[config(default = 20)]
    pub candidates: usize,
    /// List length (L).
    #[config(default = 6)]
    pub list_len: usize,
    /// Requests per user, in time order.
    #[config(default = 12)]
    pub requests_per_user: usize,
    /// Items each user can meet: 0 for the whole catalogue, or this many drawn at random per
    /// user (warm-up history and retrieval look only at them), so that a large catalogue builds
    /// in time proportional to the pool, not to the catalogue.
    #[config(default = 0)]
    pub item_pool: usize,
    /// Items in each user's history before the first request.
    #[config(default = 5)]
    pub warmup: usize,
    #[config(default = 50)]
    pub history_len: usize,
    /// Weight of ⟨θ_u, φ_i⟩ in the attraction logit.
    #[config(default = 1.5)]
    pub affinity: f64,
    /// Spread (std) of item quality in the attraction logit.
    #[config(default = 0.5)]
    pub quality_std: f64,
    /// Constant of the attraction logit.
    #[config(default = -1.0)]
    pub bias: f64,
    /// Spread of item vectors around their category's centre.
    #[config(default = 0.5)]
    pub category_spread: f64,
    /// Attraction is multiplied by (1 − redundancy) for every item of the same category above.
    #[config(default = 0.5)]
    pub redundancy: f64,
    /// Chance that a click ends the session (the user is satisfied).
    #[config(default = 0.3)]
    pub satisfaction: f64,
    /// Mean patience β (chance of going on after a non-click); the position effect is 1 − β.
    #[config(default = 0.8)]
    pub patience_mean: f64,
    /// Patience is uniform in mean ± spread (clipped to [0, 1]).
    #[config(default = 0.15)]
    pub patience_spread: f64,
    /// Noise (std) of the retrieval scores that pick the N candidates.
    #[config(default = 1.0)]
    pub retrieval_noise: f64,
    /// Temperature of the logging policy (Gumbel-top-L over attraction logits).
    #[config(default = 1.0)]
    pub logging_temperature: f64,
    /// Share of requests whose logged list is a uniformly random draw of L candidates
    /// (exploration traffic) instead of the logging policy's.
    #[config(default = 0.0)]
    pub logging_epsilon: f64,
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    #[config(default = 0.1)]
    pub test_fraction: f64,
    #[config(default = 42)]
    pub seed: u64,
}

impl SimConfig {
    /// A named preset, `tiny` (tests: N 10, L 4, exact by enumeration in a blink) or `small`
    /// (N 20, L 6, 12,000 requests), optionally followed by logging knobs:
    /// `small,epsilon=0.5,temperature=2` sets [`Self::logging_epsilon`] and
    /// [`Self::logging_temperature`] and names the dataset `sim-small-eps0.5-t2`.
    pub fn preset(spec: &str) -> crate::Result<Self> {
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or_default().trim();
        let mut config = Self::named(name)?;
        let mut seen = Vec::new();
        for part in parts {
            let bad = || {
                Error::Invalid(format!(
                    "simulator option `{part}` in `sim:{spec}`: expected epsilon=<0..1> or \
                     temperature=<positive number>"
                ))
            };
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            let value: f64 = value.trim().parse().map_err(|_| bad())?;
            if seen.contains(&key.trim()) {
                return Err(Error::Invalid(format!(
                    "simulator option `{}` given twice in `sim:{spec}`",
                    key.trim()
                )));
            }
            seen.push(key.trim());
            match key.trim() {
                "epsilon" if (0.0..=1.0).contains(&value) => {
                    config.logging_epsilon = value;
                    config.name.push_str(&format!("-eps{value}"));
                }
                "temperature" if value.is_finite() && value > 0.0 => {
                    config.logging_temperature = value;
                    config.name.push_str(&format!("-t{value}"));
                }
                _ => return Err(bad()),
            }
        }
        Ok(config)
    }

    fn named(name: &str) -> crate::Result<Self> {
        match name {
            "tiny" => Ok(Self::new()
                .with_name("tiny".into())
                .with_users(40)
                .with_items(60)
                .with_categories(5)
                .with_dim(4)
                .with_candidates(10)
                .with_list_len(4)
                .with_requests_per_user(8)),
            "small" => Ok(Self::new().with_name("small".into())),
            // 100,000 users, 20,000 items, 1.2M requests; N 50 as on MovieLens.
            "large" => Ok(Self::new()
                .with_name("large".into())
                .with_users(100_000)
                .with_items(20_000)
                .with_categories(40)
                .with_dim(16)
                .with_candidates(50)
                .with_item_pool(1000)),
            other => Err(Error::Invalid(format!(
                "unknown simulator preset `sim:{other}`: expected sim:tiny, sim:small or sim:large"
            ))),
        }
    }

    /// The request settings that models and metrics read from a dataset.
    pub fn request_config(&self) -> RequestConfig {
        RequestConfig::new()
            .with_candidates(self.candidates)
            .with_list_len(self.list_len)
            .with_history_len(self.history_len)
            .with_warmup(self.warmup)
            .with_valid_fraction(self.valid_fraction)
            .with_test_fraction(self.test_fraction)
            .with_seed(self.seed)
    }

    fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        let fail = |msg: String| Err(Error::Invalid(format!("simulator: {msg}")));
        check::at_least("--list-len", self.list_len, 1)?;
        if self.candidates <= self.list_len {
            return Err(Error::Setting {
                name: "--candidates",
                value: self.candidates.to_string(),
                rule: format!("must be more than --list-len ({})", self.list_len),
            });
        }
        if self.users == 0 || self.categories == 0 || self.dim == 0 {
            return fail("users, categories and dim must be positive".into());
        }
        // Saturating: a huge --candidates or --list-len is refused here, not an overflow.
        let needed = self
            .candidates
            .saturating_add(self.warmup)
            .saturating_add(self.requests_per_user.saturating_mul(self.list_len));
        if self.items < needed {
            return fail(format!(
                "{} items are too few for --candidates {} and --list-len {}: each user needs N + \
                 warmup + requests × L distinct items",
                self.items, self.candidates, self.list_len
            ));
        }
        if self.item_pool > 0 && !(needed..=self.items).contains(&self.item_pool) {
            return fail(format!(
                "an item pool of {} must hold N + warmup + requests × L = {needed} items and at \
                 most the catalogue's {}",
                self.item_pool, self.items
            ));
        }
        for (name, v) in [
            ("redundancy", self.redundancy),
            ("satisfaction", self.satisfaction),
            ("patience_mean", self.patience_mean),
            ("logging_epsilon", self.logging_epsilon),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return fail(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        Ok(())
    }
}

/// The ground truth: latent vectors, categories, quality and patience.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct World {
    pub config: SimConfig,
    /// `[users, dim]`, row-major.
    pub user_vectors: Vec<f32>,
    /// `[users]` β_u.
    pub patience: Vec<f32>,
    /// `[items, dim]`, row-major.
    pub item_vectors: Vec<f32>,
    /// `[items]`.
    pub category: Vec<u16>,
    /// `[items]` q_i.
    pub quality: Vec<f32>,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
    let u1: f64 = rng.random_range(1e-12..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A standard Gumbel draw.
fn gumbel(rng: &mut Xoshiro256PlusPlus) -> f64 {
    let u: f64 = rng.random_range(1e-12..1.0);
    -(-u.ln()).ln()
}

impl World {
    /// Draws a world from `config` (seeded).
    pub fn generate(config: &SimConfig) -> crate::Result<Self> {
        config.validate()?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let d = config.dim;
        let scale = 1.0 / (d as f64).sqrt();
        let centres: Vec<f64> = (0..config.categories * d)
            .map(|_| normal(&mut rng))
            .collect();
        let category: Vec<u16> = (0..config.items)
            .map(|i| (i % config.categories) as u16)
            .collect();
        let item_vectors = (0..config.items * d)
            .map(|k| {
                let c = category[k / d] as usize;
                ((centres[c * d + k % d] + config.category_spread * normal(&mut rng)) * scale)
                    as f32
            })
            .collect();
        let quality = (0..config.items)
            .map(|_| (config.quality_std * normal(&mut rng)) as f32)
            .collect();
        let user_vectors = (0..config.users * d)
            .map(|_| normal(&mut rng) as f32)
            .collect();
        let patience = (0..config.users)
            .map(|_| {
                let p = config.patience_mean
                    + config.patience_spread * (2.0 * rng.random::<f64>() - 1.0);
                p.clamp(0.0, 1.0) as f32
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            user_vectors,
            patience,
            item_vectors,
            category,
            quality,
        })
    }

    /// Attraction logit of `item` for `user` (no redundancy penalty).
    fn logit(&self, user: u32, item: u32) -> f64 {
        let a = self.attraction(user, item).clamp(1e-12, 1.0 - 1e-12);
        (a / (1.0 - a)).ln()
    }

    /// The retrieval model: true vectors, users' seen through noise of std `retrieval_noise`.
    fn retriever(&self, rng: &mut Xoshiro256PlusPlus) -> Retriever {
        let noise = self.config.retrieval_noise;
        Retriever {
            dim: self.config.dim,
            user_factors: self
                .user_vectors
                .iter()
                .map(|&v| v + (noise * normal(rng)) as f32)
                .collect(),
            item_factors: self.item_vectors.clone(),
            item_bias: self.quality.clone(),
            known: vec![true; self.config.items],
        }
    }
}

/// Builds the world and its logged requests as a [`Dataset`] named `sim-<preset>`.
pub fn build(config: &SimConfig) -> crate::Result<Dataset> {
    let world = World::generate(config)?;
    let request_config = config.request_config();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed ^ 0x51_ca7e);
    let retriever = world.retriever(&mut rng);
    let (l, n) = (config.list_len, config.candidates);
    let all_items: Vec<u32> = (0..config.items as u32).collect();
    let (n_train, n_valid, _) = request_config.split_counts(config.requests_per_user);
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    let mut popularity = vec![0u32; config.items];
    // Whether an item is in the current user's history (cleared after each user).
    let mut in_history = vec![false; config.items];
    for u in 0..config.users as u32 {
        // The items this user can meet: all of them, or a pool drawn for the user.
        let drawn: Vec<u32>;
        let pool: &[u32] = if config.item_pool == 0 {
            &all_items
        } else {
            drawn = rand::seq::index::sample(&mut rng, config.items, config.item_pool)
                .into_iter()
                .map(|i| i as u32)
                .collect();
            &drawn
        };
        // Warm-up history: items drawn in proportion to attraction, labelled by one click draw.
        let mut history: Vec<u32> = Vec::new();
        let mut history_labels: Vec<u8> = Vec::new();
        let mut warm: Vec<(f64, u32)> = pool
            .iter()
            .map(|&i| (world.logit(u, i) + gumbel(&mut rng), i))
            .collect();
        warm.sort_by(|a, b| b.0.total_cmp(&a.0));
        for &(_, i) in warm.iter().take(config.warmup) {
            history.push(i);
            in_history[i as usize] = true;
            history_labels.push(u8::from(rng.random::<f64>() < world.attraction(u, i)));
        }
        for r in 0..config.requests_per_user {
            // Candidates: the N best noisy retrieval scores among items not in the history.
            let mut scored: Vec<(f64, u32)> = pool
                .iter()
                .filter(|&&i| !in_history[i as usize])
                .map(|&i| {
                    let s = f64::from(retriever.score(u, i));
                    (s + config.retrieval_noise * normal(&mut rng), i)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut candidates: Vec<u32> = scored.iter().take(n).map(|&(_, i)| i).collect();
            candidates.shuffle(&mut rng);
            // Logging policy: Gumbel-top-L over attraction logits at `logging_temperature`; with
            // probability `logging_epsilon`, a uniformly random list instead. (The draw is
            // skipped when ε is 0, so default worlds are unchanged.)
            let explore =
                config.logging_epsilon > 0.0 && rng.random::<f64>() < config.logging_epsilon;
            let mut logged: Vec<(f64, u32)> = candidates
                .iter()
                .map(|&i| {
                    let t = config.logging_temperature.max(1e-6);
                    let score = if explore { 0.0 } else { world.logit(u, i) / t };
                    (score + gumbel(&mut rng), i)
                })
                .collect();
            logged.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let logged: Vec<u32> = logged.iter().take(l).map(|&(_, i)| i).collect();
            let labels = world.sample_clicks(u, &logged, &mut rng);
            let start = history.len().saturating_sub(config.history_len);
            let request = Request {
                user: u,
                history: history[start..].to_vec(),
                history_labels: history_labels[start..].to_vec(),
                candidates,
                logged: logged.clone(),
                labels: labels.clone(),
                time: r as i64,
            };
            if r < n_train {
                for &i in &logged {
                    popularity[i as usize] += 1;
                }
                train.push(request);
            } else if r < n_train + n_valid {
                valid.push(request);
            } else {
                test.push(request);
            }
            history.extend(&logged);
            history_labels.extend(&labels);
            for &i in &logged {
                in_history[i as usize] = true;
            }
        }
        for &i in &history {
            in_history[i as usize] = false;
        }
    }
    Ok(Dataset {
        name: format!("sim-{}", config.name),
        layout: Layout::Simulator,
        config: request_config,
        items: (0..config.items)
            .map(|i| Item {
                raw_id: i as u64,
                title: format!("item {i}"),
                genres: vec![world.category[i]],
                year: None,
            })
            .collect(),
        genres: (0..config.categories)
            .map(|c| format!("category {c}"))
            .collect(),
        users: (0..config.users as u64).collect(),
        train,
        valid,
        test,
        popularity,
        retriever,
        retrieval: RetrievalQuality::default(),
        world: Some(world),
    })
}

/// `sim:<preset>` → the preset's name; anything else → `None`.
pub fn preset_name(source: &str) -> Option<&str> {
    source.strip_prefix("sim:")
}
