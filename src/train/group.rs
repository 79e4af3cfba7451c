//! The group-relative maths of GoalRank (DESIGN §5), as small pure functions.
//!
//! For the K lists of one request: A = (R - mean) / (std + 1e-6) with the population std,
//! π_ref = softmax(A / τ) (a constant: no gradient), loss = -Σ_l π_ref(l) log π_θ(l).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

/// Added to the group std before dividing.
pub const STD_EPS: f32 = 1e-6;

/// Z-scores of rewards within each group.
///
/// # Shapes
/// - rewards: `[B, K]` → `[B, K]`
pub fn z_scores(rewards: Tensor<2>) -> Tensor<2> {
    let mean = rewards.clone().mean_dim(1);
    let centred = rewards - mean;
    let std = centred.clone().powi_scalar(2).mean_dim(1).sqrt();
    centred / std.add_scalar(STD_EPS)
}

/// Reference policy over each group: softmax of the z-scored rewards at temperature `tau`,
/// detached from any autodiff graph.
///
/// # Shapes
/// - rewards: `[B, K]` → `[B, K]`, rows summing to 1
pub fn reference_policy(rewards: Tensor<2>, tau: f32) -> Tensor<2> {
    softmax(z_scores(rewards.detach()).div_scalar(tau), 1).detach()
}

/// Cross-entropy of the model's list log-probabilities against the reference policy,
/// averaged over requests.
///
/// # Shapes
/// - pi_ref, log_probs: `[B, K]` → `[1]`
pub fn reference_loss(pi_ref: Tensor<2>, log_probs: Tensor<2>) -> Tensor<1> {
    (pi_ref * log_probs).sum_dim(1).mean().neg()
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
