//! Training runs: drive a trainer's `step()`, log every step to `metrics.jsonl`, evaluate on
//! validation, keep the best checkpoint, and resume an interrupted run.
//!
//! A run folder holds `config.json`, `model.bpk` (best on validation), `metrics.jsonl` (one JSON
//! record per line) and, for GoalRank runs, the last checkpoint (`checkpoint` naming a
//! `checkpoint-<step>/` folder, see [`super::checkpoint`]) for `--resume`. A resumed run cuts
//! `metrics.jsonl` back to what it held at the checkpoint and continues bit for bit as the
//! uninterrupted run would have (on the same device).

use std::io::Write;
use std::path::{Path, PathBuf};
use web_time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoint::{self, RunState};
use crate::data::{Dataset, Split};
use crate::eval::{
    Metrics, diagnostic_probe, generator_rankings, logged_beats_random, mean_reward, mean_utility,
    pointwise_rankings, reward_quality, score_rankings,
};
use crate::files::{load_json, save_json, write_bytes};
use crate::model::{Generator, Pointwise, RewardModel};
use crate::model::{first_non_finite, load_module, module_bytes, module_from_bytes, save_module};
use crate::train::{
    GoalRankConfig, GoalRankTrainer, PointwiseTrainer, PointwiseTrainingConfig, Reward,
    RewardRecord, RewardSelection, RewardTrainer, RewardTrainingConfig,
};
use crate::{Error, Result};

/// Where and how long a run trains.
#[derive(Clone, Debug)]
pub struct FitOptions {
    pub run_dir: PathBuf,
    /// Optimiser steps in all (GoalRank) — the reward model counts epochs instead.
    pub steps: usize,
    /// Validate (and maybe checkpoint) every this many steps.
    pub eval_every: usize,
    /// Continue from the run folder's last checkpoint.
    pub resume: bool,
    pub progress: bool,
    pub device: Device,
    /// Validate GoalRank runs on the first this many validation requests (all when `None`): a
    /// large data set's validation split can take longer than the steps between checks.
    pub valid_requests: Option<usize>,
    /// More devices for data-parallel GoalRank steps (native only; see
    /// [`GoalRankTrainer::set_replicas`]); empty: one device.
    pub replicas: Vec<Device>,
}

impl FitOptions {
    /// Options for a run in `run_dir` on `device`, with a progress bar; the step counts are for
    /// GoalRank runs and start at 0.
    pub fn new(run_dir: PathBuf, device: Device) -> Self {
        Self {
            run_dir,
            steps: 0,
            eval_every: 0,
            resume: false,
            progress: true,
            device,
            valid_requests: None,
            replicas: Vec::new(),
        }
    }
}

fn bar(progress: bool, len: usize, label: &str) -> ProgressBar {
    let bar = if progress {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::hidden()
    };
    let template = format!("{label} {{bar:30}} {{pos}}/{{len}} {{elapsed}}<{{eta}} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// `metrics.jsonl`: one JSON record per line, each line written whole in one write.
struct MetricsLog(std::fs::File, PathBuf);

impl MetricsLog {
    /// Opens the log: empty for a fresh run, or cut back to the checkpoint's length for a
    /// resumed one (dropping records of steps after the checkpoint and any torn last line). A
    /// log shorter than that, or whose kept part differs from what the checkpoint recorded, is
    /// refused.
    fn open(dir: &Path, resumed: Option<&RunState>) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let error = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(error)?;
        let keep = match resumed {
            None => 0,
            Some(state) => {
                let bytes = std::fs::read(&path).map_err(error)?;
                let kept = bytes.get(..state.log_bytes as usize);
                // A checkpoint written before logs were hashed records only the length.
                let differs = |k: &[u8]| {
                    !state.log_sha256.is_empty() && checkpoint::sha256(k) != state.log_sha256
                };
                if kept.is_none_or(differs) {
                    return Err(Error::Checkpoint {
                        path: path.clone(),
                        message: format!(
                            "does not hold the log of the checkpoint of step {} (damaged or \
                             replaced); it cannot be resumed exactly: start a new run",
                            state.step
                        ),
                    });
                }
                state.log_bytes
            }
        };
        file.set_len(keep).map_err(error)?;
        Ok(Self(file, path))
    }

    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        let line = format!("{value}\n");
        self.0
            .write_all(line.as_bytes())
            .map_err(|source| Error::Write {
                path: self.1.clone(),
                source,
            })
    }

    /// Flushes the log to disk and returns its length and SHA-256.
    fn sync(&mut self) -> Result<(u64, String)> {
        let error = |source| Error::Write {
            path: self.1.clone(),
            source,
        };
        self.0.sync_data().map_err(error)?;
        let bytes = std::fs::read(&self.1).map_err(error)?;
        Ok((bytes.len() as u64, checkpoint::sha256(&bytes)))
    }
}

