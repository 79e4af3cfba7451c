//! The reward model and the generator on the fixture, on the CPU.

use std::collections::HashSet;

use burn::tensor::{Device, Int, Tensor, TensorData};
use goalrank::data::{Batch, Dataset, Request, movielens};
use goalrank::eval::{
    ListSource, Proposer, best_of_rankings, generator_ladder, generator_rankings, mean_reward,
};
use goalrank::model::{Decode, Generator, RewardModel};
use goalrank::model::{load_module, save_module};
use goalrank::train::{GoalRankConfig, RewardTrainingConfig};

use crate::common::{fixture, small_config};

pub fn dataset() -> Dataset {
    let log = movielens::load(&fixture("ml-latest-tiny")).expect("load");
    small_config().build(&log, "tiny", false).expect("build")
}

pub fn tiny_goalrank() -> GoalRankConfig {
    GoalRankConfig::new()
        .with_d_model(16)
        .with_layers(1)
        .with_heads(2)
        .with_group_size(8)
        .with_batch_size(8)
}

pub fn tiny_reward() -> RewardTrainingConfig {
    RewardTrainingConfig::new()
        .with_d_model(16)
        .with_layers(1)
        .with_heads(2)
        .with_batch_size(16)
}

fn generator(dataset: &Dataset, device: &Device) -> Generator {
    device.seed(3);
    tiny_goalrank().model(dataset).init(device)
}

fn batch(dataset: &Dataset, device: &Device) -> Batch {
    let requests: Vec<&Request> = dataset.train.iter().take(6).collect();
    Batch::new(dataset, &requests, device)
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32")
}

fn to_ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().try_into_vec_as::<i64>().expect("i64")
}

#[test]
fn decoding_never_repeats_and_stays_in_range() {
    let device = Device::flex();
    let dataset = dataset();
    let model = generator(&dataset, &device);
    let encoded = model.encode(&batch(&dataset, &device));
    let n = dataset.config.candidates as i64;
    for mode in [
        Decode::Greedy,
        Decode::Sample,
        Decode::Tempered(0.5),
        Decode::Tempered(2.0),
    ] {
        let decoded = model.decode(&encoded, 5, mode);
        assert_eq!(decoded.lists.dims(), [6, 5, 6]);
        for list in to_ints(decoded.lists).chunks(6) {
            assert!(list.iter().all(|&p| (0..n).contains(&p)));
            assert_eq!(list.iter().collect::<HashSet<_>>().len(), 6, "{list:?}");
        }
    }
    for list in to_ints(model.plackett_luce(&encoded, 4)).chunks(6) {
        assert_eq!(list.iter().collect::<HashSet<_>>().len(), 6, "{list:?}");
    }
}

#[test]
fn sampled_log_prob_equals_teacher_forced() {
    let device = Device::flex();
    let dataset = dataset();
    let model = generator(&dataset, &device);
    let encoded = model.encode(&batch(&dataset, &device));
    let decoded = model.decode(&encoded, 4, Decode::Sample);
    let (forced, steps) = model.teacher_forced(&encoded, decoded.lists.clone());
    let (a, b) = (to_vec(decoded.log_probs), to_vec(forced));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        assert!(*x < 0.0);
    }
    // Every step is a proper log-probability.
    assert!(to_vec(steps).iter().all(|&s| s <= 1e-6));
}

#[test]
fn greedy_picks_the_most_likely_first_item() {
    let device = Device::flex();
    let dataset = dataset();
    let model = generator(&dataset, &device);
    let encoded = model.encode(&batch(&dataset, &device));
    let first = to_vec(model.first_step_log_probs(&encoded));
    let lists = to_ints(model.decode(&encoded, 1, Decode::Greedy).lists);
    let n = dataset.config.candidates;
    for (r, row) in first.chunks(n).enumerate() {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i64);
        assert_eq!(Some(lists[r * 6]), best);
        let total: f32 = row.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-4);
    }
}

