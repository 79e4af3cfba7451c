//! "Train live": GoalRank training in a background worker; loss, mean group reward and
//! validation H@L / N@L update while it runs, and the other panels use the newest weights.

use egui_plot::{Legend, Line, Plot, PlotPoints};

use burn::module::Module;
use burn::tensor::Device;

use super::demo::demo_reward;
use super::{GoalRankApp, TrainEvent, TrainJob, labelled, warmup};

/// Takes the worker's events: records steps, swaps in new weights.
pub fn poll(app: &mut GoalRankApp, ctx: &egui::Context) {
    let Some(job) = &app.job else { return };
    let events = job.poll();
    let running = !job.is_finished();
    for event in events {
        match event {
            TrainEvent::Status(s) => app.history.status = s,
            TrainEvent::Step(record) => app.history.steps.push(record),
            TrainEvent::Valid { step, metrics } => app.history.valid.push((step, metrics)),
            TrainEvent::Generator { config, model } => {
                // Trained on the CPU in the page: move it to the device that ranks.
                let model = if app.train_on_cpu {
                    model.to_device(&app.device)
                } else {
                    *model
                };
                app.models.generator = Some((config, model));
                app.model_version += 1;
            }
            TrainEvent::Reward { config, model } => {
                app.models.reward = Some((config, *model));
                app.model_version += 1;
            }
            TrainEvent::Finished(Ok(())) => {
                app.history.finished = true;
                app.history.status = format!(
                    "finished: {} steps",
                    app.history.steps.last().map_or(0, |r| r.step)
                )
            }
            TrainEvent::Finished(Err(e)) => {
                app.history.finished = true;
                app.history.status = format!("failed: {e}");
            }
        }
    }
    if running {
        ctx.request_repaint_after(std::time::Duration::from_millis(100));
    }
}

/// Starts a live run with the current settings (the loaded reward model, if any, stays frozen).
pub fn start(app: &mut GoalRankApp) {
    let Some(dataset) = app.dataset.clone() else {
        app.message = "open a data source first".into();
        return;
    };
    if let Some(why) = warmup::busy(app) {
        app.message = why;
        return;
    }
    app.history = Default::default();
    let (device, reward) = if app.train_on_cpu {
        // The page's WebGPU device ranks; training runs on the CPU (see `GoalRankApp::demo`),
        // against the embedded reward model loaded there.
        let cpu = Device::flex();
        match demo_reward(&dataset, &cpu) {
            Ok((_, reward)) => (cpu, Some(reward)),
            Err(e) => {
                app.message = e.to_string();
                return;
            }
        }
    } else {
        let reward = app.models.reward.as_ref().map(|(_, model)| model.clone());
        (app.device.clone(), reward)
    };
    app.history.status = if reward.is_some() {
        "starting GoalRank".into()
    } else {
        "no reward model loaded: training one for an epoch first".into()
    };
    app.job = Some(TrainJob::start(
        dataset,
        reward,
        app.settings.live.clone(),
        device,
    ));
}

fn curve(name: &str, points: Vec<[f64; 2]>) -> Line<'static> {
    Line::new(name.to_string(), PlotPoints::new(points))
}

pub fn train_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    if app.train_on_cpu {
        ui.label(
            "Live training runs on the CPU backend in this page; the models rank on WebGPU and \
             adopt the new weights at each validation.",
        );
    }
    if let Some(note) = &app.device_note {
        ui.colored_label(ui.visuals().warn_fg_color, note);
    }
    let running = app.job.as_ref().is_some_and(|j| !j.is_finished());
    ui.add_enabled_ui(!running, |ui| {
        ui.horizontal(|ui| {
            let live = &mut app.settings.live;
            labelled(
                ui,
                "steps",
                egui::DragValue::new(&mut live.steps).range(1..=100_000),
            );
            labelled(
                ui,
                "batch",
                egui::DragValue::new(&mut live.batch_size).range(1..=1024),
            );
            labelled(
                ui,
                "K",
                egui::DragValue::new(&mut live.group_size).range(2..=128),
            );
            labelled(
                ui,
                "tau",
                egui::DragValue::new(&mut live.tau)
                    .range(0.05..=10.0)
                    .speed(0.05),
            );
            labelled(
                ui,
                "w_ref",
                egui::DragValue::new(&mut live.w_ref)
                    .range(0.0..=10.0)
                    .speed(0.05),
            );
            egui::ComboBox::from_label("width")
                .selected_text(live.d_model.to_string())
                .show_ui(ui, |ui| {
                    for d in [16, 32, 64, 128] {
                        ui.selectable_value(&mut live.d_model, d, d.to_string());
                    }
                });
            labelled(
                ui,
                "validate every",
                egui::DragValue::new(&mut live.eval_every).range(1..=10_000),
            );
        });
    });
    ui.horizontal(|ui| {
        if !running && ui.button("Start training").clicked() {
            start(app);
        }
        if let Some(job) = &app.job
            && running
        {
            if job.is_paused() {
                if ui.button("Resume").clicked() {
                    job.set_paused(false);
                }
            } else if ui.button("Pause").clicked() {
                job.set_paused(true);
            }
            if ui.button("Stop").clicked() {
                job.stop();
            }
        }
        ui.label(&app.history.status);
    });
    ui.label(
        "A new generator starts from scratch with these settings (the reward model stays \
         frozen); the other panels switch to its weights at every validation.",
    );
    let steps = &app.history.steps;
    let loss: Vec<[f64; 2]> = steps
        .iter()
        .map(|r| [r.step as f64, f64::from(r.loss)])
        .collect();
    let reward: Vec<[f64; 2]> = steps
        .iter()
        .filter_map(|r| r.reward_mean.map(|m| [r.step as f64, f64::from(m)]))
        .collect();
    let hit: Vec<[f64; 2]> = app
        .history
        .valid
        .iter()
        .map(|(s, m)| [*s as f64, m.hit_ratio])
        .collect();
    let ndcg: Vec<[f64; 2]> = app
        .history
        .valid
        .iter()
        .map(|(s, m)| [*s as f64, m.ndcg])
        .collect();
    let height = (ui.available_height() / 3.0 - 10.0).max(120.0);
    Plot::new("loss")
        .legend(Legend::default())
        .height(height)
        .show(ui, |p| p.line(curve("loss", loss)));
    Plot::new("reward")
        .legend(Legend::default())
        .height(height)
        .show(ui, |p| p.line(curve("mean group reward", reward)));
    Plot::new("valid")
        .legend(Legend::default())
        .height(height)
        .show(ui, |p| {
            p.line(curve("valid H@L", hit));
            p.line(curve("valid N@L", ndcg));
        });
}
