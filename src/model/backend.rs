//! Which of Burn's backends a device runs on, for the few places where the model code takes a
//! different (numerically identical) route on the CPU backend.

use burn::backend::DispatchDevice;
use burn::tensor::Device;

/// Whether `device` is Burn's CPU backend (flex), with or without autodiff.
pub fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}
