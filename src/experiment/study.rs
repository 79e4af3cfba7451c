//! The paper's studies: GoalRank as one setting varies, over seeds, on the test split.
//!
//! - `scaling`: generator width and depth (parameter count on the x axis);
//! - `group-size`: K, the lists per group;
//! - `reward-noise`: λ, the strength of the noise on the reward model's list rewards during
//!   training (R + λ · std_group(R) · ε; λ = 1 makes the noise as large as the real spread of
//!   rewards within a group).
//!
//! Every other setting is `experiment main`'s, and each seed reuses that experiment's reward
//! model (and, at the same number of steps, its supervised-only generator for the reference
//! row) when it has been run. With `exact` (simulator only) GoalRank learns from the exact
//! utility instead of the reward model, with the settings of experiment main's exact-reward
//! rows: the study of the method itself against a known truth (for reward noise: how much
//! error in the reward the step tolerates).

use burn::module::Module;

use super::main_table::{Runner, columns, row_values};
use super::plot::{LinePlot, Series};
use super::{ExperimentOptions, Goal, MainExperimentConfig, Report};
use crate::data::{Dataset, Split};
use crate::eval::generator_rankings;
use crate::train::{GoalRankConfig, Reward};

/// A named study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Study {
    Scaling,
    GroupSize,
    RewardNoise,
}

impl Study {
    pub fn name(self) -> &'static str {
        match self {
            Study::Scaling => "scaling",
            Study::GroupSize => "group-size",
            Study::RewardNoise => "reward-noise",
        }
    }
}

/// Generator sizes of the scaling study: (width, layers, heads).
pub const SCALING_SIZES: [(usize, usize, usize); 5] =
    [(8, 1, 2), (32, 1, 4), (64, 2, 4), (128, 3, 4), (192, 4, 4)];
/// Group sizes of the group-size study.
pub const GROUP_SIZES: [usize; 6] = [2, 4, 8, 16, 32, 64];
/// Noise strengths of the reward-noise study.
pub const NOISE_LEVELS: [f32; 4] = [0.0, 0.25, 0.5, 1.0];
/// Noise strengths of the reward-noise study on the exact reward, which reach further: up to
/// noise four times the real spread of rewards within a group.
pub const EXACT_NOISE_LEVELS: [f32; 5] = [0.0, 0.5, 1.0, 2.0, 4.0];

/// One setting of a study: its row name, x value and the GoalRank config it trains.
struct Setting {
    name: String,
    folder: String,
    x: Option<f64>,
    config: GoalRankConfig,
}

fn settings(study: Study, base: &MainExperimentConfig, seed: u64, exact: bool) -> Vec<Setting> {
    let goalrank = || {
        if exact {
            base.goalrank(1.0, seed)
                .with_group_size(base.oracle_group_size)
                .with_tau(base.oracle_tau)
                .with_w_sup(base.oracle_w_sup)
        } else {
            base.goalrank(base.w_ref, seed)
        }
    };
    match study {
        Study::Scaling => SCALING_SIZES
            .iter()
            .map(|&(d, layers, heads)| Setting {
                name: format!("d {d}, {layers} layer(s), {heads} heads"),
                folder: format!("d{d}-l{layers}"),
                x: None,
                config: goalrank()
                    .with_d_model(d)
                    .with_layers(layers)
                    .with_heads(heads),
            })
            .collect(),
        Study::GroupSize => GROUP_SIZES
            .iter()
            .map(|&k| Setting {
                name: format!("K = {k}"),
                folder: format!("k{k}"),
                x: Some(k as f64),
                config: goalrank().with_group_size(k),
            })
            .collect(),
        Study::RewardNoise => (if exact {
            &EXACT_NOISE_LEVELS[..]
        } else {
            &NOISE_LEVELS[..]
        })
        .iter()
        .map(|&l| Setting {
            name: format!("λ = {l}"),
            folder: format!("noise{l}"),
            x: Some(f64::from(l)),
            config: goalrank().with_reward_noise(l),
        })
        .collect(),
    }
}

/// The name of a study's files and run folder: `group-size`, or `group-size-exact` for the
/// exact-reward form.
pub fn study_file_name(study: Study, exact: bool) -> String {
    if exact {
        format!("{}-exact", study.name())
    } else {
        study.name().to_string()
    }
}

