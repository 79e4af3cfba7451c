//! Training the pointwise baselines: binary cross-entropy of every candidate's logit against its
//! label (logged positives 1; logged negatives and retrieved items 0).

use web_time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use super::{AdamSettings, BatchSampler, RewardRecord, bce_with_logits};
use crate::data::{Batch, Dataset, Request};
use crate::model::{EncoderConfig, Pointwise, PointwiseConfig};

/// Size and schedule of a pointwise baseline.
#[derive(Config, Debug)]
pub struct PointwiseTrainingConfig {
    #[config(default = 64)]
    pub d_model: usize,
    /// 0: pointwise DNN; more: PRM-style context transformer layers.
    #[config(default = 0)]
    pub context_layers: usize,
    #[config(default = 4)]
    pub heads: usize,
    #[config(default = 128)]
    pub batch_size: usize,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    #[config(default = 1e-5)]
    pub weight_decay: f32,
    #[config(default = 4)]
    pub epochs: usize,
    #[config(default = 3)]
    pub seed: u64,
}

impl PointwiseTrainingConfig {
    /// Refuses a setting no run can train with, naming its command-line flag.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::at_least("--d-model", self.d_model, 1)?;
        if self.context_layers > 0 {
            check::heads("--d-model", self.d_model, self.heads)?;
        }
        check::transformer(
            ("--d-model", self.d_model),
            ("--context-layers", self.context_layers),
        )?;
        check::at_least("--batch-size", self.batch_size, 1)?;
        check::positive("--lr", self.learning_rate)?;
        check::non_negative("weight_decay", self.weight_decay as f64)?;
        check::at_least("--epochs", self.epochs, 1)
    }

    pub fn model(&self, dataset: &Dataset) -> PointwiseConfig {
        PointwiseConfig::new(EncoderConfig::for_dataset(dataset, self.d_model))
            .with_context_layers(self.context_layers)
            .with_heads(self.heads)
    }
}

/// A pointwise baseline being trained on the train split.
pub struct PointwiseTrainer<'a> {
    dataset: &'a Dataset,
    model: Pointwise,
    optim: ModuleOptimizer,
    sampler: BatchSampler,
    device: Device,
    learning_rate: f64,
    step: usize,
}

impl<'a> PointwiseTrainer<'a> {
    /// `device` is the plain device; training runs on its autodiff twin.
    pub fn new(dataset: &'a Dataset, config: &PointwiseTrainingConfig, device: &Device) -> Self {
        let device = device.clone().autodiff();
        device.seed(config.seed);
        Self {
            dataset,
            model: config.model(dataset).init(&device),
            optim: AdamSettings {
                weight_decay: Some(config.weight_decay),
                ..AdamSettings::default()
            }
            .optimizer(),
            sampler: BatchSampler::new(dataset.train.len(), config.batch_size, config.seed),
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
        let requests: Vec<&Request> = self
            .sampler
            .next_batch()
            .into_iter()
            .map(|i| &self.dataset.train[i])
            .collect();
        let batch = Batch::new(self.dataset, &requests, &self.device);
        let n = requests.first().map_or(0, |r| r.candidates.len());
        let labels: Vec<f32> = requests
            .iter()
            .flat_map(|r| r.candidate_labels().into_iter().map(f32::from))
            .collect();
        let labels =
            Tensor::<2>::from_data(TensorData::new(labels, [requests.len(), n]), &self.device);
        let loss = bce_with_logits(self.model.forward(&batch), labels);
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

    /// The current model for inference.
    pub fn model(&self) -> Pointwise {
        self.model.valid()
    }
}
