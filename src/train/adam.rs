//! Adam with per-tensor gradient-norm clipping and weight decay, as every trainer here uses it.
//!
//! On wgpu (native, or WebGPU in the browser) each parameter tensor's update is one launch of
//! `shaders/adam_step.wgsl` (clip, decay, both moments and the parameter), where Burn's `Adam`
//! behind its `ModuleOptimizer` takes about six launches per tensor, most of them tiny.
//! Everywhere else the update is Burn's own: its gradient clipping, then its `Adam` step, the
//! same operations in the same order as `AdamConfig::init()` with clipping, so CPU results are
//! unchanged. That is the CPU (the browser's fallback included), remote devices, tensors that
//! are not f32, an AMSGrad state, and `GOALRANK_WGSL=0`. The state is Burn's `AdamState`, so
//! optimiser checkpoints are the same either way. `goalrank check-device` (and the wgpu test)
//! runs both on wgpu and compares.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::{Adam, AdamConfig, AdamState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

/// Adam's settings; [`AdamSettings::optimizer`] builds the module optimiser.
#[derive(Clone, Copy, Debug)]
pub struct AdamSettings {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// Weight-decay penalty (added to the gradient as `param · penalty`), if any.
    pub weight_decay: Option<f32>,
    /// Gradient-norm clipping threshold, per parameter tensor as Burn clips, if any.
    pub clip: Option<f32>,
}

impl Default for AdamSettings {
    /// Burn's `AdamConfig` defaults: β 0.9 / 0.999, ε 1e-5, no decay, no clipping.
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: None,
            clip: None,
        }
    }
}

impl AdamSettings {
    /// The whole-module optimiser: [`FusedAdam`] for every parameter.
    pub fn optimizer(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(FusedAdam::new(*self))
    }
}

/// Adam whose update is one WGSL kernel per tensor where it runs, Burn's `Adam` elsewhere.
#[derive(Clone)]
pub struct FusedAdam {
    settings: AdamSettings,
    /// Burn's `Adam` with the same settings (its clipping is applied before it, in `twin`).
    adam: Adam,
    clipping: Option<GradientClipping>,
}

impl FusedAdam {
    pub fn new(settings: AdamSettings) -> Self {
        let adam = AdamConfig::new()
            .with_beta_1(settings.beta_1)
            .with_beta_2(settings.beta_2)
            .with_epsilon(settings.epsilon)
            .with_weight_decay(settings.weight_decay.map(WeightDecayConfig::new))
            .build();
        Self {
            settings,
            adam,
            clipping: settings.clip.map(GradientClipping::Norm),
        }
    }

