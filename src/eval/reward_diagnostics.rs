//! How well a reward model ranks *lists*, the one thing GoalRank asks of it. Pooled AUC is not
//! enough: position alone makes it high. These measures can tell a reward model that knows the
//! user's taste from one that only knows positions:
//!
//! - per-position AUC of p on the logged lists (position cannot help within a position);
//! - per-request AUC of p among each logged list's items (requests with mixed labels);
//! - how often R(logged list) > R(a random list of candidates);
//! - on the simulator, against the exact utility U: the mean within-request Spearman
//!   correlation of R and U over a fixed set of lists per request (random lists, the
//!   attraction-sorted list, the exact optimum, the logged list), and R's relative gap between
//!   the attraction-sorted list and random lists beside U's;
//! - on the simulator, the paper's condition for the group-relative step to help: over the pairs
//!   of one request's lists, how often R orders them as U does, and how often their gap in U
//!   exceeds twice R's error (R and U centred on the request's mean, since the group's z-score
//!   discards offsets): such a pair is ordered right whatever the error does;
//! - on the simulator, the same measures on the lists the step itself compares: groups of K
//!   lists sampled from a generator ([`group_diagnostics`]), which are far closer to each other
//!   than random lists are to the optimum.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use serde::Serialize;

use super::metrics;
use crate::Result;
use crate::data::{Batch, Dataset, Request, World};
use crate::model::{Decode, Generator, RewardModel, block_on, read_f32, read_i64};

/// Random lists per request in the list-ranking measures.
pub const RANDOM_LISTS: usize = 16;

/// Requests (the first of a split) on which the list-ranking measures are taken by `train
/// reward`, `experiment main` and the reward models' `--select logged-over-random`.
pub const DIAGNOSTIC_REQUESTS: usize = 500;

/// A reward model's list-ranking quality on some requests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RewardDiagnostics {
    pub requests: usize,
    /// AUC of p against labels at each logged position (`None` where one class is missing).
    pub position_auc: Vec<Option<f64>>,
    /// Mean AUC of p within each logged list, over requests with both labels.
    pub request_auc: Option<f64>,
    /// Share of requests where R(logged) > R(random list), over [`RANDOM_LISTS`] random lists.
    pub logged_beats_random: f64,
    /// Ground truth, on the simulator only.
    pub exact: Option<ExactDiagnostics>,
}

/// A reward model against the simulator's exact utility.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ExactDiagnostics {
    /// Mean within-request Spearman correlation of R and U.
    pub spearman: f64,
    /// (R(attraction-sorted) − R(random)) / R(random), mean over requests.
    pub reward_gap: f64,
    /// The same gap in exact utility.
    pub utility_gap: f64,
    /// Share of a request's pairs of lists (U not tied) that R orders as U does.
    pub pair_accuracy: f64,
    /// Mean |(R − mean R) − (U − mean U)| over a request's lists: R's error, offsets removed.
    pub centred_error: f64,
    /// Share of a request's pairs whose U gap exceeds twice [`Self::centred_error`].
    pub gap_exceeds_error: f64,
}

/// Within one request: (share of pairs R orders as U, R's centred error, share of pairs whose U
/// gap exceeds twice that error). Pairs tied in U are left out.
pub fn pair_measures(rewards: &[f64], utilities: &[f64]) -> (f64, f64, f64) {
    let n = rewards.len().min(utilities.len());
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let mean = |v: &[f64]| v[..n].iter().sum::<f64>() / n as f64;
    let (mr, mu) = (mean(rewards), mean(utilities));
    let error = (0..n)
        .map(|i| ((rewards[i] - mr) - (utilities[i] - mu)).abs())
        .sum::<f64>()
        / n as f64;
    let (mut pairs, mut right, mut wide) = (0usize, 0usize, 0usize);
    for a in 0..n {
        for b in a + 1..n {
            let du = utilities[a] - utilities[b];
            if du == 0.0 {
                continue;
            }
            pairs += 1;
            right += usize::from((rewards[a] - rewards[b]) * du > 0.0);
            wide += usize::from(du.abs() > 2.0 * error);
        }
    }
    let share = |k: usize| k as f64 / pairs.max(1) as f64;
    (share(right), error, share(wide))
}

