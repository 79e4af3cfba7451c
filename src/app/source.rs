//! Top bar: open a data source and trained runs, and pick the device that runs the models.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;

use super::demo::{DEMO_SOURCE, demo_generator, demo_reward};
use super::{
    Baseline, EMBEDDED, GoalRankApp, SHIPPED_DATA, SHIPPED_GENERATOR, SHIPPED_REWARD, path,
};
use crate::data::{Dataset, Source};
use crate::model::{GeneratorConfig, RewardModelConfig};
use crate::run::{load_generator, load_pointwise, load_reward, run_config};

pub fn source_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    if !app.web {
        files_ui(app, ui);
    }
    status_ui(app, ui);
    if !app.message.is_empty() {
        ui.colored_label(egui::Color32::from_rgb(200, 80, 40), &app.message);
    }
}

/// Data source and run folders (native only: the browser demo has no file system).
fn files_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        let label = ui.label("Data");
        ui.add(egui::TextEdit::singleline(&mut app.settings.source).desired_width(260.0))
            .labelled_by(label.id)
            .on_hover_text("a MovieLens folder, or sim:small / sim:tiny");
        let label = ui.label("GoalRank run");
        ui.add(egui::TextEdit::singleline(&mut app.settings.generator).desired_width(220.0))
            .labelled_by(label.id);
        let label = ui.label("Reward run");
        ui.add(egui::TextEdit::singleline(&mut app.settings.reward).desired_width(220.0))
            .labelled_by(label.id);
        if ui.button("Open").clicked() {
            open(app);
        }
        ui.separator();
        if ui.button("Shipped MovieLens").clicked() {
            app.settings.source = SHIPPED_DATA.into();
            app.settings.generator = SHIPPED_GENERATOR.into();
            app.settings.reward = SHIPPED_REWARD.into();
            open(app);
        }
        if ui
            .button(DEMO_SOURCE)
            .on_hover_text("the simulator with the browser demo's models")
            .clicked()
        {
            app.settings.source = DEMO_SOURCE.into();
            app.settings.generator = EMBEDDED.into();
            app.settings.reward = EMBEDDED.into();
            open(app);
        }
        if ui.button("sim:tiny").clicked() {
            app.settings.source = "sim:tiny".into();
            app.settings.generator.clear();
            app.settings.reward.clear();
            open(app);
        }
    });
}

/// Backend, data and model status.
fn status_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.label(format!("Backend: {}", app.backend));
        if let Some(warmup) = &app.warmup {
            // Seconds rather than a spinner: the page draws while kernels compile, and a frame
            // a second leaves the processor to the compiler (input still repaints at once).
            ui.label(warmup.status());
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_secs(1));
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let mut gpu = app.settings.use_wgpu;
            if ui
                .checkbox(&mut gpu, "Use the GPU (wgpu, Vulkan)")
                .changed()
            {
                switch_device(app, gpu);
            }
        }
        if let Some(d) = &app.dataset {
            ui.separator();
            ui.label(format!(
                "{}: {} / {} / {} requests, N {}, L {}",
                d.name,
                d.train.len(),
                d.valid.len(),
                d.test.len(),
                d.config.candidates,
                d.config.list_len
            ));
        }
        let models = match (&app.models.generator, &app.models.reward) {
            (Some(_), Some(_)) => "generator + reward model loaded",
            (Some(_), None) => "generator loaded, no reward model",
            (None, Some(_)) => "reward model loaded, no generator: train live",
            (None, None) => "no models: train live",
        };
        ui.separator();
        match generator_params(app) {
            Some(n) => ui.label(format!("{models} ({n} generator parameters)")),
            None => ui.label(models),
        };
    });
}

