//! wgpu smoke test: the same reward-model steps on Vulkan (Mesa's software driver in CI) and on
//! the CPU give the same losses.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;
use goalrank::data::Split;
use goalrank::train::RewardTrainer;
use goalrank::train::checkpoint::{load_module, save_module};

use crate::models::{dataset, tiny_reward};

/// A Vulkan wgpu device, or a clear failure. Pinning Vulkan keeps wgpu from falling back to
/// OpenGL on the CPU, which hangs for minutes.
fn vulkan() -> Device {
    match Device::wgpu_options()
        .graphics_api(WgpuBackend::Vulkan)
        .init()
    {
        Ok(device) => device,
        Err(err) => panic!(
            "no Vulkan adapter for the wgpu smoke test ({err:?}); install a Vulkan driver, \
             e.g. Mesa's software one: apt-get install mesa-vulkan-drivers (.ci/run does)"
        ),
    }
}

/// Ignored by default: on Mesa's software Vulkan driver (lavapipe) the comparison passes (about
/// 2 minutes, most of it kernel compilation), but the test process then dies with SIGSEGV while
/// it exits, which fails `cargo test`. Run it with
/// `cargo test --release -- --ignored wgpu_and_flex` and read the test's own result line.
#[test]
#[ignore = "passes, but lavapipe segfaults at process exit; see the doc comment"]
fn wgpu_and_flex_give_the_same_losses() {
    let dataset = dataset();
    let config = tiny_reward().with_dropout(0.0);
    let flex = Device::flex();
    let gpu = vulkan();

    // One set of initial weights for both devices.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("init.bpk");
    flex.seed(5);
    save_module(&config.model(&dataset).init(&flex), &path).expect("save");

    let losses = |device: &Device| -> Vec<f32> {
        let autodiff = device.clone().autodiff();
        let model = load_module(config.model(&dataset).init(&autodiff), &path).expect("load");
        let mut trainer = RewardTrainer::with_model(&dataset, Split::Train, &config, model, device);
        (0..2).map(|_| trainer.step().loss).collect()
    };
    let on_cpu = losses(&flex);
    let on_gpu = losses(&gpu);
    for (c, g) in on_cpu.iter().zip(&on_gpu) {
        assert!(c.is_finite() && g.is_finite());
        assert!(
            (c - g).abs() <= 1e-3 * c.abs().max(1.0),
            "flex {on_cpu:?} vs wgpu {on_gpu:?}"
        );
    }
}