/// Metrics of a generator's greedy lists on a split.
pub fn generator_metrics(
    model: &Generator,
    dataset: &Dataset,
    split: Split,
    device: &Device,
) -> Result<Metrics> {
    let requests = dataset.split(split);
    let rankings = generator_rankings(model, dataset, requests, 256, device)?;
    score_rankings(requests, &rankings, dataset.config.list_len)
}

/// Validation of one epoch: the value to compare and what to log.
struct Checked<M> {
    model: M,
    value: f64,
    log: serde_json::Value,
}

/// Runs `epochs` passes of `per_epoch` steps, validates after each and keeps the best model
/// (`lower_is_better` for losses) as `model.bpk`. `config` goes to `config.json` first.
#[allow(clippy::too_many_arguments)]
fn fit_epochs<M: Module>(
    options: &FitOptions,
    config: serde_json::Value,
    label: &str,
    epochs: usize,
    per_epoch: usize,
    lower_is_better: bool,
    mut step: impl FnMut() -> RewardRecord,
    mut check: impl FnMut() -> Result<Checked<M>>,
) -> Result<(M, RunState)> {
    let dir = &options.run_dir;
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    checkpoint::remove_stale(dir)?;
    save_json(&config, &dir.join("config.json"))?;
    let mut log = MetricsLog::open(dir, None)?;
    let start = Instant::now();
    let progress = bar(options.progress, per_epoch * epochs, label);
    let mut state = RunState::default();
    let mut best = None;
    for epoch in 1..=epochs {
        for _ in 0..per_epoch {
            let record = step();
            if !record.loss.is_finite() {
                return Err(Error::NonFinite(format!(
                    "{label}: step {}: the loss is {}; training stopped, the best model so far \
                     (if any) is kept",
                    record.step, record.loss
                )));
            }
            progress.set_message(format!("loss {:.4}", record.loss));
            progress.inc(1);
            log.write(serde_json::json!({"kind": "train", "record": record}))?;
            state.step = record.step;
        }
        let checked = check()?;
        log.write(serde_json::json!({"kind": "valid", "epoch": epoch, "step": state.step, "check": checked.log}))?;
        let better = state.best.is_none_or(|b| {
            if lower_is_better {
                checked.value < b
            } else {
                checked.value > b
            }
        });
        if better {
            state.best = Some(checked.value);
            state.best_step = state.step;
            save_module(&checked.model, &dir.join("model.bpk"))?;
            best = Some(checked.model);
        }
    }
    progress.finish_and_clear();
    state.seconds = start.elapsed().as_secs_f64();
    save_json(&state, &dir.join("state.json"))?;
    let best = best.ok_or_else(|| Error::Invalid(format!("{label}: epochs must be at least 1")))?;
    Ok((best, state))
}