#[test]
fn checkpoint_round_trip_gives_identical_outputs() {
    let device = Device::flex();
    let dataset = dataset();
    let dir = tempfile::tempdir().expect("tempdir");
    let batch = batch(&dataset, &device);
    let lists = Tensor::<3, Int>::from_data(
        TensorData::new((0..6 * 6).map(|i| i % 15).collect::<Vec<i64>>(), [6, 1, 6]),
        &device,
    );

    let model = generator(&dataset, &device);
    let before = to_vec(model.teacher_forced(&model.encode(&batch), lists.clone()).0);
    let path = dir.path().join("generator.bpk");
    save_module(&model, &path).expect("save");
    device.seed(99);
    let fresh = tiny_goalrank().model(&dataset).init(&device);
    let loaded = load_module(fresh, &path).expect("load");
    let after = to_vec(
        loaded
            .teacher_forced(&loaded.encode(&batch), lists.clone())
            .0,
    );
    assert_eq!(before, after);

    let reward: RewardModel = tiny_reward().model(&dataset).init(&device);
    let before = to_vec(reward.score(&reward.context(&batch), lists.clone()).1);
    let path = dir.path().join("reward.bpk");
    save_module(&reward, &path).expect("save");
    let loaded = load_module(tiny_reward().model(&dataset).init(&device), &path).expect("load");
    let after = to_vec(loaded.score(&loaded.context(&batch), lists).1);
    assert_eq!(before, after);
}

#[test]
fn a_half_precision_checkpoint_loads_as_f32_without_drawing_random_numbers() {
    use burn::tensor::{DType, Distribution};
    use goalrank::model::module_bytes_f16;

    let dataset = dataset();
    let dir = tempfile::tempdir().expect("tempdir");
    let model = generator(&dataset, &Device::flex());
    let path = dir.path().join("half.bpk");
    std::fs::write(&path, module_bytes_f16(&model).expect("f16")).expect("write");
    // Loading draws nothing from the device's random numbers (the draw after it is the draw
    // after a fresh init), and every weight comes back f32, to f16's precision.
    let draw_after = |load: bool| {
        let device = Device::flex();
        device.seed(5);
        let fresh = tiny_goalrank().model(&dataset).init(&device);
        let loaded = if load {
            load_module(fresh, &path).expect("load")
        } else {
            fresh
        };
        let draw = to_vec(Tensor::<1>::random([8], Distribution::Default, &device));
        (draw, loaded)
    };
    // Tests running beside this one share Burn's one random stream, and a draw of theirs between
    // the seeding and this draw changes it: the two draws must agree in one of a few tries (a
    // load that drew numbers would never agree).
    let mut tries = Vec::new();
    let loaded = loop {
        let (plain_draw, _) = draw_after(false);
        let (draw, loaded) = draw_after(true);
        tries.push((draw.clone(), plain_draw.clone()));
        if draw == plain_draw {
            break loaded;
        }
        assert!(tries.len() < 20, "loading drew random numbers: {tries:?}");
    };
    let (before, after) = (weights(&model), weights(&loaded));
    assert_eq!(before.len(), after.len());
    for (a, b) in before.iter().zip(&after) {
        assert!(
            (a - b).abs() <= a.abs() * 2f32.powi(-11) + 3e-8,
            "{a} loaded as {b}"
        );
    }
    assert!(before != after, "the weights were not rounded");
    // Under autodiff the loaded weights are f32 and still trained: each gets a gradient.
    let device = Device::flex().autodiff();
    let loaded = load_module(tiny_goalrank().model(&dataset).init(&device), &path).expect("load");
    let batch = batch(&dataset, &device);
    let lists = Tensor::<3, Int>::from_data(
        TensorData::new((0..6 * 6).map(|i| i % 15).collect::<Vec<i64>>(), [6, 1, 6]),
        &device,
    );
    let grads = loaded
        .teacher_forced(&loaded.encode(&batch), lists)
        .0
        .sum()
        .backward();
    struct Trained<'a>(&'a burn::tensor::Gradients, usize, usize);
    impl burn::module::ModuleVisitor for Trained<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            assert_eq!(param.val().dtype(), DType::F32);
            self.1 += 1;
            self.2 += usize::from(param.val().grad(self.0).is_some());
        }
    }
    let mut trained = Trained(&grads, 0, 0);
    burn::module::Module::visit(&loaded, &mut trained);
    assert!(
        trained.1 > 10 && trained.2 == trained.1,
        "{} of {} trained",
        trained.2,
        trained.1
    );

    // A weight beyond f16's range is refused by name, not written as infinity.
    struct Scale;
    impl burn::module::ModuleMapper for Scale {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            param.map(|t| t * 1e6)
        }
    }
    let large = burn::module::Module::map(model, &mut Scale);
    let err = module_bytes_f16(&large).expect_err("beyond f16");
    assert!(
        err.to_string().contains("does not fit in half precision"),
        "{err}"
    );
}

