//! Does optimising the learned reward R near the supervised generator's list raise the exact
//! utility U? A local search that only GoalRank's reward model steers, on one `experiment main`
//! seed on the simulator (validation requests):
//!
//! - U of the supervised-only generator's greedy list (the start);
//! - U after climbing R from it: at each round every list one move away (one item replaced by
//!   another candidate, or two positions swapped) is scored by R, and the best is taken while R
//!   rises;
//! - U of the top L candidates by R's list-free attraction (its user·item part), beside the top
//!   L by the true attraction;
//! - where R's error lies, by the same climb on two hybrids of R and the truth: R's list part
//!   (examination and redundancy, p / σ(attraction)) with the *true* attraction, and the true
//!   list model (cascade, redundancy, patience) with *R's* attraction;
//! - and, for scale, the same climb on the exact utility U itself.
//!
//! If R's own choice near the policy has a lower U than the start, a generator pulled towards R
//! (GoalRank, the policy gradient, or an evaluator picking among generated lists) cannot beat
//! the supervised one with this reward model.
//!
//! ```bash
//! cargo run --release --example reward_climb -- artifacts/runs/sim-small/main/seed-0
//! cargo run --release --example reward_climb -- \
//!     artifacts/runs/sim-small-eps0.5/main/seed-0 small,epsilon=0.5
//! ```

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::{Device, Int, Tensor, TensorData};
use goalrank::data::simulator::{self, SimConfig, World};
use goalrank::data::{Batch, Request, Split};
use goalrank::eval::Ranking;
use goalrank::model::{Decode, RewardContext, RewardModel, block_on, read_f32, read_i64};
use goalrank::run::{load_generator, load_reward};

/// Validation requests looked at, per batch, and the most rounds of the climb.
const REQUESTS: usize = 500;
const BATCH: usize = 100;
const ROUNDS: usize = 20;

/// Every list one move from `list`: the list itself first, then each position given each
/// candidate not in the list, then each pair of positions swapped.
fn neighbours(list: &[i64], candidates: usize) -> Vec<Vec<i64>> {
    let mut out = vec![list.to_vec()];
    for at in 0..list.len() {
        for c in 0..candidates as i64 {
            if !list.contains(&c) {
                let mut next = list.to_vec();
                next[at] = c;
                out.push(next);
            }
        }
    }
    for a in 0..list.len() {
        for b in a + 1..list.len() {
            let mut next = list.to_vec();
            next.swap(a, b);
            out.push(next);
        }
    }
    out
}

/// What the climb maximises.
#[derive(Clone, Copy)]
enum Objective<'a> {
    /// R itself.
    Reward,
    /// R's list part (p / σ(R's attraction)) times the true attraction.
    TrueAttraction(&'a [f32]),
    /// The world's list model fed with R's attraction: U with a_i = σ(R's attraction logit).
    RewardAttraction,
    /// The exact utility U itself: how far this search can go at all.
    Exact,
}

/// The logistic function.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The world's expected clicks of `list` (candidate positions of `request`) when each
/// candidate's attraction is σ(`logits`) instead of the true one.
fn utility_with(world: &World, request: &Request, list: &[i64], logits: &[f32]) -> f64 {
    let items: Vec<u32> = list
        .iter()
        .map(|&p| request.candidates[p as usize])
        .collect();
    world.utility_given(request.user, &items, |item| {
        let at = request.candidates.iter().position(|&c| c == item);
        at.map_or(0.0, |p| f64::from(sigmoid(logits[p])))
    })
}

