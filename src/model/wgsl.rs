//! Hand-written WGSL kernels (`shaders/`) on Burn's wgpu backend, native and WebGPU.
//!
//! A wgpu tensor is a handle in Burn's fusion stream. A kernel here is queued in that stream as a
//! custom operation, like Burn's own: it does not wait for anything, and when the stream runs it,
//! it takes its inputs' CubeCL tensors, launches the WGSL text on their compute client, and hands
//! back its outputs as new tensors. Nothing leaves the device. A kernel only runs where
//! [`runs_kernels`] says so, and returns `None` (the caller then takes the tensor-op twin) when
//! the tensors are not what it was written for.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::backend::{Cube, DispatchDevice};
use burn::tensor::{DType, Device, Int, IntDType, Shape, Tensor};
use burn_cubecl::cubecl::ir::metadata::Info;
use burn_cubecl::cubecl::ir::settings::{Dim3, ExecutionMode, KernelSettings};
use burn_cubecl::cubecl::ir::{AddressType, ElemType, Scope, UIntKind};
use burn_cubecl::fusion::{CubeFusionHandle, FusionCubeRuntime};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeDevice};
use burn_fusion::ExecutionError;
use burn_fusion::stream::{Operation, StreamId};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use cubecl_runtime::id::KernelId;
use cubecl_runtime::kernel::{CubeKernel, KernelDefinition, KernelMetadata, PrecompiledSource};
use cubecl_runtime::server::{CubeCount, KernelArguments, MetadataBindingInfo};

/// `shaders/decode_step.wgsl`, keyed by its name and a hash of its text (CubeCL caches compiled
/// kernels by key, on disk too).
const DECODE_STEP: WgslKernel = WgslKernel::new(
    "decode_step",
    include_str!("../../shaders/decode_step.wgsl"),
);

/// `shaders/adam_step.wgsl`.
const ADAM_STEP: WgslKernel =
    WgslKernel::new("adam_step", include_str!("../../shaders/adam_step.wgsl"));

/// Launches of each kernel of this module so far, process-wide.
static DECODE_STEP_LAUNCHES: AtomicU64 = AtomicU64::new(0);
static ADAM_STEP_LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// How many times this process (or page) has launched each fused kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelLaunches {
    pub decode_step: u64,
    pub adam_step: u64,
}

/// The fused kernels' launches so far. A kernel counts when Burn's fusion stream runs it, which
/// may be after the call that queued it: synchronise the device before reading a difference.
pub fn launches() -> KernelLaunches {
    KernelLaunches {
        decode_step: DECODE_STEP_LAUNCHES.load(Ordering::Relaxed),
        adam_step: ADAM_STEP_LAUNCHES.load(Ordering::Relaxed),
    }
}

/// Most workgroups along one dispatch dimension (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// Whether `device` runs this module's kernels: a wgpu device, without autodiff, with
/// `GOALRANK_WGSL` not set to 0 (which keeps the tensor-op twins, to compare; the browser has no
/// environment, so the page always runs them on WebGPU).
pub fn runs_kernels(device: &Device) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    matches!(
        device.as_dispatch(),
        DispatchDevice::Cube(CubeDevice::Wgpu(_))
    ) && *ENABLED.get_or_init(|| std::env::var("GOALRANK_WGSL").map_or(true, |v| v != "0"))
}

