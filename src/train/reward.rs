//! Training the reward model: binary cross-entropy of per-position logits against the logged
//! labels, one step at a time.

use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::Serialize;

use super::BatchSampler;
use crate::data::{Batch, Dataset, Request, Split};
use crate::model::{EncoderConfig, RewardModel, RewardModelConfig};

/// Reward-model size and training schedule.
#[derive(Config, Debug)]
pub struct RewardTrainingConfig {
    #[config(default = 64)]
    pub d_model: usize,
    #[config(default = 2)]
    pub layers: usize,
    #[config(default = 4)]
    pub heads: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = 128)]
    pub batch_size: usize,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    #[config(default = 1e-5)]
    pub weight_decay: f32,
    /// Passes over the training split.
    #[config(default = 4)]
    pub epochs: usize,
    #[config(default = 1)]
    pub seed: u64,
}

impl RewardTrainingConfig {
    /// The model config for `dataset`.
    pub fn model(&self, dataset: &Dataset) -> RewardModelConfig {
        RewardModelConfig::new(
            EncoderConfig::for_dataset(dataset, self.d_model),
            dataset.config.list_len,
        )
        .with_layers(self.layers)
        .with_heads(self.heads)
        .with_dropout(self.dropout)
    }
}

/// What one reward-model step did.
#[derive(Clone, Debug, Serialize)]
pub struct RewardRecord {
    pub step: usize,
    pub loss: f32,
    pub seconds: f64,
}

/// Binary cross-entropy with logits, averaged.
///
/// # Shapes
/// - logits, labels: `[B, L]` → `[1]`
pub fn bce_with_logits(logits: Tensor<2>, labels: Tensor<2>) -> Tensor<1> {
    // max(x, 0) - x·y + ln(1 + e^-|x|): stable for large |x|.
    let stable = logits.clone().abs().neg().exp().log1p();
    (logits.clone().clamp_min(0.0) - logits * labels + stable).mean()
}

/// A reward model being trained on one split.
pub struct RewardTrainer<'a> {
    dataset: &'a Dataset,
    requests: &'a [Request],
    model: RewardModel,
    optim: ModuleOptimizer,
    sampler: BatchSampler,
    device: Device,
    learning_rate: f64,
    step: usize,
}

impl<'a> RewardTrainer<'a> {
    /// `device` is the plain device; training runs on its autodiff twin.
    pub fn new(
        dataset: &'a Dataset,
        split: Split,
        config: &RewardTrainingConfig,
        device: &Device,
    ) -> Self {
        let device = device.clone().autodiff();
        device.seed(config.seed);
        let requests = dataset.split(split);
        Self {
            dataset,
            requests,
            model: config.model(dataset).init(&device),
            optim: AdamConfig::new()
                .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay)))
                .init(),
            sampler: BatchSampler::new(requests.len(), config.batch_size, config.seed),
            device,
            learning_rate: config.learning_rate,
            step: 0,
        }
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.sampler.steps_per_epoch()
    }

    /// One optimiser update on the next mini-batch.
    pub fn step(&mut self) -> RewardRecord {
        let start = Instant::now();
        let picked: Vec<&Request> = self
            .sampler
            .next_batch()
            .into_iter()
            .map(|i| &self.requests[i])
            .collect();
        let batch = Batch::new(self.dataset, &picked, &self.device);
        let loss = bce_with_logits(self.model.logged_logits(&batch), batch.labels.clone());
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self
            .optim
            .step(self.learning_rate, self.model.clone(), grads);
        self.step += 1;
        RewardRecord {
            step: self.step,
            loss: value,
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// The current model for inference (no autodiff, dropout off).
    pub fn model(&self) -> RewardModel {
        self.model.valid()
    }
}
