//! Invariants of the requests built from the committed fixture, and the cache.

use std::collections::{HashMap, HashSet};

use goalrank::data::{self, Dataset, Origin, Request, movielens};
use goalrank::eval::{Ranking, evaluate};

use crate::common::{copy_fixture, fixture, replace_line, small_config};

fn build(seed: u64) -> Dataset {
    let log = movielens::load(&fixture("ml-latest-tiny")).expect("load");
    small_config()
        .with_seed(seed)
        .build(&log, "tiny", false)
        .expect("build")
}

fn all(dataset: &Dataset) -> impl Iterator<Item = &Request> {
    dataset
        .train
        .iter()
        .chain(&dataset.valid)
        .chain(&dataset.test)
}

#[test]
fn candidates_are_distinct_contain_the_logged_list_and_skip_the_history() {
    let dataset = build(42);
    let config = &dataset.config;
    assert!(!dataset.test.is_empty() && !dataset.valid.is_empty());
    for r in all(&dataset) {
        assert_eq!(r.candidates.len(), config.candidates);
        let candidates: HashSet<u32> = r.candidates.iter().copied().collect();
        assert_eq!(candidates.len(), config.candidates, "distinct candidates");
        assert_eq!(r.logged.len(), config.list_len);
        assert_eq!(r.labels.len(), config.list_len);
        assert!(r.logged.iter().all(|i| candidates.contains(i)));
        assert!(r.history.len() <= config.history_len);
        assert_eq!(r.history.len(), r.history_labels.len());
        assert!(r.history.iter().all(|h| !candidates.contains(h)));
        // Labels follow the rating threshold through candidate_labels.
        let labels = r.candidate_labels();
        assert_eq!(
            labels.iter().map(|&y| y as usize).sum::<usize>(),
            r.positives()
        );
    }
}

#[test]
fn logged_lists_are_consecutive_windows_after_the_warmup() {
    let dataset = build(42);
    // User 1 of the fixture has 35 ratings: 5 warmup + 5 windows of 6, split 3 / 1 / 1.
    let user = dataset.users.binary_search(&1).expect("user 1") as u32;
    let count = |rs: &[Request]| rs.iter().filter(|r| r.user == user).count();
    assert_eq!(count(&dataset.train), 3);
    assert_eq!(count(&dataset.valid), 1);
    assert_eq!(count(&dataset.test), 1);
    let first = dataset
        .train
        .iter()
        .find(|r| r.user == user)
        .expect("window");
    assert_eq!(first.history.len(), 5, "the warmup is the first history");
    // User 7 has 15 ratings, one window: all train. User 8 has 8: no window at all.
    let u7 = dataset.users.binary_search(&7).expect("user 7") as u32;
    assert!(
        all(&dataset)
            .filter(|r| r.user == u7)
            .all(|r| dataset.train.contains(r))
    );
    assert_eq!(all(&dataset).filter(|r| r.user == u7).count(), 1);
    let u8 = dataset.users.binary_search(&8).expect("user 8") as u32;
    assert_eq!(all(&dataset).filter(|r| r.user == u8).count(), 0);
}

#[test]
fn splits_are_in_time_order_per_user() {
    let dataset = build(42);
    let mut last_train: HashMap<u32, i64> = HashMap::new();
    for r in &dataset.train {
        let t = last_train.entry(r.user).or_insert(i64::MIN);
        *t = (*t).max(r.time);
    }
    let mut last_valid: HashMap<u32, i64> = HashMap::new();
    for r in &dataset.valid {
        assert!(r.time > last_train[&r.user], "valid after train");
        let t = last_valid.entry(r.user).or_insert(i64::MIN);
        *t = (*t).max(r.time);
    }
    for r in &dataset.test {
        assert!(r.time > last_valid[&r.user], "test after valid");
        // Every history item comes from before the logged list, so no test item leaks into it.
        assert!(r.history.iter().all(|h| !r.logged.contains(h)));
    }
}

#[test]
fn same_seed_same_output_other_seed_other_order() {
    let a = build(42);
    let b = build(42);
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_eq!(a.retriever.item_factors, b.retriever.item_factors);
    let c = build(43);
    assert_eq!(
        a.test.iter().map(|r| &r.logged).collect::<Vec<_>>(),
        c.test.iter().map(|r| &r.logged).collect::<Vec<_>>(),
        "the logged lists do not depend on the seed"
    );
    assert_ne!(
        a.test.iter().map(|r| &r.candidates).collect::<Vec<_>>(),
        c.test.iter().map(|r| &r.candidates).collect::<Vec<_>>(),
        "the candidate order does"
    );
}

#[test]
fn an_oracle_scores_perfectly_and_its_reverse_does_not() {
    let dataset = build(42);
    let k = dataset.config.list_len;
    let oracle = |r: &Request| {
        let scores = r.candidate_labels().iter().map(|&y| f32::from(y)).collect();
        Ranking::from_scores(&r.candidates, scores, k)
    };
    let m = evaluate(&dataset.test, k, oracle).expect("distinct lists");
    assert!(m.requests > 0 && m.without_positives < m.requests);
    assert!((m.hit_ratio - 1.0).abs() < 1e-9);
    assert!((m.ndcg - 1.0).abs() < 1e-9);
    assert!((m.auc - 1.0).abs() < 1e-9);
    let reverse = |r: &Request| {
        let scores = r
            .candidate_labels()
            .iter()
            .map(|&y| -f32::from(y))
            .collect();
        Ranking::from_scores(&r.candidates, scores, k)
    };
    let m = evaluate(&dataset.test, k, reverse).expect("distinct lists");
    assert_eq!(m.hit_ratio, 0.0);
    assert_eq!(m.auc, 0.0);
}

#[test]
fn cache_hits_and_invalidates_on_config_and_file_changes() {
    let data = copy_fixture("ml-latest-tiny");
    let artifacts = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let (first, origin, path) =
        data::load_or_build(data.path(), &config, artifacts.path(), false).expect("build");
    assert_eq!(origin, Origin::Built);
    assert!(path.is_file());
    let (second, origin, _) =
        data::load_or_build(data.path(), &config, artifacts.path(), false).expect("load");
    assert_eq!(origin, Origin::Cached);
    assert_eq!(first.test, second.test);
    assert_eq!(first.retriever.item_factors, second.retriever.item_factors);

    let other = config.clone().with_seed(7);
    let (_, origin, _) =
        data::load_or_build(data.path(), &other, artifacts.path(), false).expect("config");
    assert_eq!(origin, Origin::Built, "a changed config rebuilds");

    replace_line(&data.path().join("ratings.csv"), 2, "5,177,3.0,1000015175");
    let (_, origin, _) =
        data::load_or_build(data.path(), &config, artifacts.path(), false).expect("file");
    assert_eq!(origin, Origin::Built, "a changed file rebuilds");
}
