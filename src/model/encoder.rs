//! Item and user encoders shared by the reward model and the generator.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::layer_norm::layer_norm;
use super::rows::linear_rows;
use super::softmax::softmax;
use crate::data::{Batch, Dataset, ItemBatch, YEAR_BUCKETS};

/// Sizes of the catalogue the encoders embed.
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Items in the catalogue (ids are shifted by one; 0 pads).
    pub items: usize,
    /// Users in the dataset.
    pub users: usize,
    /// Genre vocabulary size.
    pub genres: usize,
    /// Model width.
    pub d_model: usize,
}

/// Item id + genres + release-year bucket → one vector.
#[derive(Module, Debug)]
pub struct ItemEncoder {
    id: Embedding,
    genre: Linear,
    year: Embedding,
}

/// History (items + feedback) pooled by learned attention, plus a user-id embedding.
#[derive(Module, Debug)]
pub struct UserEncoder {
    feedback: Embedding,
    attention: Linear,
    out: Linear,
    user: Embedding,
    norm: LayerNorm,
}

impl EncoderConfig {
    /// Sizes of `dataset`'s catalogue at width `d_model`.
    pub fn for_dataset(dataset: &Dataset, d_model: usize) -> Self {
        Self::new(
            dataset.items.len(),
            dataset.users.len(),
            dataset.genres.len(),
            d_model,
        )
    }

    pub fn init_items(&self, device: &Device) -> ItemEncoder {
        let d = self.d_model;
        ItemEncoder {
            id: small_embedding(self.items + 1, d, device),
            genre: LinearConfig::new(self.genres.max(1), d).init(device),
            year: small_embedding(YEAR_BUCKETS, d, device),
        }
    }

    pub fn init_user(&self, device: &Device) -> UserEncoder {
        let d = self.d_model;
        UserEncoder {
            feedback: small_embedding(2, d, device),
            attention: LinearConfig::new(d, 1).init(device),
            out: LinearConfig::new(d, d).init(device),
            user: small_embedding(self.users.max(1), d, device),
            norm: LayerNormConfig::new(d).init(device),
        }
    }
}

/// Embedding initialised N(0, 0.02), as in GPT-style models.
fn small_embedding(n: usize, d: usize, device: &Device) -> Embedding {
    EmbeddingConfig::new(n, d)
        .with_initializer(burn::nn::Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device)
}

impl ItemEncoder {
    /// # Shapes
    /// - items: ids `[B, S]`, genres `[B, S, G]`, years `[B, S]`
    /// - output: `[B, S, d]`
    pub fn forward(&self, items: &ItemBatch) -> Tensor<3> {
        self.id.forward(items.ids.clone())
            + linear_rows(&self.genre, items.genres.clone())
            + self.year.forward(items.years.clone())
    }
}

impl UserEncoder {
    /// # Shapes
    /// - history items `[B, H, d]` (from [`ItemEncoder`]), batch history labels/pad `[B, H]`
    /// - output: `[B, d]`
    pub fn forward(&self, history: Tensor<3>, batch: &Batch) -> Tensor<2> {
        let [b, h, d] = history.dims();
        let tokens = history + self.feedback.forward(batch.history_labels.clone());
        // Attention pooling: one learned score per history item, padding masked.
        let logits = linear_rows(&self.attention, tokens.clone())
            .reshape([b, h])
            .mask_fill(batch.history_pad.clone(), -1e4);
        let weights = softmax(logits, 1).reshape([b, h, 1]);
        let pooled = (tokens * weights).sum_dim(1).reshape([b, d]);
        let user = self
            .user
            .forward(batch.users.clone().reshape([b, 1]))
            .reshape([b, d]);
        layer_norm(&self.norm, self.out.forward(pooled) + user)
    }
}
