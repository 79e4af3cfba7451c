//! What GoalRank's gain rests on: the oracle reward, the reward model's list-ranking
//! diagnostics, the two reward-model shapes, the policy-gradient objective and the simulator's
//! exploratory logging.

use burn::tensor::{Device, Int, Tensor, TensorData};
use goalrank::data::simulator::{self, SimConfig};
use goalrank::data::{Batch, Split};
use goalrank::eval::metrics::spearman;
use goalrank::eval::{group_diagnostics, logged_beats_random, pair_measures, reward_diagnostics};
use goalrank::model::{RewardKind, RewardModelConfig};
use goalrank::train::{GoalRankTrainer, Objective, Reward, RewardTrainer, imitation_loss};

use crate::models::{dataset, tiny_goalrank, tiny_reward};

fn sim_tiny() -> goalrank::data::Dataset {
    simulator::build(&SimConfig::preset("tiny").expect("preset")).expect("sim:tiny")
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32")
}

#[test]
fn the_oracle_reward_is_the_exact_utility_and_training_on_it_raises_it() {
    let dataset = sim_tiny();
    let device = Device::flex();
    for objective in [Objective::Reference, Objective::PolicyGradient] {
        let config = tiny_goalrank()
            .with_objective(objective)
            .with_batch_size(dataset.train.len())
            .with_w_sup(0.0)
            .with_include_logged(false)
            .with_learning_rate(3e-3);
        let oracle = Reward::oracle(&dataset).expect("simulated data has an oracle");
        let mut trainer = GoalRankTrainer::new(&dataset, oracle, config, &device);
        let mean = |t: &mut GoalRankTrainer| -> f32 {
            (0..3)
                .map(|_| t.step().expect("step").reward_mean.expect("group"))
                .sum::<f32>()
                / 3.0
        };
        let start = mean(&mut trainer);
        // Rewards are expected clicks: between 0 and L.
        assert!(
            start > 0.0 && start < dataset.config.list_len as f32,
            "{start}"
        );
        for _ in 0..25 {
            assert!(trainer.step().expect("step").loss.is_finite());
        }
        let end = mean(&mut trainer);
        assert!(end > start, "{objective:?}: exact utility {start} -> {end}");
    }
}

#[test]
fn the_oracle_needs_simulated_data() {
    let err = Reward::oracle(&dataset()).expect_err("logged data has no exact utility");
    assert!(err.to_string().contains("--reward oracle"), "{err}");
}

#[test]
fn both_reward_model_shapes_train_and_score_lists_as_documented() {
    let dataset = sim_tiny();
    let device = Device::flex();
    let l = dataset.config.list_len;
    let requests: Vec<_> = dataset.train.iter().take(4).collect();
    let batch = Batch::new(&dataset, &requests, &device);
    // Each request's logged list and the same items in reverse order.
    let mut positions = Vec::new();
    for r in &requests {
        let p = r.logged_positions();
        positions.extend(p.iter().map(|&x| x as i64));
        positions.extend(p.iter().rev().map(|&x| x as i64));
    }
    let lists = Tensor::<3, Int>::from_data(TensorData::new(positions, [4, 2, l]), &device);
    for (kind, redundancy) in [
        (RewardKind::List, true),
        (RewardKind::List, false),
        (RewardKind::CandidateSet, false),
    ] {
        let config = tiny_reward().with_kind(kind).with_redundancy(redundancy);
        let mut trainer = RewardTrainer::new(&dataset, Split::Train, &config, &device);
        for _ in 0..5 {
            assert!(trainer.step().loss.is_finite());
        }
        let model = trainer.model();
        assert_eq!(model.kind(), Some(kind));
        let (p, r) = model.score(&model.context(&batch), lists.clone());
        let (p, r) = (to_vec(p), to_vec(r));
        assert!(p.iter().all(|&x| x > 0.0 && x < 1.0));
        for i in 0..4 {
            let probs = &p[2 * i * l..(2 * i + 1) * l];
            let reward = r[2 * i];
            let expected: f32 = match kind {
                // p carries the position effect: R = Σ p.
                RewardKind::List => probs.iter().sum(),
                // p carries none: R = Σ p / log2(i + 1).
                RewardKind::CandidateSet => probs
                    .iter()
                    .enumerate()
                    .map(|(j, x)| x / ((j + 2) as f32).log2())
                    .sum(),
            };
            assert!(
                (reward - expected).abs() < 1e-4,
                "{kind:?}: {reward} vs {expected}"
            );
            if kind == RewardKind::CandidateSet {
                // Each candidate has one probability: reversing the list reverses p.
                let reversed = &p[(2 * i + 1) * l..(2 * i + 2) * l];
                for j in 0..l {
                    assert!((probs[j] - reversed[l - 1 - j]).abs() < 1e-5);
                }
            }
        }
    }
}

