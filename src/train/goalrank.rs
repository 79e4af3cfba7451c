//! GoalRank training: the whole step in one function, [`GoalRankTrainer::step_async`], read
//! top to bottom against the paper (Zhang et al., arXiv 2509.22046, "GoalRank"):
//!
//! 1. encode the batch's users and candidates once;
//! 2. the supervised likelihood of the logged positives (`w_sup`);
//! 3. sample a group G of K lists per request from the auxiliary policy (the current generator,
//!    autoregressively or Plackett–Luce), plus the logged list;
//! 4. score every list with the frozen reward model R(l) (or, on the simulator, the exact
//!    utility U(l): the oracle check);
//! 5. the group-relative reference policy π_ref(l) = softmax_G((R(l) − mean_G R) /
//!    (std_G R + 1e-6) / τ), a constant;
//! 6. the reference loss −Σ_{l∈G} π_ref(l) · log π_θ(l) / L (`w_ref`), or with
//!    [`Objective::PolicyGradient`] the group-normalised REINFORCE loss −(1/K) Σ A(l) log π_θ(l) / L;
//! 7. backward, gradient clipping, Adam.
//!
//! log π_θ(l) is divided by L (a per-decoding-step log-likelihood), so that the reference and
//! supervised terms have the same scale and `w_ref` means the same at any list length.

use web_time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use super::{BatchSampler, group};
use crate::data::{Batch, Dataset, Request, World};
use crate::model::{
    Decode, EncoderConfig, Generator, GeneratorConfig, RewardModel, block_on, read_f32, read_i64,
    read_scalar,
};

/// What GoalRank minimises on a group.
#[derive(Config, Debug, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// GoalRank: cross-entropy to the group-relative reference policy.
    Reference,
    /// The policy-gradient baseline on the same groups and advantages (GRPO-style).
    PolicyGradient,
}

/// How the group of K lists per request is drawn.
#[derive(Config, Debug, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    #[config(default = "GroupSampling::Autoregressive")]
    pub sampling: GroupSampling,
    #[config(default = "Objective::Reference")]
    pub objective: Objective,
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

/// Where a group's list rewards come from.
#[derive(Clone, Debug)]
pub enum Reward {
    /// A frozen reward model.
    Model(Box<RewardModel>),
    /// The simulator's exact expected clicks U(l): the oracle that separates the method from
    /// the reward model.
    Oracle(Box<World>),
}

impl Reward {
    /// The exact utility of `dataset`'s simulated world; an error for logged data.
    pub fn oracle(dataset: &Dataset) -> crate::Result<Self> {
        dataset
            .world
            .clone()
            .map(|w| Reward::Oracle(Box::new(w)))
            .ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "--reward oracle needs simulated data (--data sim:...); {} is logged data",
                    dataset.name
                ))
            })
    }
}