#[test]
fn a_corrupt_checkpoint_is_an_error_not_a_panic() {
    let device = Device::flex();
    let dataset = dataset();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.bpk");
    std::fs::write(&path, b"not a checkpoint").expect("write");
    let err = load_module(generator(&dataset, &device), &path).expect_err("corrupt");
    assert!(err.to_string().contains("broken.bpk"), "{err}");
}

#[test]
fn ladder_builds_k_generators_greedy_first() {
    let device = Device::flex();
    let dataset = dataset();
    let a = generator(&dataset, &device);
    let b = generator(&dataset, &device);
    let pool = [Proposer::Generator(&a), Proposer::Generator(&b)];
    let three = generator_ladder(&pool, 3);
    let modes: Vec<(Decode, usize)> = three.iter().map(|s| (s.mode, s.count)).collect();
    assert_eq!(
        modes,
        vec![
            (Decode::Greedy, 1),
            (Decode::Greedy, 1),
            (Decode::Tempered(0.5), 1)
        ]
    );
    let many = generator_ladder(&pool, 20);
    assert_eq!(many.iter().map(|s| s.count).sum::<usize>(), 20);
    assert_eq!(many.len(), 2 * 4, "2 models × (greedy + 3 temperatures)");
    assert!(generator_ladder(&[], 5).is_empty());
}

#[test]
fn best_of_picks_the_highest_reward_list() {
    let device = Device::flex();
    let dataset = dataset();
    let model = generator(&dataset, &device);
    device.seed(5);
    let reward = tiny_reward().model(&dataset).init(&device);
    let requests = &dataset.train[..6];
    // One greedy list: best-of is the generator's greedy ranking.
    let greedy = ListSource {
        proposer: Proposer::Generator(&model),
        mode: Decode::Greedy,
        count: 1,
    };
    let picked = best_of_rankings(&[greedy], &reward, &dataset, requests, 4, &device).unwrap();
    let plain = generator_rankings(&model, &dataset, requests, 4, &device).unwrap();
    assert_eq!(
        picked.iter().map(|r| &r.list).collect::<Vec<_>>(),
        plain.iter().map(|r| &r.list).collect::<Vec<_>>()
    );
    // Many sampled lists: the pick's reward is at least the greedy list's, request by request.
    let sampled = ListSource {
        mode: Decode::Sample,
        count: 16,
        ..greedy
    };
    device.seed(9);
    let best =
        best_of_rankings(&[greedy, sampled], &reward, &dataset, requests, 4, &device).unwrap();
    for (i, (b, g)) in best.iter().zip(&plain).enumerate() {
        let one = std::slice::from_ref(&requests[i]);
        let rb = mean_reward(&reward, &dataset, one, std::slice::from_ref(b), 1, &device).unwrap();
        let rg = mean_reward(&reward, &dataset, one, std::slice::from_ref(g), 1, &device).unwrap();
        assert!(rb >= rg - 1e-5, "request {i}: picked {rb} < greedy {rg}");
    }
}

