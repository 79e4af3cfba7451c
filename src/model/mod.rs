//! Models: the list-aware reward model and the GoalRank generator. Each `XConfig::init(&Device)`
//! builds its model on any device (CPU flex, wgpu, with or without autodiff). `decode_step` is
//! the decoder's sampling step, a fused WGSL kernel (`shaders/`) on wgpu (native and WebGPU),
//! as is `adam_kernel`, the optimiser's update of one parameter tensor (`train::adam`).

mod attention;
mod backend;
mod decode_step;
mod encoder;
mod erf;
mod exp;
mod gather;
mod gelu;
mod generator;
mod greedy;
mod layer_norm;
mod pointwise;
mod prefix;
mod product;
mod read;
mod recorded;
mod reward;
mod rows;
#[cfg(target_arch = "x86_64")]
mod small;
mod softmax;
mod store;
#[cfg(target_arch = "x86_64")]
mod tiny;
mod transformer;
mod wgsl;

#[cfg(not(target_arch = "wasm32"))]
pub use backend::on_thread_pool;
pub use decode_step::{Pick, Step, decode_step, twin as decode_step_twin};
pub use encoder::{EncoderConfig, ItemEncoder, UserEncoder};
pub use gather::{gather_rows, gumbel, one_hot, plackett_luce, repeat_group, top_indices};
pub use generator::{
    DECODER_MLP, Decode, Decoded, Encoded, Generator, GeneratorConfig, decoder_mlp_setting,
};
pub use pointwise::{Pointwise, PointwiseConfig};
pub use product::{multiply_adds, this_thread_products};
pub use read::{block_on, read_backs, read_f32, read_i64, read_scalar};
pub use reward::{RewardContext, RewardKind, RewardModel, RewardModelConfig, discounts};
pub use store::{
    first_non_finite, load_module, module_bytes, module_bytes_f16, module_from_bytes, save_module,
};
pub use wgsl::{
    AdamScalars, KernelLaunches, adam_step as adam_kernel, launches as kernel_launches,
    runs_kernels,
};
