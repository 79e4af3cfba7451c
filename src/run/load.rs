//! Loading trained models back from their run folders.

use std::path::Path;

use burn::tensor::Device;
use serde::de::DeserializeOwned;

use crate::data::{Dataset, RequestConfig};
use crate::files::load_json;
use crate::model::load_module;
use crate::model::{
    Generator, GeneratorConfig, Pointwise, PointwiseConfig, RewardModel, RewardModelConfig,
};
use crate::{Error, Result};

/// A run folder's `config.json`, checked to be a `kind` run built for `dataset`'s requests.
pub fn run_config(dir: &Path, kind: &str, dataset: &Dataset) -> Result<serde_json::Value> {
    let config: serde_json::Value = load_json(&dir.join("config.json"))?;
    check_run_config(config, &dir.display().to_string(), kind, dataset)
}

/// A run's parsed `config.json` (from `origin`), checked to be a `kind` run built for
/// `dataset`'s requests.
pub fn check_run_config(
    config: serde_json::Value,
    origin: &str,
    kind: &str,
    dataset: &Dataset,
) -> Result<serde_json::Value> {
    check_kind(&config, origin, kind)?;
    // The model's catalogue sizes (its embeddings' rows, its genre layer's width) must be the
    // data's: weights of another shape would load, then fail in the first product.
    let encoder = &config["model"]["encoder"];
    for (name, here) in [
        ("items", dataset.items.len()),
        ("users", dataset.users.len()),
        ("genres", dataset.genres.len()),
    ] {
        if let Some(saved) = encoder.get(name).and_then(serde_json::Value::as_u64)
            && saved != here as u64
        {
            return Err(Error::Invalid(format!(
                "{origin}: trained on data with {saved} {name}, but --data `{}` has {here}: \
                 give the --data it was trained on",
                dataset.name
            )));
        }
    }
    check_requests(&config, origin, &dataset.config)?;
    Ok(config)
}

/// Before any data is built: refuses a `kind` run whose requests were built with other
/// settings than `requests` (a MovieLens run against the command line's request settings), so
/// that a mismatch is reported without first building and caching the other requests.
pub fn check_run_requests(dir: &Path, kind: &str, requests: &RequestConfig) -> Result<()> {
    let config: serde_json::Value = load_json(&dir.join("config.json"))?;
    let origin = dir.display().to_string();
    check_kind(&config, &origin, kind)?;
    check_requests(&config, &origin, requests)
}

/// Refuses a run `config.json` (from `origin`) that is not of `kind`.
fn check_kind(config: &serde_json::Value, origin: &str, kind: &str) -> Result<()> {
    if config["kind"] != kind {
        return Err(Error::Invalid(format!(
            "{origin}: a {} run, not a {kind} run",
            config["kind"]
        )));
    }
    Ok(())
}

/// Refuses a run `config.json` (from `origin`) whose requests were built with other settings
/// than `requests`, naming the first that differs.
fn check_requests(
    config: &serde_json::Value,
    origin: &str,
    requests: &RequestConfig,
) -> Result<()> {
    if let Some(difference) =
        super::fit::first_difference(&config["data"], &serde_json::json!(requests), "data")
    {
        return Err(Error::Invalid(format!(
            "{origin}: trained on requests built with another config than the given \
             --data/--candidates/--list-len/--history-len/--seed ({difference})"
        )));
    }
    Ok(())
}

/// The kind a run folder's `config.json` names (`reward`, `goalrank`, `pointwise`).
pub fn run_kind(dir: &Path) -> Result<String> {
    let config: serde_json::Value = load_json(&dir.join("config.json"))?;
    Ok(config["kind"].as_str().unwrap_or_default().to_string())
}

fn model_config<C: DeserializeOwned>(dir: &Path, kind: &str, dataset: &Dataset) -> Result<C> {
    let config = run_config(dir, kind, dataset)?;
    serde_json::from_value(config["model"].clone()).map_err(|e| Error::Checkpoint {
        path: dir.join("config.json"),
        message: format!("field `model`: {e}"),
    })
}

/// A setting of a run's `config.json` that no model can be built with, naming the file.
fn refuse_sizes(dir: &Path, checked: Result<()>) -> Result<()> {
    checked.map_err(|e| Error::Checkpoint {
        path: dir.join("config.json"),
        message: e.to_string(),
    })
}

/// The best checkpoint of a reward-model run.
pub fn load_reward(dir: &Path, dataset: &Dataset, device: &Device) -> Result<RewardModel> {
    let config: RewardModelConfig = model_config(dir, "reward", dataset)?;
    refuse_sizes(dir, config.validate())?;
    load_module(config.init(device), &dir.join("model.bpk"))
}

/// The best checkpoint of a GoalRank (or supervised-only) generator run.
pub fn load_generator(dir: &Path, dataset: &Dataset, device: &Device) -> Result<Generator> {
    let config: GeneratorConfig = model_config(dir, "goalrank", dataset)?;
    refuse_sizes(dir, config.validate())?;
    load_module(config.init(device), &dir.join("model.bpk"))
}

/// The best checkpoint of a pointwise (or PRM-style) run.
pub fn load_pointwise(dir: &Path, dataset: &Dataset, device: &Device) -> Result<Pointwise> {
    let config: PointwiseConfig = model_config(dir, "pointwise", dataset)?;
    refuse_sizes(dir, config.validate())?;
    load_module(config.init(device), &dir.join("model.bpk"))
}