/// Trains a reward model on `split` for `config.epochs`, keeping the best epoch by
/// `config.select` on `check` (validation for the main model; train for the independent
/// evaluator, which is trained on validation).
pub fn fit_reward(
    dataset: &Dataset,
    split: Split,
    check: Split,
    config: &RewardTrainingConfig,
    options: &FitOptions,
) -> Result<(RewardModel, RunState)> {
    config.validate()?;
    dataset.require(split)?;
    dataset.require(check)?;
    config.check_size(dataset, split)?;
    let trainer =
        std::cell::RefCell::new(RewardTrainer::new(dataset, split, config, &options.device));
    let per_epoch = trainer.borrow().steps_per_epoch();
    let run_config = serde_json::json!({
        "kind": "reward",
        "split": split,
        "training": config,
        "model": config.model(dataset),
        "data": dataset.config,
        "dataset": dataset.name,
    });
    fit_epochs(
        options,
        run_config,
        "reward",
        config.epochs,
        per_epoch,
        true,
        || trainer.borrow_mut().step(),
        || {
            let model = trainer.borrow().model();
            let quality =
                reward_quality(&model, dataset, dataset.split(check), 256, &options.device)?;
            let objective = quality.objective(config.listwise, config.imitation);
            // R(logged) > R(random) is measured only where it selects.
            let (value, beats) = match config.select {
                RewardSelection::LogLoss => (quality.log_loss, None),
                RewardSelection::Objective => (objective, None),
                RewardSelection::LoggedOverRandom => {
                    let requests = diagnostic_probe(dataset.split(check));
                    let beats =
                        logged_beats_random(&model, dataset, requests, 128, 0, &options.device)?;
                    (1.0 - beats, Some(beats))
                }
            };
            Ok(Checked {
                model,
                value,
                log: {
                    let mut log = serde_json::json!(quality);
                    log["objective"] = serde_json::json!(objective);
                    log["logged_beats_random"] = serde_json::json!(beats);
                    log
                },
            })
        },
    )
}

/// Trains a pointwise baseline for `config.epochs`, keeping the epoch with the best validation
/// N@L.
pub fn fit_pointwise(
    dataset: &Dataset,
    config: &PointwiseTrainingConfig,
    options: &FitOptions,
) -> Result<(Pointwise, RunState)> {
    config.validate()?;
    dataset.require(Split::Train)?;
    dataset.require(Split::Valid)?;
    let trainer = std::cell::RefCell::new(PointwiseTrainer::new(dataset, config, &options.device));
    let per_epoch = trainer.borrow().steps_per_epoch();
    let run_config = serde_json::json!({
        "kind": "pointwise",
        "training": config,
        "model": config.model(dataset),
        "data": dataset.config,
        "dataset": dataset.name,
    });
    fit_epochs(
        options,
        run_config,
        "pointwise",
        config.epochs,
        per_epoch,
        false,
        || trainer.borrow_mut().step(),
        || {
            let model = trainer.borrow().model();
            let requests = dataset.split(Split::Valid);
            let rankings = pointwise_rankings(&model, dataset, requests, 256, &options.device)?;
            let metrics = score_rankings(requests, &rankings, dataset.config.list_len)?;
            Ok(Checked {
                model,
                value: metrics.ndcg,
                log: serde_json::json!(metrics),
            })
        },
    )
}

/// What a GoalRank run's `config.json` holds; `reward` is [`reward_id`]'s.
fn goalrank_run_config(
    dataset: &Dataset,
    config: &GoalRankConfig,
    reward: &str,
) -> serde_json::Value {
    serde_json::json!({
        "kind": "goalrank",
        "training": config,
        "model": config.model(dataset),
        "data": dataset.config,
        "dataset": dataset.name,
        "reward": reward,
    })
}

/// What a GoalRank run learns from, as its `config.json` records it: `oracle`, or the frozen
/// reward model's weights by their SHA-256 (the same model wherever its run folder lies).
pub fn reward_id(reward: &Reward) -> Result<String> {
    Ok(match reward {
        Reward::Oracle(_) => "oracle".into(),
        Reward::Model(model) => format!(
            "reward model sha256:{}",
            checkpoint::sha256(&module_bytes(model.as_ref())?)
        ),
    })
}

/// The first setting in which a run's saved `config.json` and the asked one differ. A run
/// saved before `config.json` recorded its reward matches any reward.
fn settings_difference(saved: &serde_json::Value, asked: &serde_json::Value) -> Option<String> {
    let mut asked = asked.clone();
    if saved.get("reward").is_none()
        && let Some(map) = asked.as_object_mut()
    {
        map.remove("reward");
    }
    first_difference(saved, &asked, "")
}

