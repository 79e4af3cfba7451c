//! Looking inside one request: a list's per-position reward-model scores, and a sampled group
//! with its rewards, z-scores, reference policy and the model's own probabilities (what the app
//! shows).

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use crate::data::{Batch, Dataset, Request};
use crate::model::{Decode, Generator, RewardModel, block_on, read_f32, read_i64};
use crate::train::{GroupSampling, group};
use crate::{Error, Result};

/// A list as the reward model sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ScoredList {
    /// Item indices, best first.
    pub items: Vec<u32>,
    /// Engagement probability p_i at each position.
    pub position_scores: Vec<f32>,
    /// R = Σ p_i / log2(i + 1).
    pub reward: f32,
}

/// One list of a sampled group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupMember {
    pub list: ScoredList,
    /// A = (R − mean) / (std + 1e-6) within the group.
    pub advantage: f32,
    /// π_ref = softmax(A / τ) over the group.
    pub pi_ref: f32,
    /// log π_θ(l) of the whole list under the generator.
    pub log_pi: f32,
    /// π_θ renormalised over the group (softmax of log π_θ), comparable with π_ref.
    pub pi_theta: f32,
}

/// Candidate positions of `items` in `request`, or an error naming the stray item.
fn positions(request: &Request, items: &[u32]) -> Result<Vec<i64>> {
    items
        .iter()
        .map(|item| {
            request
                .candidates
                .iter()
                .position(|c| c == item)
                .map(|p| p as i64)
                .ok_or_else(|| Error::Invalid(format!("item {item} is not a candidate")))
        })
        .collect()
}

/// The reward model's view of `lists` (item indices) for one request.
pub fn score_lists(
    reward: &RewardModel,
    dataset: &Dataset,
    request: &Request,
    lists: &[Vec<u32>],
    device: &Device,
) -> Result<Vec<ScoredList>> {
    block_on(score_lists_async(reward, dataset, request, lists, device))
}

/// [`score_lists`] that awaits its read-backs.
pub async fn score_lists_async(
    reward: &RewardModel,
    dataset: &Dataset,
    request: &Request,
    lists: &[Vec<u32>],
    device: &Device,
) -> Result<Vec<ScoredList>> {
    let l = reward.list_len();
    if lists.is_empty() {
        return Ok(Vec::new());
    }
    let mut flat = Vec::with_capacity(lists.len() * l);
    for list in lists {
        if list.len() != l {
            return Err(Error::Invalid(format!(
                "a list of {} items, the reward model scores {l}",
                list.len()
            )));
        }
        flat.extend(positions(request, list)?);
    }
    let batch = Batch::new(dataset, &[request], device);
    // # Shapes: lists [1, K, L] → p [1, K, L], R [1, K]
    let tensor = Tensor::<3, Int>::from_data(TensorData::new(flat, [1, lists.len(), l]), device);
    let (p, r) = reward.score(&reward.context(&batch), tensor);
    let (p, r) = (read_f32(p).await?, read_f32(r).await?);
    Ok(lists
        .iter()
        .enumerate()
        .map(|(i, list)| ScoredList {
            items: list.clone(),
            position_scores: p[i * l..(i + 1) * l].to_vec(),
            reward: r[i],
        })
        .collect())
}

/// Samples a group of `k` lists for `request` from `generator` (as in training, without the
/// logged list) and returns each list with R, A, π_ref (temperature `tau`) and π_θ.
#[allow(clippy::too_many_arguments)]
pub fn inspect_group(
    generator: &Generator,
    reward: &RewardModel,
    dataset: &Dataset,
    request: &Request,
    k: usize,
    sampling: GroupSampling,
    tau: f32,
    device: &Device,
) -> Result<Vec<GroupMember>> {
    block_on(inspect_group_async(
        generator, reward, dataset, request, k, sampling, tau, device,
    ))
}

/// [`inspect_group`] that awaits its read-backs.
#[allow(clippy::too_many_arguments)]
pub async fn inspect_group_async(
    generator: &Generator,
    reward: &RewardModel,
    dataset: &Dataset,
    request: &Request,
    k: usize,
    sampling: GroupSampling,
    tau: f32,
    device: &Device,
) -> Result<Vec<GroupMember>> {
    let k = k.max(1);
    let batch = Batch::new(dataset, &[request], device);
    let encoded = generator.encode(&batch);
    // # Shapes: lists [1, K, L]
    let lists = match sampling {
        GroupSampling::Autoregressive => generator.decode(&encoded, k, Decode::Sample).lists,
        GroupSampling::PlackettLuce => generator.plackett_luce(&encoded, k),
    };
    let (log_pi, _) = generator.teacher_forced(&encoded, lists.clone());
    let (p, rewards) = reward.score(&reward.context(&batch), lists.clone());
    let advantage = group::z_scores(rewards.clone());
    let pi_ref = group::reference_policy(rewards.clone(), tau);
    let pi_theta = softmax(log_pi.clone(), 1);
    let l = generator.list_len();
    let lists = read_i64(lists).await?;
    let (p, rewards) = (read_f32(p).await?, read_f32(rewards).await?);
    let (advantage, pi_ref) = (read_f32(advantage).await?, read_f32(pi_ref).await?);
    let (log_pi, pi_theta) = (read_f32(log_pi).await?, read_f32(pi_theta).await?);
    Ok((0..k)
        .map(|i| GroupMember {
            list: ScoredList {
                items: lists[i * l..(i + 1) * l]
                    .iter()
                    .map(|&pos| request.candidates[pos as usize])
                    .collect(),
                position_scores: p[i * l..(i + 1) * l].to_vec(),
                reward: rewards[i],
            },
            advantage: advantage[i],
            pi_ref: pi_ref[i],
            log_pi: log_pi[i],
            pi_theta: pi_theta[i],
        })
        .collect())
}
