//! Moving the browser demo onto WebGPU without making the user wait for it. On a WebGPU page
//! the app opens on the CPU backend, which shows the first list within seconds; once that list
//! is on screen, a background task moves copies of the models to WebGPU and computes the shown
//! request's view there, which compiles (and tunes) the kernels ranking needs. When it is done
//! the app switches to WebGPU, where the next view is fast.
//!
//! The warm-up starts [`DELAY`] after the first list is on screen. The browser compiles the
//! kernels' pipelines in the background (`index.html` creates them asynchronously), but Burn
//! generates each kernel on the page's one thread, so the page still stalls for seconds at a
//! time; the user already has a list to read. Until the switch the user browses and ranks on
//! the CPU; live training waits for it ([`busy`]), so that it runs on the page's device.

use std::time::Duration;

use web_time::Instant;

use burn::module::Module;
use burn::tensor::Device;

use super::{GoalRankApp, lists, task};
use crate::model::{Generator, RewardModel};

/// How long the first list stays on screen before the warm-up starts.
pub const DELAY: Duration = Duration::from_secs(2);

/// A device the app moves to once its kernels are ready.
pub struct Warmup {
    device: Device,
    /// The device in words, shown once the app has moved.
    backend: String,
    /// When the app was created (the page's first frame is close to it).
    created: Instant,
    /// When the first list was on screen.
    shown: Option<Instant>,
    /// When the warm-up task started.
    started: Option<Instant>,
    /// The warm-up task, once started.
    pending: Option<task::Pending<Result<Warmed, String>>>,
}

/// The models on the warmed-up device.
struct Warmed {
    generator: Option<Generator>,
    reward: Option<RewardModel>,
}

/// How long the page ranked on the CPU before WebGPU took over, for the browser test.
#[derive(Clone, Copy, Debug, Default)]
pub struct WarmupTimes {
    /// Seconds from the app's creation to the first list on the CPU.
    pub first_list_s: Option<f64>,
    /// Seconds from the app's creation to the switch to the new device.
    pub switched_s: Option<f64>,
}

impl Warmup {
    /// Warms up `device` (described by `backend`) in the background once the first view is shown.
    pub fn new(device: Device, backend: String) -> Self {
        Self {
            device,
            backend,
            created: Instant::now(),
            shown: None,
            started: None,
            pending: None,
        }
    }

    /// What the status line says while the device warms up, with the seconds it has taken.
    pub fn status(&self) -> String {
        let took = self
            .started
            .map(|t| format!(": {} s", t.elapsed().as_secs()))
            .unwrap_or_default();
        format!(
            "{} is being prepared (its kernels compile){took}",
            self.backend
        )
    }
}

/// Starts the warm-up after the first view is on screen, and switches the app to the new device
/// when it is done (a failure keeps the app on the CPU and says why).
pub fn poll(app: &mut GoalRankApp, ctx: &egui::Context) {
    let Some(warmup) = &mut app.warmup else {
        return;
    };
    if app.view.is_some() && warmup.shown.is_none() {
        warmup.shown = Some(Instant::now());
        app.warmup_times.first_list_s = Some(warmup.created.elapsed().as_secs_f64());
    }
    if warmup.pending.is_none() {
        let Some(dataset) = app.dataset.clone() else {
            return;
        };
        match warmup.shown {
            Some(shown) if shown.elapsed() >= DELAY => {}
            Some(shown) => {
                ctx.request_repaint_after(DELAY.saturating_sub(shown.elapsed()));
                return;
            }
            None => return,
        }
        let device = warmup.device.clone();
        let generator = app.models.generator.as_ref().map(|(_, m)| m.clone());
        let reward = app.models.reward.as_ref().map(|(_, m)| m.clone());
        let (split, request) = (app.split, app.request);
        warmup.pending = Some(task::spawn(
            async move {
                let generator = generator.map(|m| m.to_device(&device));
                let reward = reward.map(|m| m.to_device(&device));
                lists::rank_once(
                    dataset,
                    generator.clone(),
                    reward.clone(),
                    device,
                    split,
                    request,
                )
                .await?;
                Ok(Warmed { generator, reward })
            },
            ctx,
        ));
        warmup.started = Some(Instant::now());
        ctx.request_repaint();
        return;
    }
    let Some(done) = warmup.pending.as_ref().and_then(|p| p.take()) else {
        return;
    };
    let Some(warmup) = app.warmup.take() else {
        return;
    };
    match done {
        Ok(warmed) => {
            if let (Some((_, m)), Some(moved)) = (&mut app.models.generator, warmed.generator) {
                *m = moved;
            }
            if let (Some((_, m)), Some(moved)) = (&mut app.models.reward, warmed.reward) {
                *m = moved;
            }
            app.device = warmup.device;
            app.backend = warmup.backend;
            app.group.clear();
            app.model_version += 1;
            app.warmup_times.switched_s = Some(warmup.created.elapsed().as_secs_f64());
        }
        Err(e) => {
            app.message = format!(
                "{} could not rank ({e}); the page stays on {}",
                warmup.backend, app.backend
            );
        }
    }
    ctx.request_repaint();
}

/// Why live training cannot start yet, while the app prepares its device.
pub fn busy(app: &GoalRankApp) -> Option<String> {
    app.warmup
        .as_ref()
        .map(|w| format!("live training starts once {} is ready", w.backend))
}
