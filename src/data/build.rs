//! Rating log → re-ranking requests.
//!
//! Per user, ratings sorted by (timestamp, movie id); after the first `warmup` ratings the rest is
//! cut into consecutive windows of `list_len`; each window is a logged list whose history is the
//! up-to-`history_len` ratings before it. The last windows of each user go to test and
//! validation; a retriever trained on the train part supplies the other candidates.

use std::collections::HashSet;
use std::path::Path;

use burn::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use super::movielens::{Rating, RatingLog};
use super::{Dataset, Item, Request, RetrievalQuality, RetrieverConfig};
use crate::Error;

/// How requests are cut from a rating log.
#[derive(Config, Debug)]
pub struct RequestConfig {
    /// Candidates per request (N): the logged list plus retrieved items.
    #[config(default = 50)]
    pub candidates: usize,
    /// Length of a logged list (L).
    #[config(default = 6)]
    pub list_len: usize,
    /// Most history items kept per request.
    #[config(default = 50)]
    pub history_len: usize,
    /// Ratings of each user before the first window.
    #[config(default = 5)]
    pub warmup: usize,
    /// Fraction of each user's windows (rounded up) for validation.
    #[config(default = 0.1)]
    pub valid_fraction: f64,
    /// Fraction of each user's windows (rounded up) for test: the last ones.
    #[config(default = 0.1)]
    pub test_fraction: f64,
    /// Ratings at or above this are positive.
    #[config(default = 4.0)]
    pub positive_rating: f32,
    /// Seed of the retriever and of the candidate shuffle.
    #[config(default = 42)]
    pub seed: u64,
    #[config(default = "RetrieverConfig::new()")]
    pub retriever: RetrieverConfig,
}

