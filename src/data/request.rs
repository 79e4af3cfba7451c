//! The re-ranking request and the dataset that holds them.

use serde::{Deserialize, Serialize};

use super::{Layout, RequestConfig, Retriever, World};

/// One item of the catalogue, with the features models may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The id in the source files.
    pub raw_id: u64,
    pub title: String,
    /// Indices into [`Dataset::genres`].
    pub genres: Vec<u16>,
    pub year: Option<u16>,
}

/// A user, N candidates, and the list that was logged for them.
///
/// Items are dense indices into [`Dataset::items`]; users into [`Dataset::users`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub user: u32,
    /// Up to `history_len` earlier items, oldest first.
    pub history: Vec<u32>,
    /// Feedback on each history item (1 = positive).
    pub history_labels: Vec<u8>,
    /// The N candidates, in a seeded random order.
    pub candidates: Vec<u32>,
    /// The logged list of L items, in the order they were logged.
    pub logged: Vec<u32>,
    /// Feedback on each logged item (1 = positive).
    pub labels: Vec<u8>,
    /// Timestamp of the first logged item.
    pub time: i64,
}

impl Request {
    /// Label of every candidate: its logged label, 0 for candidates not in the logged list.
    pub fn candidate_labels(&self) -> Vec<u8> {
        self.candidates
            .iter()
            .map(|c| {
                self.logged
                    .iter()
                    .position(|l| l == c)
                    .map_or(0, |p| self.labels[p])
            })
            .collect()
    }

    /// Where each logged item sits among the candidates. Every request that enters the crate
    /// (built, read from the cache or parsed by `rank`) has passed [`Request::check`], so every
    /// logged item is a candidate.
    pub fn logged_positions(&self) -> Vec<usize> {
        self.logged
            .iter()
            .map(|item| {
                self.candidates
                    .iter()
                    .position(|c| c == item)
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    /// The invariants the models rely on: one label per logged item, distinct candidates,
    /// and every logged item among the candidates. The error says which request and item.
    pub fn check(&self, what: &str) -> crate::Result<()> {
        let fail = |message: String| Err(crate::Error::Invalid(format!("{what}: {message}")));
        if self.labels.len() != self.logged.len() {
            return fail(format!(
                "{} labels for {} logged items",
                self.labels.len(),
                self.logged.len()
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.candidates.len());
        if let Some(c) = self.candidates.iter().find(|&&c| !seen.insert(c)) {
            return fail(format!("candidate item {c} appears twice"));
        }
        if let Some(item) = self.logged.iter().find(|&&i| !seen.contains(&i)) {
            return fail(format!("logged item {item} is not among the candidates"));
        }
        Ok(())
    }

    /// Number of positive logged items.
    pub fn positives(&self) -> usize {
        self.labels.iter().filter(|&&y| y > 0).count()
    }
}

/// A split of the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// The name the command line uses (`--split train`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// How good the stage-1 retriever is on test requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalQuality {
    /// Mean recall@50 of test logged positives, ranking all known items not rated before.
    pub retriever_recall_at_50: f64,
    /// The same for train-split popularity.
    pub popularity_recall_at_50: f64,
    /// Test requests with at least one positive (the denominator).
    pub requests: usize,
}

/// Requests built from one rating log, with everything needed to score them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    /// Folder name of the source.
    pub name: String,
    pub layout: Layout,
    pub config: RequestConfig,
    pub items: Vec<Item>,
    pub genres: Vec<String>,
    /// Raw user ids, indexed by dense user index.
    pub users: Vec<u64>,
    pub train: Vec<Request>,
    pub valid: Vec<Request>,
    pub test: Vec<Request>,
    /// Train-split interaction count per item.
    pub popularity: Vec<u32>,
    pub retriever: Retriever,
    pub retrieval: RetrievalQuality,
    /// The simulated world behind the requests (`None` for logged data): exact utilities and
    /// optima.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<World>,
}

impl Dataset {
    /// Checks every request ([`Request::check`]); the error names the split and the request.
    pub fn check(&self) -> crate::Result<()> {
        let (items, users) = (self.items.len(), self.users.len());
        for split in [Split::Train, Split::Valid, Split::Test] {
            for (i, r) in self.split(split).iter().enumerate() {
                let what = format!("{}: {split:?} request {i}", self.name);
                r.check(&what)?;
                // Indices must point into the catalogue and the user list (a cache edited by
                // hand would otherwise fail deep inside batching).
                let bad_item = r
                    .history
                    .iter()
                    .chain(&r.candidates)
                    .find(|&&item| item as usize >= items);
                if let Some(item) = bad_item {
                    return Err(crate::Error::Invalid(format!(
                        "{what}: item index {item} is outside the catalogue of {items}"
                    )));
                }
                if r.user as usize >= users {
                    return Err(crate::Error::Invalid(format!(
                        "{what}: user index {} is outside the {users} users",
                        r.user
                    )));
                }
            }
        }
        Ok(())
    }

    /// The requests of one split.
    pub fn split(&self, split: Split) -> &[Request] {
        match split {
            Split::Train => &self.train,
            Split::Valid => &self.valid,
            Split::Test => &self.test,
        }
    }

    /// The requests of one split; an error naming the split and the data set when it is empty
    /// (a run on no requests would report made-up metrics).
    pub fn require(&self, split: Split) -> crate::Result<&[Request]> {
        let requests = self.split(split);
        if requests.is_empty() {
            return Err(crate::Error::Invalid(format!(
                "{}: the {} split has no requests",
                self.name,
                split.name()
            )));
        }
        Ok(requests)
    }
}
