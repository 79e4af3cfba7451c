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
            DeviceKind::Wgpu => Err(crate::Error::Backend(
                "in the browser the page picks WebGPU itself".into(),
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
            crate::Error::Backend(format!(
                "no Vulkan adapter for wgpu ({err:?}); install a Vulkan driver \
                 (e.g. apt-get install mesa-vulkan-drivers)"
            ))
        })
}