impl RequestConfig {
    fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        let fail = |msg: &str| Err(Error::Invalid(msg.to_string()));
        check::at_least("--list-len", self.list_len, 1)?;
        check::at_least("--candidates", self.candidates, self.list_len + 1)?;
        let ok = |f: f64| (0.0..1.0).contains(&f);
        if !ok(self.valid_fraction) || !ok(self.test_fraction) {
            return fail("valid_fraction and test_fraction must be in [0, 1)");
        }
        if self.valid_fraction + self.test_fraction >= 1.0 {
            return fail("valid_fraction + test_fraction must be below 1");
        }
        Ok(())
    }

    /// Number of (train, valid, test) windows for a user with `windows` windows.
    pub fn split_counts(&self, windows: usize) -> (usize, usize, usize) {
        let test = (windows as f64 * self.test_fraction).ceil() as usize;
        let valid = (windows as f64 * self.valid_fraction).ceil() as usize;
        if test + valid >= windows {
            (windows, 0, 0)
        } else {
            (windows - valid - test, valid, test)
        }
    }

    /// Builds the requests of a rating log.
    pub fn build(&self, log: &RatingLog, name: &str, progress: bool) -> crate::Result<Dataset> {
        self.validate()?;
        let l = self.list_len;
        if progress && log.repeated_ratings > 0 {
            crate::say!(
                "{}: {} repeated (user, movie) ratings; requests keep the earliest of each",
                log.files[0].display(),
                log.repeated_ratings
            );
        }

        // Dense ids: movies in catalogue order (sorted by id), users sorted by id.
        let items: Vec<Item> = log
            .movies
            .iter()
            .map(|m| Item {
                raw_id: m.id,
                title: m.title.clone(),
                genres: m.genres.clone(),
                year: m.year,
            })
            .collect();
        let item_index = |raw: u64| log.movies.binary_search_by_key(&raw, |m| m.id).ok();
        let mut users: Vec<u64> = log.ratings.iter().map(|r| r.user).collect();
        users.sort_unstable();
        users.dedup();

        // Each user's ratings in (timestamp, movie id) order, first rating of a movie kept.
        let mut per_user: Vec<Vec<&Rating>> = vec![Vec::new(); users.len()];
        for r in &log.ratings {
            if let Ok(u) = users.binary_search(&r.user) {
                per_user[u].push(r);
            }
        }
        let mut sequences: Vec<Vec<(u32, u8, i64)>> = Vec::with_capacity(users.len());
        for ratings in &mut per_user {
            ratings.sort_by_key(|r| (r.timestamp, r.movie));
            let mut seen = HashSet::new();
            let seq = ratings
                .iter()
                .filter(|r| seen.insert(r.movie))
                .filter_map(|r| {
                    let item = item_index(r.movie)? as u32;
                    Some((
                        item,
                        u8::from(r.rating >= self.positive_rating),
                        r.timestamp,
                    ))
                })
                .collect();
            sequences.push(seq);
        }

        // Train interactions: everything before a user's first held-out window.
        let mut interactions = Vec::new();
        let mut popularity = vec![0u32; items.len()];
        for (u, seq) in sequences.iter().enumerate() {
            let windows = seq.len().saturating_sub(self.warmup) / l;
            let (train, valid, test) = self.split_counts(windows);
            let end = if valid + test == 0 {
                seq.len()
            } else {
                self.warmup + train * l
            };
            for &(item, _, _) in &seq[..end] {
                interactions.push((u as u32, item));
                popularity[item as usize] += 1;
            }
        }
        let retriever =
            self.retriever
                .train(users.len(), items.len(), &interactions, self.seed, progress)?;

        let bar = if progress {
            ProgressBar::new(users.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("requests  {bar:30} user {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ 0x5eed_cafe);
        let popular = popularity_ranking(&popularity);
        let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
        let mut quality = QualityAccumulator::default();
        for (u, seq) in sequences.iter().enumerate() {
            bar.inc(1);
            let windows = seq.len().saturating_sub(self.warmup) / l;
            if windows == 0 {
                continue;
            }
            let (n_train, n_valid, _) = self.split_counts(windows);
            let ranking = retriever.ranking(u as u32);
            let mut rated: HashSet<u32> = seq[..self.warmup].iter().map(|r| r.0).collect();
            for w in 0..windows {
                let start = self.warmup + w * l;
                let window = &seq[start..start + l];
                let user = (u as u32, users[u]);
                let request = self.request(user, seq, start, window, &ranking, &rated, &mut rng)?;
                if w < n_train {
                    train.push(request);
                } else if w < n_train + n_valid {
                    valid.push(request);
                } else {
                    quality.add(&request, &ranking, &popular, &rated);
                    test.push(request);
                }
                rated.extend(window.iter().map(|r| r.0));
            }
        }
        bar.finish_and_clear();

        Ok(Dataset {
            name: name.to_string(),
            layout: log.layout,
            config: self.clone(),
            items,
            genres: log.genres.clone(),
            users,
            train,
            valid,
            test,
            popularity,
            retriever,
            retrieval: quality.finish(),
            world: None,
        })
    }

    /// One request: the window as logged list, retrieved candidates, shuffled. `user` is the
    /// dense index and the id in the data files.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        user: (u32, u64),
        seq: &[(u32, u8, i64)],
        start: usize,
        window: &[(u32, u8, i64)],
        ranking: &[u32],
        rated: &HashSet<u32>,
        rng: &mut Xoshiro256PlusPlus,
    ) -> crate::Result<Request> {
        let history = &seq[start.saturating_sub(self.history_len)..start];
        let logged: Vec<u32> = window.iter().map(|r| r.0).collect();
        let mut candidates = logged.clone();
        candidates.extend(
            ranking
                .iter()
                .filter(|i| !rated.contains(i) && !logged.contains(i))
                .take(self.candidates - self.list_len),
        );
        if candidates.len() < self.candidates {
            return Err(Error::Invalid(format!(
                "user {}: only {} items are left to retrieve, {} needed; lower `candidates`",
                user.1,
                candidates.len() - logged.len(),
                self.candidates - self.list_len
            )));
        }
        candidates.shuffle(rng);
        Ok(Request {
            user: user.0,
            history: history.iter().map(|r| r.0).collect(),
            history_labels: history.iter().map(|r| r.1).collect(),
            candidates,
            logged,
            labels: window.iter().map(|r| r.1).collect(),
            time: window[0].2,
        })
    }
}

/// Items by train popularity, most popular first (ties by index), only those seen in train.
fn popularity_ranking(popularity: &[u32]) -> Vec<u32> {
    let mut items: Vec<u32> = (0..popularity.len() as u32)
        .filter(|&i| popularity[i as usize] > 0)
        .collect();
    items.sort_by(|&a, &b| {
        popularity[b as usize]
            .cmp(&popularity[a as usize])
            .then(a.cmp(&b))
    });
    items
}

/// Recall@50 of test positives for the retriever and for popularity.
#[derive(Default)]
struct QualityAccumulator {
    retriever: f64,
    popularity: f64,
    requests: usize,
}

impl QualityAccumulator {
    const K: usize = 50;

    fn add(&mut self, request: &Request, ranking: &[u32], popular: &[u32], rated: &HashSet<u32>) {
        let positives: Vec<u32> = request
            .logged
            .iter()
            .zip(&request.labels)
            .filter(|(_, y)| **y > 0)
            .map(|(i, _)| *i)
            .collect();
        if positives.is_empty() {
            return;
        }
        let recall = |ranked: &[u32]| {
            let top: Vec<u32> = ranked
                .iter()
                .filter(|i| !rated.contains(i))
                .take(Self::K)
                .copied()
                .collect();
            positives.iter().filter(|p| top.contains(p)).count() as f64 / positives.len() as f64
        };
        self.retriever += recall(ranking);
        self.popularity += recall(popular);
        self.requests += 1;
    }

    fn finish(self) -> RetrievalQuality {
        let n = self.requests.max(1) as f64;
        RetrievalQuality {
            retriever_recall_at_50: self.retriever / n,
            popularity_recall_at_50: self.popularity / n,
            requests: self.requests,
        }
    }
}

/// Loads the MovieLens folder `dir` and builds its requests.
pub fn build_from_dir(
    dir: &Path,
    config: &RequestConfig,
    progress: bool,
) -> crate::Result<Dataset> {
    let log = super::movielens::load(dir)?;
    config.build(&log, &dataset_name(dir), progress)
}

/// A short name for a data folder: its last path component.
pub fn dataset_name(dir: &Path) -> String {
    dir.components()
        .next_back()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|n| n != "." && !n.is_empty())
        .unwrap_or_else(|| "data".to_string())
}
