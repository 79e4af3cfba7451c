//! The WGSL kernels against their tensor-op twins, on one device and the same inputs: part of
//! `goalrank check-device`.

use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::Result;
use crate::model::{
    Pick, Step, block_on, decode_step, decode_step_twin, gumbel, kernel_launches, read_f32,
    read_i64,
};

/// How far the fused decoder step is from its twin, over greedy picks, draws and tempered draws.
#[derive(Clone, Debug, Serialize)]
pub struct KernelCheck {
    /// Whether the kernel ran on every call (false: both sides ran the twin, as on the CPU or
    /// with `GOALRANK_WGSL=0`).
    pub kernel_ran: bool,
    /// Rows (request × list) compared per pick mode.
    pub rows: usize,
    /// Pick modes compared (greedy, drawn, tempered).
    pub modes: usize,
    /// Rows whose pick differs, over all modes.
    pub different_picks: usize,
    /// Largest |log π(pick)| difference where the picks agree.
    pub max_log_prob_difference: f32,
    /// Largest difference of the returned chosen masks.
    pub max_chosen_difference: f32,
}

/// The fused decoder step and its twin on `device` for random queries, keys and masks
/// (`lists` lists per request, `candidates` of width `d_model`).
pub fn check_decode_step(
    device: &Device,
    requests: usize,
    lists: usize,
    candidates: usize,
    d_model: usize,
) -> Result<KernelCheck> {
    let (b, k, n, d) = (requests, lists, candidates, d_model);
    device.seed(7);
    let normal = Distribution::Normal(0.0, 1.0);
    let queries = Tensor::<3>::random([b, k, d], normal, device);
    let keys = Tensor::<3>::random([b, n, d], normal, device);
    // About a fifth of the candidates chosen already; candidate 0 never is.
    let chosen = Tensor::<3>::random([b, k, n], Distribution::Bernoulli(0.2), device)
        .slice_assign([0..b, 0..k, 0..1], Tensor::zeros([b, k, 1], device));
    let noise = gumbel([b, k, n], device);
    let picks = [
        Pick::greedy(),
        Pick::draw(noise.clone(), None),
        Pick::draw(noise, Some(0.5)),
    ];
    let _ = device.sync();
    let launched = kernel_launches().decode_step;
    let mut check = KernelCheck {
        kernel_ran: false,
        rows: b * k,
        modes: picks.len(),
        different_picks: 0,
        max_log_prob_difference: 0.0,
        max_chosen_difference: 0.0,
    };
    for pick in picks {
        let fused = decode_step(queries.clone(), keys.clone(), chosen.clone(), pick.clone());
        let twin = decode_step_twin(queries.clone(), keys.clone(), chosen.clone(), pick);
        let (fused, twin) = (read(fused)?, read(twin)?);
        for row in 0..b * k {
            if fused.0[row] != twin.0[row] {
                check.different_picks += 1;
            } else {
                let difference = (fused.1[row] - twin.1[row]).abs();
                check.max_log_prob_difference = worst(check.max_log_prob_difference, difference);
            }
        }
        let chosen_difference = fused
            .2
            .iter()
            .zip(&twin.2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, worst);
        check.max_chosen_difference = worst(check.max_chosen_difference, chosen_difference);
    }
    let _ = device.sync();
    check.kernel_ran = kernel_launches().decode_step - launched == check.modes as u64;
    Ok(check)
}

impl KernelCheck {
    /// The larger of the log-probability and mask differences; NaN when either is.
    pub fn largest_difference(&self) -> f32 {
        worst(self.max_log_prob_difference, self.max_chosen_difference)
    }
}

/// A step's picks, log-probabilities and chosen mask, read back.
fn read(step: Step) -> Result<(Vec<i64>, Vec<f32>, Vec<f32>)> {
    Ok((
        block_on(read_i64(step.picks))?,
        block_on(read_f32(step.log_probs))?,
        block_on(read_f32(step.chosen))?,
    ))
}

