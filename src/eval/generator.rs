//! Scoring learned models on requests: greedy generator lists, list rewards, reward-model quality.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use super::{Ranking, metrics};
use crate::data::{Batch, Dataset, Request, World};
use crate::model::{
    Decode, Decoded, Encoded, Generator, Pointwise, RewardModel, block_on, plackett_luce, read_f32,
    read_i64,
};
use crate::train::{bce_with_probs, imitation_loss, listwise_loss};
use crate::{Error, Result};

/// Runs `choose` on batches of requests and turns what it returns, `[B, 1, L]` candidate
/// positions and `[B, N]` candidate scores (the generator's first-step log-probabilities),
/// into rankings.
async fn rank_in_batches(
    model: &Generator,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
    mut choose: impl FnMut(&Encoded) -> (Tensor<3, Int>, Tensor<2>),
) -> Result<Vec<Ranking>> {
    let l = model.list_len();
    let mut out = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(batch_size.max(1)) {
        let n = chunk[0].candidates.len();
        let refs: Vec<&Request> = chunk.iter().collect();
        let batch = Batch::new(dataset, &refs, device);
        let encoded = model.encode(&batch);
        let (lists, scores) = choose(&encoded);
        let lists = read_i64(lists).await?;
        let scores = read_f32(scores).await?;
        for (i, r) in chunk.iter().enumerate() {
            out.push(Ranking {
                list: lists[i * l..(i + 1) * l]
                    .iter()
                    .map(|&p| r.candidates[p as usize])
                    .collect(),
                scores: scores[i * n..(i + 1) * n].to_vec(),
            });
        }
    }
    Ok(out)
}

/// The generator's greedy list for every request.
pub fn generator_rankings(
    model: &Generator,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Ranking>> {
    block_on(generator_rankings_async(
        model, dataset, requests, batch_size, device,
    ))
}

/// [`generator_rankings`] that awaits its read-backs (the browser's way).
pub async fn generator_rankings_async(
    model: &Generator,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Ranking>> {
    rank_in_batches(model, dataset, requests, batch_size, device, |encoded| {
        // Only the lists and scores leave: Burn's fusion on a GPU then never computes the
        // lists' log-probabilities.
        let (Decoded { lists, .. }, scores) = model.decode_scored(encoded, 1, Decode::Greedy);
        (lists, scores)
    })
    .await
}

/// A trained model that proposes lists: a generator decodes them, a pointwise model draws them
/// from its candidate scores (Plackett–Luce; top-L by score when greedy).
#[derive(Clone, Copy)]
pub enum Proposer<'a> {
    Generator(&'a Generator),
    Pointwise(&'a Pointwise),
}

/// `count` lists from one proposer, greedy (one list, repeated) or sampled.
#[derive(Clone, Copy)]
pub struct ListSource<'a> {
    pub proposer: Proposer<'a>,
    pub mode: Decode,
    pub count: usize,
}

impl ListSource<'_> {
    /// Lists `[B, count, L]` and candidate scores `[B, N]` for a batch.
    fn propose(&self, batch: &Batch, l: usize) -> (Tensor<3, Int>, Tensor<2>) {
        let count = self.count.max(1);
        match self.proposer {
            Proposer::Generator(model) => {
                let encoded = model.encode(batch);
                let (decoded, scores) = model.decode_scored(&encoded, count, self.mode);
                (decoded.lists, scores)
            }
            Proposer::Pointwise(model) => {
                let scores = model.forward(batch);
                let lists = match self.mode {
                    Decode::Greedy => {
                        let [b, n] = scores.dims();
                        let (_, order) = scores.clone().sort_descending_with_indices(1);
                        order
                            .slice([0..b, 0..l.min(n)])
                            .reshape([b, 1, l.min(n)])
                            .repeat_dim(1, count)
                    }
                    Decode::Sample => plackett_luce(scores.clone(), count, l, 1.0),
                    Decode::Tempered(t) => plackett_luce(scores.clone(), count, l, t),
                };
                (lists, scores)
            }
        }
    }
}

/// What picks the best of the proposed lists.
#[derive(Clone, Copy)]
pub enum Picker<'a> {
    /// A reward model: the list with the highest R.
    Model(&'a RewardModel),
    /// The simulator's exact utility: the list with the highest U (the oracle evaluator).
    Exact(&'a World),
}

impl<'a> From<&'a RewardModel> for Picker<'a> {
    fn from(model: &'a RewardModel) -> Self {
        Picker::Model(model)
    }
}

/// Generator–Evaluator and Multi-Generator–Evaluator: every source proposes its lists and the
/// evaluator picks the one with the highest reward. Candidate scores (for AUC) are the first
/// source's.
pub fn best_of_rankings<'a>(
    sources: &[ListSource],
    evaluator: impl Into<Picker<'a>>,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Ranking>> {
    if sources.is_empty() {
        return Err(Error::Invalid("best-of: no list source given".into()));
    }
    let evaluator = evaluator.into();
    let l = dataset.config.list_len;
    let mut out = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(batch_size.max(1)) {
        let n = chunk[0].candidates.len();
        let refs: Vec<&Request> = chunk.iter().collect();
        let batch = Batch::new(dataset, &refs, device);
        let mut pools = Vec::with_capacity(sources.len());
        let mut scores = None;
        for source in sources {
            let (lists, source_scores) = source.propose(&batch, l);
            pools.push(lists);
            scores.get_or_insert(source_scores);
        }
        // # Shapes: lists [B, K, L], rewards [B, K], best [B, 1, L]
        let lists = Tensor::cat(pools, 1);
        let [b, k, l] = lists.dims();
        let best = match evaluator {
            Picker::Model(model) => {
                let (_, rewards) = model.score(&model.context(&batch), lists.clone());
                let best = rewards.argmax(1).reshape([b, 1, 1]).expand([b, 1, l]);
                block_on(read_i64(lists.gather(1, best)))?
            }
            Picker::Exact(world) => {
                let all = block_on(read_i64(lists))?;
                let mut best = Vec::with_capacity(b * l);
                for (i, r) in chunk.iter().enumerate() {
                    let utility = |j: usize| {
                        let list = &all[(i * k + j) * l..(i * k + j + 1) * l];
                        let items: Vec<u32> =
                            list.iter().map(|&p| r.candidates[p as usize]).collect();
                        world.utility(r.user, &items)
                    };
                    // The first best list on ties, as the model picker's argmax.
                    let utilities: Vec<f64> = (0..k).map(utility).collect();
                    let j = (0..k)
                        .rev()
                        .max_by(|&a, &b| utilities[a].total_cmp(&utilities[b]))
                        .unwrap_or(0);
                    best.extend_from_slice(&all[(i * k + j) * l..(i * k + j + 1) * l]);
                }
                best
            }
        };
        let scores = match scores {
            Some(s) => block_on(read_f32(s))?,
            None => Vec::new(),
        };
        for (i, r) in chunk.iter().enumerate() {
            out.push(Ranking {
                list: best[i * l..(i + 1) * l]
                    .iter()
                    .map(|&p| r.candidates[p as usize])
                    .collect(),
                scores: scores[i * n..(i + 1) * n].to_vec(),
            });
        }
    }
    Ok(out)
}

