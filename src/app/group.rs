//! "Inspect group": sample K lists for the shown request as GoalRank training does, and see each
//! list's reward R, z-score A, reference-policy weight π_ref and the model's own π_θ.

use egui_extras::{Column, TableBuilder};
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use super::lists::title;
use super::{GoalRankApp, labelled, task};
use crate::eval::{GroupMember, inspect_group_async};
use crate::train::GroupSampling;

/// Columns the group table sorts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Reward,
    PiRef,
    PiTheta,
}

fn key(m: &GroupMember, by: SortBy) -> f32 {
    match by {
        SortBy::Reward => m.list.reward,
        SortBy::PiRef => m.pi_ref,
        SortBy::PiTheta => m.pi_theta,
    }
}

/// Samples a group for the shown request with the loaded generator and reward model (in the
/// background in the browser; [`take_group`] picks it up).
pub fn sample_group(app: &mut GoalRankApp, ctx: &egui::Context) {
    let (Some(dataset), Some((_, generator)), Some((_, reward))) = (
        app.dataset.clone(),
        &app.models.generator,
        &app.models.reward,
    ) else {
        app.message = "sampling a group needs a generator and a reward model".into();
        return;
    };
    if dataset.split(app.split).get(app.request).is_none() {
        return;
    }
    let sampling = if app.settings.plackett_luce {
        GroupSampling::PlackettLuce
    } else {
        GroupSampling::Autoregressive
    };
    let (generator, reward, device) = (generator.clone(), reward.clone(), app.device.clone());
    let (split, index) = (app.split, app.request);
    let (k, tau) = (app.settings.group_size, app.settings.tau);
    let future = async move {
        let request = &dataset.split(split)[index];
        inspect_group_async(
            &generator, &reward, &dataset, request, k, sampling, tau, &device,
        )
        .await
    };
    app.pending_group = Some(task::spawn(future, ctx));
    take_group(app);
}

/// Shows a sampled group once it is there.
pub fn take_group(app: &mut GoalRankApp) {
    let Some(result) = app.pending_group.as_ref().and_then(|p| p.take()) else {
        return;
    };
    app.pending_group = None;
    match result {
        Ok(group) => {
            app.group = group;
            sort(app);
        }
        Err(e) => app.message = e.to_string(),
    }
}

fn sort(app: &mut GoalRankApp) {
    let (by, descending) = app.group_sort;
    app.group.sort_by(|a, b| {
        let order = key(a, by).total_cmp(&key(b, by));
        if descending { order.reverse() } else { order }
    });
}

pub fn group_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    take_group(app);
    ui.horizontal(|ui| {
        labelled(
            ui,
            "K",
            egui::Slider::new(&mut app.settings.group_size, 2..=64),
        );
        labelled(
            ui,
            "tau",
            egui::DragValue::new(&mut app.settings.tau)
                .range(0.05..=10.0)
                .speed(0.05),
        );
        ui.checkbox(
            &mut app.settings.plackett_luce,
            "Plackett-Luce (else autoregressive)",
        );
        if ui.button("Sample group").clicked() {
            sample_group(app, ui.ctx());
        }
        if app.pending_group.is_some() {
            ui.spinner();
        }
    });
    if app.group.is_empty() {
        ui.label(
            "Sample a group: K lists drawn from the generator, each scored by the frozen reward \
             model. A = (R - mean) / std within the group, pi_ref = softmax(A / tau), and pi_theta \
             is the generator's probability of each list renormalised over the group.",
        );
        return;
    }
    let sum_ref: f32 = app.group.iter().map(|m| m.pi_ref).sum();
    ui.label(format!(
        "{} lists; sum of pi_ref = {sum_ref:.4}; pi_ref and pi_theta agree where the points lie on \
         the diagonal",
        app.group.len()
    ));
    let points: Vec<[f64; 2]> = app
        .group
        .iter()
        .map(|m| [f64::from(m.pi_ref), f64::from(m.pi_theta)])
        .collect();
    let top = points
        .iter()
        .flat_map(|p| [p[0], p[1]])
        .fold(0.0f64, f64::max);
    Plot::new("pi-ref-vs-pi-theta")
        .legend(Legend::default())
        .height(220.0)
        .x_axis_label("pi_ref")
        .y_axis_label("pi_theta")
        .show(ui, |plot| {
            plot.line(Line::new(
                "pi_theta = pi_ref",
                PlotPoints::new(vec![[0.0, 0.0], [top, top]]),
            ));
            plot.points(Points::new("lists", PlotPoints::new(points)).radius(4.0));
        });
    let Some(dataset) = app.dataset.clone() else {
        return;
    };
    let mut clicked = None;
    TableBuilder::new(ui)
        .id_salt("group-table")
        .striped(true)
        .column(Column::exact(36.0))
        .columns(Column::exact(70.0), 5)
        .column(Column::remainder())
        .header(20.0, |mut header| {
            header.col(|ui| {
                ui.strong("#");
            });
            for (label, by) in [
                ("R", Some(SortBy::Reward)),
                ("A", None),
                ("pi_ref", Some(SortBy::PiRef)),
                ("pi_theta", Some(SortBy::PiTheta)),
                ("log pi", None),
            ] {
                header.col(|ui| match by {
                    Some(by) => {
                        if ui.button(label).clicked() {
                            clicked = Some(by);
                        }
                    }
                    None => {
                        ui.strong(label);
                    }
                });
            }
            header.col(|ui| {
                ui.strong("list");
            });
        })
        .body(|body| {
            body.rows(18.0, app.group.len(), |mut row| {
                let m = &app.group[row.index()];
                let i = row.index();
                row.col(|ui| {
                    ui.label(format!("#{}", i + 1));
                });
                for v in [m.list.reward, m.advantage, m.pi_ref, m.pi_theta, m.log_pi] {
                    row.col(|ui| {
                        ui.label(format!("{v:.4}"));
                    });
                }
                row.col(|ui| {
                    let names: Vec<String> =
                        m.list.items.iter().map(|&it| title(&dataset, it)).collect();
                    ui.label(names.join(" | "));
                });
            });
        });
    if let Some(by) = clicked {
        app.group_sort = if app.group_sort.0 == by {
            (by, !app.group_sort.1)
        } else {
            (by, true)
        };
        sort(app);
    }
}
