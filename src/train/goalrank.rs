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
//!    log π_θ of the K sampled lists is the one their decoding recorded on the autodiff graph
//!    where that pays (autoregressive groups on one CPU device), else, like the other lists',
//!    teacher-forced;
//! 7. backward, gradient clipping, Adam (`train::adam`: one WGSL kernel per tensor on wgpu).
//!
//! Data-parallel ([`GoalRankTrainer::set_replicas`]): 1–5 stay on the main device for the whole
//! batch; in 6–7 every device back-propagates its share of the batch on its own copy of the
//! generator, and Burn's `GradientsAccumulator` sums the gradients before the one Adam step.
//!
//! log π_θ(l) is divided by L (a per-decoding-step log-likelihood), so that the reference and
//! supervised terms have the same scale and `w_ref` means the same at any list length.

use web_time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use super::profile::{Phase, PhaseTimer};
use super::{AdamSettings, BatchSampler, group};
use crate::data::{Batch, Dataset, Request, World};
use crate::model::{
    DECODER_MLP, Decode, Encoded, EncoderConfig, Generator, GeneratorConfig, RewardModel, block_on,
    read_f32, read_i64,
};

use crate::error::check::MAX_TENSOR_ELEMENTS;

/// [`check::too_large`](crate::error::check::too_large) with the sizes a GoalRank step can
/// lower.
fn too_large(name: &'static str, value: usize, elements: u128) -> crate::Error {
    crate::error::check::too_large(
        name,
        value,
        elements,
        "; lower --batch-size, --group-size, --d-model or --decoder-mlp",
    )
}

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
    /// The decoder MLP's hidden width as a multiple of d (`None`: the model's default,
    /// `model::DECODER_MLP`).
    pub decoder_mlp: Option<usize>,
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
    /// Temperature of the group's autoregressive sampling: 1 draws from the generator itself;
    /// above 1 the lists vary more, so their rewards differ by more than the reward model's
    /// error (see `eval::group_diagnostics`).
    #[config(default = 1.0)]
    pub group_temperature: f32,
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
        // Blame the flag the user moved from its default (`bench` has no --heads).
        let heads_flag = if self.heads == Self::new().heads {
            "--d-model"
        } else {
            "--heads"
        };
        check::heads(heads_flag, self.d_model, self.heads)?;
        check::transformer(("--d-model", self.d_model), ("--layers", self.layers))?;
        if let Some(mlp) = self.decoder_mlp {
            check::at_least("--decoder-mlp", mlp, 1)?;
        }
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
        check::positive("--group-temperature", self.group_temperature as f64)?;
        check::at_least("--batch-size", self.batch_size, 1)?;
        check::positive("--lr", self.learning_rate)?;
        check::fraction("beta_1", self.beta_1 as f64)?;
        check::fraction("beta_2", self.beta_2 as f64)?;
        check::positive("epsilon", self.epsilon as f64)?;
        check::non_negative("weight_decay", self.weight_decay as f64)?;
        check::positive("clip", self.clip as f64)
    }

    /// Refuses sizes whose largest tensor on `dataset` would exceed [`MAX_TENSOR_ELEMENTS`]
    /// (8 GiB of f32): a mistyped `--batch-size 10000000` is one line naming the flag, not an
    /// allocation failure that aborts the process. Within the bound, a step can still need more
    /// memory than the machine has.
    pub fn check_size(&self, dataset: &Dataset) -> crate::Result<()> {
        let (n, l) = (
            dataset.config.candidates as u128,
            dataset.config.list_len as u128,
        );
        let d = self.d_model as u128;
        let rows = (dataset.items.len() + dataset.users.len()) as u128;
        // Weights: the embeddings and a feed-forward layer (d × 4d).
        let weights = rows
            .saturating_mul(d)
            .max(d.saturating_mul(d).saturating_mul(4));
        if weights > MAX_TENSOR_ELEMENTS {
            return Err(too_large("--d-model", self.d_model, weights));
        }
        // A step: the encoder's feed-forward over N + 1 tokens, and the decoder's scores and
        // prefix means of K + 1 lists of L steps.
        let b = self.batch_size as u128;
        let lists = b
            .saturating_mul(self.group_size as u128 + 1)
            .saturating_mul(l);
        let step = b
            .saturating_mul(n + 1)
            .saturating_mul(4)
            .saturating_mul(d)
            .max(lists.saturating_mul(n.max(d)));
        if step > MAX_TENSOR_ELEMENTS {
            // Blame the larger of the two factors the user set.
            return Err(if self.group_size > self.batch_size {
                too_large("--group-size", self.group_size, step)
            } else {
                too_large("--batch-size", self.batch_size, step)
            });
        }
        // The decoder MLP: its weight, and its hidden layer over every list's steps. Blame the
        // width where the weight alone is too large, else the larger of the lists' factors.
        let mlp = self.decoder_mlp.unwrap_or(DECODER_MLP);
        let width = (mlp as u128).saturating_mul(d);
        let hidden = width.saturating_mul(d.max(lists));
        if hidden > MAX_TENSOR_ELEMENTS {
            return Err(if width.saturating_mul(d) > MAX_TENSOR_ELEMENTS {
                too_large("--decoder-mlp", mlp, hidden)
            } else if self.group_size > self.batch_size {
                too_large("--group-size", self.group_size, hidden)
            } else {
                too_large("--batch-size", self.batch_size, hidden)
            });
        }
        Ok(())
    }

    /// The generator config for `dataset`.
    pub fn model(&self, dataset: &Dataset) -> GeneratorConfig {
        GeneratorConfig::new(
            EncoderConfig::for_dataset(dataset, self.d_model),
            dataset.config.list_len,
        )
        .with_layers(self.layers)
        .with_heads(self.heads)
        .with_decoder_mlp(self.decoder_mlp)
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
    /// Mean weight π_ref gives the logged list; `None` without it in the group.
    pub ref_logged: Option<f32>,
    /// Share of requests whose logged list has the group's highest reward (ties count);
    /// `None` without it in the group.
    pub logged_best: Option<f32>,
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
    /// More devices for data-parallel steps: each takes a share of the batch (see
    /// [`Self::set_replicas`]). Empty: the whole step runs on `plain`.
    replicas: Vec<Device>,
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
        let optim = AdamSettings {
            beta_1: config.beta_1,
            beta_2: config.beta_2,
            epsilon: config.epsilon,
            weight_decay: Some(config.weight_decay),
            clip: Some(config.clip),
        }
        .optimizer();
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
            replicas: Vec::new(),
            config,
            step: 0,
            profile: false,
        }
    }

    /// Trains data-parallel on the plain device and `replicas` (plain devices; the same device
    /// may be named twice): every step, each device takes a contiguous share of the batch,
    /// computes its share of the loss and its gradients on a copy of the generator, and the
    /// gradients are summed on the plain device with Burn's [`GradientsAccumulator`] before one
    /// optimiser step there. The group is still sampled and scored on the plain device for the
    /// whole batch, so a step's lists, and hence its result, are those of the one-device step
    /// up to float rounding. Native only (one thread per device).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_replicas(&mut self, replicas: Vec<Device>) {
        self.replicas = replicas;
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
        // On an error the trainer keeps its optimiser (with its settings) as it was.
        self.optim = self
            .optim
            .clone()
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

        // 1. Encode the users and candidates once, with gradient. With replicas each device
        //    encodes its own share of the batch instead (step 6), and the main device only
        //    while the generator's weights are still lazy (the first step of a fresh run): Burn
        //    draws a weight when it is first used, so the replicated step uses them in the
        //    one-device order and draws the same weights.
        let encoded = (self.replicas.is_empty() || !materialised(&self.model))
            .then(|| self.model.encode(&batch));
        timer.mark("encode");

        // 2. The supervised target: the logged list, positives first (each part in logged
        //    order), weighted on the steps that hold a positive.
        let (supervised, weights, positives) = positives_first(&requests, l, &self.plain);
        let supervised = supervised.reshape([b, 1, l]);

        // 3. The group: K lists per request sampled from the current generator outside the
        //    autodiff graph (the plain twin of the model and of the encoding), plus the logged
        //    list. No group when its weight is 0 (the supervised-only baseline samples nothing).
        //    Where the decoding can be recorded (one device, autoregressive lists, see
        //    `Generator::records_decoding`), the K lists are decoded on the autodiff graph
        //    instead, and their log π_θ, computed while sampling, is the one the loss uses: the
        //    teacher-forced call of step 6 then takes only the logged and supervised lists.
        let mut recorded = None;
        let group = if config.w_ref > 0.0 {
            let mode = Decode::sampled_at(config.group_temperature);
            let sampled = match (&encoded, config.sampling) {
                (Some(encoded), GroupSampling::Autoregressive)
                    if self.replicas.is_empty() && Generator::records_decoding(&self.plain) =>
                {
                    let decoded = self.model.decode(encoded, config.group_size, mode);
                    recorded = Some(decoded.log_probs);
                    decoded.lists
                }
                _ => {
                    let policy = self.model.valid();
                    let fixed = match &encoded {
                        Some(encoded) => encoded.without_autodiff(),
                        None => policy.encode(&batch),
                    };
                    match config.sampling {
                        GroupSampling::Autoregressive => {
                            policy.decode(&fixed, config.group_size, mode).lists
                        }
                        GroupSampling::PlackettLuce => {
                            policy.plackett_luce(&fixed, config.group_size)
                        }
                    }
                }
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

        // The step's scalars, read back together once: [loss_sup, loss_ref] first, then the
        // group's statistics.
        let mut statistics = Vec::new();
        let mut group_weights = None;
        if let Some(group) = &group {
            let k = group.dims()[1];
            // 4. Rewards R(l) of every list from the frozen reward (constants).
            let rewards = self
                .rewards(&batch, &requests, group.clone(), [b, k, l])
                .await?;
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

            // 5. Advantages and the group-relative reference policy (constants): what each
            //    list's log-likelihood is weighted by in the loss.
            let advantages = group::z_scores(seen);
            let pi_ref = group::softmax_policy(advantages.clone(), config.tau);
            let sampled = rewards.clone().slice([0..b, 0..config.group_size]);
            statistics.extend([
                sampled.clone().mean(),
                group::std(sampled.clone()).mean(),
                sampled.clone().max_dim(1).mean(),
                group::entropy(pi_ref.clone()),
            ]);
            if config.include_logged {
                // # Shapes: the logged list is the group's last column, `[B, 1]`.
                let logged = rewards.slice([0..b, config.group_size..k]);
                statistics.extend([
                    pi_ref.clone().slice([0..b, config.group_size..k]).mean(),
                    logged.greater_equal(sampled.max_dim(1)).float().mean(),
                ]);
            }
            group_weights = Some(match config.objective {
                Objective::Reference => pi_ref,
                Objective::PolicyGradient => advantages,
            });
        }

        // 6. log π_θ of every list in the group (but the recorded ones) and of the supervised
        //    target, in one teacher-forced decoder call, and the loss: on this device, or each
        //    replica on its share of the batch.
        let forced = match (group, &recorded) {
            (None, _) => None,
            (Some(g), None) => Some(g),
            // The recorded lists' log π_θ is known already; the logged list, if any, follows.
            // # Shapes: `[B, 1, L]` with the logged list, else nothing.
            (Some(g), Some(_)) => {
                let k = g.dims()[1];
                (k > config.group_size).then(|| g.slice([0..b, config.group_size..k, 0..l]))
            }
        };
        let targets = Targets {
            lists: match forced {
                Some(g) => Tensor::cat(vec![g, supervised], 1),
                None => supervised,
            },
            weights,
            group_weights,
            recorded,
        };
        let (terms, grads) = match encoded {
            Some(encoded) if self.replicas.is_empty() => {
                let loss = loss(config, &self.model, &encoded, targets, positives, 1.0);
                timer.mark("teacher forcing");
                let terms = read_terms(&loss, statistics).await?;
                timer.mark("read-back");
                check_finite(&terms, self.step)?;
                // 7. Backward, gradient clipping and the Adam step.
                let grads = GradientsParams::from_grads(loss.total.backward(), &self.model);
                timer.mark("backward");
                (terms, grads)
            }
            lazy => {
                if let Some(encoded) = lazy {
                    // The one-device step's forward pass, for its first use of every weight.
                    loss(
                        config,
                        &self.model,
                        &encoded,
                        targets.clone(),
                        positives,
                        1.0,
                    );
                }
                let (terms, grads) =
                    self.replica_gradients(&requests, targets, positives, statistics)?;
                timer.mark("replicas");
                check_finite(&terms, self.step)?;
                (terms, grads)
            }
        };
        self.model = self
            .optim
            .step(config.learning_rate, self.model.clone(), grads);
        timer.mark("optimizer");
        self.step += 1;
        Ok(StepRecord {
            step: self.step,
            loss: terms.loss,
            loss_ref: terms.loss_ref,
            loss_sup: terms.loss_sup,
            reward_mean: terms.statistics.first().copied(),
            reward_std: terms.statistics.get(1).copied(),
            reward_best: terms.statistics.get(2).copied(),
            ref_entropy: terms.statistics.get(3).copied(),
            ref_logged: terms.statistics.get(4).copied(),
            logged_best: terms.statistics.get(5).copied(),
            seconds: start.elapsed().as_secs_f64(),
            phases: timer.finish(),
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
            // The lists come from the generator's device. Where that is the autodiff twin (a
            // recorded decoding) they keep its autodiff (`to_device` to the same device keeps
            // it), so the frozen model and the group's maths run untracked through the autodiff
            // backend. Running them plain (`without_autodiff`) gave the same rewards, no faster
            // step in alternating `bench --profile` runs, and π_ref's last bits changed: Burn's
            // softmax on flex without autodiff is flex's own, not the composition.
            Reward::Model(model) => {
                let lists = lists.to_device(&self.plain);
                Ok(model.score(&model.context(batch), lists).1)
            }
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
    /// 6–7 on several devices: each device's copy of the generator encodes its share of the
    /// batch, computes its share of the loss and back-propagates it, the first on this thread and
    /// each other in a thread of its own; the gradients are moved to the plain device and summed
    /// in device order.
    fn replica_gradients(
        &self,
        requests: &[&Request],
        targets: Targets,
        positives: f32,
        statistics: Vec<Tensor<1>>,
    ) -> crate::Result<(Terms, GradientsParams)> {
        let devices: Vec<Device> = std::iter::once(self.plain.clone())
            .chain(self.replicas.iter().cloned())
            .collect();
        let b = requests.len();
        let (config, dataset, plain) = (&self.config, self.dataset, &self.plain);
        let work = |device: &Device, rows: std::ops::Range<usize>| {
            let model = self.model.clone();
            let targets = targets.rows(rows.clone(), device);
            let share = &requests[rows];
            let device = device.clone();
            move || -> crate::Result<(GradientsParams, Vec<f32>)> {
                let replica = model.fork(&device.clone().autodiff());
                let batch = Batch::new(dataset, share, &device);
                let encoded = replica.encode(&batch);
                let fraction = share.len() as f32 / b as f32;
                let loss = loss(config, &replica, &encoded, targets, positives, fraction);
                let values = block_on(read_f32(Tensor::cat(loss.scalars(), 0)))?;
                let grads = GradientsParams::from_grads(loss.total.backward(), &replica)
                    .to_device(plain, &replica);
                Ok((grads, values))
            }
        };
        let mut jobs = devices
            .iter()
            .zip(shares(b, devices.len()))
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(device, rows)| work(device, rows));
        let first = jobs.next();
        // The other shares run in threads of their own; the first runs on this thread, which
        // (on the CPU thread pool) keeps taking part in the pool's work instead of waiting.
        let results: Vec<crate::Result<(GradientsParams, Vec<f32>)>> =
            std::thread::scope(|scope| {
                let panicked = |_| {
                    Err(crate::Error::backend_message(
                        "data-parallel step",
                        "a replica's thread panicked",
                    ))
                };
                let handles: Vec<_> = jobs.map(|job| scope.spawn(job)).collect();
                first
                    .map(|job| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                            .unwrap_or_else(panicked)
                    })
                    .into_iter()
                    .chain(
                        handles
                            .into_iter()
                            .map(|handle| handle.join().unwrap_or_else(panicked)),
                    )
                    .collect()
            });
        let mut accumulator = GradientsAccumulator::<Generator>::new();
        let mut sums = [0.0f32; 3];
        let mut with_reference = false;
        for result in results {
            let (grads, values) = result?;
            accumulator.accumulate(&self.model, grads);
            for (sum, value) in sums.iter_mut().zip(&values) {
                *sum += value;
            }
            with_reference = values.len() == 3;
        }
        let statistics = if statistics.is_empty() {
            Vec::new()
        } else {
            block_on(read_f32(Tensor::cat(statistics, 0)))?
        };
        let terms = Terms {
            loss: sums[0],
            loss_sup: sums[1],
            loss_ref: with_reference.then_some(sums[2]),
            statistics,
        };
        Ok((terms, accumulator.grads()))
    }
}

/// What a step's loss compares the generator with, for the whole batch or a share of it.
///
/// # Shapes
/// With G lists in the group (the K sampled and the logged one, or none without a group), R of
/// them recorded (K, or 0):
/// - lists: `[B, G − R + 1, L]`, the group's lists that are not recorded and the supervised
///   target last
/// - weights: `[B, L]`, 1 on the supervised steps that hold a positive
/// - group_weights: `[B, G]`, π_ref (GoalRank) or the advantages (policy gradient)
/// - recorded: `[B, R]`, log π_θ of the group's first R lists, recorded on the autodiff graph
///   while they were sampled
#[derive(Clone)]
struct Targets {
    lists: Tensor<3, Int>,
    weights: Tensor<2>,
    group_weights: Option<Tensor<2>>,
    recorded: Option<Tensor<2>>,
}

impl Targets {
    /// The requests `rows` of the batch, moved to `device`.
    fn rows(&self, rows: std::ops::Range<usize>, device: &Device) -> Self {
        // A data-parallel step samples outside the graph: nothing is recorded (and a recording
        // could not move to another device's graph).
        debug_assert!(self.recorded.is_none(), "a replica given recorded lists");
        let [_, k, l] = self.lists.dims();
        let take = |t: &Tensor<2>| {
            let cols = t.dims()[1];
            t.clone().slice([rows.clone(), 0..cols]).to_device(device)
        };
        Self {
            lists: self
                .lists
                .clone()
                .slice([rows.clone(), 0..k, 0..l])
                .to_device(device),
            weights: take(&self.weights),
            group_weights: self.group_weights.as_ref().map(take),
            recorded: None,
        }
    }
}

/// A step's loss: the total that is differentiated and its two terms.
struct Loss {
    total: Tensor<1>,
    supervised: Tensor<1>,
    reference: Option<Tensor<1>>,
}

impl Loss {
    /// `[total, supervised, reference]` (the last only with a group), for one read-back.
    fn scalars(&self) -> Vec<Tensor<1>> {
        let mut out = vec![
            self.total.clone().without_autodiff(),
            self.supervised.clone().without_autodiff(),
        ];
        out.extend(self.reference.clone().map(|r| r.without_autodiff()));
        out
    }
}

/// Step 6's loss on `targets`' requests: the supervised term over the whole batch's
/// `positives` (so that the shares of a data-parallel step add up to it) and the reference (or
/// policy-gradient) term on per-step log-likelihoods, a mean over the batch of which these
/// requests hold the fraction `share`.
fn loss(
    config: &GoalRankConfig,
    model: &Generator,
    encoded: &Encoded,
    targets: Targets,
    positives: f32,
    share: f32,
) -> Loss {
    let [b, k_all, l] = targets.lists.dims();
    let (log_probs, steps) = model.teacher_forced(encoded, targets.lists);
    let sup_steps = steps.slice([0..b, k_all - 1..k_all, 0..l]).reshape([b, l]);
    let supervised = (sup_steps * targets.weights)
        .sum()
        .neg()
        .div_scalar(positives);
    let mut total = supervised.clone().mul_scalar(config.w_sup);
    let reference = targets.group_weights.map(|weights| {
        // # Shapes: the teacher-forced part of the group, `[B, k_all − 1]`, after the recorded
        // lists' `[B, K]` where there are any.
        let forced = || log_probs.slice([0..b, 0..k_all - 1]);
        let group_log_probs = match targets.recorded {
            Some(recorded) if k_all == 1 => recorded,
            Some(recorded) => Tensor::cat(vec![recorded, forced()], 1),
            None => forced(),
        }
        .div_scalar(l as f32);
        debug_assert_eq!(
            group_log_probs.dims(),
            weights.dims(),
            "a list per group weight"
        );
        let loss = match config.objective {
            Objective::Reference => group::reference_loss(weights, group_log_probs),
            Objective::PolicyGradient => group::policy_gradient_loss(weights, group_log_probs),
        };
        if share == 1.0 {
            loss
        } else {
            loss.mul_scalar(share)
        }
    });
    if let Some(reference) = &reference {
        total = total + reference.clone().mul_scalar(config.w_ref);
    }
    Loss {
        total,
        supervised,
        reference,
    }
}

/// A step's scalars on the host.
struct Terms {
    loss: f32,
    loss_sup: f32,
    loss_ref: Option<f32>,
    /// The group's mean, std and best reward, π_ref's entropy and, with the logged list in
    /// the group, its π_ref weight and how often it is best (empty without a group).
    statistics: Vec<f32>,
}

/// Reads `loss`'s scalars and the group's `statistics` back in one transfer.
async fn read_terms(loss: &Loss, statistics: Vec<Tensor<1>>) -> crate::Result<Terms> {
    let mut scalars = loss.scalars();
    let n = scalars.len();
    scalars.extend(statistics);
    let values = read_f32(Tensor::cat(scalars, 0)).await?;
    Ok(Terms {
        loss: values.first().copied().unwrap_or(f32::NAN),
        loss_sup: values.get(1).copied().unwrap_or(f32::NAN),
        loss_ref: (n == 3).then(|| values.get(2).copied().unwrap_or(f32::NAN)),
        statistics: values.get(n..).unwrap_or_default().to_vec(),
    })
}

/// A NaN or infinite loss stops training before the update, so the weights (and any
/// checkpoint written from them) stay those of the last finite step.
fn check_finite(terms: &Terms, done: usize) -> crate::Result<()> {
    if terms.loss.is_finite() {
        return Ok(());
    }
    Err(crate::Error::NonFinite(format!(
        "step {}: the loss is {} (supervised {}, reference {}); training stopped before the \
         update, with the weights of step {done}",
        done + 1,
        terms.loss,
        terms.loss_sup,
        terms.loss_ref.map_or("-".into(), |v| v.to_string()),
    )))
}

/// True when every weight of `module` has been drawn (Burn initialises a weight lazily, on its
/// first use).
fn materialised<M: Module>(module: &M) -> bool {
    struct Lazy(bool);
    impl burn::module::ModuleVisitor for Lazy {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0 |= !param.is_initialized();
        }
    }
    let mut lazy = Lazy(false);
    module.visit(&mut lazy);
    !lazy.0
}

/// `n` contiguous shares of `b` rows, as equal as can be (the first ones one longer).
fn shares(b: usize, n: usize) -> Vec<std::ops::Range<usize>> {
    let n = n.max(1);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let len = b / n + usize::from(i < b % n);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
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

/// The logged list reordered positives first (each group in logged order), a weight of 1 on
/// the steps that hold a positive, and their count (at least 1).
///
/// # Shapes
/// - output: positions `[B, L]`, weights `[B, L]`
fn positives_first(
    requests: &[&Request],
    l: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2>, f32) {
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
    // The supervised term's denominator: the positives of the batch, at least 1.
    let positives = weights.iter().sum::<f32>().max(1.0);
    (
        Tensor::from_data(TensorData::new(order, [b, l]), device),
        Tensor::from_data(TensorData::new(weights, [b, l]), device),
        positives,
    )
}