/// Runs `study` with `base`'s settings and seeds, GoalRank learning from the exact utility when
/// `exact` (simulator only); returns the table and its figure.
pub fn run_study(
    dataset: &Dataset,
    study: Study,
    base: &MainExperimentConfig,
    exact: bool,
    options: &ExperimentOptions,
) -> crate::Result<(Report, LinePlot)> {
    base.validate()?;
    // The exact utility exists only on the simulator (a clear error elsewhere).
    let exact_reward = if exact {
        Some(Reward::oracle(dataset).map_err(|_| crate::Error::Setting {
            name: "--exact-reward",
            value: dataset.name.clone(),
            rule: "needs simulated data (--data sim:...), where the exact utility is known".into(),
        })?)
    } else {
        None
    };
    let steps = if exact { base.oracle_steps } else { base.steps };
    let file_name = study_file_name(study, exact);
    let runner = Runner::new(dataset, options);
    let device = &options.device;
    let test = dataset.split(Split::Test);
    let simulated = dataset.world.is_some();
    let columns = columns(dataset, &[("parameters", 0, Goal::Neither)]);
    let title = if exact {
        format!(
            "{} study on {}, GoalRank on the exact reward (test split)",
            study.name(),
            dataset.name
        )
    } else {
        format!("{} study on {} (test split)", study.name(), dataset.name)
    };
    let mut report = Report::new(title, &columns).with_list_len(dataset.config.list_len);
    runner.say(format!(
        "experiment {}: independent evaluator",
        study.name()
    ));
    let evaluator = runner.evaluator(base)?;
    let optima = runner.optima();
    let mut xs: Vec<(String, f64)> = Vec::new();
    for s in 0..base.seeds {
        let seed = 1000 * s as u64;
        let tag = format!("seed {}/{}", s + 1, base.seeds);
        runner.say(format!("{tag}: reward model"));
        let (reward, reward_s, reward_config) = runner.reward(base, s)?;
        let dir = options.runs.join(&file_name).join(format!("seed-{s}"));
        let (goal_reward, goal_key, goal_s) = match &exact_reward {
            Some(exact) => (exact.clone(), serde_json::json!("oracle"), 0.0),
            None => (
                Reward::from(reward.clone()),
                serde_json::json!(reward_config),
                reward_s,
            ),
        };
        for setting in settings(study, base, seed, exact) {
            runner.say(format!("{tag}: {}", setting.name));
            let (model, seconds) = runner.generator(
                &dir.join(&setting.folder),
                &setting.config,
                steps,
                base.eval_every,
                &goal_reward,
                &goal_key,
            )?;
            let params = model.num_params() as f64;
            if s == 0 {
                xs.push((setting.name.clone(), setting.x.unwrap_or(params)));
            }
            let rankings = generator_rankings(&model, dataset, test, 256, device)?;
            let mut values = vec![Some(params)];
            values.extend(row_values(
                dataset,
                &rankings,
                &evaluator,
                &optima,
                Some(seconds + goal_s),
                device,
            )?);
            report.push(&setting.name, values);
        }
        // The reference: the supervised-only generator (the best baseline of experiment main on
        // MovieLens), same seed and schedule; experiment main's own run when the steps agree.
        runner.say(format!("{tag}: supervised-only generator (reference)"));
        let reference = if base.steps == MainExperimentConfig::new().steps {
            options.runs.join(format!("main/seed-{s}/supervised"))
        } else {
            options
                .runs
                .join(format!("studies-{}-steps/seed-{s}/supervised", base.steps))
        };
        let (sup, sup_s) = runner.generator(
            &reference,
            &base.goalrank(0.0, seed),
            base.steps,
            base.eval_every,
            &Reward::from(reward.clone()),
            &serde_json::json!(reward_config),
        )?;
        let rankings = generator_rankings(&sup, dataset, test, 256, device)?;
        let mut values = vec![Some(sup.num_params() as f64)];
        values.extend(row_values(
            dataset,
            &rankings,
            &evaluator,
            &optima,
            Some(sup_s),
            device,
        )?);
        report.push("reference: supervised-only generator (w_ref 0)", values);
    }

    // The figure: the headline quality (exact utility on the simulator, H@L on logged data).
    let (metric, label) = if simulated {
        (
            report.columns.len() - 3,
            "exact utility (expected clicks)".to_string(),
        )
    } else {
        (1, report.columns[1].clone())
    };
    let mut series = Series {
        label: if exact {
            "GoalRank, exact reward".into()
        } else {
            "GoalRank".into()
        },
        points: Vec::new(),
    };
    let mut references = Vec::new();
    for row in &report.rows {
        let Some((mean, std)) = report.summary(row, metric) else {
            continue;
        };
        match xs.iter().find(|(name, _)| *name == row.method) {
            Some(&(_, x)) => series.points.push((x, mean, std)),
            None => references.push(("supervised-only generator".to_string(), mean)),
        }
    }
    let x_label = match study {
        Study::Scaling => "generator parameters",
        Study::GroupSize => "group size K",
        Study::RewardNoise => "reward noise λ",
    };
    let plot = LinePlot {
        title: format!(
            "{} on {}: {label}, mean ± std over {} seeds",
            file_name, dataset.name, base.seeds
        ),
        x_label: x_label.into(),
        y_label: label,
        log_x: study != Study::RewardNoise,
        series: vec![series],
        references,
    };
    report.notes = if exact {
        vec![
            format!(
                "{} seeds, {} GoalRank steps each on the exact utility (best validation utility \
                 kept), with experiment main's exact-reward settings (K {}, τ {}, w_ref 1, w_sup \
                 {}, lr {}) except the setting studied; the reference row is the supervised-only \
                 generator of {} steps.",
                base.seeds,
                steps,
                base.oracle_group_size,
                base.oracle_tau,
                base.oracle_w_sup,
                base.learning_rate,
                base.steps
            ),
            "train s: GoalRank's own training time (the exact reward needs no training); the \
             reference row's includes its reward model's."
                .into(),
        ]
    } else {
        vec![
            format!(
                "{} seeds, {} GoalRank steps each (best validation N@{} kept); every other \
                 setting as in experiment main (K {}, τ {}, w_ref {}, lr {}).",
                base.seeds,
                base.steps,
                dataset.config.list_len,
                base.group_size,
                base.tau,
                base.w_ref,
                base.learning_rate
            ),
            "train s includes the reward model's training time.".into(),
        ]
    };
    if study == Study::RewardNoise {
        report.notes.push(
            "λ: during training each list reward becomes R + λ · std_group(R) · ε, ε ~ N(0, 1) \
             drawn per list and step; λ = 1 adds noise as large as the real spread of rewards \
             within a group. The evaluator and the reported metrics never see the noise."
                .into(),
        );
    }
    Ok((report, plot))
}
