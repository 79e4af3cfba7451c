//! `goalrank eval`: simple policies and trained runs scored side by side on one split, with
//! optional Generator–Evaluator and Multi-Generator–Evaluator rows and the mean reward of each
//! chosen list under a given reward model.

use std::fmt::Write;
use std::path::PathBuf;

use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use crate::data::{Dataset, Request, Split};
use crate::eval::{
    ListSource, Metrics, Proposer, Ranking, SimplePolicy, UtilityMetrics, best_of_rankings,
    generator_rankings, mean_reward, optimal_lists, pointwise_rankings, score_rankings,
    utility_metrics,
};
use crate::model::{Decode, RewardModel};
use crate::run::{load_generator, load_pointwise, load_reward, run_kind};
use crate::{Error, Result};

/// What `goalrank eval` scores.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Simple policies; all of them when this and `checkpoints` are both empty.
    pub policies: Vec<SimplePolicy>,
    /// GoalRank or pointwise run folders.
    pub checkpoints: Vec<PathBuf>,
    /// A reward-model run whose mean R of each chosen list becomes a column.
    pub reward: Option<PathBuf>,
    /// A reward-model run that picks the best of `pick_k` sampled lists per generator.
    pub pick_with: Option<PathBuf>,
    pub pick_k: usize,
    /// One more row: every generator samples `pick_k` lists and `pick_with` picks the best.
    pub multi: bool,
    pub split: Split,
    /// Seed of the random policy and of the sampled lists.
    pub seed: u64,
    pub progress: bool,
}

/// One scored row.
#[derive(Clone, Debug)]
pub struct CompareRow {
    pub name: String,
    pub metrics: Metrics,
    /// Mean R of the chosen lists under `CompareOptions::reward`.
    pub reward: Option<f64>,
    /// Exact utility and regret (simulated data only).
    pub utility: Option<UtilityMetrics>,
}

/// Scores every policy and run of `options` on its split.
pub fn compare(
    dataset: &Dataset,
    options: &CompareOptions,
    device: &Device,
) -> Result<Vec<CompareRow>> {
    crate::error::check::at_least("--pick-k", options.pick_k, 1)?;
    // A batch's sampled lists' scores: `[256, k, N]` (at least the reward model's width).
    let per_list = (dataset.config.candidates as u128).max(64);
    crate::error::check::fits(
        "--pick-k",
        options.pick_k,
        (options.pick_k as u128).saturating_mul(256 * per_list),
    )?;
    if options.pick_with.is_some() && options.checkpoints.is_empty() {
        return Err(Error::Invalid(
            "--pick-with needs a generator to sample from: add --checkpoint RUN".into(),
        ));
    }
    if options.multi && options.pick_with.is_none() {
        return Err(Error::Invalid("--multi needs --pick-with".into()));
    }
    let k = dataset.config.list_len;
    let requests = dataset.require(options.split)?;
    // On logged data the metrics are means over the requests with a positive: with none they
    // would print as 0 (on simulated data the exact utility still scores every request).
    if dataset.world.is_none() && requests.iter().all(|r| r.positives() == 0) {
        return Err(Error::Invalid(format!(
            "--split {}: none of its {} requests holds a positive, so H, N, MAP, F1 and AUC \
             have nothing to score",
            options.split.name(),
            requests.len()
        )));
    }
    // Each policy and run once (a repeated one would be a second row of the same name, and
    // one key of the JSON).
    let mut policies: Vec<SimplePolicy> = Vec::new();
    for &p in &options.policies {
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    if policies.is_empty() && options.checkpoints.is_empty() {
        policies = SimplePolicy::ALL.to_vec();
    }
    let reward = options
        .reward
        .as_ref()
        .map(|dir| load_reward(dir, dataset, device))
        .transpose()?;
    let picker = options
        .pick_with
        .as_ref()
        .map(|dir| load_reward(dir, dataset, device))
        .transpose()?;
    let optima = match &dataset.world {
        Some(world) => optimal_lists(world, requests, options.progress),
        None => Vec::new(),
    };
    let score = |name: &str, rankings: Vec<Ranking>| {
        row(
            name,
            dataset,
            requests,
            rankings,
            reward.as_ref(),
            &optima,
            device,
        )
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed);
    let mut rows = Vec::new();
    for &p in &policies {
        let rankings: Vec<_> = requests
            .iter()
            .map(|r| p.rank(dataset, r, k, &mut rng))
            .collect();
        rows.push(score(p.name(), rankings)?);
    }
    let mut generators = Vec::new();
    for (i, dir) in options.checkpoints.iter().enumerate() {
        if options.checkpoints[..i].contains(dir) {
            continue;
        }
        let name = dir.to_string_lossy();
        if run_kind(dir)? == "pointwise" {
            let model = load_pointwise(dir, dataset, device)?;
            let rankings = pointwise_rankings(&model, dataset, requests, 256, device)?;
            rows.push(score(&name, rankings)?);
            continue;
        }
        let model = load_generator(dir, dataset, device)?;
        if let Some(picker) = &picker {
            device.seed(options.seed);
            let source = ListSource {
                proposer: Proposer::Generator(&model),
                mode: Decode::Sample,
                count: options.pick_k,
            };
            let rankings = best_of_rankings(&[source], picker, dataset, requests, 256, device)?;
            rows.push(score(
                &format!("{name} best-of-{}", options.pick_k),
                rankings,
            )?);
        }
        let rankings = generator_rankings(&model, dataset, requests, 256, device)?;
        rows.push(score(&name, rankings)?);
        generators.push(model);
    }
    if let (true, Some(picker)) = (options.multi, &picker) {
        device.seed(options.seed);
        let sources: Vec<ListSource> = generators
            .iter()
            .map(|model| ListSource {
                proposer: Proposer::Generator(model),
                mode: Decode::Sample,
                count: options.pick_k,
            })
            .collect();
        let rankings = best_of_rankings(&sources, picker, dataset, requests, 256, device)?;
        let name = format!(
            "multi-generator k={} best-of-{}",
            generators.len(),
            options.pick_k
        );
        rows.push(score(&name, rankings)?);
    }
    Ok(rows)
}

fn row(
    name: &str,
    dataset: &Dataset,
    requests: &[Request],
    rankings: Vec<Ranking>,
    reward: Option<&RewardModel>,
    optima: &[crate::data::simulator::Optimum],
    device: &Device,
) -> Result<CompareRow> {
    let metrics = score_rankings(requests, &rankings, dataset.config.list_len)?;
    let reward = reward
        .map(|model| mean_reward(model, dataset, requests, &rankings, 256, device))
        .transpose()?;
    let utility = dataset
        .world
        .as_ref()
        .map(|world| utility_metrics(world, requests, &rankings, optima));
    Ok(CompareRow {
        name: name.to_string(),
        metrics,
        reward,
        utility,
    })
}

/// The rows as `goalrank eval --json` prints them.
pub fn compare_json(dataset: &Dataset, split: Split, rows: &[CompareRow]) -> serde_json::Value {
    let policies: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut value = serde_json::json!(r.metrics);
            value["reward"] = serde_json::json!(r.reward);
            if let Some(u) = &r.utility {
                value["utility"] = serde_json::json!(u.utility);
                value["regret"] = serde_json::json!(u.regret);
                value["optimum"] = serde_json::json!(u.optimum);
            }
            (r.name.clone(), value)
        })
        .collect();
    serde_json::json!({
        "dataset": dataset.name,
        "split": split.name(),
        "policies": policies,
    })
}

