//! Device choice, in one place: the CPU backend (flex), wgpu pinned to Vulkan on native
//! machines, and names for the status lines and tables. The browser picks WebGPU in `web.rs`,
//! which needs the page's own adapter checks.

use burn::tensor::Device;

/// A device the command line and the app can ask for: `flex`, `wgpu`, or
/// `remote:ws://HOST:PORT` (a device that `goalrank serve` hosts on another process or machine).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Burn's CPU backend.
    Flex,
    /// Burn's wgpu backend on a Vulkan adapter (a GPU, or Mesa's software driver).
    Wgpu,
    /// The first device of a `goalrank serve` server, reached over WebSocket at this URL.
    Remote(String),
}

/// The environment variable that holds the token a `goalrank serve --token` server checks.
pub const REMOTE_TOKEN_VAR: &str = "GOALRANK_REMOTE_TOKEN";

impl DeviceKind {
    /// The device, or a clear error when there is none of that kind.
    pub fn init(&self) -> crate::Result<Device> {
        match self {
            DeviceKind::Flex => Ok(Device::flex()),
            #[cfg(not(target_arch = "wasm32"))]
            DeviceKind::Wgpu => vulkan_device(),
            #[cfg(not(target_arch = "wasm32"))]
            DeviceKind::Remote(url) => remote_device(url),
            #[cfg(target_arch = "wasm32")]
            DeviceKind::Wgpu | DeviceKind::Remote(_) => Err(crate::Error::backend_message(
                "device",
                "in the browser the page picks WebGPU itself",
            )),
        }
    }

    /// The device's name in tables and status lines.
    pub fn label(&self) -> String {
        match self {
            DeviceKind::Flex => "flex (CPU)".into(),
            DeviceKind::Wgpu => "wgpu (Vulkan)".into(),
            DeviceKind::Remote(url) => format!("remote ({url})"),
        }
    }

    /// [`label`](Self::label) with the Vulkan adapter's name for wgpu, as `bench` reports it:
    /// `wgpu (Vulkan: NVIDIA H200)`.
    pub fn label_with_adapter(&self) -> String {
        #[cfg(not(target_arch = "wasm32"))]
        if let (DeviceKind::Wgpu, Some(name)) = (self, vulkan_adapter_name()) {
            return format!("wgpu (Vulkan: {name})");
        }
        self.label()
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Flex => f.write_str("flex"),
            DeviceKind::Wgpu => f.write_str("wgpu"),
            DeviceKind::Remote(url) => write!(f, "remote:{url}"),
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "flex" => Ok(DeviceKind::Flex),
            "wgpu" => Ok(DeviceKind::Wgpu),
            _ => match s.strip_prefix("remote:") {
                Some(url) if url.starts_with("ws://") && url.len() > "ws://".len() => {
                    Ok(DeviceKind::Remote(url.to_string()))
                }
                Some(_) => Err("a remote device is written remote:ws://HOST:PORT".into()),
                None => Err("expected flex, wgpu or remote:ws://HOST:PORT".into()),
            },
        }
    }
}

/// The first device of the `goalrank serve` server at `url` (`ws://HOST:PORT`), with the token
/// in `GOALRANK_REMOTE_TOKEN` when it is set. Tensors live on the server; the autodiff graph and
/// the optimiser's bookkeeping stay in this process.
#[cfg(not(target_arch = "wasm32"))]
pub fn remote_device(url: &str) -> crate::Result<Device> {
    use burn::tensor::remote::RemoteHost;
    let mut host = RemoteHost::websocket(url);
    if let Some(token) = std::env::var_os(REMOTE_TOKEN_VAR) {
        host = host.with_credential(token.to_string_lossy().into_owned());
    }
    Device::remote_options(&host).init().map_err(|err| {
        crate::Error::backend(
            "cannot reach the remote device (is `goalrank serve` running there?)",
            err,
        )
    })
}

/// A server for `device` that, with `token`, accepts only clients presenting it
/// (`GOALRANK_REMOTE_TOKEN`); an unusable token is an error naming `--token`.
#[cfg(not(target_arch = "wasm32"))]
pub fn remote_server(
    device: Device,
    token: Option<String>,
) -> crate::Result<burn::server::RemoteServer> {
    use burn::server::{RemoteServer, TokenAuthorizer};
    let server = RemoteServer::new([device]);
    match token {
        None => Ok(server),
        Some(token) => {
            let authorizer = TokenAuthorizer::new(token).map_err(|err| crate::Error::Setting {
                name: "--token",
                value: "(hidden)".into(),
                rule: format!(
                    "is not usable as a token ({})",
                    crate::error::debug_line(&err)
                ),
            })?;
            Ok(server.with_authorizer(authorizer))
        }
    }
}

/// Serves `server` over WebSocket on `listener` until the process gets Ctrl+C or SIGTERM.
/// WebSocket is unencrypted: use it on a network you trust.
#[cfg(not(target_arch = "wasm32"))]
pub fn serve(
    server: &burn::server::RemoteServer,
    listener: std::net::TcpListener,
) -> crate::Result<()> {
    use burn::server::WebSocketTransport;
    server
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|err| crate::Error::backend("the remote server stopped", err))
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

/// The name of the first Vulkan adapter, as wgpu reports it (the one Burn's wgpu device takes on
/// a machine with one GPU).
#[cfg(not(target_arch = "wasm32"))]
pub fn vulkan_adapter_name() -> Option<String> {
    use eframe::wgpu;
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    adapters.first().map(|a| a.get_info().name)
}

/// Makes the process keep the memory it frees for reuse instead of handing it back to the
/// system (glibc on Linux: no `mmap` for large blocks, one arena, no trimming). Burn's CPU
/// backend allocates a fresh buffer for every tensor; with glibc's defaults each large one is a
/// new mapping whose pages fault in one by one and are unmapped again on free. With this a
/// training step at the bench's batch of 512 requests takes 4.3 s instead of 5.7 (`goalrank
/// bench`, with and without `GOALRANK_RELEASE_MEMORY=1`), and the resident memory stays at its
/// high-water mark (1.6 GB against 1.4 GB). A no-op elsewhere. Call it before any thread
/// starts.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