#[test]
fn the_imitation_term_is_the_logged_lists_plackett_luce_likelihood() {
    let device = Device::flex();
    // Candidates with weights 1, 2, 3; logged list (2, 0): 3/6 at the first step, then 1/3
    // among the two candidates left.
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![0.0f32, 2f32.ln(), 3f32.ln()], [1, 3]),
        &device,
    );
    let logged = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 0], [1, 2]), &device);
    let loss = imitation_loss(logits, logged).into_scalar::<f32>();
    let expected = -((0.5f32).ln() + (1.0f32 / 3.0).ln()) / 2.0;
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
}

#[test]
fn a_reward_model_saved_before_the_redundancy_term_loads_without_it() {
    let config = tiny_reward().model(&sim_tiny());
    assert_eq!(
        config.redundancy,
        Some(true),
        "new list-aware models have the term"
    );
    let mut json = serde_json::to_value(&config).expect("json");
    json.as_object_mut().expect("object").remove("redundancy");
    let old: RewardModelConfig = serde_json::from_value(json).expect("an old run's config");
    assert_eq!(old.redundancy, None);
    // …and is built without it: its record has no such parameters.
    let device = Device::flex();
    let bytes = |c: &RewardModelConfig| {
        goalrank::model::module_bytes(&c.init(&device))
            .expect("bytes")
            .len()
    };
    assert!(bytes(&old) < bytes(&config));
}

#[test]
fn reward_diagnostics_compare_against_the_exact_utility() {
    let dataset = sim_tiny();
    let device = Device::flex();
    let model = RewardTrainer::new(&dataset, Split::Train, &tiny_reward(), &device).model();
    let valid = dataset.split(Split::Valid);
    let d = reward_diagnostics(&model, &dataset, valid, 16, 0, &device).expect("diagnostics");
    assert_eq!(d.requests, valid.len());
    assert_eq!(d.position_auc.len(), dataset.config.list_len);
    assert!((0.0..=1.0).contains(&d.logged_beats_random));
    let exact = d.exact.expect("simulated data has exact diagnostics");
    assert!((-1.0..=1.0).contains(&exact.spearman));
    // The attraction-sorted list beats random lists in exact utility on this world.
    assert!(exact.utility_gap > 0.0, "{exact:?}");
    assert!((0.0..=1.0).contains(&exact.pair_accuracy), "{exact:?}");
    assert!((0.0..=1.0).contains(&exact.gap_exceeds_error), "{exact:?}");
    assert!(d.summary().contains("Spearman") && d.summary().contains("pairs ordered"));
    // The epoch selection's share, taken without the exact lists, is the same number.
    let share = logged_beats_random(&model, &dataset, valid, 16, 0, &device).expect("share");
    assert_eq!(share, d.logged_beats_random);
    // Logged data has no exact part.
    let logged = crate::models::dataset();
    let model = RewardTrainer::new(&logged, Split::Train, &tiny_reward(), &device).model();
    let d = reward_diagnostics(&model, &logged, &logged.valid, 16, 0, &device).expect("logged");
    assert!(d.exact.is_none());
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
}