/// Loads the data source and the runs named in the settings; problems go to `app.message`.
pub fn open(app: &mut GoalRankApp) {
    app.job = None;
    app.history = Default::default();
    app.group.clear();
    app.request = 0;
    app.models.generator = None;
    app.models.reward = None;
    app.message.clear();
    let artifacts = Path::new(&app.settings.artifacts).to_path_buf();
    let dataset = match Source::parse(&app.settings.source).and_then(|s| s.load(&artifacts)) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            app.dataset = None;
            app.message = format!("{e}");
            return;
        }
    };
    app.settings.live.follow_data(&dataset);
    let mut notes = Vec::new();
    if app.settings.generator.trim() == EMBEDDED {
        match demo_generator(&dataset, &app.device) {
            Ok(m) => app.models.generator = Some(m),
            Err(e) => notes.push(format!("GoalRank model not loaded: {e}")),
        }
    } else if let Some(dir) = path(&app.settings.generator) {
        match run_config(&dir, "goalrank", &dataset).and_then(|c| {
            let config: GeneratorConfig = serde_json::from_value(c["model"].clone())
                .map_err(|e| crate::Error::Invalid(format!("{}: {e}", dir.display())))?;
            Ok((config, load_generator(&dir, &dataset, &app.device)?))
        }) {
            Ok(m) => app.models.generator = Some(m),
            Err(e) => notes.push(format!("GoalRank run not loaded: {e}")),
        }
    }
    if app.settings.reward.trim() == EMBEDDED {
        match demo_reward(&dataset, &app.device) {
            Ok(m) => app.models.reward = Some(m),
            Err(e) => notes.push(format!("reward model not loaded: {e}")),
        }
    } else if let Some(dir) = path(&app.settings.reward) {
        match run_config(&dir, "reward", &dataset).and_then(|c| {
            let config: RewardModelConfig = serde_json::from_value(c["model"].clone())
                .map_err(|e| crate::Error::Invalid(format!("{}: {e}", dir.display())))?;
            Ok((config, load_reward(&dir, &dataset, &app.device)?))
        }) {
            Ok(m) => app.models.reward = Some(m),
            Err(e) => notes.push(format!("reward run not loaded: {e}")),
        }
    }
    notes.extend(load_baselines(app, &dataset));
    app.message = notes.join("; ");
    app.dataset = Some(dataset);
    app.model_version += 1;
}

/// Opens `experiment main`'s seed-0 baselines for `dataset` on the app's device, when that
/// experiment has run; returns what could not be loaded.
fn load_baselines(app: &mut GoalRankApp, dataset: &Dataset) -> Vec<String> {
    let mut notes = Vec::new();
    let main = Path::new(&app.settings.artifacts)
        .join("runs")
        .join(&dataset.name)
        .join("main/seed-0");
    app.models.baselines.clear();
    for (name, folder) in [
        ("supervised-only generator", "supervised"),
        ("pointwise DNN", "pointwise"),
        ("PRM-style", "prm"),
    ] {
        let dir = main.join(folder);
        if !dir.join("done.json").is_file() {
            continue;
        }
        let loaded = if folder == "supervised" {
            load_generator(&dir, dataset, &app.device).map(|m| Baseline::Generator(Box::new(m)))
        } else {
            load_pointwise(&dir, dataset, &app.device).map(|m| Baseline::Pointwise(Box::new(m)))
        };
        match loaded {
            Ok(model) => app.models.baselines.push((name.to_string(), model)),
            Err(e) => notes.push(format!("{name} not loaded: {e}")),
        }
    }
    notes
}

/// Moves the models to the GPU (wgpu on Vulkan) or back to the CPU.
#[cfg(not(target_arch = "wasm32"))]
pub fn switch_device(app: &mut GoalRankApp, gpu: bool) {
    use crate::model::{module_bytes, module_from_bytes};
    use burn::tensor::Device;
    let device = if gpu {
        match crate::device::vulkan_device() {
            Ok(d) => d,
            Err(e) => {
                app.message = e.to_string();
                app.settings.use_wgpu = false;
                return;
            }
        }
    } else {
        Device::flex()
    };
    let moved = (|| -> crate::Result<()> {
        if let Some((config, model)) = &app.models.generator {
            let model = module_from_bytes(config.init(&device), module_bytes(model)?)?;
            app.models.generator = Some((config.clone(), model));
        }
        if let Some((config, model)) = &app.models.reward {
            let model = module_from_bytes(config.init(&device), module_bytes(model)?)?;
            app.models.reward = Some((config.clone(), model));
        }
        Ok(())
    })();
    match moved {
        Ok(()) => {
            app.device = device;
            app.settings.use_wgpu = gpu;
            app.backend = if gpu {
                match crate::device::vulkan_adapter_name() {
                    Some(name) => format!("wgpu on Vulkan: {name}"),
                    None => "wgpu on Vulkan".into(),
                }
            } else {
                "CPU (flex)".into()
            };
            app.group.clear();
            // Baselines are reopened from their run folders on the new device.
            if let Some(dataset) = app.dataset.clone() {
                let notes = load_baselines(app, &dataset);
                if !notes.is_empty() {
                    app.message = notes.join("; ");
                }
            }
            app.model_version += 1;
        }
        Err(e) => app.message = format!("could not move the models: {e}"),
    }
}

/// Parameter count of the loaded generator, for the status line.
pub fn generator_params(app: &GoalRankApp) -> Option<usize> {
    app.models.generator.as_ref().map(|(_, m)| m.num_params())
}
