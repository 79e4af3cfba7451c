//! The reward model (evaluator): per-position engagement probabilities p_i of a list and the
//! list reward R(l) built from them. Two shapes ([`RewardKind`]):
//!
//! - **List-aware, factorised** (default): the list's items in order, with a position embedding
//!   and the user state, go through a transformer; each position's probability is the product
//!   of an *attraction* that depends only on the user and the item (an explicit user·item
//!   interaction plus an item bias) and an *examination* that depends on the position and the
//!   rest of the list (position, redundancy, what came above):
//!   `p_i = σ(⟨W_u u, W_e e_i⟩ / √d + b(e_i)) · σ(h(LN transformer(e + pos + u))_i)`.
//!   This is the click model of position-bias-aware learning: position cannot masquerade as
//!   affinity, because it only enters through the examination factor. New models multiply in a
//!   third factor, the share left by the items above (`Π_{j<i} (1 − ρ_ij)`, see
//!   [`RewardModel::redundancy`]), so that a list that repeats itself scores lower. p already
//!   carries the position effect, so R(l) = Σ_i p_i.
//! - **Candidate-set-aware**, in the manner of the authors' Evaluator: the user and all N
//!   (shuffled) candidates go through a transformer once; each candidate gets
//!   `p_j = σ(h(c_j) + ⟨W_u u, W_e c_j⟩ / √d)`, and a list gathers them:
//!   R(l) = Σ_i p_{l_i} / log2(i + 1) (p carries no position, so the discount adds it).
//!
//! Runs saved before the factorised model have no `kind` in their config (`None`): their
//! additive list model (item + position + user summed into one token, no interaction term,
//! R = Σ p_i / log2(i + 1)) still loads and scores as it did.

use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, softplus};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::encoder::{EncoderConfig, ItemEncoder, UserEncoder};
use super::gather::{gather_rows, repeat_group};
use super::layer_norm::layer_norm;
use super::product::product;
use super::rows::linear_rows;
use super::transformer;
use crate::data::Batch;

/// The shape of the reward model.
#[derive(Config, Debug, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RewardKind {
    /// List-aware, p = attraction(user, item) × examination(position, list) (× the share the
    /// items above leave, in new models); R = Σ p_i.
    List,
    /// Candidate-set-aware (the authors' Evaluator); R = Σ p_i / log2(i + 1).
    CandidateSet,
}

#[derive(Config, Debug)]
pub struct RewardModelConfig {
    pub encoder: EncoderConfig,
    /// List length L.
    pub list_len: usize,
    #[config(default = 2)]
    pub layers: usize,
    #[config(default = 4)]
    pub heads: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
    /// `None`: the additive list model of runs saved before [`RewardKind`] existed.
    pub kind: Option<RewardKind>,
    /// List-aware model only: an explicit penalty from the items above each position
    /// (see [`RewardModel::redundancy`]). `None` (runs saved before it existed) means without.
    pub redundancy: Option<bool>,
}

#[derive(Module, Debug)]
pub struct RewardModel {
    items: ItemEncoder,
    user: UserEncoder,
    position: Embedding,
    transformer: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
    /// User and item projections of the explicit interaction (absent in the additive model).
    affinity_user: Option<Linear>,
    affinity_item: Option<Linear>,
    /// Item bias of the attraction factor (list-aware model only).
    item_bias: Option<Linear>,
    /// Projections of the similarity of an item to the items above it (the redundancy
    /// penalty of the list-aware model, when it has one).
    redundancy_query: Option<Linear>,
    redundancy_key: Option<Linear>,
    #[module(skip)]
    kind: Option<RewardKind>,
    list_len: usize,
}

/// What a reward model computes once per request.
#[derive(Clone, Debug)]
pub struct RewardContext {
    /// `[B, d]` user state.
    pub user: Tensor<2>,
    /// `[B, N, d]` candidate embeddings.
    pub candidates: Tensor<3>,
    /// `[B, N]` each candidate's logit in the context of the candidate set (candidate-set-aware
    /// model only).
    pub candidate_logits: Option<Tensor<2>>,
}

impl RewardModelConfig {
    /// Refuses sizes the model cannot be built with (a run's `config.json` may be edited).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::at_least("model.encoder.d_model", self.encoder.d_model, 1)?;
        check::heads("model.heads", self.encoder.d_model, self.heads)?;
        check::at_least("model.list_len", self.list_len, 1)?;
        check::fraction("model.dropout", self.dropout)
    }

    pub fn init(&self, device: &Device) -> RewardModel {
        let d = self.encoder.d_model;
        let linear = |out: usize| Some(LinearConfig::new(d, out).init(device));
        let interaction = self.kind.is_some();
        let redundancy = self.redundancy == Some(true) && self.kind == Some(RewardKind::List);
        RewardModel {
            items: self.encoder.init_items(device),
            user: self.encoder.init_user(device),
            position: EmbeddingConfig::new(self.list_len, d).init(device),
            transformer: TransformerEncoderConfig::new(d, 4 * d, self.heads, self.layers)
                .with_dropout(self.dropout)
                .with_norm_first(true)
                .init(device),
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, 1).init(device),
            affinity_user: if interaction { linear(d) } else { None },
            affinity_item: if interaction { linear(d) } else { None },
            item_bias: if self.kind == Some(RewardKind::List) {
                linear(1)
            } else {
                None
            },
            redundancy_query: if redundancy { linear(d) } else { None },
            redundancy_key: if redundancy { linear(d) } else { None },
            kind: self.kind,
            list_len: self.list_len,
        }
    }
}

