//! List-aware reward model (the evaluator): per-position engagement probabilities of a list.
//!
//! Tokens are the list's items in order, plus a position embedding and the user state; a
//! transformer lets every position see the whole list, and a sigmoid head scores each position.
//! List reward R(l) = Σ_i p_i / log2(i + 1) (i from 1).

use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::encoder::{EncoderConfig, ItemEncoder, UserEncoder};
use super::gather::{gather_rows, repeat_group};
use crate::data::Batch;

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
}

#[derive(Module, Debug)]
pub struct RewardModel {
    items: ItemEncoder,
    user: UserEncoder,
    position: Embedding,
    transformer: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
    list_len: usize,
}

/// User state and candidate embeddings, computed once per request.
#[derive(Clone, Debug)]
pub struct RewardContext {
    /// `[B, d]`
    pub user: Tensor<2>,
    /// `[B, N, d]`
    pub candidates: Tensor<3>,
}

impl RewardModelConfig {
    pub fn init(&self, device: &Device) -> RewardModel {
        let d = self.encoder.d_model;
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
            list_len: self.list_len,
        }
    }
}

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
    pub fn context(&self, batch: &Batch) -> RewardContext {
        let history = self.items.forward(&batch.history);
        RewardContext {
            user: self.user.forward(history, batch),
            candidates: self.items.forward(&batch.candidates),
        }
    }

    /// Per-position logits of K lists per request.
    ///
    /// # Shapes
    /// - lists: `[B, K, L]` candidate positions
    /// - output: `[B, K, L]`
    pub fn list_logits(&self, context: &RewardContext, lists: Tensor<3, Int>) -> Tensor<3> {
        let [b, k, l] = lists.dims();
        let d = context.user.dims()[1];
        let device = lists.device();
        let items = gather_rows(context.candidates.clone(), lists.reshape([b, k * l])).reshape([
            b * k,
            l,
            d,
        ]);
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device).reshape([1, l]);
        let position = self.position.forward(positions); // [1, L, d]
        let user = repeat_group(context.user.clone(), k).reshape([b * k, 1, d]);
        let tokens = items + position + user;
        let hidden = self.norm.forward(
            self.transformer
                .forward(TransformerEncoderInput::new(tokens)),
        );
        self.head.forward(hidden).reshape([b, k, l])
    }

    /// Per-position logits of the logged lists.
    ///
    /// # Shapes
    /// - output: `[B, L]`
    pub fn logged_logits(&self, batch: &Batch) -> Tensor<2> {
        let [b, l] = batch.logged.dims();
        let context = self.context(batch);
        self.list_logits(&context, batch.logged.clone().reshape([b, 1, l]))
            .reshape([b, l])
    }

    /// Per-position probabilities and list reward R of K lists per request.
    ///
    /// # Shapes
    /// - lists: `[B, K, L]`
    /// - output: (probabilities `[B, K, L]`, rewards `[B, K]`)
    pub fn score(&self, context: &RewardContext, lists: Tensor<3, Int>) -> (Tensor<3>, Tensor<2>) {
        let [b, k, l] = lists.dims();
        let device = lists.device();
        let p = sigmoid(self.list_logits(context, lists));
        let reward = (p.clone() * discounts(l, &device))
            .sum_dim(2)
            .reshape([b, k]);
        (p, reward)
    }

    pub fn list_len(&self) -> usize {
        self.list_len
    }
}
