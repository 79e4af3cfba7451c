//! Device choice, in one place: the CPU backend (flex), wgpu pinned to Vulkan on native
//! machines, and names for the status lines and tables. The browser picks WebGPU in `web.rs`,
//! which needs the page's own adapter checks.

use burn::tensor::Device;

/// A device the command line and the app can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// Burn's CPU backend.
    Flex,
    /// Burn's wgpu backend on a Vulkan adapter (a GPU, or Mesa's software driver).
    Wgpu,
}

impl DeviceKind {
    /// The device, or a clear error when there is none of that kind.
    pub fn init(self) -> crate::Result<Device> {
        match self {
            DeviceKind::Flex => Ok(Device::flex()),
            #[cfg(not(target_arch = "wasm32"))]
            DeviceKind::Wgpu => vulkan_device(),
            #[cfg(target_arch = "wasm32")]
            DeviceKind::Wgpu => Err(crate::Error::backend_message(
                "wgpu",
                "in the browser the page picks WebGPU itself",
            )),
        }
    }

    /// The device's name in tables and status lines.
    pub fn label(self) -> &'static str {
        match self {
            DeviceKind::Flex => "flex (CPU)",
            DeviceKind::Wgpu => "wgpu (Vulkan)",
        }
    }
}

/// A wgpu device pinned to Vulkan, or a clear error (wgpu would otherwise fall back to OpenGL on
/// the CPU and hang for minutes).
#[cfg(not(target_arch = "wasm32"))]
pub fn vulkan_device() -> crate::Result<Device> {
    use burn::tensor::wgpu::WgpuBackend;
    Device::wgpu_options()
        .graphics_api(WgpuBackend::Vulkan)
        .init()
        .map_err(|err| {
            crate::Error::backend_debug(
                "no Vulkan adapter for wgpu; install a Vulkan driver \
                 (e.g. apt-get install mesa-vulkan-drivers)",
                err,
            )
        })
}

/// Makes the process keep the memory it frees for reuse instead of handing it back to the
/// system (glibc on Linux: no `mmap` for large blocks, one arena, no trimming). Burn's CPU
/// backend allocates a fresh buffer for every tensor; with glibc's defaults each large one is a
/// new mapping whose pages fault in one by one and are unmapped again on free, which is about
/// half of a training step's time. With this the step is about twice as fast (`goalrank
/// bench`), and the resident memory stays at its high-water mark (about 7 GB for the bench's
/// batch of 512 requests). A no-op elsewhere. Call it before any thread starts.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