/// Climbs `objective` from `start` (one list per request of `batch`) and returns where it
/// stopped. `context` is R's encoding of the requests; `attraction` holds R's attraction
/// logits, `[B, N]` row-major.
#[allow(clippy::too_many_arguments)]
fn climb(
    reward: &RewardModel,
    world: &World,
    requests: &[&Request],
    context: &RewardContext,
    mut lists: Vec<Vec<i64>>,
    attraction: &[f32],
    objective: Objective,
    device: &Device,
) -> anyhow::Result<Vec<Vec<i64>>> {
    let (l, n) = (lists[0].len(), requests[0].candidates.len());
    for _ in 0..ROUNDS {
        let around: Vec<Vec<Vec<i64>>> = lists.iter().map(|x| neighbours(x, n)).collect();
        let k = around[0].len();
        // Only the objectives that read R score the neighbours with it.
        let (p, r) = match objective {
            Objective::Reward | Objective::TrueAttraction(_) => {
                let flat: Vec<i64> = around.iter().flatten().flatten().copied().collect();
                // # Shapes: [B, K, L] neighbour lists → probabilities [B, K, L], rewards [B, K]
                let tensor =
                    Tensor::<3, Int>::from_data(TensorData::new(flat, [lists.len(), k, l]), device);
                let (p, r) = reward.score(context, tensor);
                (block_on(read_f32(p))?, block_on(read_f32(r))?)
            }
            Objective::RewardAttraction | Objective::Exact => (Vec::new(), Vec::new()),
        };
        let score = |i: usize, j: usize| -> f64 {
            let logits = &attraction[i * n..(i + 1) * n];
            let list = &around[i][j];
            match objective {
                Objective::Reward => f64::from(r[i * k + j]),
                Objective::TrueAttraction(truth) => list
                    .iter()
                    .enumerate()
                    .map(|(at, &c)| {
                        let c = c as usize;
                        let rest = p[(i * k + j) * l + at] / sigmoid(logits[c]);
                        f64::from(sigmoid(truth[i * n + c]) * rest)
                    })
                    .sum(),
                Objective::RewardAttraction => utility_with(world, requests[i], list, logits),
                Objective::Exact => utility(world, requests[i], list),
            }
        };
        let mut moved = false;
        for (i, list) in lists.iter_mut().enumerate() {
            let scores: Vec<f64> = (0..k).map(|j| score(i, j)).collect();
            let best = (0..k).fold(0, |b, j| if scores[j] > scores[b] { j } else { b });
            if best != 0 {
                *list = around[i][best].clone();
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    Ok(lists)
}

/// U of a list of candidate positions.
fn utility(world: &World, request: &Request, list: &[i64]) -> f64 {
    let items: Vec<u32> = list
        .iter()
        .map(|&p| request.candidates[p as usize])
        .collect();
    world.utility(request.user, &items)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (seed_dir, preset) = match args.as_slice() {
        [dir] => (dir, "small"),
        [dir, preset] => (dir, preset.as_str()),
        _ => anyhow::bail!(
            "usage: reward_climb SEED_DIR [PRESET] (SEED_DIR holds `reward` and `supervised` of \
             one experiment main seed on the simulator; PRESET as after `sim:`, default small)"
        ),
    };
    let seed_dir = PathBuf::from(seed_dir);
    let dataset = simulator::build(&SimConfig::preset(preset)?)?;
    let world = dataset
        .world
        .as_ref()
        .context("the simulator has a world")?;
    let device = Device::flex();
    let reward = load_reward(&seed_dir.join("reward"), &dataset, &device)?;
    let generator = load_generator(&seed_dir.join("supervised"), &dataset, &device)?;
    let valid = dataset.split(Split::Valid);
    let probe: Vec<&Request> = valid.iter().take(REQUESTS).collect();
    let l = dataset.config.list_len;
    let mut sums = [0.0f64; 7];
    for chunk in probe.chunks(BATCH) {
        let batch = Batch::new(&dataset, chunk, &device);
        let n = chunk[0].candidates.len();
        let greedy = generator.decode(&generator.encode(&batch), 1, Decode::Greedy);
        let greedy = block_on(read_i64(greedy.lists))?;
        let start: Vec<Vec<i64>> = greedy.chunks(l).map(<[i64]>::to_vec).collect();
        let context = reward.context(&batch);
        let attraction = reward
            .candidate_logits(&context)
            .context("the reward model has a list-free attraction")?;
        let attraction = block_on(read_f32(attraction))?;
        // The true attraction logits, `[B, N]` row-major.
        let truth: Vec<f32> = chunk
            .iter()
            .flat_map(|r| {
                r.candidates.iter().map(|&c| {
                    let a = world.attraction(r.user, c);
                    (a / (1.0 - a)).ln() as f32
                })
            })
            .collect();
        let run = |objective| {
            climb(
                &reward,
                world,
                chunk,
                &context,
                start.clone(),
                &attraction,
                objective,
                &device,
            )
        };
        let climbed = run(Objective::Reward)?;
        let list_part = run(Objective::TrueAttraction(&truth))?;
        let attraction_part = run(Objective::RewardAttraction)?;
        let exact = run(Objective::Exact)?;
        for (i, request) in chunk.iter().enumerate() {
            let by_r = Ranking::from_scores(
                &request.candidates,
                attraction[i * n..(i + 1) * n].to_vec(),
                l,
            );
            let by_truth =
                Ranking::from_scores(&request.candidates, truth[i * n..(i + 1) * n].to_vec(), l);
            sums[0] += utility(world, request, &start[i]);
            sums[1] += utility(world, request, &climbed[i]);
            sums[2] += world.utility(request.user, &by_r.list);
            sums[3] += world.utility(request.user, &by_truth.list);
            sums[4] += utility(world, request, &list_part[i]);
            sums[5] += utility(world, request, &attraction_part[i]);
            sums[6] += utility(world, request, &exact[i]);
        }
    }
    let m = probe.len() as f64;
    println!(
        "mean exact utility U over {} validation requests:",
        probe.len()
    );
    println!(
        "  supervised generator, greedy               {:.4}",
        sums[0] / m
    );
    println!(
        "  R climbed from that list                   {:.4}",
        sums[1] / m
    );
    println!(
        "  top L by R's attraction                    {:.4}",
        sums[2] / m
    );
    println!(
        "  top L by the true attraction               {:.4}",
        sums[3] / m
    );
    println!(
        "  climbed: R's list part, true attraction    {:.4}",
        sums[4] / m
    );
    println!(
        "  climbed: true list model, R's attraction   {:.4}",
        sums[5] / m
    );
    println!(
        "  climbed: U itself                          {:.4}",
        sums[6] / m
    );
    Ok(())
}