/// The fused decoder step (see `model::decode_step`), queued in the fusion stream like any other
/// operation: the picks, their log π and the chosen mask with the picks added; `None` where the
/// tensors are not f32 with i32 indices. Without `noise` the pick is greedy.
///
/// # Shapes
/// - queries `[B, K, d]`, keys `[B, N, d]`, chosen and noise `[B, K, N]`
/// - output: picks `[B, K, 1]`, log π `[B, K]`, chosen `[B, K, N]`
pub fn decode_step(
    queries: &Tensor<3>,
    keys: &Tensor<3>,
    chosen: &Tensor<3>,
    noise: Option<&Tensor<3>>,
    temperature: f32,
) -> Option<(Tensor<3, Int>, Tensor<2>, Tensor<3>)> {
    let [b, k, d] = queries.dims();
    let n = keys.dims()[1];
    let rows = b * k;
    let int_dtype = queries.device().settings().int_dtype;
    // The kernel indexes with u32.
    let largest = (b * n * d).max(rows * n).max(rows * d);
    if queries.dtype() != DType::F32
        || int_dtype != IntDType::I32
        || rows == 0
        || n == 0
        || largest > u32::MAX as usize
    {
        return None;
    }
    let mode = u32::from(noise.is_some());
    let fused = |t: &Tensor<3>| t.clone().try_into_primitive::<Cube>().ok();
    let [Some(queries), Some(keys), Some(chosen)] = [queries, keys, chosen].map(fused) else {
        return None;
    };
    let client = queries.client.clone();
    let mut inputs = vec![queries.into_ir(), keys.into_ir(), chosen.into_ir()];
    // Greedy has no noise input: the kernel binds a buffer of its own there, which it does not
    // read (binding `chosen` twice would alias a writable buffer, which WebGPU refuses).
    if let Some(noise) = noise {
        inputs.push(fused(noise)?.into_ir());
    }
    let output = |shape: Shape, dtype| TensorIr::uninit(client.create_empty_handle(), shape, dtype);
    let outputs = vec![
        output(Shape::new([rows]), DType::I32),
        output(Shape::new([rows]), DType::F32),
        output(Shape::new([rows, n]), DType::F32),
    ];
    let operation = DecodeStepOp {
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        info: [
            rows as u32,
            n as u32,
            d as u32,
            k as u32,
            mode,
            temperature.to_bits(),
            (d as f32).sqrt().to_bits(),
            0,
        ],
    };
    let description = CustomOpIr::new("goalrank::decode_step", &inputs, &outputs);
    let mut outputs = client
        .register(
            StreamId::current(),
            OperationIr::Custom(description),
            operation,
        )
        .into_iter();
    let picks = Tensor::<1, Int>::from_primitive::<Cube>(outputs.next()?).reshape([b, k, 1]);
    let log_probs = Tensor::<1>::from_primitive::<Cube>(outputs.next()?).reshape([b, k]);
    let chosen = Tensor::<2>::from_primitive::<Cube>(outputs.next()?).reshape([b, k, n]);
    Some((picks, log_probs, chosen))
}

/// The decoder step as a fusion-stream operation: inputs queries, keys, chosen and (drawn picks
/// only) noise; outputs picks, log-probabilities, chosen; `info` as `shaders/decode_step.wgsl`
/// reads it.
#[derive(Debug)]
struct DecodeStepOp {
    inputs: Vec<TensorIr>,
    outputs: Vec<TensorIr>,
    info: [u32; 8],
}

impl Operation<FusionCubeRuntime> for DecodeStepOp {
    fn execute(
        &self,
        handles: &mut HandleContainer<CubeFusionHandle>,
    ) -> Result<(), ExecutionError> {
        let [queries, keys, chosen] = [0, 1, 2]
            .map(|i| into_contiguous(handles.get_float_tensor::<CubeBackend>(&self.inputs[i])));
        let [rows, n] = [self.info[0] as usize, self.info[1] as usize];
        let noise = match self.inputs.get(3) {
            Some(noise) => into_contiguous(handles.get_float_tensor::<CubeBackend>(noise)),
            None => empty(&queries, [1], DType::F32),
        };
        let picks = empty(&queries, [rows], DType::I32);
        let log_probs = empty(&queries, [rows], DType::F32);
        let chosen_out = empty(&queries, [rows, n], DType::F32);
        let arguments = KernelArguments::new()
            .with_buffer(queries.handle.clone().binding())
            .with_buffer(keys.handle.clone().binding())
            .with_buffer(chosen.handle.clone().binding())
            .with_buffer(noise.handle.clone().binding())
            .with_buffer(picks.handle.clone().binding())
            .with_buffer(log_probs.handle.clone().binding())
            .with_buffer(chosen_out.handle.clone().binding())
            .with_info(MetadataBindingInfo::custom(pack(&self.info)));
        queries.client.launch(
            Box::new(DECODE_STEP),
            CubeCount::Static(
                rows.min(MAX_GROUPS) as u32,
                rows.div_ceil(MAX_GROUPS) as u32,
                1,
            ),
            arguments,
        );
        DECODE_STEP_LAUNCHES.fetch_add(1, Ordering::Relaxed);
        handles.register_int_tensor::<CubeBackend>(&self.outputs[0].id, picks);
        handles.register_float_tensor::<CubeBackend>(&self.outputs[1].id, log_probs);
        handles.register_float_tensor::<CubeBackend>(&self.outputs[2].id, chosen_out);
        Ok(())
    }
}

