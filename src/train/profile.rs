//! Where a training step's time goes: wall-clock per phase, with the device synchronised at each
//! boundary so that queued work is charged to the phase that queued it, the processor time the
//! process spent in each phase (how many threads were busy), and the GPU kernels each phase
//! launched. Off by default (a synchronisation stalls a GPU's queue); `goalrank bench --profile`
//! turns it on.

use std::collections::BTreeMap;
use std::sync::Mutex;

use burn::tensor::Device;
use serde::Serialize;
use web_time::Instant;

use crate::model::this_thread_products;

/// Time spent in one phase of a step, the part of it spent in the CPU backend's matrix products
/// called on the step's thread and their multiply-adds (0 on other devices:
/// `model::this_thread_products`; with data-parallel copies, the products of the copies on
/// threads of their own are not in it), the GPU kernels it
/// launched (0 where none were seen: on the CPU, or with no [`Launches`] observing), and the
/// processor time of all the process's threads in it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub ms: f64,
    pub product_ms: f64,
    pub multiply_adds: u64,
    pub launches: u64,
    /// User and system time of the whole process (every thread) during the phase, where the
    /// platform reports it (Linux); `cpu_ms / ms` is the mean number of busy threads.
    pub cpu_ms: Option<f64>,
}

/// The processor time the process has used so far, all threads, user and system, in ms
/// (`getrusage`); `None` where it is not read.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn process_cpu_ms() -> Option<f64> {
    // SAFETY: `getrusage` writes the zeroed struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    }?;
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    Some(ms(usage.ru_utime) + ms(usage.ru_stime))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn process_cpu_ms() -> Option<f64> {
    None
}

/// GPU kernel launches by kernel name, counted while a [`Launches`] lives.
static LAUNCHED: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts GPU kernel launches through CubeCL's process-wide launch observer while it lives
/// (native builds; the browser build counts none). The observer sees every launch after Burn's
/// fusion.
pub struct Launches {
    #[cfg(not(target_arch = "wasm32"))]
    _observation: cubecl_runtime::logging::LaunchObservation,
}

#[cfg(not(target_arch = "wasm32"))]
struct Observer;

#[cfg(not(target_arch = "wasm32"))]
impl cubecl_runtime::logging::LaunchObserver for Observer {
    fn launched(&self, kernel: &'static str) {
        if let Ok(mut names) = LAUNCHED.lock() {
            *names.entry(kernel).or_default() += 1;
        }
    }
}

/// How many times one kernel was launched.
#[derive(Clone, Debug, Serialize)]
pub struct KernelCount {
    pub kernel: String,
    pub launches: u64,
}

impl Launches {
    /// Starts counting.
    pub fn observe() -> Self {
        Self {
            #[cfg(not(target_arch = "wasm32"))]
            _observation: cubecl_runtime::logging::LaunchObservation::new(std::sync::Arc::new(
                Observer,
            )),
        }
    }

    /// All launches counted so far.
    pub fn total() -> u64 {
        LAUNCHED.lock().map(|n| n.values().sum()).unwrap_or(0)
    }

    /// Launches counted so far, by kernel.
    pub fn by_kernel() -> BTreeMap<&'static str, u64> {
        LAUNCHED.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Launches by kernel since `before` (a [`Launches::by_kernel`]), most launched first.
    pub fn since(before: &BTreeMap<&'static str, u64>) -> Vec<KernelCount> {
        let mut counts: Vec<KernelCount> = Self::by_kernel()
            .into_iter()
            .map(|(kernel, n)| KernelCount {
                kernel: kernel.to_string(),
                launches: n - before.get(kernel).copied().unwrap_or(0),
            })
            .filter(|c| c.launches > 0)
            .collect();
        counts.sort_by(|a, b| b.launches.cmp(&a.launches).then(a.kernel.cmp(&b.kernel)));
        counts
    }
}

/// Marks phase boundaries; does nothing unless built with a device.
pub(crate) struct PhaseTimer {
    device: Option<Device>,
    last: Instant,
    /// [`Launches::total`] at the last mark (read only when timing).
    launched: u64,
    /// [`this_thread_products`] at the last mark.
    products: (u64, u64),
    /// [`process_cpu_ms`] at the last mark.
    cpu_ms: Option<f64>,
    phases: Vec<Phase>,
}

impl PhaseTimer {
    /// A timer that synchronises `device` at each mark, or a no-op timer for `None`.
    pub(crate) fn new(device: Option<&Device>) -> Self {
        if let Some(device) = device {
            // Work queued before the step is not the step's.
            let _ = device.sync();
        }
        Self {
            device: device.cloned(),
            last: Instant::now(),
            launched: if device.is_some() {
                Launches::total()
            } else {
                0
            },
            products: this_thread_products(),
            cpu_ms: device.and_then(|_| process_cpu_ms()),
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name`: waits for the device, then charges the time and the launches
    /// since the last mark.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let Some(device) = &self.device else {
            return;
        };
        // A failed sync surfaces at the step's next read-back; timing goes on.
        let _ = device.sync();
        let now = Instant::now();
        let launched = Launches::total();
        let products = this_thread_products();
        let cpu_ms = process_cpu_ms();
        self.phases.push(Phase {
            name,
            ms: (now - self.last).as_secs_f64() * 1e3,
            product_ms: (products.0 - self.products.0) as f64 / 1e6,
            multiply_adds: products.1 - self.products.1,
            launches: launched - self.launched,
            cpu_ms: cpu_ms.zip(self.cpu_ms).map(|(now, last)| now - last),
        });
        self.cpu_ms = cpu_ms;
        self.last = now;
        self.launched = launched;
        self.products = products;
    }

    pub(crate) fn finish(self) -> Vec<Phase> {
        self.phases
    }
}
