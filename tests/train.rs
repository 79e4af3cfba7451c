//! Group maths and training steps on the CPU.

use burn::tensor::{Device, Tensor, TensorData};
use goalrank::data::Split;
use goalrank::train::{GoalRankTrainer, GroupSampling, RewardTrainer, group};

use crate::models::{dataset, tiny_goalrank, tiny_reward};

fn row(values: &[f32], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [1, values.len()]), device)
}

fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32")
}

#[test]
fn z_scores_by_hand() {
    // R = [1, 2, 3]: mean 2, population std sqrt(2/3) = 0.8165 → A = [-1.2247, 0, 1.2247].
    let a = to_vec(group::z_scores(row(&[1.0, 2.0, 3.0], &Device::flex())));
    let expected = [-1.224_744_9, 0.0, 1.224_744_9];
    for (x, y) in a.iter().zip(expected) {
        assert!((x - y).abs() < 1e-4, "{a:?}");
    }
    // Equal rewards: all zero, no NaN (the 1e-6 guards the division).
    let a = to_vec(group::z_scores(row(&[0.5, 0.5], &Device::flex())));
    assert_eq!(a, vec![0.0, 0.0]);
}

#[test]
fn reference_policy_sums_to_one_and_orders_by_reward() {
    let device = Device::flex();
    let p = to_vec(group::reference_policy(
        row(&[0.1, 0.9, 0.4, 0.4], &device),
        1.0,
    ));
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(p[1] > p[2] && p[2] == p[3] && p[3] > p[0]);
    // A lower temperature sharpens the target.
    let sharp = to_vec(group::reference_policy(
        row(&[0.1, 0.9, 0.4, 0.4], &device),
        0.1,
    ));
    assert!(sharp[1] > p[1]);
}

#[test]
fn reference_policy_carries_no_gradient() {
    let device = Device::flex().autodiff();
    let rewards = row(&[0.2, 0.8, 0.5], &device).require_grad();
    let log_probs = row(&[-1.0, -2.0, -3.0], &device).require_grad();
    let pi_ref = group::reference_policy(rewards.clone(), 1.0);
    let loss = group::reference_loss(pi_ref.clone(), log_probs.clone());
    let grads = loss.backward();
    assert!(
        rewards.grad(&grads).is_none(),
        "no gradient flows into the rewards"
    );
    // d loss / d log π = -π_ref.
    let g = log_probs.grad(&grads).expect("gradient on log π");
    let g: Vec<f32> = g.into_data().try_into_vec_as::<f32>().expect("f32");
    for (gi, pi) in g.iter().zip(to_vec(pi_ref.inner())) {
        assert!((gi + pi).abs() < 1e-5);
    }
}

#[test]
fn reward_model_training_lowers_its_loss() {
    let dataset = dataset();
    let device = Device::flex();
    // Logged lists only, then with one random candidate list per request added.
    for random_lists in [0, 1] {
        let config = tiny_reward().with_random_lists(random_lists);
        let mut trainer = RewardTrainer::new(&dataset, Split::Train, &config, &device);
        let first: f32 = (0..3).map(|_| trainer.step().loss).sum::<f32>() / 3.0;
        for _ in 0..40 {
            trainer.step();
        }
        let last: f32 = (0..3).map(|_| trainer.step().loss).sum::<f32>() / 3.0;
        assert!(
            last < first,
            "random_lists {random_lists}: loss {first} -> {last}"
        );
    }
}

#[test]
fn a_few_goalrank_steps_raise_the_mean_group_reward() {
    let dataset = dataset();
    let device = Device::flex();
    let reward = RewardTrainer::new(&dataset, Split::Train, &tiny_reward(), &device).model();
    for sampling in [GroupSampling::Autoregressive, GroupSampling::PlackettLuce] {
        // A fixed batch (batch size = all train requests), no supervised term: the
        // group-relative term alone must move the policy towards higher reward.
        let config = tiny_goalrank()
            .with_sampling(sampling)
            .with_batch_size(dataset.train.len())
            .with_w_sup(0.0)
            .with_include_logged(false)
            .with_learning_rate(3e-3);
        let mut trainer = GoalRankTrainer::new(&dataset, reward.clone(), config, &device);
        let start: f32 = (0..3)
            .map(|_| trainer.step().unwrap().reward_mean.unwrap())
            .sum::<f32>()
            / 3.0;
        for _ in 0..25 {
            let record = trainer.step().unwrap();
            assert!(record.loss.is_finite());
        }
        let end: f32 = (0..3)
            .map(|_| trainer.step().unwrap().reward_mean.unwrap())
            .sum::<f32>()
            / 3.0;
        assert!(
            end > start,
            "{sampling:?}: mean group reward {start} -> {end}"
        );
    }
}