/// The Multi-Generator–Evaluator's `k` generators drawn from trained models: generator j is
/// model `j mod m`, decoded greedily for j < m and afterwards sampled at temperatures 0.5, 1 and
/// 2 in turn. Returns one source per (model, mode) with its count of lists.
pub fn generator_ladder<'a>(models: &[Proposer<'a>], k: usize) -> Vec<ListSource<'a>> {
    const TEMPERATURES: [f32; 3] = [0.5, 1.0, 2.0];
    let m = models.len();
    let mut sources: Vec<ListSource<'a>> = Vec::new();
    for j in 0..if m == 0 { 0 } else { k } {
        let proposer = models[j % m];
        let mode = match j / m {
            0 => Decode::Greedy,
            round => Decode::Tempered(TEMPERATURES[(round - 1) % TEMPERATURES.len()]),
        };
        match sources
            .iter_mut()
            .find(|s| s.mode == mode && same(s.proposer, proposer))
        {
            Some(source) => source.count += 1,
            None => sources.push(ListSource {
                proposer,
                mode,
                count: 1,
            }),
        }
    }
    sources
}

fn same(a: Proposer, b: Proposer) -> bool {
    match (a, b) {
        (Proposer::Generator(x), Proposer::Generator(y)) => std::ptr::eq(x, y),
        (Proposer::Pointwise(x), Proposer::Pointwise(y)) => std::ptr::eq(x, y),
        _ => false,
    }
}

