//! The goalrank app (egui): browse requests, compare the lists of GoalRank and the baselines,
//! inspect a sampled group and its reference policy, and train live. The app owns only UI
//! state; data, models, training and metrics all come from the library.
//!
//! One file per panel (`*_ui` functions): [`source`] (open data and runs, backend), [`requests`]
//! (browse requests), [`lists`] (compare lists), [`group`] (inspect a group), [`train`] (live
//! training, with the background [`worker`]). [`task`] runs model code without blocking the
//! UI; [`demo`] holds the compiled-in data and models of the browser demo, and [`warmup`]
//! moves the demo onto WebGPU once its kernels are ready.

pub mod demo;
mod group;
pub mod hook;
mod lists;
mod requests;
mod source;
mod task;
mod train;
pub mod warmup;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Split};
use crate::eval::GroupMember;
use crate::model::{Generator, GeneratorConfig, Pointwise, RewardModel, RewardModelConfig};
use crate::train::StepRecord;

pub use worker::{LiveSettings, TrainEvent, TrainJob};

/// The shipped data set.
pub const SHIPPED_DATA: &str = "assets/data/movielens-latest-small";
/// The shipped model: a GoalRank run and its reward model (experiment main, seed 0).
pub const SHIPPED_GENERATOR: &str = "assets/models/movielens-latest-small/goalrank";
pub const SHIPPED_REWARD: &str = "assets/models/movielens-latest-small/reward";
/// A run setting that names the compiled-in demo model ([`demo`], for `sim:small`).
pub const EMBEDDED: &str = "embedded";

/// UI settings kept between sessions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// A MovieLens folder or `sim:<preset>`.
    pub source: String,
    /// GoalRank run folder (empty: none).
    pub generator: String,
    /// Reward-model run folder (empty: none).
    pub reward: String,
    pub artifacts: String,
    pub group_size: usize,
    pub tau: f32,
    pub plackett_luce: bool,
    pub live: LiveSettings,
    pub use_wgpu: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let goalrank = crate::train::GoalRankConfig::new();
        Self {
            source: SHIPPED_DATA.into(),
            generator: SHIPPED_GENERATOR.into(),
            reward: SHIPPED_REWARD.into(),
            artifacts: "artifacts".into(),
            group_size: goalrank.group_size,
            tau: goalrank.tau,
            plackett_luce: goalrank.sampling == crate::train::GroupSampling::PlackettLuce,
            live: LiveSettings::default(),
            use_wgpu: false,
        }
    }
}

impl Settings {
    /// Settings that open `source` with the models that belong to it: the compiled-in demo
    /// models for the demo's simulator preset, none for another preset (train live), and the
    /// shipped models for a MovieLens folder.
    pub fn for_source(source: String) -> Self {
        let (generator, reward) = match source.as_str() {
            demo::DEMO_SOURCE => (EMBEDDED.into(), EMBEDDED.into()),
            s if s.starts_with("sim:") => (String::new(), String::new()),
            _ => (SHIPPED_GENERATOR.into(), SHIPPED_REWARD.into()),
        };
        Self {
            source,
            generator,
            reward,
            ..Default::default()
        }
    }
}

/// The central tab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    Lists,
    Group,
    Train,
}

/// A trained baseline shown next to GoalRank.
#[derive(Clone)]
pub enum Baseline {
    Generator(Box<Generator>),
    Pointwise(Box<Pointwise>),
}

/// Models in use, on the app's device, with their configs (to move them between devices).
pub struct Models {
    pub generator: Option<(GeneratorConfig, Generator)>,
    pub reward: Option<(RewardModelConfig, RewardModel)>,
    /// `experiment main`'s seed-0 baselines for this dataset, when that experiment has run.
    pub baselines: Vec<(String, Baseline)>,
}

/// What a live run reported so far.
#[derive(Default)]
pub struct TrainHistory {
    pub steps: Vec<StepRecord>,
    pub valid: Vec<(usize, crate::eval::Metrics)>,
    pub status: String,
    /// The worker's last event (finished, stopped or failed) has arrived.
    pub finished: bool,
}

/// The app.
pub struct GoalRankApp {
    pub settings: Settings,
    pub tab: Tab,
    pub device: Device,
    /// What runs the models, in words.
    pub backend: String,
    pub dataset: Option<Arc<Dataset>>,
    pub models: Models,
    /// The last error or notice, shown under the top bar.
    pub message: String,
    pub split: Split,
    /// Index of the shown request in `split`.
    pub request: usize,
    pub user_search: String,
    pub group: Vec<GroupMember>,
    /// Column the group table is sorted by, and whether descending.
    pub group_sort: (group::SortBy, bool),
    pub job: Option<TrainJob>,
    pub history: TrainHistory,
    /// Lists and scores of the shown request, recomputed when the request or a model changes.
    pub view: Option<lists::RequestView>,
    /// The view being computed, with its (split, request, model version) key.
    pending_view: Option<((Split, usize, u64), task::Pending<lists::RequestView>)>,
    /// The group being sampled.
    pending_group: Option<task::Pending<crate::Result<Vec<GroupMember>>>>,
    /// Bumped whenever a model changes.
    pub model_version: u64,
    /// Running as the browser demo: no file paths, no device switch.
    pub web: bool,
    /// Live training runs on the CPU while the models rank on `device` (the page on WebGPU).
    pub train_on_cpu: bool,
    /// What the Train tab should say about the device (the page on a software WebGPU adapter).
    pub device_note: Option<String>,
    /// A device the app moves to once its kernels are ready (the page on WebGPU).
    pub warmup: Option<warmup::Warmup>,
    pub warmup_times: warmup::WarmupTimes,
}