/// Offset of the redundancy penalty's logit: an untrained penalty takes σ(−1.5) ≈ 18 % per item
/// above. Chosen on sim:small validation with `examples/reward_climb.rs` (README, `experiment
/// main` on the simulator): the R-steered search reached 1.6146 at 1.5 and 1.5608 at 3.
const REDUNDANCY_OFFSET: f32 = 1.5;

/// Position discounts 1 / log2(i + 1), i = 1..=L.
///
/// # Shapes
/// - output: `[1, 1, L]`
pub fn discounts(list_len: usize, device: &Device) -> Tensor<3> {
    let values: Vec<f32> = (0..list_len)
        .map(|i| 1.0 / ((i + 2) as f32).log2())
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, list_len]), device)
}

impl RewardModel {
    pub fn list_len(&self) -> usize {
        self.list_len
    }

    /// The model's shape (`None`: the additive model of older runs).
    pub fn kind(&self) -> Option<RewardKind> {
        self.kind
    }

    /// Whether R discounts p by position (p carries no position effect of its own).
    fn discounted(&self) -> bool {
        self.kind != Some(RewardKind::List)
    }

    /// The explicit user·item interaction ⟨W_u u, W_e e⟩ / √d; zero in the additive model.
    ///
    /// # Shapes
    /// - user `[B, d]`, items `[B, S, d]` → `[B, S]`
    fn interaction(&self, user: Tensor<2>, items: Tensor<3>) -> Option<Tensor<2>> {
        let (wu, we) = (self.affinity_user.as_ref()?, self.affinity_item.as_ref()?);
        let [b, s, d] = items.dims();
        let u = wu.forward(user).reshape([b, d, 1]);
        let e = linear_rows(we, items);
        Some(product(e, u).reshape([b, s]).div_scalar((d as f32).sqrt()))
    }

    pub fn context(&self, batch: &Batch) -> RewardContext {
        let history = self.items.forward(&batch.history);
        let user = self.user.forward(history, batch);
        let candidates = self.items.forward(&batch.candidates);
        let candidate_logits = (self.kind == Some(RewardKind::CandidateSet))
            .then(|| self.candidate_set_logits(&user, &candidates));
        RewardContext {
            user,
            candidates,
            candidate_logits,
        }
    }

    /// The candidate-set-aware model's logit of every candidate, in the context of all of them.
    ///
    /// # Shapes
    /// - user `[B, d]`, candidates `[B, N, d]` → `[B, N]`
    fn candidate_set_logits(&self, user: &Tensor<2>, candidates: &Tensor<3>) -> Tensor<2> {
        let [b, n, d] = candidates.dims();
        let tokens = Tensor::cat(vec![user.clone().reshape([b, 1, d]), candidates.clone()], 1);
        let hidden = layer_norm(&self.norm, transformer::encode(&self.transformer, tokens));
        let hidden = hidden.slice([0..b, 1..n + 1, 0..d]);
        let logits = linear_rows(&self.head, hidden.clone()).reshape([b, n]);
        match self.interaction(user.clone(), hidden) {
            Some(affinity) => logits + affinity,
            None => logits,
        }
    }