    /// Burn's update: its gradient-norm clipping, then its `Adam` step (what
    /// `AdamConfig::init()` with clipping does for each tensor).
    pub fn twin<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        let grad = match &self.clipping {
            Some(clipping) => clipping.clip_gradient(grad),
            None => grad,
        };
        self.adam.step(lr, tensor, grad, state)
    }

    /// The update as one WGSL kernel on wgpu; `None` where it does not run (then the
    /// caller takes [`FusedAdam::twin`]).
    fn fused<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamState<D>>,
    ) -> Option<(Tensor<D>, Option<AdamState<D>>)> {
        use burn::optim::AdaptiveMomentumState;

        let device = tensor.device();
        if !crate::model::runs_kernels(&device) {
            return None;
        }
        let shape = tensor.shape();
        let n = shape.num_elements();
        let flat = |t: &Tensor<D>| t.clone().reshape([n]);
        let (time, moment_1, moment_2) = match state {
            // AMSGrad is never configured here; its state would need the kernel to keep a third
            // moment.
            Some(state) if state.momentum.max_moment_2.is_some() => return None,
            Some(state) => (
                state.momentum.time,
                flat(&state.momentum.moment_1),
                flat(&state.momentum.moment_2),
            ),
            // Zero moments give Burn's first-step moments exactly (0·β + x = x).
            None => (0, Tensor::zeros([n], &device), Tensor::zeros([n], &device)),
        };
        let time = time + 1;
        // Burn's bias corrections, computed the same way.
        let s = &self.settings;
        let t = i32::try_from(time).ok()?;
        let bias_correction_2 = (1.0 - s.beta_2.powi(t)).sqrt();
        let scalars = crate::model::AdamScalars {
            clip: s.clip,
            penalty: s.weight_decay,
            beta_1: s.beta_1,
            beta_2: s.beta_2,
            lr: lr as f32,
            correction: bias_correction_2 / (1.0 - s.beta_1.powi(t)),
            epsilon: s.epsilon * bias_correction_2,
        };
        let (param, moment_1, moment_2) =
            crate::model::adam_kernel(&flat(tensor), &flat(grad), &moment_1, &moment_2, &scalars)?;
        let momentum = AdaptiveMomentumState::new(
            time,
            moment_1.reshape(shape.clone()),
            moment_2.reshape(shape.clone()),
        );
        Some((param.reshape(shape), Some(AdamState::new(momentum))))
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        if let Some(updated) = self.fused(lr, &tensor, &grad, state.as_ref()) {
            return updated;
        }
        self.twin(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::grad_clipping::GradientClippingConfig;
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    /// One step on fixed inputs (not Burn's random stream, which tests running beside this one
    /// share), `scale` times larger.
    fn step(optim: &mut ModuleOptimizer, model: Linear, scale: f32) -> Linear {
        let device = model.weight.device();
        let values: Vec<f32> = (0..40)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(values, [8, 5]), &device);
        let loss = model.forward(x).powi_scalar(2).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(0.05, model, grads)
    }

    fn weights(model: &Linear) -> Vec<f32> {
        let mut values = model
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let bias = model.bias.as_ref().expect("bias").val().into_data();
        values.extend(bias.try_to_vec::<f32>().expect("f32"));
        values
    }

    /// On the CPU the optimiser is Burn's Adam with Burn's clipping, bit for bit, and its
    /// checkpoints are Burn's: a state saved by either resumes in the other.
    #[test]
    fn off_the_kernel_it_is_burns_adam_with_clipping_and_shares_its_checkpoints() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let start = LinearConfig::new(5, 4).init(&device);
        // Materialise the lazily initialised weights once, so both copies start from them.
        let initial = weights(&start);
        let settings = AdamSettings {
            beta_1: 0.8,
            beta_2: 0.98,
            epsilon: 1e-6,
            weight_decay: Some(1e-2),
            clip: Some(0.5),
        };
        let burns = || {
            AdamConfig::new()
                .with_beta_1(0.8)
                .with_beta_2(0.98)
                .with_epsilon(1e-6)
                .with_weight_decay(Some(WeightDecayConfig::new(1e-2)))
                .with_grad_clipping(Some(GradientClippingConfig::Norm(0.5)))
                .init()
        };
        let (mut ours, mut theirs) = (settings.optimizer(), burns());
        let (mut a, mut b) = (start.clone(), start);
        // Large inputs clip the gradient, small ones do not.
        for scale in [3.0, 0.01, 2.0] {
            a = step(&mut ours, a, scale);
            b = step(&mut theirs, b, scale);
            assert_eq!(weights(&a), weights(&b));
        }
        // A state saved by Burn's optimiser resumes in ours as if it had never stopped (and the
        // state matters: a fresh optimiser takes another step).
        let continued = step(&mut ours.clone(), a.clone(), 1.0);
        let saved = theirs.into_bytes().expect("state");
        let mut resumed = settings.optimizer().from_bytes(saved).expect("load");
        assert_eq!(
            weights(&step(&mut resumed, a.clone(), 1.0)),
            weights(&continued)
        );
        let fresh = step(&mut settings.optimizer(), a.clone(), 1.0);
        assert_ne!(weights(&fresh), weights(&continued));
        // And ours resumes in Burn's.
        let saved = ours.into_bytes().expect("state");
        let mut resumed = burns().from_bytes(saved).expect("load");
        assert_eq!(
            weights(&step(&mut resumed, a.clone(), 1.0)),
            weights(&continued)
        );
        // The updates moved the weights (the comparison is not of untouched tensors).
        assert_ne!(weights(&a), initial);
    }
}
