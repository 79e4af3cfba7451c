//! The simulator: exact utility against hand arithmetic and Monte-Carlo, the exact optimum
//! against brute force, and requests shaped like the MovieLens ones.

use std::collections::HashSet;

use goalrank::data::simulator::{self, SimConfig, World};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

fn logit(p: f64) -> f32 {
    (p / (1.0 - p)).ln() as f32
}

/// One user (patience 0.8) and three items whose attractions are exactly 0.6, 0.5 (both
/// category 0) and 0.4 (category 1); redundancy 0.5, satisfaction 0.3.
fn hand_world() -> World {
    let config = SimConfig::new()
        .with_users(1)
        .with_items(3)
        .with_categories(2)
        .with_dim(1)
        .with_bias(0.0)
        .with_redundancy(0.5)
        .with_satisfaction(0.3)
        .with_list_len(2);
    World {
        config,
        user_vectors: vec![0.0],
        patience: vec![0.8],
        item_vectors: vec![0.0, 0.0, 0.0],
        category: vec![0, 0, 1],
        quality: vec![logit(0.6), logit(0.5), logit(0.4)],
    }
}

#[test]
fn utility_matches_hand_arithmetic_and_sorting_is_not_optimal() {
    let world = hand_world();
    // U(x, y) = a_x + β (1 − κ a_x) a_y', a_y' halved when y repeats x's category.
    let cases = [
        ([0, 1], 0.6 + 0.8 * 0.82 * 0.25),
        ([0, 2], 0.6 + 0.8 * 0.82 * 0.4),
        ([1, 0], 0.5 + 0.8 * 0.85 * 0.3),
        ([2, 0], 0.4 + 0.8 * 0.88 * 0.6),
    ];
    for (list, expected) in cases {
        let u = world.utility(0, &list);
        assert!((u - expected).abs() < 1e-6, "{list:?}: {u} vs {expected}");
    }
    // Sorting by attraction gives [0, 1] (0.764); the best list is [0, 2] (0.8624).
    let best = world.best_list(0, &[0, 1, 2], 2);
    assert_eq!(best.list, vec![0, 2]);
    assert!((best.utility - 0.8624).abs() < 1e-6);
    assert_eq!(world.best_by_enumeration(0, &[0, 1, 2], 2).list, vec![0, 2]);
}

#[test]
fn exact_utility_matches_monte_carlo() {
    let dataset = simulator::build(&SimConfig::preset("tiny").unwrap()).unwrap();
    let world = dataset.world.as_ref().unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let draws = 200_000;
    for request in dataset.test.iter().take(3) {
        let list = &request.candidates[..4];
        let exact = world.utility(request.user, list);
        let mut total = 0.0;
        let mut per_position = [0.0f64; 4];
        for _ in 0..draws {
            let clicks = world.sample_clicks(request.user, list, &mut rng);
            for (j, &c) in clicks.iter().enumerate() {
                per_position[j] += f64::from(c);
                total += f64::from(c);
            }
        }
        let mean = total / draws as f64;
        // Clicks per list are at most 4, so the standard error is below 4 / sqrt(draws).
        assert!(
            (mean - exact).abs() < 4.0 * 4.0 / (draws as f64).sqrt(),
            "exact {exact} vs Monte-Carlo {mean}"
        );
        let e = world.examination(request.user, list);
        let a = world.list_attractions(request.user, list);
        for j in 0..4 {
            let p = per_position[j] / draws as f64;
            assert!(
                (p - e[j] * a[j]).abs() < 0.01,
                "position {j}: {p} vs {}",
                e[j] * a[j]
            );
        }
    }
}

#[test]
fn branch_and_bound_equals_enumeration() {
    let dataset = simulator::build(&SimConfig::preset("tiny").unwrap()).unwrap();
    let world = dataset.world.as_ref().unwrap();
    let mut fewer = 0;
    for request in dataset.test.iter().take(12) {
        let fast = world.best_list(request.user, &request.candidates, 4);
        let brute = world.best_by_enumeration(request.user, &request.candidates, 4);
        assert_eq!(brute.nodes, 10 * 9 * 8 * 7);
        assert!(
            (fast.utility - brute.utility).abs() < 1e-12,
            "{} vs {}",
            fast.utility,
            brute.utility
        );
        assert!((world.utility(request.user, &fast.list) - fast.utility).abs() < 1e-12);
        fewer += usize::from(fast.nodes < brute.nodes);
        // The greedy list is never better than the optimum.
        let greedy = world.greedy_list(request.user, &request.candidates, 4);
        assert!(world.utility(request.user, &greedy) <= fast.utility + 1e-12);
    }
    assert!(fewer > 0, "the bound prunes");
}

#[test]
fn requests_are_shaped_like_movielens_and_seeded() {
    let config = SimConfig::preset("tiny").unwrap();
    let a = simulator::build(&config).unwrap();
    let b = simulator::build(&config).unwrap();
    assert_eq!(a.train, b.train, "same seed, same requests");
    let c = simulator::build(&config.clone().with_seed(7)).unwrap();
    assert_ne!(a.train, c.train);
    assert_eq!(a.name, "sim-tiny");
    assert!(!a.valid.is_empty() && !a.test.is_empty());
    for r in a.train.iter().chain(&a.valid).chain(&a.test) {
        assert_eq!(r.candidates.len(), 10);
        assert_eq!(r.candidates.iter().collect::<HashSet<_>>().len(), 10);
        assert_eq!(r.logged.len(), 4);
        assert_eq!(r.labels.len(), 4);
        assert!(r.logged.iter().all(|i| r.candidates.contains(i)));
        assert!(r.history.iter().all(|i| !r.candidates.contains(i)));
        assert_eq!(r.history.len(), r.history_labels.len());
        assert!(r.history.len() <= 50 && r.history.len() >= 5);
    }
    // Clicks stop the cascade: after the first position a label needs an examination.
    let positive = a.train.iter().map(|r| r.positives()).sum::<usize>();
    assert!(positive > 0);
}

#[test]
fn unknown_preset_is_an_input_error() {
    let err = SimConfig::preset("huge").unwrap_err();
    assert!(err.is_input());
    assert!(err.to_string().contains("sim:small"), "{err}");
}
