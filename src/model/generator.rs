//! The GoalRank generator: encode the user and all N candidates once, then decode L steps.
//!
//! Step t scores the remaining candidates given the chosen prefix:
//! `u_t = user + step_t + P · mean(prefix)`, `z_t = u_t + MLP(LN u_t)`,
//! `s_tj = (W_q LN z_t) · k_j / √d`, chosen candidates masked, softmax over the rest.
//! log π(l) = Σ_t log π(a_t | a_<t). Teacher forcing computes all L steps at once, because the
//! prefix mean is an exclusive cumulative sum.

use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};

use super::backend::{is_cube, is_flex};
use super::decode_step::{Pick, decode_step, pick_from, step_log_probs};
use super::encoder::{EncoderConfig, ItemEncoder, UserEncoder};
use super::gather::{gather_rows, gumbel, one_hot, plackett_luce};
use super::greedy::{self, Affine, Layers, Norm};
use super::layer_norm::layer_norm;
use super::prefix::prefix_mean;
use super::recorded::recorded_log_probs;
use super::rows::{linear_gelu, linear_rows};
use super::transformer;
use crate::data::Batch;

#[derive(Config, Debug)]
pub struct GeneratorConfig {
    pub encoder: EncoderConfig,
    /// List length L.
    pub list_len: usize,
    #[config(default = 2)]
    pub layers: usize,
    #[config(default = 4)]
    pub heads: usize,
    /// Hidden width of the decoder's MLP as a multiple of d (`d → m·d → d`); `None` (and
    /// every model saved before the setting existed) is [`DECODER_MLP`].
    pub decoder_mlp: Option<usize>,
    #[config(default = 0.0)]
    pub dropout: f64,
}

#[derive(Module, Debug)]
pub struct Generator {
    items: ItemEncoder,
    user: UserEncoder,
    transformer: TransformerEncoder,
    norm: LayerNorm,
    step: Embedding,
    prefix: Linear,
    mlp_norm: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    query_norm: LayerNorm,
    query: Linear,
    key: Linear,
    list_len: usize,
}

/// A request batch encoded once.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// `[B, d]`
    pub user: Tensor<2>,
    /// `[B, N, d]` contextual candidate embeddings (what the prefix mean averages).
    pub candidates: Tensor<3>,
    /// `[B, N, d]` keys the decoder's queries score.
    pub keys: Tensor<3>,
}

impl Encoded {
    /// The same encoding as plain tensors, outside autodiff (no graph, no autodiff overhead).
    pub fn without_autodiff(&self) -> Self {
        Self {
            user: self.user.clone().without_autodiff(),
            candidates: self.candidates.clone().without_autodiff(),
            keys: self.keys.clone().without_autodiff(),
        }
    }
}

/// How the decoder picks each item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decode {
    /// The most likely remaining item.
    Greedy,
    /// A draw from the step distribution (Gumbel-max).
    Sample,
    /// A draw from the step distribution sharpened (< 1) or flattened (> 1) by a temperature.
    Tempered(f32),
}

impl Decode {
    /// A draw at `temperature`: [`Decode::Sample`] at 1 (no division), else
    /// [`Decode::Tempered`].
    pub fn sampled_at(temperature: f32) -> Self {
        if temperature == 1.0 {
            Decode::Sample
        } else {
            Decode::Tempered(temperature)
        }
    }
}

/// Lists and their log-probabilities.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// `[B, K, L]` candidate positions.
    pub lists: Tensor<3, Int>,
    /// `[B, K]` log π(l).
    pub log_probs: Tensor<2>,
}

/// The decoder MLP's default hidden width, as a multiple of d.
pub const DECODER_MLP: usize = 4;

/// The `decoder_mlp` setting for a width of `multiple · d`: `None` at the default, so that the
/// settings saved with a run stay those of runs saved before the setting existed.
pub fn decoder_mlp_setting(multiple: usize) -> Option<usize> {
    (multiple != DECODER_MLP).then_some(multiple)
}

impl GeneratorConfig {
    /// The decoder MLP's hidden width as a multiple of d.
    pub fn decoder_mlp(&self) -> usize {
        self.decoder_mlp.unwrap_or(DECODER_MLP)
    }

