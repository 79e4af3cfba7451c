//! The browser demo's data and models, compiled into the binary so the page needs no file
//! system and fetches nothing: the `sim:small` simulator (built in the page) and a GoalRank run
//! with its reward model trained on it (`goalrank experiment main --data sim:small`, seed 0;
//! `assets/models/sim-small/`). The weights are compiled in at half precision (`model-f16.bpk`,
//! the runs' `model.bpk` rounded to f16: half the download) and run in f32.

use burn::module::Module;
use burn::tensor::Device;
use serde::de::DeserializeOwned;

use crate::data::{Dataset, Source};
use crate::model::{Generator, GeneratorConfig, RewardModel, RewardModelConfig};
use crate::model::{module_bytes, module_from_bytes};
use crate::run::check_run_config;
use crate::{Error, Result};

/// The demo's data source.
pub const DEMO_SOURCE: &str = "sim:small";

const GENERATOR_CONFIG: &str = include_str!("../../assets/models/sim-small/goalrank/config.json");
const GENERATOR_LEN: usize =
    include_bytes!("../../assets/models/sim-small/goalrank/model-f16.bpk").len();
/// `model-f16.bpk` in byte planes ([`planes`]); [`interleave`] gives the file back.
static GENERATOR_PLANES: [u8; GENERATOR_LEN] = planes(include_bytes!(
    "../../assets/models/sim-small/goalrank/model-f16.bpk"
));
const REWARD_CONFIG: &str = include_str!("../../assets/models/sim-small/reward/config.json");
const REWARD_LEN: usize =
    include_bytes!("../../assets/models/sim-small/reward/model-f16.bpk").len();
static REWARD_PLANES: [u8; REWARD_LEN] = planes(include_bytes!(
    "../../assets/models/sim-small/reward/model-f16.bpk"
));

/// The bytes in two planes, at compile time: every even-offset byte, then every odd-offset one.
/// An f16 weight is two bytes, low then high (at even offsets in a burnpack file), so the high
/// bytes (sign, exponent, top of the mantissa), which repeat a lot, come together, where gzip
/// (as a web server sends the page's wasm) finds them: 52 KB less gzipped. The burnpack
/// header, a few KB, is split too; [`interleave`] undoes it all.
const fn planes<const N: usize>(bytes: &[u8; N]) -> [u8; N] {
    let mut out = [0u8; N];
    let odd = N.div_ceil(2);
    let mut i = 0;
    while i < N {
        out[if i % 2 == 0 { i / 2 } else { odd + i / 2 }] = bytes[i];
        i += 1;
    }
    out
}

/// The bytes that [`planes`] split, back in their order.
fn interleave(planes: &[u8]) -> Vec<u8> {
    let (even, odd) = planes.split_at(planes.len().div_ceil(2));
    let mut bytes = Vec::with_capacity(planes.len());
    for (i, &byte) in even.iter().enumerate() {
        bytes.push(byte);
        bytes.extend(odd.get(i));
    }
    bytes
}

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
    let model = embedded(|d| config.init(d), &GENERATOR_PLANES, device)?;
    Ok((config, model))
}

/// The embedded reward model on `device`, checked against `dataset`.
pub fn demo_reward(dataset: &Dataset, device: &Device) -> Result<(RewardModelConfig, RewardModel)> {
    let origin = "embedded assets/models/sim-small/reward";
    let config: RewardModelConfig = model_config(REWARD_CONFIG, origin, "reward", dataset)?;
    let model = embedded(|d| config.init(d), &REWARD_PLANES, device)?;
    Ok((config, model))
}

/// Compiled-in f16 weights (in byte planes) in the model `init` makes, on `device`: loaded on
/// the CPU, where they become f32 (a read-back, which the browser's WebGPU does not allow
/// synchronously), then moved when `device` is another.
fn embedded<M: Module>(init: impl Fn(&Device) -> M, planes: &[u8], device: &Device) -> Result<M> {
    let cpu = Device::flex();
    let model = module_from_bytes(init(&cpu), interleave(planes))?;
    // (Device equality ignores autodiff.)
    if *device == cpu && !device.is_autodiff() {
        return Ok(model);
    }
    module_from_bytes(init(device), module_bytes(&model)?)
}

#[cfg(test)]
mod tests {
    use super::{interleave, planes};

    #[test]
    fn byte_planes_give_the_bytes_back() {
        const EVEN: [u8; 6] = planes(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(EVEN, [1, 3, 5, 2, 4, 6]);
        assert_eq!(interleave(&EVEN), [1, 2, 3, 4, 5, 6]);
        const ODD: [u8; 5] = planes(&[1, 2, 3, 4, 5]);
        assert_eq!(ODD, [1, 3, 5, 2, 4]);
        assert_eq!(interleave(&ODD), [1, 2, 3, 4, 5]);
        assert_eq!(interleave(&[]), Vec::<u8>::new());
        let file = include_bytes!("../../assets/models/sim-small/goalrank/model-f16.bpk");
        assert_eq!(interleave(&super::GENERATOR_PLANES), file);
        let file = include_bytes!("../../assets/models/sim-small/reward/model-f16.bpk");
        assert_eq!(interleave(&super::REWARD_PLANES), file);
    }
}
