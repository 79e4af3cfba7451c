//! GoalRank training (DESIGN §5): one readable step.

use web_time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use super::{BatchSampler, group};
use crate::data::{Batch, Dataset, Request};
use crate::model::{
    Decode, Encoded, EncoderConfig, Generator, GeneratorConfig, RewardModel, block_on, read_f32,
    read_i64, read_scalar,
};

/// How the group of K lists per request is drawn.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GroupSampling {
    /// K lists decoded autoregressively from the current generator.
    Autoregressive,
    /// K Plackett–Luce lists (Gumbel-top-L) from the generator's first-step scores.
    PlackettLuce,
}

/// Generator size and GoalRank training settings.
#[derive(Config, Debug)]
pub struct GoalRankConfig {
    #[config(default = 64)]
    pub d_model: usize,
    #[config(default = 2)]
    pub layers: usize,
    #[config(default = 4)]
    pub heads: usize,
    /// Lists per request in a group (K).
    #[config(default = 20)]
    pub group_size: usize,
    /// Temperature of the reference policy (τ).
    #[config(default = 1.0)]
    pub tau: f32,
    /// Weight of the group-relative term.
    #[config(default = 1.0)]
    pub w_ref: f32,
    /// Weight of the supervised likelihood of logged positives.
    #[config(default = 1.0)]
    pub w_sup: f32,
    #[config(default = "GroupSampling::PlackettLuce")]
    pub sampling: GroupSampling,
    /// Adds the logged list to every group.
    #[config(default = true)]
    pub include_logged: bool,
    /// Strength λ of the noise added to the reward model's list rewards during training:
    /// R + λ · std_group(R) · ε with ε ~ N(0, 1) per list (the reward-noise study).
    #[config(default = 0.0)]
    pub reward_noise: f32,
    #[config(default = 64)]
    pub batch_size: usize,
    #[config(default = 1e-4)]
    pub learning_rate: f64,
    #[config(default = 0.9)]
    pub beta_1: f32,
    #[config(default = 0.98)]
    pub beta_2: f32,
    #[config(default = 1e-6)]
    pub epsilon: f32,
    #[config(default = 1e-3)]
    pub weight_decay: f32,
    /// Gradient-norm clip (per parameter tensor, as Burn clips).
    #[config(default = 5.0)]
    pub clip: f32,
    #[config(default = 7)]
    pub seed: u64,
}

impl GoalRankConfig {
    /// The generator config for `dataset`.
    pub fn model(&self, dataset: &Dataset) -> GeneratorConfig {
        GeneratorConfig::new(
            EncoderConfig::for_dataset(dataset, self.d_model),
            dataset.config.list_len,
        )
        .with_layers(self.layers)
        .with_heads(self.heads)
    }
}

/// What one GoalRank step did.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: usize,
    pub loss: f32,
    /// The group-relative loss; `None` when `w_ref` is 0 and no group is drawn.
    pub loss_ref: Option<f32>,
    pub loss_sup: f32,
    /// Mean over requests of the group's mean / std / best reward (sampled lists only).
    pub reward_mean: Option<f32>,
    pub reward_std: Option<f32>,
    pub reward_best: Option<f32>,
    /// Mean entropy of π_ref (ln K when all rewards tie).
    pub ref_entropy: Option<f32>,
    pub seconds: f64,
}

/// The group-relative term of one step.
struct GroupTerm {
    loss_ref: Tensor<1>,
    /// Mean over requests of the group mean / std / best reward (sampled lists only).
    stats: [f32; 3],
    ref_entropy: f32,
}

/// A GoalRank generator being trained against a frozen reward model.
pub struct GoalRankTrainer<'a> {
    dataset: &'a Dataset,
    config: GoalRankConfig,
    model: Generator,
    reward: RewardModel,
    optim: ModuleOptimizer,
    sampler: BatchSampler,
    /// Autodiff device of the generator.
    device: Device,
    /// Plain device of the frozen reward model.
    plain: Device,
    step: usize,
}

impl<'a> GoalRankTrainer<'a> {
    /// `reward` is frozen; `device` is the plain device (training uses its autodiff twin).
    pub fn new(
        dataset: &'a Dataset,
        reward: RewardModel,
        config: GoalRankConfig,
        device: &Device,
    ) -> Self {
        let plain = device.clone();
        let device = device.clone().autodiff();
        device.seed(config.seed);
        let model = config.model(dataset).init(&device);
        Self::with_model(dataset, reward, config, model, &plain)
    }