    /// Refuses sizes the model cannot be built with (a run's `config.json` may be edited).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::error::check;
        check::at_least("model.encoder.d_model", self.encoder.d_model, 1)?;
        check::heads("model.heads", self.encoder.d_model, self.heads)?;
        check::at_least("model.list_len", self.list_len, 1)?;
        check::at_least("model.decoder_mlp", self.decoder_mlp(), 1)?;
        check::fraction("model.dropout", self.dropout)
    }

    pub fn init(&self, device: &Device) -> Generator {
        let d = self.encoder.d_model;
        Generator {
            items: self.encoder.init_items(device),
            user: self.encoder.init_user(device),
            transformer: TransformerEncoderConfig::new(d, 4 * d, self.heads, self.layers)
                .with_dropout(self.dropout)
                .with_norm_first(true)
                .init(device),
            norm: LayerNormConfig::new(d).init(device),
            step: EmbeddingConfig::new(self.list_len, d).init(device),
            prefix: LinearConfig::new(d, d).init(device),
            mlp_norm: LayerNormConfig::new(d).init(device),
            mlp_in: LinearConfig::new(d, self.decoder_mlp() * d).init(device),
            mlp_out: LinearConfig::new(self.decoder_mlp() * d, d).init(device),
            query_norm: LayerNormConfig::new(d).init(device),
            query: LinearConfig::new(d, d).init(device),
            key: LinearConfig::new(d, d).init(device),
            list_len: self.list_len,
        }
    }
}

impl Generator {
    pub fn list_len(&self) -> usize {
        self.list_len
    }

    /// Encodes the user and the candidates together.
    ///
    /// # Shapes
    /// - output: user `[B, d]`, candidates and keys `[B, N, d]`
    pub fn encode(&self, batch: &Batch) -> Encoded {
        let history = self.items.forward(&batch.history);
        let user = self.user.forward(history, batch);
        let candidates = self.items.forward(&batch.candidates);
        let [b, n, d] = candidates.dims();
        let tokens = Tensor::cat(vec![user.reshape([b, 1, d]), candidates], 1);
        let hidden = layer_norm(&self.norm, transformer::encode(&self.transformer, tokens));
        let user = hidden.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        // The slice is a strided view of `hidden`; every `[B · N, d]` view of it (each decoding
        // step's gather of the chosen rows) would copy it again. Copy it once, here.
        let candidates = hidden
            .slice([0..b, 1..n + 1, 0..d])
            .reshape([b * n, d])
            .reshape([b, n, d]);
        let keys = linear_rows(&self.key, candidates.clone());
        Encoded {
            user,
            candidates,
            keys,
        }
    }

    /// The embeddings of the first `steps` steps, looked up at once (the decoding loop slices
    /// its step's row: one lookup per call rather than an index tensor and a lookup per step).
    ///
    /// # Shapes
    /// - output: `[steps, d]`
    fn step_rows(&self, steps: usize, device: &Device) -> Tensor<2> {
        let index = Tensor::<1, Int>::arange(0..steps as i64, device).reshape([1, steps]);
        let rows = self.step.forward(index);
        let d = rows.dims()[2];
        rows.reshape([steps, d])
    }

    /// Decoder queries for the steps whose embeddings are `steps`, given prefix means.
    ///
    /// # Shapes
    /// - user `[B, d]`, prefix_mean `[B, K, T, d]`, steps `[T, d]`
    /// - output: `[B, K, T, d]`
    fn queries(&self, user: Tensor<2>, prefix_mean: Tensor<4>, steps: Tensor<2>) -> Tensor<4> {
        let [b, _, t, d] = prefix_mean.dims();
        let step = steps.reshape([1, 1, t, d]);
        let u = user.reshape([b, 1, 1, d]) + step + linear_rows(&self.prefix, prefix_mean);
        self.query_rows(u)
    }

    /// Whether K lists of a request share their first step's query (computed once per request:
    /// nothing is chosen before it) rather than compute it per list. On the CPU that is a sixth
    /// less of the decoder's per-row work at L = 6; on CubeCL's devices the gathers, copies and
    /// joins it takes cost more kernel launches than the smaller products save on lavapipe, so
    /// there each list computes its own (the same values).
    fn shares_first_step(k: usize, device: &Device) -> bool {
        k > 1 && !is_cube(device)
    }

    /// Whether decoding on `device`'s autodiff twin, to learn from the lists' recorded log π
    /// rather than teacher-force them again, pays: on the CPU backend the decoding's products
    /// are those teacher forcing would repeat; on CubeCL's devices the decoding step is one
    /// fused kernel outside autodiff, and its tensor-op twin under autodiff costs launches; a
    /// remote device is unmeasured, so it keeps teacher forcing.
    pub fn records_decoding(device: &Device) -> bool {
        is_flex(device)
    }