/// True when `dir` holds a checkpoint of a GoalRank run with exactly these settings, trained
/// against `reward`.
pub fn can_resume(dir: &Path, dataset: &Dataset, config: &GoalRankConfig, reward: &Reward) -> bool {
    let Ok(reward) = reward_id(reward) else {
        return false;
    };
    checkpoint::has_checkpoint(dir)
        && load_json::<serde_json::Value>(&dir.join("config.json")).is_ok_and(|saved| {
            settings_difference(&saved, &goalrank_run_config(dataset, config, &reward)).is_none()
        })
}

/// Whether saved settings and asked ones agree, a setting missing on one side counting as
/// `null` (a run saved before a setting existed matches that setting left at its default).
pub fn same_settings(saved: &serde_json::Value, asked: &serde_json::Value) -> bool {
    first_difference(saved, asked, "").is_none()
}

/// The first setting in which `saved` and `asked` differ, as `path = saved, not asked`.
pub(crate) fn first_difference(
    saved: &serde_json::Value,
    asked: &serde_json::Value,
    path: &str,
) -> Option<String> {
    match (saved, asked) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            a.keys().chain(b.keys()).find_map(|k| {
                let null = serde_json::Value::Null;
                let key = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                first_difference(a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null), &key)
            })
        }
        (a, b) if a != b => Some(format!("{path} = {a}, not {b}")),
        _ => None,
    }
}

