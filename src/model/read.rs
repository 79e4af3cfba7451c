//! Reading tensors back to the host. Every read is a future: in the browser a GPU read-back can
//! only be awaited, never waited on, so the code shared with the page awaits them. Native callers
//! that have nothing else to do block on them with [`block_on`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Int, Tensor};

use crate::{Error, Result};

/// Tensors read back through this module since the process started.
static READ_BACKS: AtomicU64 = AtomicU64::new(0);

/// How many tensors goalrank has read back to the host through [`read_f32`] and [`read_i64`]
/// (what `goalrank bench` counts per step; Burn's own host reads are not seen).
pub fn read_backs() -> u64 {
    READ_BACKS.load(Ordering::Relaxed)
}

/// Runs a future to completion on this thread (native read-backs; ready at once on flex).
pub fn block_on<F: Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

/// A float tensor's values, row-major.
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    READ_BACKS.fetch_add(1, Ordering::Relaxed);
    t.into_data_async()
        .await
        .map_err(read_error)?
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::backend("reading a tensor back", e))
}

/// An int tensor's values, row-major.
pub async fn read_i64<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    READ_BACKS.fetch_add(1, Ordering::Relaxed);
    t.into_data_async()
        .await
        .map_err(read_error)?
        .try_into_vec_as::<i64>()
        .map_err(|e| Error::backend("reading a tensor back", e))
}

/// The single value of a one-element tensor.
pub async fn read_scalar(t: Tensor<1>) -> Result<f32> {
    read_f32(t)
        .await?
        .first()
        .copied()
        .ok_or_else(|| Error::backend_message("reading a scalar", "the tensor is empty"))
}

fn read_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend("reading a tensor back", e)
}
