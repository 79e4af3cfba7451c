//! Where a training step's time goes: wall-clock per phase, with the device synchronised at each
//! boundary so that queued work is charged to the phase that queued it. Off by default (a
//! synchronisation stalls a GPU's queue); `goalrank bench --profile` turns it on.

use burn::tensor::Device;
use serde::Serialize;
use web_time::Instant;

/// Time spent in one phase of a step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub ms: f64,
}

/// Marks phase boundaries; does nothing unless built with a device.
pub(crate) struct PhaseTimer {
    device: Option<Device>,
    last: Instant,
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
            phases: Vec::new(),
        }
    }

    /// Ends the phase `name`: waits for the device, then charges the time since the last mark.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let Some(device) = &self.device else {
            return;
        };
        // A failed sync surfaces at the step's next read-back; timing goes on.
        let _ = device.sync();
        let now = Instant::now();
        self.phases.push(Phase {
            name,
            ms: (now - self.last).as_secs_f64() * 1e3,
        });
        self.last = now;
    }

    pub(crate) fn finish(self) -> Vec<Phase> {
        self.phases
    }
}