/// Trains GoalRank for `options.steps`, validating N@L every `eval_every` steps and keeping the
/// best checkpoint. With `resume`, continues from the run folder's last checkpoint.
pub fn fit_goalrank(
    dataset: &Dataset,
    reward: impl Into<Reward>,
    config: &GoalRankConfig,
    options: &FitOptions,
) -> Result<(Generator, RunState)> {
    config.validate()?;
    crate::error::check::at_least("--steps", options.steps, 1)?;
    crate::error::check::at_least("--eval-every", options.eval_every, 1)?;
    if let Some(n) = options.valid_requests {
        crate::error::check::at_least("--valid-requests", n, 1)?;
    }
    dataset.require(Split::Train)?;
    dataset.require(Split::Valid)?;
    config.check_size(dataset)?;
    let dir = &options.run_dir;
    let device = &options.device;
    let model_config = config.model(dataset);
    // Trained on the exact utility, a run is also selected on it (validation utility); every
    // other run on validation N@L, as a run on logged data must be.
    // Where the data is simulated, validation also logs the exact utility, and with a reward
    // model the model's mean R of the chosen lists: diagnostics only, never the selection of a
    // run trained on a reward model.
    let reward: Reward = reward.into();
    let reward_key = reward_id(&reward)?;
    let (exact, frozen) = match &reward {
        Reward::Oracle(_) => (true, None),
        Reward::Model(model) => (false, Some(model.as_ref().clone())),
    };
    let world = dataset.world.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.clone(),
        source,
    })?;
    checkpoint::remove_stale(dir)?;
    let run_config = goalrank_run_config(dataset, config, &reward_key);
    // A resume checks the run's settings whether or not it has a checkpoint yet: a folder that
    // holds another kind of run, or a run with other settings, is never started afresh over.
    if options.resume && dir.join("config.json").is_file() {
        let saved: serde_json::Value = load_json(&dir.join("config.json"))?;
        if saved["kind"] != run_config["kind"] {
            return Err(Error::Invalid(format!(
                "--resume: {} holds a {} run, not a goalrank run; train into another --run",
                dir.display(),
                saved["kind"].as_str().unwrap_or("foreign")
            )));
        }
        if let Some(difference) = settings_difference(&saved, &run_config) {
            return Err(Error::Invalid(format!(
                "--resume: {} was trained with other settings ({difference}); resume with the \
                 run's settings or train into another --run",
                dir.display()
            )));
        }
    }
    let resumed = if options.resume {
        checkpoint::load(dir)?
    } else {
        None
    };
    let (mut trainer, mut state) = match resumed {
        Some(saved) => {
            let model =
                module_from_bytes(model_config.init(&device.clone().autodiff()), saved.weights)?;
            let mut trainer =
                GoalRankTrainer::with_model(dataset, reward, config.clone(), model, device);
            trainer.resume(saved.state.step, saved.optimizer)?;
            (trainer, saved.state)
        }
        None => {
            if options.resume {
                crate::say!("{}: nothing to resume, starting afresh", dir.display());
            }
            checkpoint::forget(dir)?;
            save_json(&run_config, &dir.join("config.json"))?;
            (
                GoalRankTrainer::new(dataset, reward, config.clone(), device),
                RunState::default(),
            )
        }
    };
    if !options.replicas.is_empty() {
        #[cfg(not(target_arch = "wasm32"))]
        trainer.set_replicas(options.replicas.clone());
        #[cfg(target_arch = "wasm32")]
        return Err(Error::Invalid(
            "data-parallel training needs threads: native only".into(),
        ));
    }
    let resuming = state.step > 0;
    let mut log = MetricsLog::open(dir, resuming.then_some(&state))?;
    // Time already spent before a resume is added to the time of this process.
    let earlier = state.seconds;
    let start = Instant::now();
    let progress = bar(options.progress, options.steps, "goalrank");
    progress.set_position(state.step as u64);
    // A resumed run starts from its best checkpoint so far; a fresh run has none yet.
    let best_path = dir.join("model.bpk");
    let mut best_model = if state.best.is_some() {
        load_module(model_config.init(device), &best_path)?
    } else {
        trainer.model()
    };
    while trainer.steps_done() < options.steps {
        let record = trainer.step()?;
        let reward = record
            .reward_mean
            .map(|r| format!(" R {r:.3}"))
            .unwrap_or_default();
        progress.set_message(format!("loss {:.3}{reward}", record.loss));
        progress.inc(1);
        log.write(serde_json::json!({"kind": "train", "record": record}))?;
        let step = trainer.steps_done();
        if step % options.eval_every.max(1) == 0 || step == options.steps {
            let model = trainer.model();
            if let Some(name) = first_non_finite(&model) {
                return Err(Error::NonFinite(format!(
                    "step {step}: weight `{name}` holds NaN or infinite values; training \
                     stopped, the checkpoint of step {} is kept",
                    state.step
                )));
            }
            let valid = dataset.split(Split::Valid);
            let valid = &valid[..options
                .valid_requests
                .unwrap_or(valid.len())
                .min(valid.len())];
            let rankings = generator_rankings(&model, dataset, valid, 256, device)?;
            let metrics = score_rankings(valid, &rankings, dataset.config.list_len)?;
            let utility = world.map(|world| mean_utility(world, valid, &rankings));
            let mean_r = match &frozen {
                Some(model) => Some(mean_reward(model, dataset, valid, &rankings, 256, device)?),
                None => None,
            };
            log.write(
                serde_json::json!({"kind": "valid", "step": step, "metrics": metrics,
                "utility": utility, "reward": mean_r}),
            )?;
            let value = match utility {
                Some(u) if exact => u,
                _ => metrics.ndcg,
            };
            // The weights are checked finite above and serialised once, for the best model
            // (written before the checkpoint that records it) and the checkpoint.
            let weights = module_bytes(&model)?;
            if state.best.is_none_or(|b| value > b) {
                state.best = Some(value);
                state.best_step = step;
                write_bytes(&best_path, &weights)?;
                best_model = model.clone();
            }
            state.step = step;
            state.seconds = earlier + start.elapsed().as_secs_f64();
            (state.log_bytes, state.log_sha256) = log.sync()?;
            checkpoint::save(dir, &state, &weights, &trainer.optimizer_bytes()?)?;
        }
    }
    progress.finish_and_clear();
    Ok((best_model, state))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_setting_saved_runs_lack_matches_only_its_default() {
        let saved = json!({"model": {"layers": 2, "list_len": 6}, "dataset": "d"});
        let default =
            json!({"model": {"layers": 2, "list_len": 6, "decoder_mlp": null}, "dataset": "d"});
        let narrow =
            json!({"model": {"layers": 2, "list_len": 6, "decoder_mlp": 1}, "dataset": "d"});
        assert!(same_settings(&saved, &default));
        assert!(!same_settings(&saved, &narrow));
        assert!(!same_settings(&default, &narrow));
        assert_eq!(
            first_difference(&saved, &narrow, "").as_deref(),
            Some("model.decoder_mlp = null, not 1")
        );
    }
}
