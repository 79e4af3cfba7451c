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

use super::profile::{Phase, PhaseTimer};
use super::{BatchSampler, group};
use crate::data::{Batch, Dataset, Request, World};
use crate::model::{
    Decode, EncoderConfig, Generator, GeneratorConfig, RewardModel, block_on, read_f32, read_i64,
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
    /// Refuses a setting no run can train with, naming its command-line flag.
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::at_least("--d-model", self.d_model, 1)?;
        check::heads("--heads", self.d_model, self.heads)?;
        check::at_least("--group-size", self.group_size, 1)?;
        check::positive("--tau", self.tau as f64)?;
        check::non_negative("--w-ref", self.w_ref as f64)?;
        check::non_negative("--w-sup", self.w_sup as f64)?;
        if self.w_ref == 0.0 && self.w_sup == 0.0 {
            return Err(crate::Error::Setting {
                name: "--w-ref",
                value: "0".into(),
                rule: "--w-ref and --w-sup cannot both be 0 (nothing to train)".into(),
            });
        }
        check::non_negative("--reward-noise", self.reward_noise as f64)?;
        check::at_least("--batch-size", self.batch_size, 1)?;
        check::positive("--lr", self.learning_rate)?;
        check::fraction("beta_1", self.beta_1 as f64)?;
        check::fraction("beta_2", self.beta_2 as f64)?;
        check::positive("epsilon", self.epsilon as f64)?;
        check::non_negative("weight_decay", self.weight_decay as f64)?;
        check::positive("clip", self.clip as f64)
    }

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
    /// Time per phase of the step, when profiling is on ([`GoalRankTrainer::set_profile`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
}

