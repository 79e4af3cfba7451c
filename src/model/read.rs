//! Reading tensors back to the host. Every read is a future: in the browser a GPU read-back can
//! only be awaited, never waited on, so the code shared with the page awaits them. Native callers
//! that have nothing else to do block on them with [`block_on`].

use std::future::Future;

use burn::tensor::{Int, Tensor};

use crate::{Error, Result};

/// Runs a future to completion on this thread (native read-backs; ready at once on flex).
pub fn block_on<F: Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

/// A float tensor's values, row-major.
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data_async()
        .await
        .map_err(read_error)?
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::backend("reading a tensor back", e))
}

/// An int tensor's values, row-major.
pub async fn read_i64<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
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