    /// Continues training `model` (for example one loaded from a checkpoint). Initialise or load
    /// it on `device`'s autodiff twin (`device.clone().autodiff()`): a model built on the plain
    /// device has no tracked parameters.
    pub fn with_model(
        dataset: &'a Dataset,
        reward: RewardModel,
        config: GoalRankConfig,
        model: Generator,
        device: &Device,
    ) -> Self {
        let plain = device.clone();
        let device = device.clone().autodiff();
        let optim = AdamConfig::new()
            .with_beta_1(config.beta_1)
            .with_beta_2(config.beta_2)
            .with_epsilon(config.epsilon)
            .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay)))
            .with_grad_clipping(Some(GradientClippingConfig::Norm(config.clip)))
            .init();
        let sampler = BatchSampler::new(dataset.train.len(), config.batch_size, config.seed);
        Self {
            dataset,
            model: model.fork(&device),
            reward: reward.valid(),
            optim,
            sampler,
            device,
            plain,
            config,
            step: 0,
        }
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.sampler.steps_per_epoch()
    }

    /// The current generator for inference.
    pub fn model(&self) -> Generator {
        self.model.valid()
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The optimiser state (Adam moments), for checkpoints.
    pub fn optimizer_bytes(&self) -> crate::Result<Vec<u8>> {
        self.optim
            .into_bytes()
            .map(|b| b.to_vec())
            .map_err(|e| crate::Error::Backend(format!("optimizer state: {e:?}")))
    }

    /// Restores the step counter and the optimiser state of a checkpoint.
    pub fn resume(&mut self, step: usize, optimizer: Vec<u8>) -> crate::Result<()> {
        let optim = std::mem::replace(&mut self.optim, AdamConfig::new().init());
        self.optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer))
            .map_err(|e| crate::Error::Backend(format!("optimizer state: {e:?}")))?;
        self.step = step;
        // Skip the batches already seen, so a resumed run sees the same data as an unbroken one.
        for _ in 0..step {
            self.sampler.next_batch();
        }
        Ok(())
    }

    /// Steps 2–5 of [`Self::step`]: the group, its rewards, π_ref and the reference loss.
    async fn group_term(
        &self,
        requests: &[&Request],
        batch: &Batch,
        encoded: &Encoded,
    ) -> crate::Result<GroupTerm> {
        let config = &self.config;
        let [b, l] = batch.logged.dims();
        let k = config.group_size;

        // 2. Sample a group of K lists per request from the detached encoding (no gradient),
        //    optionally adding the logged list.
        let sampled = match config.sampling {
            GroupSampling::Autoregressive => {
                self.model
                    .decode(&encoded.detach(), config.group_size, Decode::Sample)
                    .lists
            }
            GroupSampling::PlackettLuce => self
                .model
                .plackett_luce(&encoded.detach(), config.group_size),
        };
        let lists = if config.include_logged {
            Tensor::cat(vec![sampled, batch.logged.clone().reshape([b, 1, l])], 1)
        } else {
            sampled
        };

        // 3. Score every list with the frozen reward model: R = Σ p_i / log2(i + 1).
        let plain_batch = Batch::new(self.dataset, requests, &self.plain);
        let plain_lists = Tensor::<3, Int>::from_data(
            TensorData::new(read_i64(lists.clone()).await?, lists.dims()),
            &self.plain,
        );
        let context = self.reward.context(&plain_batch);
        let (_, rewards) = self.reward.score(&context, plain_lists);
        let rewards = Tensor::<2>::from_data(
            TensorData::new(read_f32(rewards.clone()).await?, rewards.dims()),
            &self.device,
        );
        // The reward-noise study perturbs what the reference policy sees (logged stats stay clean).
        let noisy = if config.reward_noise > 0.0 {
            // # Shapes: rewards [B, K'], spread [B, 1]
            let [b, k_all] = rewards.dims();
            let mean = rewards.clone().mean_dim(1);
            let spread = (rewards.clone() - mean).powi_scalar(2).mean_dim(1).sqrt();
            let noise =
                Tensor::<2>::random([b, k_all], Distribution::Normal(0.0, 1.0), &self.device);
            rewards.clone() + noise * spread.mul_scalar(config.reward_noise)
        } else {
            rewards.clone()
        };

        // 4. Group-relative reference policy: π_ref = softmax(z-score(R) / τ), no gradient.
        let pi_ref = group::reference_policy(noisy, config.tau);

        // 5. Teacher-forced log π_θ of every list in the group, with gradient.
        let (log_probs, _) = self.model.teacher_forced(encoded, lists);
        let loss_ref = group::reference_loss(pi_ref.clone(), log_probs);

        Ok(GroupTerm {
            loss_ref,
            stats: group_stats(rewards.slice([0..b, 0..k])).await?,
            ref_entropy: read_scalar(group::entropy(pi_ref)).await?,
        })
    }

    /// One GoalRank update on the next mini-batch of train requests. Errors only when the
    /// device fails to hand values back.
    pub fn step(&mut self) -> crate::Result<StepRecord> {
        block_on(self.step_async())
    }

    /// [`Self::step`] that awaits its read-backs (the browser's way).
    pub async fn step_async(&mut self) -> crate::Result<StepRecord> {
        let start = Instant::now();
        let config = &self.config;
        let requests: Vec<&Request> = self
            .sampler
            .next_batch()
            .into_iter()
            .map(|i| &self.dataset.train[i])
            .collect();
        let batch = Batch::new(self.dataset, &requests, &self.device);
        let [b, l] = batch.logged.dims();

        // 1. Encode the requests once, with gradient.
        let encoded = self.model.encode(&batch);

        // 2.–5. The group-relative term (skipped when its weight is 0: the supervised-only
        //       baseline samples nothing).
        let group = if config.w_ref > 0.0 {
            Some(self.group_term(&requests, &batch, &encoded).await?)
        } else {
            None
        };

        // 6. Supervised likelihood of the logged positives (positives first, in logged order).
        let (order, weights) = positives_first(&requests, l, &self.device);
        let (_, steps) = self
            .model
            .teacher_forced(&encoded, order.reshape([b, 1, l]));
        let loss_sup =
            (steps.reshape([b, l]) * weights.clone()).sum().neg() / weights.sum().clamp_min(1.0);

        // 7. Total loss, backward, Adam step.
        let mut loss = loss_sup.clone().mul_scalar(config.w_sup);
        let mut record = StepRecord {
            step: self.step + 1,
            loss: 0.0,
            loss_ref: None,
            loss_sup: read_scalar(loss_sup.clone()).await?,
            reward_mean: None,
            reward_std: None,
            reward_best: None,
            ref_entropy: None,
            seconds: 0.0,
        };
        if let Some(group) = group {
            loss = loss + group.loss_ref.clone().mul_scalar(config.w_ref);
            record.loss_ref = Some(read_scalar(group.loss_ref).await?);
            record.reward_mean = Some(group.stats[0]);
            record.reward_std = Some(group.stats[1]);
            record.reward_best = Some(group.stats[2]);
            record.ref_entropy = Some(group.ref_entropy);
        }
        record.loss = read_scalar(loss.clone()).await?;
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self
            .optim
            .step(config.learning_rate, self.model.clone(), grads);
        self.step += 1;
        Ok(StepRecord {
            seconds: start.elapsed().as_secs_f64(),
            ..record
        })
    }
}