    /// The queries of K lists' L steps given their prefix means, the first step's once per
    /// request where [`Self::shares_first_step`].
    ///
    /// # Shapes
    /// - user `[B, d]`, prefix_mean `[B, K, L, d]`, steps `[L, d]`
    /// - output: `[B, K, L, d]`
    fn list_queries(&self, user: Tensor<2>, prefix_mean: Tensor<4>, steps: Tensor<2>) -> Tensor<4> {
        let [b, k, l, d] = prefix_mean.dims();
        if l < 2 || !Self::shares_first_step(k, &user.device()) {
            return self.queries(user, prefix_mean, steps);
        }
        let t = l - 1;
        // The first step's prefix mean is zero, so its prefix term is the layer's bias alone
        // (exactly: the product of zeros is zero).
        let mut first = user.clone() + steps.clone().narrow(0, 0, 1);
        if let Some(bias) = &self.prefix.bias {
            first = first + bias.val().reshape([1, d]);
        }
        let later = user.reshape([b, 1, 1, d])
            + steps.narrow(0, 1, t).reshape([1, 1, t, d])
            + linear_rows(&self.prefix, prefix_mean.narrow(2, 1, t));
        let rows = Tensor::cat(vec![first, later.reshape([b * k * t, d])], 0);
        let queries = self.query_rows(rows);
        let first = queries
            .clone()
            .narrow(0, 0, b)
            .reshape([b, 1, 1, d])
            .expand([b, k, 1, d]);
        let later = queries.narrow(0, b, b * k * t).reshape([b, k, t, d]);
        Tensor::cat(vec![first, later], 2)
    }

    /// `W_q LN(u + MLP(LN u))`, row by row.
    ///
    /// # Shapes
    /// - u `[.., d]`; output as u
    fn query_rows<const D: usize>(&self, u: Tensor<D>) -> Tensor<D> {
        let hidden = linear_gelu(&self.mlp_in, layer_norm(&self.mlp_norm, u.clone()));
        let z = u + linear_rows(&self.mlp_out, hidden);
        linear_rows(&self.query, layer_norm(&self.query_norm, z))
    }

    /// log π of given lists, all steps at once (teacher forcing).
    ///
    /// # Shapes
    /// - lists: `[B, K, L]` candidate positions
    /// - output: (log π(l) `[B, K]`, per-step log-probs `[B, K, L]`)
    pub fn teacher_forced(
        &self,
        encoded: &Encoded,
        lists: Tensor<3, Int>,
    ) -> (Tensor<2>, Tensor<3>) {
        let [b, k, l] = lists.dims();
        let [_, n, d] = encoded.candidates.dims();
        let device = lists.device();
        // Prefix mean of the chosen items before each step (exclusive cumulative mean).
        let chosen = gather_rows(
            encoded.candidates.clone(),
            lists.clone().reshape([b, k * l]),
        )
        .reshape([b, k, l, d]);
        let prefix_mean = prefix_mean(chosen);
        // Candidates chosen at an earlier step are masked.
        let one_hot = one_hot(lists.clone(), n);
        let before = (one_hot.clone().cumsum(2) - one_hot).greater_elem(0.5);

        let queries = self.list_queries(
            encoded.user.clone(),
            prefix_mean,
            self.step_rows(l, &device),
        );
        let log_probs = step_log_probs(queries, encoded.keys.clone(), before);
        let picked = log_probs
            .gather(3, lists.reshape([b, k, l, 1]))
            .reshape([b, k, l]);
        (picked.clone().sum_dim(2).reshape([b, k]), picked)
    }

    /// Decodes K lists per request step by step, masking chosen candidates.
    ///
    /// # Shapes
    /// - output: lists `[B, K, L]`, log π `[B, K]`
    pub fn decode(&self, encoded: &Encoded, k: usize, mode: Decode) -> Decoded {
        match self.decode_in_backend(encoded, k, mode) {
            Some((decoded, _)) => decoded,
            None => self.decode_from(encoded, k, mode, None),
        }
    }

    /// [`Self::decode`] and [`Self::first_step_log_probs`] together: the first step's query,
    /// the same for every list of a request, is computed once for both (a ranking reports
    /// the scores beside its list).
    ///
    /// # Shapes
    /// - output: as [`Self::decode`], and the first step's log-probabilities `[B, N]`
    pub fn decode_scored(&self, encoded: &Encoded, k: usize, mode: Decode) -> (Decoded, Tensor<2>) {
        if let Some(decoded) = self.decode_in_backend(encoded, k, mode) {
            return decoded;
        }
        let first = self.first_queries(encoded);
        let scores = self.first_step_scores(encoded, first.clone());
        (self.decode_from(encoded, k, mode, Some(first)), scores)
    }

