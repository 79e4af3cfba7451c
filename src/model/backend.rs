//! Which of Burn's backends a device runs on, for the few places where the model code takes a
//! route of its own on the CPU backend (numerically identical for `model::product`; for
//! `model::gelu` within its `erf`'s rounding; for `model::layer_norm` and `model::softmax` the
//! same forward values and gradients equal within rounding), and what those routes share: their f32 output
//! buffers and inputs' values, the check of a bias row, their split of element-wise work across
//! threads, a fixed-order sum, a matrix in memory and flex's `gemm` call.

use core::mem::MaybeUninit;

use burn::backend::DispatchDevice;
use burn::backend::TensorMetadata;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Device, Shape};

/// Whether `device` is Burn's CPU backend (flex), with or without autodiff.
pub fn is_flex(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    )
}

/// Whether `device` is one of CubeCL's (wgpu: Vulkan natively, WebGPU in the browser), with or
/// without autodiff.
pub fn is_cube(device: &Device) -> bool {
    matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Cube(_)
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

/// A contiguous f32 tensor's values (as `to_contiguous` leaves it: from offset 0, exactly its
/// elements).
pub fn values_of(x: &FlexTensor) -> &[f32] {
    &x.storage::<f32>()[..x.shape().num_elements()]
}

/// The width of `x`'s rows where `x` is an f32 matrix `[rows, n]` and `row` an f32 `[1, n]`
/// (a bias to add to every row); `None` otherwise (flex's broadcast add takes those).
pub fn row_width(x: &FlexTensor, row: &FlexTensor) -> Option<usize> {
    let (shape, row_shape) = (x.shape(), row.shape());
    let fits = x.dtype() == DType::F32
        && row.dtype() == DType::F32
        && shape.num_dims() == 2
        && shape[1] > 0
        && row_shape.num_dims() == 2
        && row_shape[0] == 1
        && row_shape[1] == shape[1];
    fits.then(|| shape[1])
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

/// `Σ f(a[i], b[i])` with eight running sums, lane `i mod 8` taking the terms at those
/// positions in order, then the lanes combined pairwise: a fixed order, which does not depend on
/// the vector width the loop is compiled for (whole blocks of 8 run in vector registers).
/// `a` and `b` have the same length.
#[inline(always)]
pub fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (blocks_a, blocks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let (rest_a, rest_b) = (blocks_a.remainder(), blocks_b.remainder());
    for (x, y) in blocks_a.zip(blocks_b) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += f(x, y);
        }
    }
    for ((lane, &x), &y) in lanes.iter_mut().zip(rest_a).zip(rest_b) {
        *lane += f(x, y);
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// A matrix in memory: its first element and its row and column strides, in elements.
#[derive(Clone, Copy)]
pub struct Matrix {
    pub at: *const f32,
    pub row: isize,
    pub col: isize,
}

impl Matrix {
    /// The matrix from row `i` and column `j` on.
    ///
    /// # Safety
    /// Element `(i, j)` lies in the matrix's storage.
    pub unsafe fn from(self, i: usize, j: usize) -> Self {
        Self {
            // SAFETY: by the caller.
            at: unsafe {
                self.at
                    .offset(i as isize * self.row + j as isize * self.col)
            },
            ..self
        }
    }
}

/// `dst = lhs · rhs`, row-major `[m, n]`, by `gemm` with `parallelism` (flex's call).
///
/// # Safety
/// `lhs` addresses an `[m, k]` f32 matrix and `rhs` a `[k, n]` one; `dst` points at `m · n`
/// writable f32 that overlap neither, initialised where `m` or `n` is 1 (`gemm` reads such a
/// destination through a slice before writing it).
pub unsafe fn gemm_product(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    lhs: Matrix,
    rhs: Matrix,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: by the caller: every element `gemm` reads lies in the operands; without
    // `read_dst` it writes each of the `m · n` outputs (zeros when k = 0).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            false,
            lhs.at,
            lhs.col,
            lhs.row,
            rhs.at,
            rhs.col,
            rhs.row,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Runs `job` on one of rayon's worker threads and waits for it (native builds).
///
/// The CPU backend, [`map_chunks`] and the matrix products split large operations across rayon's
/// pool. Called from a thread outside the pool, each split operation is handed to the pool while
/// the caller sleeps until it is done: a lock and a wake-up per operation, 13 % of the time of
/// ranking one request. Called from a worker, the worker does its share and the others steal.
/// Commands and the app's training thread run their work through this. The pool's threads get
/// the 8 MiB stack a main thread has.
#[cfg(not(target_arch = "wasm32"))]
pub fn on_thread_pool<T: Send>(job: impl FnOnce() -> T + Send) -> T {
    // Fails only when the global pool already exists; it is then used as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    rayon::scope(move |_| job())
}

/// Elements per chunk handed to one thread (about 64 KB of f32).
pub const CHUNK: usize = 16 * 1024;

/// Below this many elements the work stays on the calling thread (the browser build has one).
#[cfg(not(target_arch = "wasm32"))]
pub const PARALLEL_FROM: usize = 4 * CHUNK;

/// `f(x, y, out)` over matching chunks of `chunk` values, on rayon's threads where there is
/// enough work. Each chunk of the output is zeroed by the thread that fills it, not all of it
/// up front by the calling thread.
pub fn map_chunks(
    x: &[f32],
    y: &[f32],
    chunk: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Send + Sync,
) -> Vec<f32> {
    // The chunks stop at the shorter input (callers pass equal lengths).
    let n = x.len().min(y.len());
    fill_chunks(n, chunk, |start, out| {
        let at = start..start + out.len();
        f(&x[at.clone()], &y[at], out)
    })
}

/// `f(x, out)` over matching chunks of `chunk` values, as [`map_chunks`] does for two inputs.
pub fn map_chunks_of(
    x: &[f32],
    chunk: usize,
    f: impl Fn(&[f32], &mut [f32]) + Send + Sync,
) -> Vec<f32> {
    fill_chunks(x.len(), chunk, |start, out| {
        f(&x[start..start + out.len()], out)
    })
}

/// `update(start, values)` over chunks of `chunk` values, in place (`start`: the chunk's first
/// index), on rayon's threads where there is enough work (as [`map_chunks`] splits it).
pub fn update_chunks(
    values: &mut [f32],
    chunk: usize,
    update: impl Fn(usize, &mut [f32]) + Send + Sync,
) {
    let chunk = chunk.max(1);
    let one = |(i, values): (usize, &mut [f32])| update(i * chunk, values);
    #[cfg(not(target_arch = "wasm32"))]
    if values.len() >= PARALLEL_FROM {
        use rayon::prelude::*;
        values.par_chunks_mut(chunk).enumerate().for_each(one);
        return;
    }
    values.chunks_mut(chunk).enumerate().for_each(one);
}

/// `n` values made by `fill(start, out)` for each chunk of `chunk` values (`start`: the
/// chunk's first index), each chunk zeroed first by the thread that fills it.
fn fill_chunks(n: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Send + Sync) -> Vec<f32> {
    let chunk = chunk.max(1);
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    let one = |(i, o): (usize, &mut [MaybeUninit<f32>])| fill(i * chunk, zeroed(o));
    #[cfg(not(target_arch = "wasm32"))]
    if n >= PARALLEL_FROM {
        use rayon::prelude::*;
        spare.par_chunks_mut(chunk).enumerate().for_each(one);
        // SAFETY: the chunks cover the first `n` elements, and `fill` initialised each.
        unsafe { out.set_len(n) };
        return out;
    }
    spare.chunks_mut(chunk).enumerate().for_each(one);
    // SAFETY: the chunks cover the first `n` elements, and `fill` initialised each.
    unsafe { out.set_len(n) };
    out
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn work_on_the_thread_pool_runs_on_a_worker_and_returns_its_value() {
        assert_eq!(rayon::current_thread_index(), None);
        let (worker, sum) = on_thread_pool(|| {
            let x = vec![1.0f32; 2 * PARALLEL_FROM];
            let doubled = map_chunks_of(&x, CHUNK, |x, out| {
                for (o, v) in out.iter_mut().zip(x) {
                    *o = 2.0 * v;
                }
            });
            (rayon::current_thread_index(), doubled.iter().sum::<f32>())
        });
        assert!(worker.is_some(), "the job ran outside rayon's pool");
        assert_eq!(sum, 4.0 * PARALLEL_FROM as f32);
    }
}