/// The larger difference; NaN wins (a NaN must fail the check, not vanish in `max`).
fn worst(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// How far the fused Adam update (`model::adam_kernel`) is from Burn's, over a few steps.
#[derive(Clone, Debug, Serialize)]
pub struct AdamCheck {
    /// Whether the kernel ran on every step (false: both sides ran Burn's update).
    pub kernel_ran: bool,
    /// Updates compared: three with clipping and weight decay (the gradient clipped, not
    /// clipped, clipped), three with neither, as the reward model trains.
    pub steps: usize,
    /// Largest difference after any step, relative to the scale of what the step computed: for
    /// the parameter, its update's largest magnitude; for each moment, its largest magnitude.
    pub max_relative_difference: f32,
}

/// The fused Adam update and Burn's (`FusedAdam::twin`) on `device`, from the same parameter
/// and gradients, with and without clipping and weight decay, at a learning rate large enough
/// that a wrong update shows.
pub fn check_adam_step(device: &Device) -> Result<AdamCheck> {
    use crate::train::AdamSettings;

    let clipped = AdamSettings {
        weight_decay: Some(0.01),
        clip: Some(1.0),
        ..AdamSettings::default()
    };
    let mut check = AdamCheck {
        kernel_ran: true,
        steps: 0,
        max_relative_difference: 0.0,
    };
    for settings in [clipped, AdamSettings::default()] {
        let _ = device.sync();
        let launched = kernel_launches().adam_step;
        let (steps, difference) = compare_adam(device, settings)?;
        let _ = device.sync();
        check.kernel_ran &= kernel_launches().adam_step - launched == steps as u64;
        check.steps += steps;
        check.max_relative_difference = worst(check.max_relative_difference, difference);
    }
    Ok(check)
}

/// Three updates through [`FusedAdam`](crate::train::FusedAdam)'s step and its twin; the
/// steps taken and the largest relative difference (see [`AdamCheck`]).
fn compare_adam(device: &Device, settings: crate::train::AdamSettings) -> Result<(usize, f32)> {
    use burn::optim::Optimizer;

    let adam = crate::train::FusedAdam::new(settings);
    let lr = 0.1;
    device.seed(11);
    // More values than the kernel's 256 threads, so each thread updates several.
    let shape = [33, 70];
    let normal = Distribution::Normal(0.0, 1.0);
    let start = Tensor::<2>::random(shape, normal, device);
    // Norms about 48 (clipped to 1), 0.5 (not clipped) and 4.8 (clipped).
    let grads = [1.0, 0.01, 0.1].map(|scale| Tensor::<2>::random(shape, normal, device) * scale);
    let (mut fused, mut twin) = ((start.clone(), None), (start, None));
    let mut worst_difference = 0.0f32;
    for grad in &grads {
        let before = block_on(read_f32(twin.0.clone()))?;
        fused = Optimizer::step(&adam, lr, fused.0, grad.clone(), fused.1);
        twin = adam.twin(lr, twin.0, grad.clone(), twin.1);
        let (Some(a), Some(b)) = (&fused.1, &twin.1) else {
            return Err(crate::Error::Check("an Adam update kept no state".into()));
        };
        let read = |t: &Tensor<2>| block_on(read_f32(t.clone()));
        let (param_a, param_b) = (read(&fused.0)?, read(&twin.0)?);
        let update = param_b
            .iter()
            .zip(&before)
            .fold(f32::MIN_POSITIVE, |m, (p, q)| m.max((p - q).abs()));
        let mut pairs = vec![(param_a, param_b, update)];
        for (a, b) in [
            (&a.momentum.moment_1, &b.momentum.moment_1),
            (&a.momentum.moment_2, &b.momentum.moment_2),
        ] {
            let (a, b) = (read(a)?, read(b)?);
            let scale = b.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
            pairs.push((a, b, scale));
        }
        for (a, b, scale) in pairs {
            let difference = a
                .iter()
                .zip(&b)
                .map(|(a, b)| (a - b).abs() / scale)
                .fold(0.0f32, worst);
            worst_difference = worst(worst_difference, difference);
        }
    }
    Ok((grads.len(), worst_difference))
}
