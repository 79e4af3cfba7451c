//! `goalrank check-device`: the same reward-model training steps, from the same weights and on
//! the same batches, on two devices. Equal losses mean the second backend computes what the CPU
//! computes.

use burn::tensor::Device;
use serde::Serialize;

use crate::Result;
use crate::data::{Dataset, Split};
use crate::model::{module_bytes, module_from_bytes};
use crate::train::{RewardTrainer, RewardTrainingConfig};

/// Losses of each step on both devices.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceCheck {
    pub reference: Vec<f32>,
    pub other: Vec<f32>,
    /// Largest |reference - other| / max(|reference|, 1).
    pub max_relative_difference: f32,
    /// The WGSL kernels against their twins on the second device (`check-device` only).
    pub kernels: Option<super::KernelCheck>,
    /// The fused Adam update against Burn's on the second device (`check-device` only).
    pub adam: Option<super::AdamCheck>,
    /// Half-precision (f16) weights loaded on the second device equal, as f32, the same weights
    /// loaded on the CPU (`check-device` only).
    pub half_precision_load_equal: Option<bool>,
}

/// Runs `steps` reward-model steps (dropout off) on `reference` and on `other` from one set of
/// initial weights.
pub fn check_device(
    dataset: &Dataset,
    config: &RewardTrainingConfig,
    steps: usize,
    reference: &Device,
    other: &Device,
) -> Result<DeviceCheck> {
    let config = config.clone().with_dropout(0.0);
    reference.seed(config.seed);
    let init = module_bytes(&config.model(dataset).init(reference))?;
    let losses = |device: &Device| -> Result<Vec<f32>> {
        let autodiff = device.clone().autodiff();
        let model = module_from_bytes(config.model(dataset).init(&autodiff), init.clone())?;
        let mut trainer = RewardTrainer::with_model(dataset, Split::Train, &config, model, device);
        Ok((0..steps).map(|_| trainer.step().loss).collect())
    };
    let reference = losses(reference)?;
    let other = losses(other)?;
    let max_relative_difference = reference
        .iter()
        .zip(&other)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
        .fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    Ok(DeviceCheck {
        reference,
        other,
        max_relative_difference,
        kernels: None,
        adam: None,
        half_precision_load_equal: None,
    })
}

/// Largest accepted difference between a WGSL kernel and its twin (f32 sums in another order):
/// |log π| for the decoder step, relative to the tensor's scale for the Adam update.
#[cfg(not(target_arch = "wasm32"))]
pub const KERNEL_TOLERANCE: f32 = 1e-4;

/// `goalrank check-device`: a few reward-model steps on the CPU and on wgpu (Vulkan) from the
/// same weights, and the WGSL kernels against their tensor-op twins on wgpu; an error when the
/// losses differ by more than `tolerance` (relative), a kernel picks differently from its twin,
/// or its log-probabilities (the decoder step) or updated tensors (Adam) differ by more than
/// `KERNEL_TOLERANCE`. The reward-model steps themselves run the fused Adam on wgpu.
#[cfg(not(target_arch = "wasm32"))]
pub fn check_wgpu(dataset: &Dataset, steps: usize, tolerance: f32) -> Result<DeviceCheck> {
    crate::error::check::at_least("--steps", steps, 1)?;
    crate::error::check::positive("--tolerance", f64::from(tolerance))?;
    let gpu = crate::device::vulkan_device()?;
    let config = RewardTrainingConfig::new()
        .with_d_model(16)
        .with_layers(1)
        .with_heads(2)
        .with_batch_size(16);
    let mut check = check_device(dataset, &config, steps, &Device::flex(), &gpu)?;
    let difference = check.max_relative_difference;
    if difference.is_nan() || difference > tolerance {
        return Err(crate::Error::Check(format!(
            "wgpu losses {:?} differ from flex {:?} by {difference} (> {tolerance})",
            check.other, check.reference
        )));
    }
    // More candidates than the kernel's 64 threads, so each thread scores several.
    let kernels = super::check_decode_step(&gpu, 8, 4, 70, 32)?;
    let worst = kernels.largest_difference();
    let wanted = crate::model::runs_kernels(&gpu);
    ran_as_wanted("the fused decoder step", kernels.kernel_ran, wanted)?;
    if kernels.different_picks > 0 || worst.is_nan() || worst > KERNEL_TOLERANCE {
        return Err(crate::Error::Check(format!(
            "the fused decoder step disagrees with its twin on wgpu: {} of {} picks differ, \
             log-probabilities by up to {}, chosen masks by up to {} (tolerance {KERNEL_TOLERANCE})",
            kernels.different_picks,
            kernels.modes * kernels.rows,
            kernels.max_log_prob_difference,
            kernels.max_chosen_difference
        )));
    }
    check.kernels = Some(kernels);
    let adam = super::check_adam_step(&gpu)?;
    ran_as_wanted("the fused Adam update", adam.kernel_ran, wanted)?;
    let worst = adam.max_relative_difference;
    if worst.is_nan() || worst > KERNEL_TOLERANCE {
        return Err(crate::Error::Check(format!(
            "the fused Adam update disagrees with Burn's on wgpu: parameters or moments differ by \
             up to {worst} of their scale after {} steps (tolerance {KERNEL_TOLERANCE})",
            adam.steps
        )));
    }
    check.adam = Some(adam);
    // f16 weights load on wgpu as on the CPU: made f32 on the host, whether or not the adapter
    // computes in f16.
    let cpu = Device::flex();
    let half = crate::model::module_bytes_f16(&config.model(dataset).init(&cpu))?;
    let on_cpu = module_from_bytes(config.model(dataset).init(&cpu), half.clone())?;
    let on_gpu = module_from_bytes(config.model(dataset).init(&gpu), half)?;
    let equal = module_bytes(&on_cpu)? == module_bytes(&on_gpu)?;
    if !equal {
        return Err(crate::Error::Check(
            "f16 weights loaded on wgpu differ from the same weights loaded on the CPU".into(),
        ));
    }
    check.half_precision_load_equal = Some(equal);
    Ok(check)
}

/// An error unless the kernel `name` ran exactly when `wanted` (`GOALRANK_WGSL=0` keeps the
/// twins).
#[cfg(not(target_arch = "wasm32"))]
fn ran_as_wanted(name: &str, ran: bool, wanted: bool) -> Result<()> {
    if ran == wanted {
        return Ok(());
    }
    let what = if wanted {
        "did not run"
    } else {
        "ran although GOALRANK_WGSL=0"
    };
    Err(crate::Error::Check(format!("{name} {what} on wgpu")))
}