impl From<RewardModel> for Reward {
    fn from(model: RewardModel) -> Self {
        Reward::Model(Box::new(model))
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

/// A GoalRank generator being trained against a frozen reward.
pub struct GoalRankTrainer<'a> {
    dataset: &'a Dataset,
    config: GoalRankConfig,
    model: Generator,
    reward: Reward,
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
        reward: impl Into<Reward>,
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
        reward: impl Into<Reward>,
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
        let reward = match reward.into() {
            Reward::Model(m) => Reward::from(m.valid()),
            oracle => oracle,
        };
        Self {
            dataset,
            model: model.fork(&device),
            reward,
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

        // 1. Encode the users and candidates once, with gradient.
        let encoded = self.model.encode(&batch);

        // 2. The supervised target: the logged list, positives first (each part in logged
        //    order), weighted on the steps that hold a positive.
        let (supervised, weights) = positives_first(&requests, l, &self.device);
        let supervised = supervised.reshape([b, 1, l]);

        // 3. The group: K lists per request sampled from the current generator without
        //    gradient, plus the logged list. No group when its weight is 0 (the
        //    supervised-only baseline samples nothing).
        let group = if config.w_ref > 0.0 {
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
            Some(if config.include_logged {
                Tensor::cat(vec![sampled, batch.logged.clone().reshape([b, 1, l])], 1)
            } else {
                sampled
            })
        } else {
            None
        };

        // log π_θ of every list in the group and of the supervised target, in one
        // teacher-forced decoder call.
        let lists = match &group {
            Some(g) => Tensor::cat(vec![g.clone(), supervised], 1),
            None => supervised,
        };
        let k_all = lists.dims()[1];
        let (log_probs, steps) = self.model.teacher_forced(&encoded, lists);
        let sup_steps = steps.slice([0..b, k_all - 1..k_all, 0..l]).reshape([b, l]);
        let loss_sup = (sup_steps * weights.clone()).sum().neg() / weights.sum().clamp_min(1.0);
        let mut loss = loss_sup.clone().mul_scalar(config.w_sup);
        let mut record = StepRecord {
            step: self.step + 1,
            loss: 0.0,
            loss_ref: None,
            loss_sup: read_scalar(loss_sup).await?,
            reward_mean: None,
            reward_std: None,
            reward_best: None,
            ref_entropy: None,
            seconds: 0.0,
        };

        if let Some(group) = group {
            let k = group.dims()[1];
            // 4. Rewards R(l) of every list from the frozen reward (one read-back of the lists).
            let positions = read_i64(group).await?;
            let rewards = self.rewards(&requests, positions, [b, k, l]).await?;
            // The reward-noise study perturbs what the reference policy sees:
            // R + λ · std_G(R) · ε, ε ~ N(0, 1) per list (the logged statistics stay clean).
            let seen = if config.reward_noise > 0.0 {
                let noise =
                    Tensor::<2>::random([b, k], Distribution::Normal(0.0, 1.0), &self.device);
                rewards.clone()
                    + noise * group::std(rewards.clone()).mul_scalar(config.reward_noise)
            } else {
                rewards.clone()
            };

            // 5. Advantages and the group-relative reference policy (constants).
            let advantages = group::z_scores(seen);
            let pi_ref = group::softmax_policy(advantages.clone(), config.tau);

            // 6. The reference loss on per-step log-likelihoods (or the policy gradient).
            let group_log_probs = log_probs.slice([0..b, 0..k]).div_scalar(l as f32);
            let loss_ref = match config.objective {
                Objective::Reference => group::reference_loss(pi_ref.clone(), group_log_probs),
                Objective::PolicyGradient => {
                    group::policy_gradient_loss(advantages, group_log_probs)
                }
            };
            loss = loss + loss_ref.clone().mul_scalar(config.w_ref);

            let sampled = rewards.slice([0..b, 0..config.group_size]);
            record.loss_ref = Some(read_scalar(loss_ref).await?);
            record.reward_mean = Some(read_scalar(sampled.clone().mean()).await?);
            record.reward_std = Some(read_scalar(group::std(sampled.clone()).mean()).await?);
            record.reward_best = Some(read_scalar(sampled.max_dim(1).mean()).await?);
            record.ref_entropy = Some(read_scalar(group::entropy(pi_ref)).await?);
        }

        // 7. Backward, gradient clipping and the Adam step.
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

    /// Rewards of `[B, K, L]` lists (candidate positions, row-major), on the autodiff device
    /// as constants.
    ///
    /// # Shapes
    /// - output: `[B, K]`
    async fn rewards(
        &self,
        requests: &[&Request],
        positions: Vec<i64>,
        [b, k, l]: [usize; 3],
    ) -> crate::Result<Tensor<2>> {
        let values = match &self.reward {
            Reward::Model(model) => {
                let batch = Batch::new(self.dataset, requests, &self.plain);
                let lists =
                    Tensor::<3, Int>::from_data(TensorData::new(positions, [b, k, l]), &self.plain);
                let (_, rewards) = model.score(&model.context(&batch), lists);
                read_f32(rewards).await?
            }
            Reward::Oracle(world) => positions
                .chunks(l)
                .enumerate()
                .map(|(i, list)| {
                    let request = requests[i / k];
                    let items: Vec<u32> = list
                        .iter()
                        .map(|&p| request.candidates[p as usize])
                        .collect();
                    world.utility(request.user, &items) as f32
                })
                .collect(),
        };
        Ok(Tensor::from_data(
            TensorData::new(values, [b, k]),
            &self.device,
        ))
    }
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
        let positions = r.logged_positions();
        let (pos, neg): (Vec<usize>, Vec<usize>) = (0..l).partition(|&t| r.labels[t] > 0);
        for &t in pos.iter().chain(&neg) {
            order.push(positions[t] as i64);
        }
        weights.extend((0..l).map(|t| if t < pos.len() { 1.0f32 } else { 0.0 }));
    }
    let b = requests.len();
    (
        Tensor::from_data(TensorData::new(order, [b, l]), device),
        Tensor::from_data(TensorData::new(weights, [b, l]), device),
    )
}