    /// Per-position engagement probabilities of K lists per request.
    ///
    /// # Shapes
    /// - lists: `[B, K, L]` candidate positions
    /// - output: `[B, K, L]`
    pub fn list_probs(&self, context: &RewardContext, lists: Tensor<3, Int>) -> Tensor<3> {
        let [b, k, l] = lists.dims();
        if let Some(logits) = &context.candidate_logits {
            // # Shapes: logits [B, N] gathered at the lists' items → [B, K, L]
            let n = logits.dims()[1];
            return sigmoid(
                logits
                    .clone()
                    .reshape([b, 1, n])
                    .expand([b, k, n])
                    .gather(2, lists),
            );
        }
        let d = context.user.dims()[1];
        let device = lists.device();
        let items = gather_rows(context.candidates.clone(), lists.reshape([b, k * l]));
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device).reshape([1, l]);
        let position = self.position.forward(positions); // [1, L, d]
        let user = repeat_group(context.user.clone(), k).reshape([b * k, 1, d]);
        let tokens = items.clone().reshape([b * k, l, d]) + position + user;
        let hidden = layer_norm(&self.norm, transformer::encode(&self.transformer, tokens));
        let context_logits = linear_rows(&self.head, hidden).reshape([b, k, l]);
        // Factorised model: attraction (user, item) × examination (position, list). The
        // attraction is computed on the gathered items rather than once per candidate: Burn
        // initialises parameters on first use, so moving it ahead of the transformer would
        // change every seed's initial weights.
        let probs = match (
            self.interaction(context.user.clone(), items.clone()),
            &self.item_bias,
        ) {
            (Some(affinity), Some(bias)) => {
                let attraction = affinity + linear_rows(bias, items.clone()).reshape([b, k * l]);
                sigmoid(attraction.reshape([b, k, l])) * sigmoid(context_logits)
            }
            _ => sigmoid(context_logits),
        };
        match self.redundancy(items.reshape([b * k, l, d])) {
            Some(kept) => probs * kept.reshape([b, k, l]),
            None => probs,
        }
    }

    /// The share of each position's probability left by the items above it:
    /// `Π_{j<i} (1 − ρ_ij)` with `ρ_ij = σ(⟨W_q e_i, W_k e_j⟩ / √d − 1.5)`, how much item j
    /// above suppresses item i (a second film of the same kind right below the first, say),
    /// learnt from the clicks. `None` when the model has no such term.
    ///
    /// # Shapes
    /// - items `[M, L, d]` → `[M, L]`
    fn redundancy(&self, items: Tensor<3>) -> Option<Tensor<2>> {
        let (wq, wk) = (
            self.redundancy_query.as_ref()?,
            self.redundancy_key.as_ref()?,
        );
        let [m, l, d] = items.dims();
        let device = items.device();
        // # Shapes: similarities [M, L, L], row i against column j
        let similarity = product(
            linear_rows(wq, items.clone()),
            linear_rows(wk, items).transpose(),
        )
        .div_scalar((d as f32).sqrt())
        .sub_scalar(REDUNDANCY_OFFSET);
        let above: Vec<f32> = (0..l * l)
            .map(|x| f32::from(u8::from(x % l < x / l)))
            .collect();
        let above = Tensor::<3>::from_data(TensorData::new(above, [1, l, l]), &device);
        // log(1 − σ(z)) = −softplus(z), summed over the items above.
        let log_kept = (softplus(similarity, 1.0) * above).sum_dim(2).neg();
        Some(log_kept.exp().reshape([m, l]))
    }

    /// Each candidate's list-free logit: the attraction (interaction plus item bias) of the
    /// list-aware model, the whole logit of the candidate-set-aware one; `None` for the additive
    /// model, which has neither.
    ///
    /// # Shapes
    /// - output: `[B, N]`
    pub fn candidate_logits(&self, context: &RewardContext) -> Option<Tensor<2>> {
        if let Some(logits) = &context.candidate_logits {
            return Some(logits.clone());
        }
        let [b, n, _] = context.candidates.dims();
        let affinity = self.interaction(context.user.clone(), context.candidates.clone())?;
        let bias = self.item_bias.as_ref()?;
        Some(affinity + linear_rows(bias, context.candidates.clone()).reshape([b, n]))
    }

    /// Per-position probabilities and list reward R of K lists per request.
    ///
    /// # Shapes
    /// - lists: `[B, K, L]`
    /// - output: (probabilities `[B, K, L]`, rewards `[B, K]`)
    pub fn score(&self, context: &RewardContext, lists: Tensor<3, Int>) -> (Tensor<3>, Tensor<2>) {
        let [b, k, l] = lists.dims();
        let device = lists.device();
        let p = self.list_probs(context, lists);
        let weighted = if self.discounted() {
            p.clone() * discounts(l, &device)
        } else {
            p.clone()
        };
        (p, weighted.sum_dim(2).reshape([b, k]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redundancy_penalty_spares_the_top_and_only_lowers_the_rest() {
        let device = Device::flex();
        device.seed(5);
        let config = RewardModelConfig::new(EncoderConfig::new(8, 3, 2, 16), 4)
            .with_kind(Some(RewardKind::List))
            .with_redundancy(Some(true));
        let model = config.init(&device);
        let items = Tensor::<3>::random(
            [2, 4, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let kept = model.redundancy(items).expect("the model has the term");
        let kept = kept.into_data().try_into_vec_as::<f32>().expect("f32");
        for row in kept.chunks(4) {
            assert!(
                (row[0] - 1.0).abs() < 1e-6,
                "nothing is above the top: {row:?}"
            );
            assert!(row[1..].iter().all(|&x| x > 0.0 && x < 1.0), "{row:?}");
        }
        let without = RewardModelConfig::new(EncoderConfig::new(8, 3, 2, 16), 4)
            .with_kind(Some(RewardKind::List))
            .init(&device);
        assert!(
            without
                .redundancy(Tensor::zeros([1, 4, 16], &device))
                .is_none()
        );
    }
}