/// Mean over requests of the group mean, std and maximum of the rewards.
async fn group_stats(rewards: Tensor<2>) -> crate::Result<[f32; 3]> {
    let mean = rewards.clone().mean_dim(1);
    let std = (rewards.clone() - mean.clone())
        .powi_scalar(2)
        .mean_dim(1)
        .sqrt();
    let best = rewards.max_dim(1);
    Ok([
        read_scalar(mean.mean()).await?,
        read_scalar(std.mean()).await?,
        read_scalar(best.mean()).await?,
    ])
}

/// The logged list reordered positives first (each group in logged order), and a weight of 1
/// on the steps that hold a positive.
///
/// # Shapes
/// - output: positions `[B, L]`, weights `[B, L]`
fn positives_first(
    requests: &[&Request],
    l: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2>) {
    let mut order = Vec::with_capacity(requests.len() * l);
    let mut weights = Vec::with_capacity(requests.len() * l);
    for r in requests {
        let position = |item: &u32| {
            r.candidates
                .iter()
                .position(|c| c == item)
                .unwrap_or_default() as i64
        };
        let (pos, neg): (Vec<usize>, Vec<usize>) = (0..l).partition(|&t| r.labels[t] > 0);
        for &t in pos.iter().chain(&neg) {
            order.push(position(&r.logged[t]));
        }
        weights.extend((0..l).map(|t| if t < pos.len() { 1.0f32 } else { 0.0 }));
    }
    let b = requests.len();
    (
        Tensor::from_data(TensorData::new(order, [b, l]), device),
        Tensor::from_data(TensorData::new(weights, [b, l]), device),
    )
}