#[test]
fn group_diagnostics_measure_the_reward_model_on_sampled_groups() {
    let dataset = sim_tiny();
    let device = Device::flex();
    let reward = RewardTrainer::new(&dataset, Split::Train, &tiny_reward(), &device).model();
    let generator = GoalRankTrainer::new(
        &dataset,
        Reward::from(reward.clone()),
        tiny_goalrank(),
        &device,
    )
    .model();
    let valid = dataset.split(Split::Valid);
    let measure = |seed| {
        group_diagnostics(
            &generator, &reward, &dataset, valid, 8, 1.0, 16, seed, &device,
        )
        .expect("diagnostics")
        .expect("simulated data has them")
    };
    // Burn draws an untouched parameter on first use, from the same random stream that samples
    // the groups: a first call gives every parameter of these untrained models its value.
    measure(3);
    let g = measure(3);
    assert_eq!(g.group_size, 8);
    assert!((-1.0..=1.0).contains(&g.spearman), "{g:?}");
    assert!((0.0..=1.0).contains(&g.pair_accuracy), "{g:?}");
    assert!((0.0..=1.0).contains(&g.gap_exceeds_error), "{g:?}");
    // An untrained generator samples different lists, whose exact utilities differ.
    assert!(g.utility_spread > 0.0 && g.centred_error > 0.0, "{g:?}");
    // The same seed draws the same groups. Tests run in parallel and share Burn's one random
    // stream, so another test's draw between the seeding and the sampling changes the groups,
    // often while a training test runs beside this one: two of up to 200 repeats (a few ms
    // each) must agree. A sampler that ignored the seed would never repeat itself.
    let mut seen = vec![format!("{g:?}")];
    let repeated = (0..200).any(|_| {
        let again = format!("{:?}", measure(3));
        let hit = seen.contains(&again);
        seen.push(again);
        hit
    });
    assert!(
        repeated,
        "seed 3 never drew the same groups twice: {seen:#?}"
    );
    // Logged data has no exact utility.
    let logged = crate::models::dataset();
    let reward = RewardTrainer::new(&logged, Split::Train, &tiny_reward(), &device).model();
    let generator = GoalRankTrainer::new(
        &logged,
        Reward::from(reward.clone()),
        tiny_goalrank(),
        &device,
    )
    .model();
    let none = group_diagnostics(
        &generator,
        &reward,
        &logged,
        &logged.valid,
        8,
        1.0,
        16,
        0,
        &device,
    );
    assert!(none.expect("no error").is_none());
}

#[test]
fn pair_measures_count_right_orders_and_gaps_beyond_the_error() {
    // R = U + 10: offsets do not count, every pair is right, no error.
    let (right, error, wide) = pair_measures(&[11.0, 12.0, 13.0], &[1.0, 2.0, 3.0]);
    assert_eq!((right, error, wide), (1.0, 0.0, 1.0));
    // R reversed: no pair right; centred error (2 + 0 + 2) / 3, and no gap exceeds 2 · 4/3.
    let (right, error, wide) = pair_measures(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]);
    assert_eq!((right, wide), (0.0, 0.0));
    assert!((error - 4.0 / 3.0).abs() < 1e-12);
    // The two close lists swapped: error 2/3; the two wide pairs are right and exceed 4/3.
    let (right, error, wide) = pair_measures(&[1.0, 0.0, 10.0], &[0.0, 1.0, 10.0]);
    assert!((right - 2.0 / 3.0).abs() < 1e-12);
    assert!((error - 2.0 / 3.0).abs() < 1e-12);
    assert!((wide - 2.0 / 3.0).abs() < 1e-12);
    // Pairs tied in U are left out.
    let (right, _, _) = pair_measures(&[1.0, 2.0, 0.0], &[1.0, 1.0, 0.0]);
    assert_eq!(right, 1.0);
}

#[test]
fn exploratory_logging_logs_random_lists_and_names_the_world() {
    let plain = SimConfig::preset("tiny").expect("tiny");
    let explore = SimConfig::preset("tiny,epsilon=1").expect("tiny with ε");
    assert_eq!(explore.logging_epsilon, 1.0);
    assert_eq!(explore.name, "tiny-eps1");
    let (plain, explore) = (
        simulator::build(&plain).expect("plain"),
        simulator::build(&explore).expect("explore"),
    );
    assert_eq!(explore.name, "sim-tiny-eps1");
    // The logging policy sorts by attraction (with noise); random lists do not: the logged
    // items' mean attraction drops.
    let mean_attraction = |d: &goalrank::data::Dataset| {
        let world = d.world.as_ref().expect("world");
        let (mut total, mut n) = (0.0, 0.0);
        for r in &d.train {
            for &i in &r.logged {
                total += world.attraction(r.user, i);
                n += 1.0;
            }
        }
        total / n
    };
    assert!(mean_attraction(&explore) < mean_attraction(&plain) - 0.02);
    for bad in [
        "tiny,epsilon=2",
        "tiny,eps=0.5",
        "tiny,temperature=0",
        "tiny,epsilon",
    ] {
        let err = SimConfig::preset(bad).expect_err(bad);
        assert!(err.to_string().contains("simulator option"), "{bad}: {err}");
    }
}

#[test]
fn a_request_whose_logged_item_is_not_a_candidate_is_refused() {
    let mut request = dataset().train[0].clone();
    assert!(request.check("train 0").is_ok());
    request.logged[0] = u32::MAX;
    let err = request
        .check("train 0")
        .expect_err("logged item outside the candidates");
    assert!(
        err.to_string().contains("not among the candidates"),
        "{err}"
    );
    let mut request = dataset().train[0].clone();
    request.labels.pop();
    assert!(request.check("train 0").is_err());
}