/// The scalars of one Adam update, as `shaders/adam_step.wgsl` reads them.
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars {
    /// Gradient-norm clipping threshold (per parameter tensor), if any.
    pub clip: Option<f32>,
    /// Weight-decay penalty λ (added as `p·λ` to the gradient), if any.
    pub penalty: Option<f32>,
    pub beta_1: f32,
    pub beta_2: f32,
    pub lr: f32,
    /// `√(1 − β₂ᵗ) / (1 − β₁ᵗ)`.
    pub correction: f32,
    /// `ε·√(1 − β₂ᵗ)`.
    pub epsilon: f32,
}

/// One Adam update of one parameter tensor (clip, decay, moments, parameter) in one launch,
/// queued in the fusion stream: the new parameter and moments; `None` where the tensors are not
/// f32 wgpu tensors of one length, are empty, or are too long for u32 indices.
///
/// # Shapes
/// - param, grad, moment_1, moment_2 `[n]`
/// - output: param, moment_1, moment_2 `[n]`
pub fn adam_step(
    param: &Tensor<1>,
    grad: &Tensor<1>,
    moment_1: &Tensor<1>,
    moment_2: &Tensor<1>,
    scalars: &AdamScalars,
) -> Option<(Tensor<1>, Tensor<1>, Tensor<1>)> {
    let n = param.dims()[0];
    let tensors = [param, grad, moment_1, moment_2];
    // The kernel indexes with u32 and steps its loops by 256 threads.
    if tensors
        .iter()
        .any(|t| t.dtype() != DType::F32 || t.dims()[0] != n)
        || n == 0
        || n > (u32::MAX - 256) as usize
    {
        return None;
    }
    let fused = |t: &&Tensor<1>| (*t).clone().try_into_primitive::<Cube>().ok();
    let [Some(param), Some(grad), Some(moment_1), Some(moment_2)] = tensors.each_ref().map(fused)
    else {
        return None;
    };
    let client = param.client.clone();
    let inputs = vec![
        param.into_ir(),
        grad.into_ir(),
        moment_1.into_ir(),
        moment_2.into_ir(),
    ];
    let output = || TensorIr::uninit(client.create_empty_handle(), Shape::new([n]), DType::F32);
    let outputs = vec![output(), output(), output()];
    let operation = AdamStepOp {
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        info: [
            n as u32,
            u32::from(scalars.clip.is_some()),
            scalars.clip.unwrap_or(0.0).to_bits(),
            u32::from(scalars.penalty.is_some()),
            scalars.penalty.unwrap_or(0.0).to_bits(),
            scalars.beta_1.to_bits(),
            scalars.beta_2.to_bits(),
            scalars.lr.to_bits(),
            scalars.correction.to_bits(),
            scalars.epsilon.to_bits(),
            f32::MIN_POSITIVE.to_bits(),
            0,
        ],
    };
    let description = CustomOpIr::new("goalrank::adam_step", &inputs, &outputs);
    let mut outputs = client
        .register(
            StreamId::current(),
            OperationIr::Custom(description),
            operation,
        )
        .into_iter()
        .map(Tensor::<1>::from_primitive::<Cube>);
    Some((outputs.next()?, outputs.next()?, outputs.next()?))
}