#[test]
fn the_embedded_demo_models_decode_and_beat_random_lists() {
    use goalrank::app::demo::{demo_dataset, demo_generator, demo_reward};
    use goalrank::eval::SimplePolicy;
    use rand::SeedableRng;

    let device = Device::flex();
    let dataset = demo_dataset().expect("the demo's simulator");
    let (_, generator) = demo_generator(&dataset, &device).expect("the embedded generator");
    demo_reward(&dataset, &device).expect("the embedded reward model");
    // Trained weights, not a fresh model: the greedy lists earn more expected clicks than
    // random lists on the simulator's test requests.
    let world = dataset.world.as_ref().expect("a simulated world");
    let test = &dataset.test[..200];
    let rankings = generator_rankings(&generator, &dataset, test, 100, &device).expect("rank");
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(1);
    let (mut ours, mut random) = (0.0, 0.0);
    for (request, ranking) in test.iter().zip(&rankings) {
        ours += world.utility(request.user, &ranking.list);
        let r = SimplePolicy::Random.rank(&dataset, request, dataset.config.list_len, &mut rng);
        random += world.utility(request.user, &r.list);
    }
    assert!(ours > random * 1.05, "utility {ours} vs random {random}");
}

/// The browser demo compiles in `model-f16.bpk`, each run's `model.bpk` rounded to f16. With
/// `GOALRANK_WRITE_DEMO_WEIGHTS=1` this test writes them from the runs' `model.bpk` and stops;
/// the next build compiles them in and the test checks them.
#[test]
fn the_embedded_demo_weights_are_the_runs_weights_in_half_precision() {
    use goalrank::app::demo::{demo_dataset, demo_generator, demo_reward};
    use goalrank::model::module_bytes_f16;
    use goalrank::run::{load_generator, load_reward};

    let device = Device::flex();
    let dataset = demo_dataset().expect("the demo's simulator");
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/sim-small");
    let generator = load_generator(&folder.join("goalrank"), &dataset, &device).unwrap();
    let reward = load_reward(&folder.join("reward"), &dataset, &device).unwrap();
    let halves = [
        ("goalrank", module_bytes_f16(&generator).unwrap()),
        ("reward", module_bytes_f16(&reward).unwrap()),
    ];
    if std::env::var("GOALRANK_WRITE_DEMO_WEIGHTS").as_deref() == Ok("1") {
        for (kind, half) in halves {
            std::fs::write(folder.join(kind).join("model-f16.bpk"), half).unwrap();
        }
        return;
    }
    for (kind, half) in halves {
        let path = folder.join(kind).join("model-f16.bpk");
        let embedded = std::fs::read(&path).unwrap();
        assert!(
            embedded == half,
            "{}: not {kind}/model.bpk in f16; GOALRANK_WRITE_DEMO_WEIGHTS=1 cargo test writes it",
            path.display()
        );
    }
    let (_, embedded_generator) = demo_generator(&dataset, &device).unwrap();
    let (_, embedded_reward) = demo_reward(&dataset, &device).unwrap();
    // Loaded back, each weight is the f32 weight to f16's precision (2^-11 relative, or f16's
    // smallest step near zero), and the rounding is there (most weights are not the f32 file's).
    let pairs = [
        (weights(&generator), weights(&embedded_generator)),
        (weights(&reward), weights(&embedded_reward)),
    ];
    for (f32_weights, loaded) in pairs {
        assert_eq!(f32_weights.len(), loaded.len());
        let mut rounded = 0;
        for (a, b) in f32_weights.iter().zip(&loaded) {
            assert!(
                (a - b).abs() <= a.abs() * 2f32.powi(-11) + 3e-8,
                "{a} loaded as {b}"
            );
            rounded += usize::from(a != b);
        }
        assert!(
            rounded > loaded.len() / 2,
            "{rounded} of {} weights rounded",
            loaded.len()
        );
    }
}

/// Every float weight of a module, in the order the module visits them.
fn weights<M: burn::module::Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0.extend(to_vec(param.val()));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

#[test]
fn top_indices_and_one_hot_agree_with_burns_sort_and_one_hot() {
    use burn::tensor::Distribution;
    use goalrank::model::{one_hot, top_indices};

    let device = Device::flex();
    let values = Tensor::<3>::random([4, 3, 20], Distribution::Normal(0.0, 1.0), &device);
    let (_, order) = values.clone().sort_descending_with_indices(2);
    let top = order.slice([0..4, 0..3, 0..6]);
    assert_eq!(to_ints(top_indices(values, 6)), to_ints(top.clone()));
    assert_eq!(
        to_vec(one_hot(top.clone(), 20)),
        to_vec(top.one_hot::<4>(20).float())
    );
}