/// The rows as `goalrank eval` prints them: a line per policy, metrics at k = L.
pub fn compare_table(dataset: &Dataset, split: Split, rows: &[CompareRow]) -> String {
    let k = dataset.config.list_len;
    let mut out = format!(
        "{} / {}: N = {}, L = {k}\n",
        dataset.name,
        split.name(),
        dataset.config.candidates
    );
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    let has_reward = rows.iter().any(|r| r.reward.is_some());
    let has_utility = rows.iter().any(|r| r.utility.is_some());
    let _ = write!(
        out,
        "{:<width$} {:>8} {:>8} {:>8} {:>8} {:>8}{}{}",
        "policy",
        format!("H@{k}"),
        format!("N@{k}"),
        format!("MAP@{k}"),
        format!("F1@{k}"),
        "AUC",
        if has_reward { "   reward" } else { "" },
        if has_utility {
            "  utility   regret"
        } else {
            ""
        }
    );
    for r in rows {
        let m = &r.metrics;
        let reward = r.reward.map(|v| format!(" {v:>8.4}")).unwrap_or_default();
        let utility = r
            .utility
            .map(|u| format!(" {:>8.4} {:>8.4}", u.utility, u.regret))
            .unwrap_or_default();
        let _ = write!(
            out,
            "\n{:<width$} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}{reward}{utility}",
            r.name, m.hit_ratio, m.ndcg, m.map, m.f1, m.auc
        );
    }
    if let Some(u) = rows.iter().find_map(|r| r.utility) {
        let _ = write!(
            out,
            "\nutility: exact expected clicks; regret: to the exact best list (mean utility {:.4})",
            u.optimum
        );
    }
    if let Some(CompareRow { metrics: m, .. }) = rows.first() {
        let _ = write!(
            out,
            "\n{} requests; {} without a logged positive are excluded from every metric",
            m.requests, m.without_positives
        );
    }
    out
}
