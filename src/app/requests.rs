//! Left panel: pick a request (split, search by user, step through) and see the user's history
//! with feedback and the N candidates with their features and the generator's scores.

use super::GoalRankApp;
use super::lists::{ensure_view, title};
use crate::data::{Dataset, Split};

/// An item's features in words: genres (or simulator category) and year.
fn features(dataset: &Dataset, item: u32) -> String {
    let it = &dataset.items[item as usize];
    let genres: Vec<&str> = it
        .genres
        .iter()
        .filter_map(|&g| dataset.genres.get(g as usize).map(String::as_str))
        .collect();
    match it.year {
        Some(y) => format!("{} ({y})", genres.join(", ")),
        None => genres.join(", "),
    }
}

/// Moves to the first request of the user whose raw id is `search`.
fn find_user(app: &mut GoalRankApp) {
    let Some(dataset) = &app.dataset else { return };
    let Ok(raw) = app.user_search.trim().parse::<u64>() else {
        app.message = format!("`{}` is not a user id", app.user_search.trim());
        return;
    };
    let found = dataset
        .split(app.split)
        .iter()
        .position(|r| dataset.users[r.user as usize] == raw);
    match found {
        Some(i) => {
            app.request = i;
            app.group.clear();
            app.message.clear();
        }
        None => app.message = format!("user {raw} has no request in this split"),
    }
}

pub fn requests_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    let Some(dataset) = app.dataset.clone() else {
        ui.label("No data open.");
        return;
    };
    ui.horizontal(|ui| {
        for (split, name) in [
            (Split::Train, "train"),
            (Split::Valid, "valid"),
            (Split::Test, "test"),
        ] {
            if ui.selectable_label(app.split == split, name).clicked() && app.split != split {
                app.split = split;
                app.request = 0;
                app.group.clear();
            }
        }
    });
    let count = app.requests().len();
    ui.horizontal(|ui| {
        if ui.button("Previous").clicked() && app.request > 0 {
            app.request -= 1;
            app.group.clear();
        }
        if ui.button("Next").clicked() && app.request + 1 < count {
            app.request += 1;
            app.group.clear();
        }
        ui.label(format!("request {} of {count}", app.request + 1));
    });
    ui.horizontal(|ui| {
        let label = ui.label("User id");
        let edit = ui
            .add(egui::TextEdit::singleline(&mut app.user_search).desired_width(80.0))
            .labelled_by(label.id);
        let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Find").clicked() || enter {
            find_user(app);
        }
    });
    ensure_view(app, ui.ctx());
    let Some(request) = dataset.split(app.split).get(app.request) else {
        return;
    };
    ui.separator();
    ui.strong(format!(
        "User {} - {} history items",
        dataset.users[request.user as usize],
        request.history.len()
    ));
    egui::ScrollArea::vertical()
        .id_salt("history")
        .max_height(200.0)
        .show(ui, |ui| {
            egui::Grid::new("history-grid")
                .striped(true)
                .show(ui, |ui| {
                    for (&item, &label) in request.history.iter().zip(&request.history_labels).rev()
                    {
                        ui.label(if label > 0 { "+" } else { "-" });
                        ui.label(title(&dataset, item));
                        ui.label(features(&dataset, item));
                        ui.end_row();
                    }
                });
        });
    ui.separator();
    ui.strong(format!("{} candidates", request.candidates.len()));
    let labels = request.candidate_labels();
    let scores = app.view.as_ref().and_then(|v| v.candidate_scores.clone());
    let mut order: Vec<usize> = (0..request.candidates.len()).collect();
    if let Some(s) = &scores {
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    }
    egui::ScrollArea::vertical()
        .id_salt("candidates")
        .show(ui, |ui| {
            egui::Grid::new("candidate-grid")
                .striped(true)
                .show(ui, |ui| {
                    ui.label("logged");
                    ui.label("title");
                    ui.label("features");
                    ui.label("log pi (step 1)");
                    ui.end_row();
                    for &p in &order {
                        let item = request.candidates[p];
                        let logged = request.logged.contains(&item);
                        ui.label(match (logged, labels[p] > 0) {
                            (true, true) => "yes, +",
                            (true, false) => "yes, -",
                            _ => "",
                        });
                        ui.label(title(&dataset, item));
                        ui.label(features(&dataset, item));
                        ui.label(
                            scores
                                .as_ref()
                                .map_or(String::new(), |s| format!("{:.3}", s[p])),
                        );
                        ui.end_row();
                    }
                });
        });
}