/// A GoalRank generator being trained against a frozen reward.
pub struct GoalRankTrainer<'a> {
    dataset: &'a Dataset,
    config: GoalRankConfig,
    model: Generator,
    reward: Reward,
    optim: ModuleOptimizer,
    sampler: BatchSampler,
    /// The plain device: batches, group sampling and the frozen reward model (the generator
    /// trains on its autodiff twin).
    plain: Device,
    step: usize,
    profile: bool,
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
            plain,
            config,
            step: 0,
            profile: false,
        }
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.sampler.steps_per_epoch()
    }

    /// The current generator for inference.
    pub fn model(&self) -> Generator {
        self.model.valid()
    }

    /// Times each phase of every following step (see [`StepRecord::phases`]). Each phase ends
    /// with a device synchronisation, which slows a GPU down: for measurement only.
    pub fn set_profile(&mut self, on: bool) {
        self.profile = on;
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
            .map_err(|e| crate::Error::backend_debug("optimizer state", e))
    }

    /// Restores the step counter and the optimiser state of a checkpoint.
    pub fn resume(&mut self, step: usize, optimizer: Vec<u8>) -> crate::Result<()> {
        let optim = std::mem::replace(&mut self.optim, AdamConfig::new().init());
        self.optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer))
            .map_err(|e| crate::Error::backend_debug("optimizer state", e))?;
        self.step = step;
        // Skip the batches already seen, so a resumed run sees the same data as an unbroken one
        // (the step's random draws are seeded by the step: see `step_seed`).
        for _ in 0..step {
            self.sampler.next_batch();
        }
        Ok(())
    }

    /// One GoalRank update on the next mini-batch of train requests. Errors when the device
    /// fails to hand values back, or when the loss is NaN or infinite (before the update).
    pub fn step(&mut self) -> crate::Result<StepRecord> {
        block_on(self.step_async())
    }

    /// [`Self::step`] that awaits its read-back (the browser's way).
    pub async fn step_async(&mut self) -> crate::Result<StepRecord> {
        let start = Instant::now();
        let mut timer = PhaseTimer::new(self.profile.then_some(&self.plain));
        let config = &self.config;
        // Every random draw of a step comes from a stream seeded by (seed, step), so a run
        // resumed from a checkpoint continues exactly as the uninterrupted run.
        self.plain.seed(step_seed(config.seed, self.step));
        let requests: Vec<&Request> = self
            .sampler
            .next_batch()
            .into_iter()
            .map(|i| &self.dataset.train[i])
            .collect();
        // One batch on the plain device serves the generator (its inputs are constants of the
        // graph) and the reward model.
        let batch = Batch::new(self.dataset, &requests, &self.plain);
        let [b, l] = batch.logged.dims();
        timer.mark("batch");

        // 1. Encode the users and candidates once, with gradient.
        let encoded = self.model.encode(&batch);
        timer.mark("encode");

        // 2. The supervised target: the logged list, positives first (each part in logged
        //    order), weighted on the steps that hold a positive.
        let (supervised, weights) = positives_first(&requests, l, &self.plain);
        let supervised = supervised.reshape([b, 1, l]);

        // 3. The group: K lists per request sampled from the current generator outside the
        //    autodiff graph (the plain twin of the model and of the encoding), plus the logged
        //    list. No group when its weight is 0 (the supervised-only baseline samples nothing).
        let group = if config.w_ref > 0.0 {
            let policy = self.model.valid();
            let fixed = encoded.without_autodiff();
            let sampled = match config.sampling {
                GroupSampling::Autoregressive => {
                    policy
                        .decode(&fixed, config.group_size, Decode::Sample)
                        .lists
                }
                GroupSampling::PlackettLuce => policy.plackett_luce(&fixed, config.group_size),
            };
            Some(if config.include_logged {
                Tensor::cat(vec![sampled, batch.logged.clone().reshape([b, 1, l])], 1)
            } else {
                sampled
            })
        } else {
            None
        };
        timer.mark("sample group");

        // log π_θ of every list in the group and of the supervised target, in one
        // teacher-forced decoder call.
        let lists = match &group {
            Some(g) => Tensor::cat(vec![g.clone(), supervised], 1),
            None => supervised,
        };
        let k_all = lists.dims()[1];
        let (log_probs, steps) = self.model.teacher_forced(&encoded, lists);
        timer.mark("teacher forcing");
        let sup_steps = steps.slice([0..b, k_all - 1..k_all, 0..l]).reshape([b, l]);
        let loss_sup = (sup_steps * weights.clone()).sum().neg() / weights.sum().clamp_min(1.0);
        let mut loss = loss_sup.clone().mul_scalar(config.w_sup);
        // The step's scalars, read back together once.
        let mut scalars = vec![loss_sup];

        if let Some(group) = group {
            let k = group.dims()[1];
            // 4. Rewards R(l) of every list from the frozen reward (constants).
            let rewards = self.rewards(&batch, &requests, group, [b, k, l]).await?;
            timer.mark("reward");
            // The reward-noise study perturbs what the reference policy sees:
            // R + λ · std_G(R) · ε, ε ~ N(0, 1) per list (the logged statistics stay clean).
            let seen = if config.reward_noise > 0.0 {
                let noise =
                    Tensor::<2>::random([b, k], Distribution::Normal(0.0, 1.0), &self.plain);
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
            scalars.extend([
                loss_ref,
                sampled.clone().mean(),
                group::std(sampled.clone()).mean(),
                sampled.max_dim(1).mean(),
                group::entropy(pi_ref),
            ]);
        }
        scalars.insert(0, loss.clone());
        let values = read_f32(Tensor::cat(
            scalars.into_iter().map(|t| t.without_autodiff()).collect(),
            0,
        ))
        .await?;
        timer.mark("read-back");
        let value = |i: usize| values.get(i).copied();
        let record = StepRecord {
            step: self.step + 1,
            loss: value(0).unwrap_or(f32::NAN),
            loss_ref: value(2),
            loss_sup: value(1).unwrap_or(f32::NAN),
            reward_mean: value(3),
            reward_std: value(4),
            reward_best: value(5),
            ref_entropy: value(6),
            seconds: 0.0,
            phases: Vec::new(),
        };
        // A NaN or infinite loss stops training before the update, so the weights (and any
        // checkpoint written from them) stay those of the last finite step.
        if !record.loss.is_finite() {
            return Err(crate::Error::NonFinite(format!(
                "step {}: the loss is {} (supervised {}, reference {}); training stopped before \
                 the update, with the weights of step {}",
                record.step,
                record.loss,
                record.loss_sup,
                record.loss_ref.map_or("-".into(), |v| v.to_string()),
                self.step
            )));
        }

        // 7. Backward, gradient clipping and the Adam step.
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        timer.mark("backward");
        self.model = self
            .optim
            .step(config.learning_rate, self.model.clone(), grads);
        timer.mark("optimizer");
        self.step += 1;
        Ok(StepRecord {
            seconds: start.elapsed().as_secs_f64(),
            phases: timer.finish(),
            ..record
        })
    }

    /// Rewards of the `[B, K, L]` lists (candidate positions) of `batch`'s requests, as
    /// constants. The reward model scores them where they are; only the oracle, which runs on
    /// the host, reads them back.
    ///
    /// # Shapes
    /// - lists: `[B, K, L]`
    /// - output: `[B, K]`
    async fn rewards(
        &self,
        batch: &Batch,
        requests: &[&Request],
        lists: Tensor<3, Int>,
        [b, k, l]: [usize; 3],
    ) -> crate::Result<Tensor<2>> {
        match &self.reward {
            Reward::Model(model) => Ok(model.score(&model.context(batch), lists).1),
            Reward::Oracle(world) => {
                let positions = read_i64(lists).await?;
                let values = positions
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
                    .collect();
                Ok(Tensor::from_data(
                    TensorData::new(values, [b, k]),
                    &self.plain,
                ))
            }
        }
    }
}

/// The seed of step `step`'s random draws (SplitMix64 of the run seed and the step).
fn step_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed
        .wrapping_add((step as u64).wrapping_add(1))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