/// The lists scored per request: the logged list, [`RANDOM_LISTS`] random lists, and with a
/// `world` the attraction-sorted list and the exact optimum (as candidate positions).
fn lists_for(
    world: Option<&World>,
    request: &Request,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<Vec<usize>> {
    let l = request.logged.len();
    let position = |item: u32| request.candidates.iter().position(|&c| c == item);
    let mut lists = vec![request.logged_positions()];
    let mut order: Vec<usize> = (0..request.candidates.len()).collect();
    for _ in 0..RANDOM_LISTS {
        order.shuffle(rng);
        lists.push(order[..l].to_vec());
    }
    if let Some(world) = world {
        let sorted = world.attraction_order(request.user, &request.candidates);
        lists.push(sorted[..l].to_vec());
        let best = world.best_list(request.user, &request.candidates, l);
        lists.push(best.list.iter().filter_map(|&i| position(i)).collect());
    }
    lists
}

/// The first [`DIAGNOSTIC_REQUESTS`] of `requests`, on which the list-ranking measures are
/// taken.
pub fn diagnostic_probe(requests: &[Request]) -> &[Request] {
    &requests[..requests.len().min(DIAGNOSTIC_REQUESTS)]
}

/// Diagnostics of `reward` on `requests` (seeded random lists).
pub fn reward_diagnostics(
    reward: &RewardModel,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<RewardDiagnostics> {
    diagnose(
        reward,
        dataset,
        dataset.world.as_ref(),
        requests,
        batch_size,
        seed,
        device,
    )
}

/// How often R(logged list) > R(random list) on `requests`: the value of
/// [`reward_diagnostics`] for the same seed, without the exact measures (on the simulator
/// they solve each request's optimum, which an epoch's selection does not need).
pub fn logged_beats_random(
    reward: &RewardModel,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<f64> {
    let diagnostics = diagnose(reward, dataset, None, requests, batch_size, seed, device)?;
    Ok(diagnostics.logged_beats_random)
}

/// [`reward_diagnostics`], with the exact measures taken against `world` where given.
fn diagnose(
    reward: &RewardModel,
    dataset: &Dataset,
    world: Option<&World>,
    requests: &[Request],
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<RewardDiagnostics> {
    let l = dataset.config.list_len;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut position_scores = vec![(Vec::new(), Vec::new()); l];
    let (mut request_auc, mut request_auc_n) = (0.0, 0usize);
    let mut beats = 0.0;
    let (mut rho, mut rho_n) = (0.0, 0usize);
    let (mut reward_gap, mut utility_gap) = (0.0, 0.0);
    let (mut pair_accuracy, mut centred_error, mut gap_exceeds_error) = (0.0, 0.0, 0.0);
    for chunk in requests.chunks(batch_size.max(1)) {
        let refs: Vec<&Request> = chunk.iter().collect();
        let lists: Vec<Vec<Vec<usize>>> = chunk
            .iter()
            .map(|r| lists_for(world, r, &mut rng))
            .collect();
        let k = lists[0].len();
        let flat: Vec<i64> = lists
            .iter()
            .flatten()
            .flatten()
            .map(|&p| p as i64)
            .collect();
        let batch = Batch::new(dataset, &refs, device);
        let tensor =
            Tensor::<3, Int>::from_data(TensorData::new(flat, [chunk.len(), k, l]), device);
        let (p, r) = reward.score(&reward.context(&batch), tensor);
        let (p, r) = (block_on(read_f32(p))?, block_on(read_f32(r))?);
        for (i, request) in chunk.iter().enumerate() {
            let rewards: Vec<f64> = (0..k).map(|j| f64::from(r[i * k + j])).collect();
            let logged_p = &p[i * k * l..i * k * l + l];
            let labels: Vec<bool> = request.labels.iter().map(|&y| y > 0).collect();
            for t in 0..l {
                position_scores[t].0.push(logged_p[t]);
                position_scores[t].1.push(labels[t]);
            }
            if let Some(auc) = metrics::auc(logged_p, &labels) {
                request_auc += auc;
                request_auc_n += 1;
            }
            let random = &rewards[1..=RANDOM_LISTS];
            beats +=
                random.iter().filter(|&&x| rewards[0] > x).count() as f64 / RANDOM_LISTS as f64;
            if let Some(world) = world {
                let utilities: Vec<f64> = lists[i]
                    .iter()
                    .map(|list| {
                        let items: Vec<u32> = list.iter().map(|&p| request.candidates[p]).collect();
                        world.utility(request.user, &items)
                    })
                    .collect();
                if let Some(s) = metrics::spearman(&rewards, &utilities) {
                    rho += s;
                    rho_n += 1;
                }
                let (right, error, wide) = pair_measures(&rewards, &utilities);
                pair_accuracy += right;
                centred_error += error;
                gap_exceeds_error += wide;
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                let sorted = RANDOM_LISTS + 1;
                reward_gap += rewards[sorted] / mean(random).max(1e-9) - 1.0;
                utility_gap +=
                    utilities[sorted] / mean(&utilities[1..=RANDOM_LISTS]).max(1e-9) - 1.0;
            }
        }
    }
    let n = requests.len().max(1) as f64;
    Ok(RewardDiagnostics {
        requests: requests.len(),
        position_auc: position_scores
            .iter()
            .map(|(s, y)| metrics::auc(s, y))
            .collect(),
        request_auc: (request_auc_n > 0).then(|| request_auc / request_auc_n as f64),
        logged_beats_random: beats / n,
        exact: world.map(|_| ExactDiagnostics {
            spearman: rho / rho_n.max(1) as f64,
            reward_gap: reward_gap / n,
            utility_gap: utility_gap / n,
            pair_accuracy: pair_accuracy / n,
            centred_error: centred_error / n,
            gap_exceeds_error: gap_exceeds_error / n,
        }),
    })
}

impl RewardDiagnostics {
    /// One line for the terminal and the reports.
    pub fn summary(&self) -> String {
        let fmt = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
        let positions: Vec<String> = self.position_auc.iter().map(|&a| fmt(a)).collect();
        let mut line = format!(
            "per-position AUC [{}], per-request AUC {}, R(logged) > R(random) {:.3}",
            positions.join(" "),
            fmt(self.request_auc),
            self.logged_beats_random
        );
        if let Some(e) = &self.exact {
            line.push_str(&format!(
                ", Spearman(R, U) {:.3}, gap sorted vs random: R {:+.1}% / U {:+.1}%, pairs \
                 ordered as U {:.3}, R's centred error {:.4}, pairs whose U gap exceeds twice \
                 it {:.3}",
                e.spearman,
                100.0 * e.reward_gap,
                100.0 * e.utility_gap,
                e.pair_accuracy,
                e.centred_error,
                e.gap_exceeds_error
            ));
        }
        line
    }
}

/// A reward model on the lists GoalRank's step compares: groups sampled from a generator.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct GroupDiagnostics {
    /// Lists per request.
    pub group_size: usize,
    /// Mean within-group Spearman correlation of R and U (groups with distinct lists).
    pub spearman: f64,
    /// Share of a group's pairs of lists (U not tied) that R orders as U does.
    pub pair_accuracy: f64,
    /// R's error with each group's mean removed (as the group's z-score removes it).
    pub centred_error: f64,
    /// Share of a group's pairs whose U gap exceeds twice [`Self::centred_error`].
    pub gap_exceeds_error: f64,
    /// Mean within-group standard deviation of U: the differences the step must see.
    pub utility_spread: f64,
}

/// `reward` against the exact utility on `group_size` lists per request sampled from
/// `generator` (the step's autoregressive sampling at `temperature`, 1 for the generator's own
/// distribution), on the simulator only (`None` elsewhere). The device's random draws are
/// seeded with `seed`.
#[allow(clippy::too_many_arguments)]
pub fn group_diagnostics(
    generator: &Generator,
    reward: &RewardModel,
    dataset: &Dataset,
    requests: &[Request],
    group_size: usize,
    temperature: f32,
    batch_size: usize,
    seed: u64,
    device: &Device,
) -> Result<Option<GroupDiagnostics>> {
    let Some(world) = &dataset.world else {
        return Ok(None);
    };
    let (k, l) = (group_size.max(2), dataset.config.list_len);
    let mode = Decode::sampled_at(temperature);
    device.seed(seed);
    let mut sums = GroupDiagnostics {
        group_size: k,
        ..GroupDiagnostics::default()
    };
    let mut rho_n = 0usize;
    for chunk in requests.chunks(batch_size.max(1)) {
        let refs: Vec<&Request> = chunk.iter().collect();
        let batch = Batch::new(dataset, &refs, device);
        let lists = generator.decode(&generator.encode(&batch), k, mode).lists;
        let (_, r) = reward.score(&reward.context(&batch), lists.clone());
        let (r, lists) = (block_on(read_f32(r))?, block_on(read_i64(lists))?);
        for (i, request) in chunk.iter().enumerate() {
            let rewards: Vec<f64> = (0..k).map(|j| f64::from(r[i * k + j])).collect();
            let utilities: Vec<f64> = (0..k)
                .map(|j| {
                    let at = (i * k + j) * l;
                    let items: Vec<u32> = lists[at..at + l]
                        .iter()
                        .map(|&p| request.candidates[p as usize])
                        .collect();
                    world.utility(request.user, &items)
                })
                .collect();
            if let Some(s) = metrics::spearman(&rewards, &utilities) {
                sums.spearman += s;
                rho_n += 1;
            }
            let (right, error, wide) = pair_measures(&rewards, &utilities);
            sums.pair_accuracy += right;
            sums.centred_error += error;
            sums.gap_exceeds_error += wide;
            let mean = utilities.iter().sum::<f64>() / k as f64;
            let var = utilities.iter().map(|u| (u - mean).powi(2)).sum::<f64>() / k as f64;
            sums.utility_spread += var.sqrt();
        }
    }
    let n = requests.len().max(1) as f64;
    Ok(Some(GroupDiagnostics {
        spearman: sums.spearman / rho_n.max(1) as f64,
        pair_accuracy: sums.pair_accuracy / n,
        centred_error: sums.centred_error / n,
        gap_exceeds_error: sums.gap_exceeds_error / n,
        utility_spread: sums.utility_spread / n,
        ..sums
    }))
}