impl GoalRankApp {
    /// The app with `settings`, data and models loaded (errors land in `message`).
    pub fn with_settings(settings: Settings) -> Self {
        let mut app = Self::on_device(settings, Device::flex(), "CPU (flex)".into());
        #[cfg(not(target_arch = "wasm32"))]
        if app.settings.use_wgpu {
            source::switch_device(&mut app, true);
        }
        source::open(&mut app);
        app
    }

    /// The app on `device` (described by `backend`), nothing opened yet.
    fn on_device(settings: Settings, device: Device, backend: String) -> Self {
        Self {
            settings,
            tab: Tab::Lists,
            device,
            backend,
            dataset: None,
            models: Models {
                generator: None,
                reward: None,
                baselines: Vec::new(),
            },
            message: String::new(),
            split: Split::Test,
            request: 0,
            user_search: String::new(),
            group: Vec::new(),
            group_sort: (group::SortBy::PiRef, true),
            job: None,
            history: TrainHistory::default(),
            view: None,
            pending_view: None,
            pending_group: None,
            model_version: 0,
            web: false,
            train_on_cpu: false,
            device_note: None,
            warmup: None,
            warmup_times: warmup::WarmupTimes::default(),
        }
    }

    /// The browser demo: the simulator and the compiled-in models on `device`, chosen by the
    /// page (WebGPU, or the CPU where the browser has none). Live training runs on `device` too,
    /// with small steps (16 requests, K = 8); with `train_on_cpu` it runs on the CPU backend
    /// while ranking stays on `device` (for software WebGPU adapters, where it is faster).
    pub fn demo(device: Device, backend: String, train_on_cpu: bool) -> Self {
        let settings = Settings {
            source: demo::DEMO_SOURCE.into(),
            generator: EMBEDDED.into(),
            reward: EMBEDDED.into(),
            live: LiveSettings {
                steps: 100,
                batch_size: 16,
                group_size: 8,
                eval_every: 20,
                ..LiveSettings::default()
            },
            ..Settings::default()
        };
        let mut app = Self::on_device(settings, device, backend);
        app.web = true;
        app.train_on_cpu = train_on_cpu;
        source::open(&mut app);
        app
    }

    /// eframe's constructor: settings from the last session when there are some.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(cc: &eframe::CreationContext<'_>) -> Self {
        let settings = cc
            .storage
            .and_then(|s| eframe::get_value::<Settings>(s, eframe::APP_KEY))
            .unwrap_or_default();
        Self::with_settings(settings)
    }

    /// The requests of the shown split.
    pub fn requests(&self) -> &[crate::data::Request] {
        self.dataset.as_ref().map_or(&[], |d| d.split(self.split))
    }
}

impl eframe::App for GoalRankApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        #[cfg(target_arch = "wasm32")]
        hook::run_commands(self, ui.ctx());
        train::poll(self, ui.ctx());
        warmup::poll(self, ui.ctx());
        egui::Panel::top("source").show(ui, |ui| source::source_ui(self, ui));
        egui::Panel::left("requests")
            .default_size(440.0)
            .max_size(560.0)
            .resizable(true)
            .show(ui, |ui| requests::requests_ui(self, ui));
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.tab, Tab::Lists, "Compare lists");
                ui.selectable_value(&mut self.tab, Tab::Group, "Inspect group");
                ui.selectable_value(&mut self.tab, Tab::Train, "Train live");
            });
            ui.separator();
            match self.tab {
                Tab::Lists => lists::lists_ui(self, ui),
                Tab::Group => group::group_ui(self, ui),
                Tab::Train => train::train_ui(self, ui),
            }
        });
        #[cfg(target_arch = "wasm32")]
        hook::publish(self);
    }

    /// Natively, the settings are kept for the next session; the browser page keeps nothing
    /// (it always opens the embedded demo, and is built without eframe's persistence).
    #[cfg(not(target_arch = "wasm32"))]
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if !self.web {
            eframe::set_value(storage, eframe::APP_KEY, &self.settings);
        }
    }
}

/// Opens the native window (the `goalrank app` command).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_native(settings: Option<Settings>) -> eframe::Result {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("goalrank")
            .with_inner_size([1400.0, 860.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        "goalrank",
        options,
        Box::new(move |cc| {
            Ok(Box::new(match settings {
                Some(s) => GoalRankApp::with_settings(s),
                None => GoalRankApp::new(cc),
            }))
        }),
    )
}

/// A path setting, `None` when empty.
fn path(text: &str) -> Option<PathBuf> {
    let t = text.trim();
    (!t.is_empty()).then(|| PathBuf::from(t))
}

/// A label followed by `widget`, which screen readers (and tests) know by that label.
fn labelled(ui: &mut egui::Ui, text: &str, widget: impl egui::Widget) -> egui::Response {
    let label = ui.label(text);
    ui.add(widget).labelled_by(label.id)
}
