//! Simple non-learned policies: the first rows of every results table.

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;

use super::Ranking;
use crate::data::{Dataset, Request};

/// A policy that needs no training beyond the data pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum SimplePolicy {
    /// Uniformly random scores.
    Random,
    /// Train-split interaction count of each candidate.
    Popularity,
    /// The stage-1 retriever's score.
    Retriever,
}

impl SimplePolicy {
    pub const ALL: [SimplePolicy; 3] = [Self::Random, Self::Popularity, Self::Retriever];

    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Popularity => "popularity",
            Self::Retriever => "retriever",
        }
    }

    /// Scores every candidate of `request` and keeps the best `k`.
    pub fn rank(
        self,
        dataset: &Dataset,
        request: &Request,
        k: usize,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Ranking {
        let scores = request
            .candidates
            .iter()
            .map(|&item| match self {
                Self::Random => rng.random::<f32>(),
                Self::Popularity => dataset.popularity[item as usize] as f32,
                Self::Retriever => dataset.retriever.score(request.user, item),
            })
            .collect();
        Ranking::from_scores(&request.candidates, scores, k)
    }
}