    /// [`Self::decode_scored`] as one backend operation (`model::greedy`: the same lists, log π
    /// and scores without a tensor operation's cost per step) where it runs: one greedy list
    /// per request on the CPU backend without autodiff. `None` elsewhere.
    fn decode_in_backend(
        &self,
        encoded: &Encoded,
        k: usize,
        mode: Decode,
    ) -> Option<(Decoded, Tensor<2>)> {
        let runs = k == 1
            && matches!(mode, Decode::Greedy)
            && self.list_len > 0
            && greedy::runs_here(&encoded.user, &encoded.keys, &encoded.candidates);
        if !runs {
            return None;
        }
        // A linear layer without a bias or a norm without a shift keeps the tensor route.
        let layers = Layers {
            prefix: Affine::of(&self.prefix)?,
            mlp_norm: Norm::of(&self.mlp_norm)?,
            mlp_in: Affine::of(&self.mlp_in)?,
            mlp_out: Affine::of(&self.mlp_out)?,
            query_norm: Norm::of(&self.query_norm)?,
            query: Affine::of(&self.query)?,
        };
        let steps = self.step_rows(self.list_len, &encoded.user.device());
        let (lists, log_probs, scores) = greedy::decode(
            layers,
            encoded.user.clone(),
            encoded.keys.clone(),
            encoded.candidates.clone(),
            steps,
        );
        Some((Decoded { lists, log_probs }, scores))
    }

    /// [`Self::decode`], with the first step's queries `[B, 1, 1, d]` given or computed here.
    ///
    /// On an autodiff device (a recorded decoding, [`Self::records_decoding`]) each step picks
    /// its item from log-probabilities computed off the graph, and after the last pick all
    /// steps' are put on the graph at once ([`recorded_log_probs`]): on flex as one node on the
    /// steps' queries and the keys, nothing computed again (the same lists and log π as a node
    /// per step, with one gradient product for the keys where a node per step would give them a
    /// gradient per step, to be summed); elsewhere scored again from the queries, all steps in
    /// one product, so log π may differ from the values the picks saw in the last bits
    /// (training records its decoding only on flex, [`Self::records_decoding`]).
    fn decode_from(
        &self,
        encoded: &Encoded,
        k: usize,
        mode: Decode,
        first: Option<Tensor<4>>,
    ) -> Decoded {
        let [b, n, d] = encoded.candidates.dims();
        let l = self.list_len;
        let device = encoded.user.device();
        let recorded = device.is_autodiff();
        let mut prefix_sum = Tensor::<3>::zeros([b, k, d], &device);
        let mut chosen = Tensor::<3>::zeros([b, k, n], &device);
        let mut total = Tensor::<2>::zeros([b, k], &device);
        let mut picks = Vec::with_capacity(l);
        // A recorded decoding's queries, masks and log-probabilities, step by step: `[B, K, 1,
        // d]`, `[B, K, 1, N]` and `[B, K, 1, N]`.
        let (mut queries_of, mut masks, mut steps_log_probs) = (Vec::new(), Vec::new(), Vec::new());
        let steps = self.step_rows(l, &device);
        // Every list starts with nothing chosen: where its lists share it, one first query per
        // request (given, or computed here).
        let mut first = first
            .or_else(|| Self::shares_first_step(k, &device).then(|| self.first_queries(encoded)));
        for t in 0..l {
            let queries = match first.take() {
                Some(first) => first.reshape([b, 1, d]).expand([b, k, d]),
                None => {
                    let prefix_mean = prefix_sum
                        .clone()
                        .div_scalar(t.max(1) as f32)
                        .reshape([b, k, 1, d]);
                    let step = steps.clone().narrow(0, t, 1);
                    self.queries(encoded.user.clone(), prefix_mean, step)
                        .reshape([b, k, d])
                }
            };
            let pick = match mode {
                Decode::Greedy => Pick::greedy(),
                Decode::Sample => Pick::draw(gumbel([b, k, n], &device), None),
                Decode::Tempered(t) => Pick::draw(gumbel([b, k, n], &device), Some(t.max(1e-6))),
            };
            let step = if recorded {
                // The pick off the graph, from the values the step would score on it.
                let mask = chosen.clone().greater_elem(0.5).reshape([b, k, 1, n]);
                let log_probs = step_log_probs(
                    queries.clone().detach().reshape([b, k, 1, d]),
                    encoded.keys.clone().detach(),
                    mask.clone(),
                );
                queries_of.push(queries.reshape([b, k, 1, d]));
                masks.push(mask);
                steps_log_probs.push(log_probs.clone());
                pick_from(log_probs.reshape([b, k, n]), chosen, pick)
            } else {
                let step = decode_step(queries, encoded.keys.clone(), chosen, pick);
                total = total + step.log_probs.clone();
                step
            };
            chosen = step.chosen;
            let item = gather_rows(
                encoded.candidates.clone(),
                step.picks.clone().reshape([b, k]),
            );
            prefix_sum = prefix_sum + item;
            picks.push(step.picks);
        }
        let lists = Tensor::cat(picks, 2);
        if recorded && l > 0 {
            // # Shapes: queries `[B, K, L, d]`, masks and log-probabilities `[B, K, L, N]`,
            // picked `[B, K, L]`.
            let (queries, masks) = (Tensor::cat(queries_of, 2), Tensor::cat(masks, 2));
            let log_probs = recorded_log_probs(
                queries.reshape([b, k * l, d]),
                encoded.keys.clone(),
                masks.reshape([b, k * l, n]),
                Tensor::cat(steps_log_probs, 2).reshape([b, k * l, n]),
            )
            .reshape([b, k, l, n]);
            let picked = log_probs
                .gather(3, lists.clone().reshape([b, k, l, 1]))
                .reshape([b, k, l]);
            // Summed step by step, as the steps' own log-probabilities would be.
            for t in 0..l {
                total = total + picked.clone().narrow(2, t, 1).reshape([b, k]);
            }
        }
        Decoded {
            lists,
            log_probs: total,
        }
    }