/// The Adam update as a fusion-stream operation: inputs parameter, gradient and the two
/// moments; outputs the same three updated; `info` as `shaders/adam_step.wgsl` reads it.
#[derive(Debug)]
struct AdamStepOp {
    inputs: Vec<TensorIr>,
    outputs: Vec<TensorIr>,
    info: [u32; 12],
}

impl Operation<FusionCubeRuntime> for AdamStepOp {
    fn execute(
        &self,
        handles: &mut HandleContainer<CubeFusionHandle>,
    ) -> Result<(), ExecutionError> {
        let [param, grad, moment_1, moment_2] = [0, 1, 2, 3]
            .map(|i| into_contiguous(handles.get_float_tensor::<CubeBackend>(&self.inputs[i])));
        let n = self.info[0] as usize;
        let [param_out, moment_1_out, moment_2_out] =
            [0; 3].map(|_| empty(&param, [n], DType::F32));
        let arguments = KernelArguments::new()
            .with_buffer(param.handle.clone().binding())
            .with_buffer(grad.handle.clone().binding())
            .with_buffer(moment_1.handle.clone().binding())
            .with_buffer(moment_2.handle.clone().binding())
            .with_buffer(param_out.handle.clone().binding())
            .with_buffer(moment_1_out.handle.clone().binding())
            .with_buffer(moment_2_out.handle.clone().binding())
            .with_info(MetadataBindingInfo::custom(pack(&self.info)));
        // One workgroup: the clip needs the whole gradient's norm before any update.
        param
            .client
            .launch(Box::new(ADAM_STEP), CubeCount::Static(1, 1, 1), arguments);
        ADAM_STEP_LAUNCHES.fetch_add(1, Ordering::Relaxed);
        for (output, tensor) in self
            .outputs
            .iter()
            .zip([param_out, moment_1_out, moment_2_out])
        {
            handles.register_float_tensor::<CubeBackend>(&output.id, tensor);
        }
        Ok(())
    }
}

/// A new contiguous tensor on `like`'s device, not initialised.
fn empty<const D: usize>(like: &CubeTensor, shape: [usize; D], dtype: DType) -> CubeTensor {
    let bytes = shape.iter().product::<usize>() * dtype.size();
    let handle = like.client.empty(bytes.max(4));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::new(shape),
        handle,
        dtype,
    )
}

/// Words of the kernel's `info` binding: pairs of u32 packed into u64, low word first.
fn pack(words: &[u32]) -> Vec<u64> {
    words
        .chunks(2)
        .map(|pair| pair[0] as u64 | (pair.get(1).copied().unwrap_or(0) as u64) << 32)
        .collect()
}

/// A WGSL text with entry point `main`, its name and the hash of its text.
#[derive(Clone, Copy)]
struct WgslKernel {
    name: &'static str,
    source: &'static str,
    hash: u64,
}

impl WgslKernel {
    const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            hash: fnv1a(source),
        }
    }
}

impl KernelMetadata for WgslKernel {
    fn name(&self) -> &'static str {
        self.name
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.hash))
    }

    fn address_type(&self) -> ElemType {
        ElemType::UInt(UIntKind::U32)
    }
}

impl CubeKernel for WgslKernel {
    fn define(&self) -> KernelDefinition {
        let settings =
            KernelSettings::new(Dim3::new_single(), ExecutionMode::Checked, AddressType::U32);
        KernelDefinition {
            body: Scope::root(settings.clone()),
            settings,
            info: Info::default(),
        }
    }

    fn source(&self) -> Option<PrecompiledSource> {
        Some(PrecompiledSource {
            source: self.source.to_string(),
            entrypoint_name: "main".to_string(),
            lang: "wgsl",
        })
    }
}

/// FNV-1a of `text`: a stable key for the kernel cache, computed at compile time.
const fn fnv1a(text: &str) -> u64 {
    let bytes = text.as_bytes();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}
