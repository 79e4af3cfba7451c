//! `experiment logging`: when can a reward model learned from logs help at all? The same
//! simulated world logged with more and more exploration (an ε share of requests gets a
//! uniformly random list instead of the logging policy's), and at each ε the supervised-only
//! generator and GoalRank (learned reward) trained on those logs, scored by exact utility.
//!
//! A logging policy that sorts by attraction confounds position with quality and never shows
//! the weakest candidates; random lists break both. GoalRank's advantage over supervised
//! training should grow with ε if the reward model is the bottleneck.

use std::path::Path;

use burn::tensor::Device;

use super::main_table::{MainExperimentConfig, Runner};
use super::plot::{LinePlot, Series};
use super::{ExperimentOptions, Goal, Report};
use crate::data::{SimConfig, Split, simulator};
use crate::eval::{diagnostic_probe, generator_rankings, reward_diagnostics, utility_metrics};
use crate::train::Reward;

/// Exploration shares of the logging study.
pub const EPSILONS: [f64; 4] = [0.0, 0.25, 0.5, 1.0];

/// Runs the logging study on `world` (a simulator config) with `base`'s settings; runs go under
/// `runs_root/<dataset>/`, so experiment main on the same data reuses them.
pub fn run_logging_study(
    world: &SimConfig,
    base: &MainExperimentConfig,
    runs_root: &Path,
    progress: bool,
    device: &Device,
) -> crate::Result<(Report, LinePlot)> {
    base.validate()?;
    let columns = [
        ("ε", 2, Goal::Neither),
        ("supervised utility", 4, Goal::Higher),
        ("GoalRank utility", 4, Goal::Higher),
        ("GoalRank − supervised", 4, Goal::Higher),
        ("GoalRank regret", 4, Goal::Lower),
        ("Spearman(R, U)", 3, Goal::Higher),
    ];
    let mut report = Report::new(
        format!("logging study on sim-{} (test split)", world.name),
        &columns,
    );
    let mut supervised = Series {
        label: "supervised-only generator".into(),
        points: Vec::new(),
    };
    let mut goalrank = Series {
        label: "GoalRank (learned reward)".into(),
        points: Vec::new(),
    };
    for &epsilon in &EPSILONS {
        let config = world
            .clone()
            .with_logging_epsilon(epsilon)
            .with_name(format!("{}-eps{epsilon}", world.name));
        let dataset = simulator::build(&config)?;
        let options = ExperimentOptions {
            runs: runs_root.join(&dataset.name),
            progress,
            device: device.clone(),
        };
        let runner = Runner::new(&dataset, &options);
        runner.say(format!(
            "experiment logging: ε = {epsilon} ({})",
            dataset.name
        ));
        let optima = runner.optima();
        let test = dataset.split(Split::Test);
        let truth = dataset.world.as_ref().ok_or_else(|| {
            crate::Error::Invalid(format!("{}: the simulator built no world", dataset.name))
        })?;
        let name = format!("ε = {epsilon}");
        for s in 0..base.seeds {
            let seed = 1000 * s as u64;
            let dir = options.runs.join(format!("main/seed-{s}"));
            let (reward, _, reward_config) = runner.reward(base, s)?;
            let probe = diagnostic_probe(dataset.split(Split::Valid));
            let quality = reward_diagnostics(&reward, &dataset, probe, 128, seed, device)?;
            let learned = Reward::from(reward);
            let key = serde_json::json!(reward_config);
            let utility = |folder: &str, w_ref: f32| -> crate::Result<(f64, f64)> {
                runner.say(format!("ε = {epsilon}, seed {}: {folder}", s + 1));
                let (model, _) = runner.generator(
                    &dir.join(folder),
                    &base.goalrank(w_ref, seed),
                    base.steps,
                    base.eval_every,
                    &learned,
                    &key,
                )?;
                let rankings = generator_rankings(&model, &dataset, test, 256, device)?;
                let u = utility_metrics(truth, test, &rankings, &optima);
                Ok((u.utility, u.regret))
            };
            let (sup, _) = utility("supervised", 0.0)?;
            let (gr, regret) = utility("goalrank", base.w_ref)?;
            report.push(
                &name,
                vec![
                    Some(epsilon),
                    Some(sup),
                    Some(gr),
                    Some(gr - sup),
                    Some(regret),
                    quality.exact.map(|e| e.spearman),
                ],
            );
        }
        if let Some(row) = report.rows.iter().find(|r| r.method == name) {
            for (series, c) in [(&mut supervised, 1), (&mut goalrank, 2)] {
                if let Some((mean, std)) = report.summary(row, c) {
                    series.points.push((epsilon, mean, std));
                }
            }
        }
    }
    report.notes = vec![
        format!(
            "{} seeds; at each ε the world, users and candidates are drawn as in sim:{}, and an \
             ε share of requests is logged with a uniformly random list of candidates. The \
             reward model, the supervised-only generator and GoalRank are trained on those logs \
             as in experiment main (w_ref {}, K {}, {} steps) and scored by exact utility on \
             the test requests; Spearman(R, U) is the reward model's within-request rank \
             correlation with the exact utility on 500 validation requests.",
            base.seeds, world.name, base.w_ref, base.group_size, base.steps
        ),
        "The runs are experiment main's for the data set `--data sim:<preset>,epsilon=<ε>`, so \
         that command reuses them."
            .into(),
    ];
    let plot = LinePlot {
        title: format!(
            "logging study on sim-{}: exact utility, mean ± std over {} seeds",
            world.name, base.seeds
        ),
        x_label: "exploration share ε of logged lists".into(),
        y_label: "exact utility (expected clicks)".into(),
        log_x: false,
        series: vec![supervised, goalrank],
        references: Vec::new(),
    };
    Ok((report, plot))
}