    /// K Plackett–Luce lists from the first step's scores alone (Gumbel-top-L).
    ///
    /// # Shapes
    /// - output: `[B, K, L]`
    pub fn plackett_luce(&self, encoded: &Encoded, k: usize) -> Tensor<3, Int> {
        plackett_luce(self.first_step_log_probs(encoded), k, self.list_len, 1.0)
    }

    /// The first decoding step's log-probabilities: a score per candidate.
    ///
    /// # Shapes
    /// - output: `[B, N]`
    pub fn first_step_log_probs(&self, encoded: &Encoded) -> Tensor<2> {
        self.first_step_scores(encoded, self.first_queries(encoded))
    }

    /// The first step's queries, one per request (nothing is chosen yet).
    ///
    /// # Shapes
    /// - output: `[B, 1, 1, d]`
    fn first_queries(&self, encoded: &Encoded) -> Tensor<4> {
        let [b, _, d] = encoded.candidates.dims();
        let device = encoded.user.device();
        let prefix_mean = Tensor::<4>::zeros([b, 1, 1, d], &device);
        let step = self.step_rows(1, &device);
        self.queries(encoded.user.clone(), prefix_mean, step)
    }

    /// The first step's log-probabilities from its queries.
    ///
    /// # Shapes
    /// - first `[B, 1, 1, d]`; output `[B, N]`
    fn first_step_scores(&self, encoded: &Encoded, first: Tensor<4>) -> Tensor<2> {
        let [b, n, _] = encoded.candidates.dims();
        let none = Tensor::<4>::zeros([b, 1, 1, n], &first.device()).greater_elem(0.5);
        step_log_probs(first, encoded.keys.clone(), none).reshape([b, n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU device's random stream is one for the process, and the tests here draw from it
    /// (a model's weights are drawn when first used) or reseed it and compare two runs. Each
    /// holds this while it runs, so that no other test's draws fall between a seed and the
    /// draws it was set for.
    fn stream() -> std::sync::MutexGuard<'static, ()> {
        static STREAM: std::sync::Mutex<()> = std::sync::Mutex::new(());
        STREAM
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn a_model_saved_before_the_decoder_width_setting_loads_with_the_default() {
        let _stream = stream();
        let saved = include_str!("../../assets/models/sim-small/goalrank/config.json");
        let saved: serde_json::Value = serde_json::from_str(saved).expect("json");
        assert!(saved["model"].get("decoder_mlp").is_none());
        let config: GeneratorConfig =
            serde_json::from_value(saved["model"].clone()).expect("a generator config");
        assert_eq!(config.decoder_mlp(), DECODER_MLP);
        let narrow = config.clone().with_decoder_mlp(Some(1));
        let model = narrow.init(&Device::flex());
        let d = narrow.encoder.d_model;
        assert_eq!(model.mlp_in.weight.dims(), [d, d]);
        assert!(config.with_decoder_mlp(Some(0)).validate().is_err());
    }

    /// A fresh generator (d 16, lists of `l`) and a random encoding of 3 requests with `n`
    /// candidates each, on flex, drawn from `seed`.
    fn random_model_and_encoding(seed: u64, n: usize, l: usize) -> (Generator, Encoded) {
        use burn::tensor::Distribution;
        let device = Device::flex();
        device.seed(seed);
        let (b, d) = (3, 16);
        let model = GeneratorConfig::new(EncoderConfig::new(20, 5, 3, d), l).init(&device);
        let encoded = Encoded {
            user: Tensor::<2>::random([b, d], Distribution::Default, &device),
            candidates: Tensor::<3>::random([b, n, d], Distribution::Default, &device),
            keys: Tensor::<3>::random([b, n, d], Distribution::Default, &device),
        };
        (model, encoded)
    }

    /// One greedy list per request decoded inside the CPU backend (`model::greedy`) is the
    /// tensor route's, bit for bit: the lists (with their integer type), log π and the first
    /// step's scores, for one request and several, one candidate and many, short and long
    /// lists, and the widths the shipped models use.
    #[test]
    fn greedy_decoding_in_the_backend_is_the_tensor_routes_bit_for_bit() {
        use burn::tensor::Distribution;
        let _stream = stream();
        let device = Device::flex();
        let bits = |t: Tensor<2>| -> Vec<u32> {
            let values = t.into_data().try_into_vec::<f32>().expect("f32");
            values.iter().map(|v| v.to_bits()).collect()
        };
        let shapes = [
            // (requests, candidates, list length, d)
            (1, 50, 6, 64),
            (1, 50, 6, 128),
            (3, 8, 4, 16),
            (5, 1, 1, 16),
            (70, 20, 6, 32),
            // Lists longer than their candidates: every candidate ends masked.
            (2, 2, 4, 24),
        ];
        for (i, (b, n, l, d)) in shapes.into_iter().enumerate() {
            device.seed(40 + i as u64);
            let model = GeneratorConfig::new(EncoderConfig::new(20, 5, 3, d), l).init(&device);
            // Views into larger tensors (offsets and strides), as the encoder hands them over.
            let random =
                |[b, n, d]: [usize; 3]| {
                    Tensor::<3>::random([b, n + 1, d], Distribution::Normal(0.0, 1.0), &device)
                        .slice([0..b, 1..n + 1, 0..d])
                };
            let encoded = Encoded {
                user: random([b, 1, d]).reshape([b, d]),
                candidates: random([b, n, d]),
                keys: random([b, n, d]),
            };
            let (backend, backend_scores) = model
                .decode_in_backend(&encoded, 1, Decode::Greedy)
                .expect("flex without autodiff decodes in the backend");
            let first = model.first_queries(&encoded);
            let scores = model.first_step_scores(&encoded, first.clone());
            let tensors = model.decode_from(&encoded, 1, Decode::Greedy, Some(first));
            let plain = model.decode_from(&encoded, 1, Decode::Greedy, None);
            let shape = format!("b {b}, n {n}, l {l}, d {d}");
            assert_eq!(backend.lists.dims(), [b, 1, l], "{shape}");
            assert_eq!(backend.lists.to_data(), tensors.lists.to_data(), "{shape}");
            assert_eq!(
                backend.lists.into_data(),
                plain.lists.into_data(),
                "{shape}"
            );
            assert_eq!(
                bits(backend.log_probs.clone()),
                bits(tensors.log_probs),
                "{shape}"
            );
            assert_eq!(bits(backend.log_probs), bits(plain.log_probs), "{shape}");
            assert_eq!(bits(backend_scores), bits(scores), "{shape}");
        }
    }

    /// Sampled lists, several lists per request, an autodiff device, mismatched shapes, a norm
    /// without a shift or a layer without a bias keep the tensor route.
    #[test]
    fn other_decodings_keep_the_tensor_route() {
        let _stream = stream();
        let in_backend = |model: &Generator, encoded: &Encoded, k: usize, mode: Decode| {
            model.decode_in_backend(encoded, k, mode).is_some()
        };
        let (model, encoded) = random_model_and_encoding(3, 8, 4);
        assert!(in_backend(&model, &encoded, 1, Decode::Greedy));
        assert!(!in_backend(&model, &encoded, 2, Decode::Greedy));
        assert!(!in_backend(&model, &encoded, 1, Decode::Sample));
        assert!(!in_backend(&model, &encoded, 1, Decode::Tempered(0.5)));
        let mismatched = Encoded {
            keys: encoded.keys.clone().narrow(1, 0, 7),
            ..encoded.clone()
        };
        assert!(!in_backend(&model, &mismatched, 1, Decode::Greedy));
        let autodiff = Device::flex().autodiff();
        let moved = Encoded {
            user: Tensor::from_data(encoded.user.to_data(), &autodiff),
            candidates: Tensor::from_data(encoded.candidates.to_data(), &autodiff),
            keys: Tensor::from_data(encoded.keys.to_data(), &autodiff),
        };
        assert!(!in_backend(
            &model.clone().fork(&autodiff),
            &moved,
            1,
            Decode::Greedy
        ));
        let mut unshifted = model.clone();
        unshifted.query_norm.beta = None;
        assert!(!in_backend(&unshifted, &encoded, 1, Decode::Greedy));
        let mut unbiased = model;
        unbiased.query.bias = None;
        assert!(!in_backend(&unbiased, &encoded, 1, Decode::Greedy));
    }

    /// Teacher forcing and greedy decoding share the step embeddings (looked up once per call):
    /// the greedy lists' log π is the teacher-forced one, and lists shorter than L are scored
    /// step for step as the first steps of the full lists.
    #[test]
    fn decoding_and_teacher_forcing_score_lists_alike() {
        let _stream = stream();
        let l = 4;
        let (model, encoded) = random_model_and_encoding(7, 8, l);
        let decoded = model.decode(&encoded, 2, Decode::Greedy);
        let (forced, steps) = model.teacher_forced(&encoded, decoded.lists.clone());
        let values = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().expect("f32");
        for (a, b) in values(decoded.log_probs).iter().zip(values(forced)) {
            assert!((a - b).abs() <= 1e-5, "decoded {a} vs teacher-forced {b}");
        }
        let short = decoded.lists.clone().narrow(2, 0, l - 1);
        let (_, short_steps) = model.teacher_forced(&encoded, short);
        let full: Vec<f32> = steps
            .narrow(2, 0, l - 1)
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32");
        let part: Vec<f32> = short_steps.into_data().try_into_vec::<f32>().expect("f32");
        assert_eq!(full, part);
    }

    #[test]
    fn lists_sharing_their_first_query_score_and_learn_as_lists_that_do_not() {
        use burn::tensor::Distribution;
        let _stream = stream();
        let device = Device::flex().autodiff();
        device.seed(11);
        let (b, k, l, d) = (3, 4, 5, 16);
        let model = GeneratorConfig::new(EncoderConfig::new(20, 5, 3, d), l).init(&device);
        assert!(Generator::shares_first_step(k, &device));
        assert!(!Generator::shares_first_step(1, &device));
        let user = Tensor::<2>::random([b, d], Distribution::Default, &device).into_data();
        let mut prefix = Tensor::<4>::random([b, k, l, d], Distribution::Default, &device);
        // Nothing is chosen before the first step: its prefix mean is zero in every list.
        prefix = prefix.slice_assign(
            [0..b, 0..k, 0..1, 0..d],
            Tensor::<4>::zeros([b, k, 1, d], &device),
        );
        let prefix = prefix.into_data();
        let weights = Tensor::<4>::random([b, k, l, d], Distribution::Default, &device);
        // Each run builds its own graph from the same values (a graph runs backward once).
        let run = |shared: bool| {
            let user = Tensor::<2>::from_data(user.clone(), &device).require_grad();
            let prefix = Tensor::<4>::from_data(prefix.clone(), &device);
            let steps = model.step_rows(l, &device);
            let queries = if shared {
                model.list_queries(user.clone(), prefix, steps)
            } else {
                model.queries(user.clone(), prefix, steps)
            };
            let grads = (queries.clone() * weights.clone()).sum().backward();
            let values = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().expect("f32");
            (
                queries.into_data().try_into_vec::<f32>().expect("f32"),
                values(user.grad(&grads).expect("user gradient")),
                values(
                    model
                        .mlp_in
                        .weight
                        .val()
                        .grad(&grads)
                        .expect("weight gradient"),
                ),
            )
        };
        let (shared, user_grad, weight_grad) = run(true);
        let (own, user_grad_own, weight_grad_own) = run(false);
        // The same queries, bit for bit; the gradients summed in another order.
        assert_eq!(shared, own);
        for (a, b) in [(user_grad, user_grad_own), (weight_grad, weight_grad_own)] {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y} (scale {scale})");
            }
        }
    }

    /// A GoalRank step on the CPU learns from the log π its group's decoding recorded on the
    /// autodiff graph: the same lists as a decoding outside the graph from the same seed, and
    /// the log π and gradients of teacher forcing them.
    #[test]
    fn a_recorded_decoding_samples_and_learns_as_teacher_forcing() {
        use burn::tensor::Distribution;
        let _stream = stream();
        let plain = Device::flex();
        let device = plain.clone().autodiff();
        assert!(Generator::records_decoding(&device));
        device.seed(3);
        let (b, n, k, l, d) = (3, 9, 4, 4, 16);
        let model = GeneratorConfig::new(EncoderConfig::new(20, 5, 3, d), l).init(&device);
        let random = |dims: [usize; 3]| {
            Tensor::<3>::random(dims, Distribution::Default, &device).into_data()
        };
        let (user, candidates, keys) = (random([b, 1, d]), random([b, n, d]), random([b, n, d]));
        let encoding = || Encoded {
            user: Tensor::<3>::from_data(user.clone(), &device)
                .reshape([b, d])
                .require_grad(),
            candidates: Tensor::<3>::from_data(candidates.clone(), &device).require_grad(),
            keys: Tensor::<3>::from_data(keys.clone(), &device).require_grad(),
        };
        let weights = Tensor::<2>::random([b, k], Distribution::Default, &device);
        // Burn draws a weight when it is first used: draw them all (the plain twin reads every
        // one) before the runs' seeds.
        let _ = model.valid();
        let floats = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().expect("f32");
        let ints = |t: Tensor<3, Int>| t.into_data().iter::<i64>().collect::<Vec<_>>();
        // Each route builds its own graph from the same values and returns the lists, log π and
        // the gradients of Σ w · log π with respect to the encoding (the keys the queries score,
        // the candidates the prefix means average, the user) and the MLP's weight.
        let run = |recorded: bool| {
            let encoded = encoding();
            plain.seed(17);
            let mode = Decode::Tempered(1.5);
            let (lists, log_probs) = if recorded {
                let decoded = model.decode(&encoded, k, mode);
                (decoded.lists, decoded.log_probs)
            } else {
                let lists = model
                    .valid()
                    .decode(&encoded.without_autodiff(), k, mode)
                    .lists;
                let (log_probs, _) = model.teacher_forced(&encoded, lists.clone());
                (lists, log_probs)
            };
            let grads = (log_probs.clone() * weights.clone()).sum().backward();
            let encoding = |t: &Tensor<3>| {
                let grad = t.grad(&grads).expect("the encoding's gradient");
                let [_, n, d] = grad.dims();
                floats(grad.reshape([b * n, d]))
            };
            let weight = model.mlp_in.weight.val().grad(&grads);
            (
                ints(lists),
                vec![
                    floats(log_probs),
                    encoding(&encoded.keys),
                    encoding(&encoded.candidates),
                    floats(encoded.user.grad(&grads).expect("the user's gradient")),
                    floats(weight.expect("the weight's gradient")),
                ],
            )
        };
        let (lists, recorded) = run(true);
        let (forced_lists, forced) = run(false);
        assert_eq!(lists, forced_lists);
        // The recorded log π is the plain decoding's bit for bit (the same values picked from).
        plain.seed(17);
        let decoded =
            model
                .valid()
                .decode(&encoding().without_autodiff(), k, Decode::Tempered(1.5));
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&recorded[0]), bits(&floats(decoded.log_probs)));
        for (a, b) in recorded.into_iter().zip(forced) {
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y} (scale {scale})");
            }
        }
    }

    #[test]
    fn a_scored_decoding_gives_the_lists_and_scores_of_two_calls() {
        let _stream = stream();
        let (model, encoded) = random_model_and_encoding(5, 9, 4);
        let ints = |t: Tensor<3, Int>| t.into_data().iter::<i64>().collect::<Vec<_>>();
        let floats = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().expect("f32");
        for k in [1, 3] {
            let (decoded, scores) = model.decode_scored(&encoded, k, Decode::Greedy);
            let alone = model.decode(&encoded, k, Decode::Greedy);
            assert_eq!(ints(decoded.lists), ints(alone.lists));
            assert_eq!(floats(decoded.log_probs), floats(alone.log_probs));
            assert_eq!(floats(scores), floats(model.first_step_log_probs(&encoded)));
        }
    }
}
