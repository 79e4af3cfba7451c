//! Pointwise baselines: a score per candidate, lists by sorting.
//!
//! - **Pointwise DNN**: an MLP over [candidate; user] for each candidate on its own.
//! - **PRM-style**: a transformer first lets every candidate see the whole candidate set (and
//!   the user), then the same MLP scores each one (Pei et al., "Personalized Re-ranking for
//!   Recommendation", 2019, without PRM's pre-trained personal vectors).

use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::encoder::{EncoderConfig, ItemEncoder, UserEncoder};
use super::gather::repeat_group;
use super::gelu::gelu;
use super::layer_norm::layer_norm;
use super::rows::linear_rows;
use super::transformer;
use crate::data::Batch;

#[derive(Config, Debug)]
pub struct PointwiseConfig {
    pub encoder: EncoderConfig,
    /// Transformer layers over the candidate set: 0 gives the pointwise DNN, more a PRM.
    #[config(default = 0)]
    pub context_layers: usize,
    #[config(default = 4)]
    pub heads: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct Pointwise {
    items: ItemEncoder,
    user: UserEncoder,
    context: Option<TransformerEncoder>,
    norm: LayerNorm,
    hidden: Linear,
    out: Linear,
}

impl PointwiseConfig {
    /// Refuses sizes the model cannot be built with (a run's `config.json` may be edited).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::at_least("model.encoder.d_model", self.encoder.d_model, 1)?;
        // Heads only matter to the candidate-context layers (the PRM-style model).
        if self.context_layers > 0 {
            check::heads("model.heads", self.encoder.d_model, self.heads)?;
        }
        check::fraction("model.dropout", self.dropout)
    }

    pub fn init(&self, device: &Device) -> Pointwise {
        let d = self.encoder.d_model;
        let context = (self.context_layers > 0).then(|| {
            TransformerEncoderConfig::new(d, 4 * d, self.heads, self.context_layers)
                .with_dropout(self.dropout)
                .with_norm_first(true)
                .init(device)
        });
        Pointwise {
            items: self.encoder.init_items(device),
            user: self.encoder.init_user(device),
            context,
            norm: LayerNormConfig::new(d).init(device),
            hidden: LinearConfig::new(2 * d, 4 * d).init(device),
            out: LinearConfig::new(4 * d, 1).init(device),
        }
    }
}

impl Pointwise {
    /// One logit per candidate.
    ///
    /// # Shapes
    /// - output: `[B, N]`
    pub fn forward(&self, batch: &Batch) -> Tensor<2> {
        let history = self.items.forward(&batch.history);
        let user = self.user.forward(history, batch);
        let candidates = self.items.forward(&batch.candidates);
        let [b, n, _] = candidates.dims();
        let user = repeat_group(user, n); // [B, N, d]
        let candidates = match &self.context {
            Some(context) => transformer::encode(context, candidates + user.clone()),
            None => candidates,
        };
        let features = Tensor::cat(vec![layer_norm(&self.norm, candidates), user], 2);
        let hidden = gelu(linear_rows(&self.hidden, features));
        linear_rows(&self.out, hidden).reshape([b, n])
    }
}
