//! The group-relative maths of GoalRank, as small pure functions on `[B, K]` tensors (B
//! requests, K lists per request's group).
//!
//! For the K lists of one request with rewards R:
//! - advantage A = (R − mean(R)) / (std(R) + 1e-6), with the population std;
//! - reference policy π_ref = softmax(A / τ), a constant (no gradient);
//! - GoalRank's loss: the cross-entropy −Σ_l π_ref(l) log π_θ(l);
//! - the policy-gradient baseline (group-normalised REINFORCE, GRPO-style): −(1/K) Σ_l A(l) log π_θ(l).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// Added to the group std before dividing.
pub const STD_EPS: f32 = 1e-6;

/// Population standard deviation of each group.
///
/// # Shapes
/// - rewards: `[B, K]` → `[B, 1]`
pub fn std(rewards: Tensor<2>) -> Tensor<2> {
    let mean = rewards.clone().mean_dim(1);
    (rewards - mean).powi_scalar(2).mean_dim(1).sqrt()
}

/// Advantages: z-scores of rewards within each group, detached.
///
/// # Shapes
/// - rewards: `[B, K]` → `[B, K]`
pub fn z_scores(rewards: Tensor<2>) -> Tensor<2> {
    let rewards = rewards.detach();
    let centred = rewards.clone() - rewards.clone().mean_dim(1);
    (centred / std(rewards).add_scalar(STD_EPS)).detach()
}

/// Reference policy over each group: softmax of the advantages (z-scored rewards) at
/// temperature `tau`, detached.
///
/// # Shapes
/// - rewards: `[B, K]` → `[B, K]`, rows summing to 1
pub fn reference_policy(rewards: Tensor<2>, tau: f32) -> Tensor<2> {
    softmax_policy(z_scores(rewards), tau)
}

/// π_ref from advantages already computed: softmax of `advantages / tau` over each group,
/// detached.
///
/// # Shapes
/// - advantages: `[B, K]` → `[B, K]`, rows summing to 1
pub fn softmax_policy(advantages: Tensor<2>, tau: f32) -> Tensor<2> {
    softmax(advantages.detach().div_scalar(tau), 1).detach()
}

/// Cross-entropy of the model's list log-probabilities against the reference policy,
/// averaged over requests.
///
/// # Shapes
/// - pi_ref, log_probs: `[B, K]` → `[1]`
pub fn reference_loss(pi_ref: Tensor<2>, log_probs: Tensor<2>) -> Tensor<1> {
    (pi_ref * log_probs).sum_dim(1).mean().neg()
}

/// Group-normalised policy gradient: −A · log π averaged over lists and requests.
///
/// # Shapes
/// - advantages, log_probs: `[B, K]` → `[1]`
pub fn policy_gradient_loss(advantages: Tensor<2>, log_probs: Tensor<2>) -> Tensor<1> {
    (advantages.detach() * log_probs).mean().neg()
}

/// Entropy of each group's reference policy, averaged over requests (ln K when rewards tie).
///
/// # Shapes
/// - pi_ref: `[B, K]` → `[1]`
pub fn entropy(pi_ref: Tensor<2>) -> Tensor<1> {
    (pi_ref.clone() * pi_ref.clamp_min(1e-12).log())
        .sum_dim(1)
        .mean()
        .neg()
}
