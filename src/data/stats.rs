//! Summary statistics of a dataset, per split.

use std::collections::HashSet;

use std::fmt::Write;

use serde::Serialize;

use super::{Dataset, Request, Split};

/// Statistics of one split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitStats {
    pub users: usize,
    /// Distinct items among the split's logged lists.
    pub items: usize,
    pub requests: usize,
    /// Share of positive labels among logged items.
    pub positive_rate: f64,
    pub requests_without_positives: usize,
    pub mean_history_len: f64,
}

/// Statistics of a whole dataset, as `goalrank data` prints them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataStats {
    pub name: String,
    pub layout: String,
    /// Items in the catalogue.
    pub catalogue_items: usize,
    pub train: SplitStats,
    pub valid: SplitStats,
    pub test: SplitStats,
    /// Positive rate over all splits.
    pub positive_rate: f64,
    pub retriever_recall_at_50: f64,
    pub popularity_recall_at_50: f64,
}

impl SplitStats {
    pub fn of(requests: &[Request]) -> Self {
        let users: HashSet<u32> = requests.iter().map(|r| r.user).collect();
        let items: HashSet<u32> = requests
            .iter()
            .flat_map(|r| r.logged.iter().copied())
            .collect();
        let labels = requests.iter().map(|r| r.labels.len()).sum::<usize>();
        let positives = requests.iter().map(Request::positives).sum::<usize>();
        let history = requests.iter().map(|r| r.history.len()).sum::<usize>();
        let n = requests.len().max(1) as f64;
        Self {
            users: users.len(),
            items: items.len(),
            requests: requests.len(),
            positive_rate: positives as f64 / labels.max(1) as f64,
            requests_without_positives: requests.iter().filter(|r| r.positives() == 0).count(),
            mean_history_len: history as f64 / n,
        }
    }
}

impl DataStats {
    pub fn of(dataset: &Dataset) -> Self {
        let all: Vec<&Request> = [Split::Train, Split::Valid, Split::Test]
            .iter()
            .flat_map(|&s| dataset.split(s))
            .collect();
        let labels = all.iter().map(|r| r.labels.len()).sum::<usize>();
        let positives = all.iter().map(|r| r.positives()).sum::<usize>();
        Self {
            name: dataset.name.clone(),
            layout: dataset.layout.to_string(),
            catalogue_items: dataset.items.len(),
            train: SplitStats::of(&dataset.train),
            valid: SplitStats::of(&dataset.valid),
            test: SplitStats::of(&dataset.test),
            positive_rate: positives as f64 / labels.max(1) as f64,
            retriever_recall_at_50: dataset.retrieval.retriever_recall_at_50,
            popularity_recall_at_50: dataset.retrieval.popularity_recall_at_50,
        }
    }
}

impl DataStats {
    /// `value` where the retrieval was measured (not on the simulator), else `null`.
    fn measured(&self, value: f64) -> serde_json::Value {
        if self.layout == "simulator" {
            serde_json::Value::Null
        } else {
            serde_json::json!(value)
        }
    }

    /// The statistics as `goalrank data --json` prints them.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "layout": self.layout,
            "catalogue_items": self.catalogue_items,
            "requests": {
                "train": self.train.requests,
                "valid": self.valid.requests,
                "test": self.test.requests,
            },
            "positive_rate": self.positive_rate,
            // Not measured on the simulator (no stage-1 retrieval from a rating log): null, as
            // the table leaves the line out.
            "retriever_recall_at_50": self.measured(self.retriever_recall_at_50),
            "popularity_recall_at_50": self.measured(self.popularity_recall_at_50),
            "splits": {"train": self.train, "valid": self.valid, "test": self.test},
        })
    }

    /// The statistics as `goalrank data` prints them: a table with a row per split.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} ({} layout), {} items in the catalogue\n",
            self.name, self.layout, self.catalogue_items
        );
        let _ = writeln!(
            out,
            "{:<6} {:>6} {:>6} {:>9} {:>9} {:>12} {:>13}",
            "split", "users", "items", "requests", "positive", "no positive", "mean history"
        );
        for (name, s) in [
            ("train", &self.train),
            ("valid", &self.valid),
            ("test", &self.test),
        ] {
            let _ = writeln!(
                out,
                "{:<6} {:>6} {:>6} {:>9} {:>9.4} {:>12} {:>13.1}",
                name,
                s.users,
                s.items,
                s.requests,
                s.positive_rate,
                s.requests_without_positives,
                s.mean_history_len
            );
        }
        let total = self.train.requests + self.valid.requests + self.test.requests;
        let _ = write!(
            out,
            "all    {total} requests, positive rate {:.4}",
            self.positive_rate
        );
        if self.layout != "simulator" {
            let _ = write!(
                out,
                "\nretriever recall@50 of test positives: {:.4} (train popularity: {:.4})",
                self.retriever_recall_at_50, self.popularity_recall_at_50
            );
        }
        out
    }
}
