//! The browser demo's data and models, compiled into the binary so the page needs no file
//! system and fetches nothing: the `sim:small` simulator (built in the page) and a GoalRank run
//! with its reward model trained on it (`goalrank experiment main --data sim:small`, seed 0;
//! `assets/models/sim-small/`). The weights are compiled in at half precision (`model-f16.bpk`,
//! the runs' `model.bpk` rounded to f16: half the download) and run in f32.

use burn::tensor::Device;
use serde::de::DeserializeOwned;

use crate::data::{Dataset, Source};
use crate::model::{Generator, GeneratorConfig, RewardModel, RewardModelConfig};
use crate::model::{module_bytes, module_from_bytes, module_from_bytes_converted};
use crate::run::check_run_config;
use crate::{Error, Result};

/// The demo's data source.
pub const DEMO_SOURCE: &str = "sim:small";

const GENERATOR_CONFIG: &str = include_str!("../../assets/models/sim-small/goalrank/config.json");
const GENERATOR_WEIGHTS: &[u8] =
    include_bytes!("../../assets/models/sim-small/goalrank/model-f16.bpk");
const REWARD_CONFIG: &str = include_str!("../../assets/models/sim-small/reward/config.json");
const REWARD_WEIGHTS: &[u8] = include_bytes!("../../assets/models/sim-small/reward/model-f16.bpk");

/// The demo's requests, simulated (no file is read or written).
pub fn demo_dataset() -> Result<Dataset> {
    Source::parse(DEMO_SOURCE)?.load(std::path::Path::new(""))
}

fn model_config<C: DeserializeOwned>(
    json: &str,
    origin: &str,
    kind: &str,
    dataset: &Dataset,
) -> Result<C> {
    let value = serde_json::from_str(json)
        .map_err(|e| Error::Invalid(format!("{origin}: not JSON: {e}")))?;
    let config = check_run_config(value, origin, kind, dataset)?;
    serde_json::from_value(config["model"].clone())
        .map_err(|e| Error::Invalid(format!("{origin}: field `model`: {e}")))
}

/// The embedded GoalRank generator on `device`, checked against `dataset`.
pub fn demo_generator(dataset: &Dataset, device: &Device) -> Result<(GeneratorConfig, Generator)> {
    let origin = "embedded assets/models/sim-small/goalrank";
    let config: GeneratorConfig = model_config(GENERATOR_CONFIG, origin, "goalrank", dataset)?;
    let cpu = Device::flex();
    let model = module_from_bytes_converted(config.init(&cpu), GENERATOR_WEIGHTS.to_vec())?;
    let model = module_from_bytes(config.init(device), module_bytes(&model)?)?;
    Ok((config, model))
}

/// The embedded reward model on `device`, checked against `dataset`.
pub fn demo_reward(dataset: &Dataset, device: &Device) -> Result<(RewardModelConfig, RewardModel)> {
    let origin = "embedded assets/models/sim-small/reward";
    let config: RewardModelConfig = model_config(REWARD_CONFIG, origin, "reward", dataset)?;
    let cpu = Device::flex();
    let model = module_from_bytes_converted(config.init(&cpu), REWARD_WEIGHTS.to_vec())?;
    let model = module_from_bytes(config.init(device), module_bytes(&model)?)?;
    Ok((config, model))
}