#[test]
fn a_reward_model_run_on_the_simulator_logs_utility_but_is_selected_on_labels() {
    let dataset = sim_tiny();
    let device = Device::flex();
    let reward = tiny_reward().model(&dataset).init(&device);
    let run = tempfile::tempdir().expect("tempdir");
    let mut options = goalrank::run::FitOptions::new(run.path().join("run"), device.clone());
    options.steps = 6;
    options.eval_every = 2;
    options.progress = false;
    let (_, state) =
        goalrank::run::fit_goalrank(&dataset, reward, &tiny_goalrank(), &options).expect("fit");
    let log = std::fs::read_to_string(run.path().join("run/metrics.jsonl")).expect("log");
    let valid: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|r| r["kind"] == "valid")
        .collect();
    assert_eq!(valid.len(), 3);
    let mut best = (f64::NEG_INFINITY, 0);
    for record in &valid {
        let utility = record["utility"].as_f64().expect("exact utility logged");
        let r = record["reward"].as_f64().expect("mean R logged");
        assert!(utility > 0.0 && utility.is_finite(), "{record}");
        assert!(r >= 0.0 && r.is_finite(), "{record}");
        let ndcg = record["metrics"]["ndcg"].as_f64().expect("N@L");
        if ndcg > best.0 {
            best = (ndcg, record["step"].as_u64().expect("step") as usize);
        }
    }
    assert_eq!(
        state.best_step, best.1,
        "the run keeps the step of best validation N@L, not of best utility"
    );
}

#[test]
fn a_reward_model_selected_on_its_objective_keeps_the_epoch_of_lowest_objective() {
    let config = tiny_reward()
        .with_epochs(3)
        .with_select(goalrank::train::RewardSelection::Objective);
    let (state, valid) = fit_tiny_reward(&config);
    let mut checks = Vec::new();
    for record in &valid {
        let check = &record["check"];
        let term = |k: &str| check[k].as_f64().unwrap_or_else(|| panic!("{k}: {check}"));
        let objective = term("objective");
        let by_hand = term("log_loss")
            + f64::from(config.listwise) * term("listwise")
            + f64::from(config.imitation) * term("imitation");
        assert!((objective - by_hand).abs() < 1e-9, "{check}");
        checks.push((objective, record["step"].as_u64().expect("step") as usize));
    }
    assert_eq!(checks.len(), 3);
    let best = checks
        .iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("epochs");
    assert_eq!(state.best_step, best.1);
    assert_eq!(state.best, Some(best.0));
}

#[test]
fn a_reward_model_is_kept_by_default_at_the_epoch_where_logged_lists_beat_random_ones_most() {
    let config = tiny_reward().with_epochs(3);
    assert_eq!(
        config.select,
        goalrank::train::RewardSelection::LoggedOverRandom
    );
    let (state, valid) = fit_tiny_reward(&config);
    let mut checks = Vec::new();
    for record in &valid {
        let beats = record["check"]["logged_beats_random"]
            .as_f64()
            .unwrap_or_else(|| panic!("logged_beats_random: {record}"));
        assert!((0.0..=1.0).contains(&beats), "{record}");
        checks.push((beats, record["step"].as_u64().expect("step") as usize));
    }
    assert_eq!(checks.len(), 3);
    // The first epoch of the highest share is kept (the lowest 1 − share, ties to the earlier).
    let mut best = checks[0];
    for &c in &checks[1..] {
        if c.0 > best.0 {
            best = c;
        }
    }
    assert_eq!(state.best_step, best.1);
    let kept = state.best.expect("a kept value");
    assert!(
        (kept - (1.0 - best.0)).abs() < 1e-12,
        "{kept} vs {}",
        best.0
    );
}

/// Trains a reward model on sim:tiny; returns its run state and the `valid` lines of its log.
fn fit_tiny_reward(
    config: &goalrank::train::RewardTrainingConfig,
) -> (goalrank::run::RunState, Vec<serde_json::Value>) {
    let dataset = sim_tiny();
    let run = tempfile::tempdir().expect("tempdir");
    let mut options = goalrank::run::FitOptions::new(run.path().join("run"), Device::flex());
    options.progress = false;
    let (_, state) =
        goalrank::run::fit_reward(&dataset, Split::Train, Split::Valid, config, &options)
            .expect("fit");
    let log = std::fs::read_to_string(run.path().join("run/metrics.jsonl")).expect("log");
    let valid = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|r| r["kind"] == "valid")
        .collect();
    (state, valid)
}