/// A pointwise model's rankings: candidates sorted by score, the best L kept.
pub fn pointwise_rankings(
    model: &Pointwise,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Ranking>> {
    block_on(pointwise_rankings_async(
        model, dataset, requests, batch_size, device,
    ))
}

/// [`pointwise_rankings`] that awaits its read-backs.
pub async fn pointwise_rankings_async(
    model: &Pointwise,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Ranking>> {
    let l = dataset.config.list_len;
    let mut out = Vec::with_capacity(requests.len());
    for chunk in requests.chunks(batch_size.max(1)) {
        let refs: Vec<&Request> = chunk.iter().collect();
        let scores = read_f32(model.forward(&Batch::new(dataset, &refs, device))).await?;
        let n = chunk[0].candidates.len();
        for (i, r) in chunk.iter().enumerate() {
            let row = scores[i * n..(i + 1) * n].to_vec();
            out.push(Ranking::from_scores(&r.candidates, row, l));
        }
    }
    Ok(out)
}

/// Mean list reward R of each request's chosen list under `reward`.
pub fn mean_reward(
    reward: &RewardModel,
    dataset: &Dataset,
    requests: &[Request],
    rankings: &[Ranking],
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    let l = reward.list_len();
    let mut total = 0.0f64;
    for (chunk, ranks) in requests
        .chunks(batch_size.max(1))
        .zip(rankings.chunks(batch_size.max(1)))
    {
        let refs: Vec<&Request> = chunk.iter().collect();
        let batch = Batch::new(dataset, &refs, device);
        let mut positions = Vec::with_capacity(chunk.len() * l);
        for (r, ranking) in chunk.iter().zip(ranks) {
            for item in ranking.list.iter().take(l) {
                let p = r.candidates.iter().position(|c| c == item).ok_or_else(|| {
                    Error::Invalid(format!(
                        "list item {item} is not a candidate of its request"
                    ))
                })?;
                positions.push(p as i64);
            }
        }
        let lists =
            Tensor::<3, Int>::from_data(TensorData::new(positions, [chunk.len(), 1, l]), device);
        let (_, rewards) = reward.score(&reward.context(&batch), lists);
        total += block_on(read_f32(rewards))?
            .iter()
            .map(|&r| f64::from(r))
            .sum::<f64>();
    }
    Ok(total / requests.len().max(1) as f64)
}

/// How well a reward model predicts logged labels.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RewardQuality {
    /// Mean binary cross-entropy per logged item.
    pub log_loss: f64,
    /// AUC of per-position probabilities against labels, pooled over all logged items.
    pub auc: f64,
    /// The listwise term (clicked items against all candidates) and the imitation term (the
    /// logged list's Plackett-Luce likelihood) on the candidate logits, per request; `None`
    /// for a model without candidate logits.
    pub listwise: Option<f64>,
    pub imitation: Option<f64>,
}

impl RewardQuality {
    /// The training objective without random lists: log-loss plus the weighted ranking terms.
    pub fn objective(&self, listwise: f32, imitation: f32) -> f64 {
        self.log_loss
            + f64::from(listwise) * self.listwise.unwrap_or(0.0)
            + f64::from(imitation) * self.imitation.unwrap_or(0.0)
    }
}

/// Log-loss and pooled AUC of `reward` on the logged lists of `requests`.
pub fn reward_quality(
    reward: &RewardModel,
    dataset: &Dataset,
    requests: &[Request],
    batch_size: usize,
    device: &Device,
) -> Result<RewardQuality> {
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut loss = 0.0f64;
    let mut ranking: Option<(f64, f64)> = None;
    for chunk in requests.chunks(batch_size.max(1)) {
        let refs: Vec<&Request> = chunk.iter().collect();
        let batch = Batch::new(dataset, &refs, device);
        let context = reward.context(&batch);
        let [b, l] = batch.logged.dims();
        let probs = reward
            .list_probs(&context, batch.logged.clone().reshape([b, 1, l]))
            .reshape([b, l]);
        // The batch's loss terms, read back together: log-loss, then listwise and imitation.
        let mut terms = vec![bce_with_probs(probs.clone(), batch.labels.clone())];
        let logits = reward.candidate_logits(&context);
        let ranked = logits.is_some();
        if let Some(logits) = logits {
            terms.push(listwise_loss(
                logits.clone(),
                batch.logged.clone(),
                batch.labels.clone(),
            ));
            terms.push(imitation_loss(logits, batch.logged.clone()));
        }
        let terms = block_on(read_f32(Tensor::cat(terms, 0)))?;
        let weight = chunk.len() as f64;
        loss += f64::from(terms[0]) * weight;
        if ranked {
            let sums = ranking.get_or_insert((0.0, 0.0));
            sums.0 += f64::from(terms[1]) * weight;
            sums.1 += f64::from(terms[2]) * weight;
        }
        scores.extend(block_on(read_f32(probs))?);
        labels.extend(chunk.iter().flat_map(|r| r.labels.iter().map(|&y| y > 0)));
    }
    let n = requests.len().max(1) as f64;
    Ok(RewardQuality {
        log_loss: loss / n,
        auc: metrics::auc(&scores, &labels).unwrap_or(0.5),
        listwise: ranking.map(|(lw, _)| lw / n),
        imitation: ranking.map(|(_, im)| im / n),
    })
}
