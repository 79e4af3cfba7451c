//! Standard Gumbel noise, `-ln(-ln u)` of uniform draws, for sampling lists (Gumbel-max).
//!
//! The uniform draws are always Burn's, from the device's seeded stream. The transform is four
//! of Burn's element-wise operations (`log`, `neg`, `log`, `neg`); on the CPU backend each is a
//! pass of its own over the `[B, K, N]` draws on the calling thread, once per decoding step.
//! There [`gumbel`] runs the four as one pass on rayon's threads, each element by the same
//! `f32::ln` calls flex makes, so the noise, and every list drawn with it, is the same bit for
//! bit.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Device, Distribution, Tensor};

use super::backend::{CHUNK, flex_tensor, is_flex, map_chunks_of, values_of};

/// The Gumbel transform of uniform draws as one backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait GumbelOps: Backend {
    /// `-ln(-ln u)` element by element.
    ///
    /// # Shapes
    /// - uniform: any; output: as uniform
    fn gumbel_of(uniform: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Standard Gumbel noise of `shape` on `device`, from the device's random stream.
///
/// # Shapes
/// - output: `shape`
pub fn gumbel<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    let uniform = Tensor::<D>::random(shape, Distribution::Uniform(1e-9, 1.0), device);
    if runs_here(&uniform) {
        Tensor::from_dispatch(<burn::backend::Dispatch as GumbelOps>::gumbel_of(
            uniform.into_dispatch(),
        ))
    } else {
        transform(uniform)
    }
}

/// Burn's composition of the transform, which [`gumbel`] runs off the CPU backend.
fn transform<const D: usize>(uniform: Tensor<D>) -> Tensor<D> {
    uniform.log().neg().log().neg()
}

/// Whether `x` is an f32 tensor on a flex device (with or without autodiff).
fn runs_here<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && is_flex(&x.device())
}

impl GumbelOps for Flex {
    fn gumbel_of(uniform: FlexTensor) -> FlexTensor {
        let uniform = uniform.to_contiguous();
        let noise = map_chunks_of(values_of(&uniform), CHUNK, |uniform, out| {
            for (out, &u) in out.iter_mut().zip(uniform) {
                *out = -(-u.ln()).ln();
            }
        });
        flex_tensor(noise, uniform.shape())
    }
}

/// Noise is a constant of the graph: the draws have no parents and the output no gradient.
impl<B: Backend + GumbelOps, C: CheckpointStrategy> GumbelOps for Autodiff<B, C> {
    fn gumbel_of(uniform: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::gumbel_of(Self::inner(uniform)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(x: Tensor<3>) -> Vec<u32> {
        let values = x.into_data().try_into_vec_as::<f32>().expect("f32");
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// The one pass gives Burn's four operations bit for bit, on both sides of the parallel
    /// threshold and with autodiff; the draws come from the device's stream.
    #[test]
    fn the_noise_is_burns_composition_bit_for_bit() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            for shape in [[3, 4, 5], [64, 20, 50]] {
                device.seed(7);
                let noise = gumbel(shape, &device);
                device.seed(7);
                let uniform = Tensor::<3>::random(shape, Distribution::Uniform(1e-9, 1.0), &device);
                let composed = transform(uniform);
                assert!(runs_here(&noise));
                assert_eq!(bits(noise.clone()), bits(composed), "{shape:?}");
                let values = noise.into_data().try_into_vec_as::<f32>().expect("f32");
                assert!(values.iter().all(|v| v.is_finite()));
                // Standard Gumbel: mean γ ≈ 0.577 (the larger draw's is within 0.01).
                if shape[0] == 64 {
                    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
                    assert!((mean - 0.5772).abs() < 0.01, "mean {mean}");
                }
            }
        }
    }
}
