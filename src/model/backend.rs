//! Which of Burn's backends a device runs on, for the few places where the model code takes a
//! route of its own on the CPU backend (numerically identical for `model::gelu` and
//! `model::product`; for `model::layer_norm` and `model::softmax` the same forward values
//! and gradients equal within rounding), and what those routes share: their f32 output
//! buffers and a fixed-order sum.

use core::mem::MaybeUninit;

use burn::backend::DispatchDevice;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Device, Shape};

/// Whether `device` is Burn's CPU backend (flex), with or without autodiff.
pub fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// A contiguous f32 flex tensor of `shape` holding `values`, without a copy.
pub fn flex_tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `values`, each set to zero.
pub fn zeroed(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for value in values.iter_mut() {
        value.write(0.0);
    }
    // SAFETY: every element was initialised just above, and `MaybeUninit<f32>` has the layout
    // of `f32`.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `Σ values` with eight running sums (so the loop runs in vector registers), in a fixed
/// order.
#[inline(always)]
pub fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (i, value) in values.enumerate() {
        lanes[i % 8] += value;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}