/// With one sampled list beside the logged one, the z-scores are ±1, so π_ref gives the logged
/// list σ(2) when it has the higher reward and σ(−2) otherwise: the two logged statistics must
/// agree with each other, and disappear without the logged list. A sampled list that is the
/// logged list ties with it: both z-scores are 0, π_ref gives each 1/2, and the tie counts as
/// best. Rewards that differ by little more than the z-score's ε give z-scores short of ±1.
/// The sampled lists depend on the order in which parallel tests draw from the backend's random
/// numbers, so such requests come and go from run to run: each step's weight must lie within the
/// bounds that allow them, and most steps must match σ(±2) exactly.
#[test]
fn the_step_reports_the_logged_lists_weight_and_how_often_it_is_best() {
    let dataset = dataset();
    let device = Device::flex();
    let reward = RewardTrainer::new(&dataset, Split::Train, &tiny_reward(), &device).model();
    let config = tiny_goalrank().with_group_size(1).with_tau(1.0);
    let mut trainer = GoalRankTrainer::new(&dataset, reward.clone(), config.clone(), &device);
    let (high, low) = (1.0 / (1.0 + (-2.0f32).exp()), 1.0 / (1.0 + 2.0f32.exp()));
    let mut exact = 0;
    for _ in 0..3 {
        let record = trainer.step().unwrap();
        let weight = record.ref_logged.expect("the logged list is in the group");
        let best = record.logged_best.expect("the logged list is in the group");
        assert!((0.0..=1.0).contains(&best), "share {best}");
        let expected = best * high + (1.0 - best) * low;
        // Each request's weight lies in [1/2, σ(2)] when the logged list is best, in
        // [σ(−2), 1/2] otherwise.
        let (least, most) = (
            best * 0.5 + (1.0 - best) * low,
            best * high + (1.0 - best) * 0.5,
        );
        assert!(
            (least - 1e-4..=most + 1e-4).contains(&weight),
            "π_ref(logged) {weight} outside [{least}, {most}] for a best share of {best}"
        );
        if (weight - expected).abs() < 1e-3 {
            exact += 1;
        }
    }
    assert!(
        exact >= 2,
        "only {exact} of 3 steps gave π_ref(logged) from σ(±2)"
    );
    let without = tiny_goalrank().with_include_logged(false);
    let mut trainer = GoalRankTrainer::new(&dataset, reward, without, &device);
    let record = trainer.step().unwrap();
    assert_eq!((record.ref_logged, record.logged_best), (None, None));
    assert!(record.ref_entropy.is_some());
}

/// Burn 0.22.1's own gradient all-reduce (`DistributedOps`, behind `DistributedContext` and
/// `Tensor::set_distributed`) is implemented for CUDA only: starting it for CPU devices
/// panics. So goalrank's data-parallel step sums its replicas' gradients with
/// Burn's `GradientsAccumulator` instead (README, "Scale"). When this test fails, Burn syncs
/// gradients on the CPU backend and the step can use it.
#[test]
#[should_panic(expected = "Distributed operations are not supported for device Flex")]
fn burn_cannot_all_reduce_gradients_on_the_cpu_backend() {
    let device = Device::flex().autodiff();
    let _context = burn::tensor::distributed::DistributedContext::init(
        vec![device.clone(), device.clone()],
        burn::tensor::distributed::DistributedConfig {
            all_reduce_op: burn::tensor::distributed::ReduceOperation::Mean,
        },
    );
    let weight = Tensor::<1>::zeros([2], &device).require_grad();
    let _ = weight.set_distributed(burn::module::ParamId::new());
}
