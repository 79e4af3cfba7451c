//! "Compare lists": the logged list, GoalRank's greedy list and the baselines' lists for the
//! shown request, side by side, each item with its reward-model score at its position.

use std::sync::Arc;

use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

use super::{Baseline, GoalRankApp, task};
use crate::data::{Dataset, Request, Split};
use crate::eval::{
    Ranking, ScoredList, SimplePolicy, generator_rankings_async, pointwise_rankings_async,
    score_lists_async,
};
use crate::model::{Generator, RewardModel};

/// The name of GoalRank's own list in the comparison.
pub const GOALRANK_LIST: &str = "GoalRank (greedy)";

/// One list of the comparison.
pub struct NamedList {
    pub name: String,
    pub items: Vec<u32>,
    pub scored: Option<ScoredList>,
    /// Logged positives the list contains.
    pub hits: usize,
    /// Exact expected clicks (simulator only).
    pub utility: Option<f64>,
}

/// Everything shown for one request.
pub struct RequestView {
    key: (Split, usize, u64),
    /// The generator's first-step log-probability per candidate.
    pub candidate_scores: Option<Vec<f32>>,
    pub lists: Vec<NamedList>,
    pub error: Option<String>,
}

fn named(
    name: &str,
    items: Vec<u32>,
    request: &Request,
    dataset: &Dataset,
    scored: Option<ScoredList>,
) -> NamedList {
    let labels = request.candidate_labels();
    let hits = items
        .iter()
        .filter(|i| {
            request
                .candidates
                .iter()
                .position(|c| c == *i)
                .is_some_and(|p| labels[p] > 0)
        })
        .count();
    NamedList {
        name: name.to_string(),
        utility: dataset
            .world
            .as_ref()
            .map(|w| w.utility(request.user, &items)),
        items,
        scored,
        hits,
    }
}

/// What a view is computed from: owned copies, so the computation can run in the background.
struct ViewInputs {
    key: (Split, usize, u64),
    dataset: Arc<Dataset>,
    generator: Option<Generator>,
    baselines: Vec<(String, Baseline)>,
    reward: Option<RewardModel>,
    device: Device,
}

/// Keeps the view of the shown request current: starts computing it when it is missing or
/// stale, and takes it once computed (at once natively, a few frames later in the browser).
pub fn ensure_view(app: &mut GoalRankApp, ctx: &egui::Context) {
    let key = (app.split, app.request, app.model_version);
    if let Some((pending_key, pending)) = &app.pending_view
        && let Some(view) = pending.take()
    {
        if *pending_key == key {
            app.view = Some(view);
        }
        app.pending_view = None;
    }
    let current = app.view.as_ref().is_some_and(|v| v.key == key);
    let waiting = app.pending_view.as_ref().is_some_and(|(k, _)| *k == key);
    if current || waiting {
        return;
    }
    let Some(dataset) = app.dataset.clone() else {
        app.view = None;
        return;
    };
    if dataset.split(app.split).get(app.request).is_none() {
        app.view = None;
        return;
    }
    let inputs = ViewInputs {
        key,
        dataset,
        generator: app.models.generator.as_ref().map(|(_, m)| m.clone()),
        baselines: app.models.baselines.clone(),
        reward: app.models.reward.as_ref().map(|(_, m)| m.clone()),
        device: app.device.clone(),
    };
    app.view = None;
    app.pending_view = Some((key, task::spawn(compute_view(inputs), ctx)));
    if let Some((_, pending)) = &app.pending_view
        && let Some(view) = pending.take()
    {
        app.view = Some(view);
        app.pending_view = None;
    }
}

/// Ranks and scores request `index` of `split` once on `device`, as a view would (the same
/// kernels), and returns what went wrong, if anything.
pub(super) async fn rank_once(
    dataset: Arc<Dataset>,
    generator: Option<Generator>,
    reward: Option<RewardModel>,
    device: Device,
    split: Split,
    index: usize,
) -> Result<(), String> {
    let inputs = ViewInputs {
        key: (split, index, u64::MAX),
        dataset,
        generator,
        baselines: Vec::new(),
        reward,
        device,
    };
    compute_view(inputs).await.error.map_or(Ok(()), Err)
}

/// The lists of one request, each scored by the reward model.
async fn compute_view(inputs: ViewInputs) -> RequestView {
    let ViewInputs {
        key,
        dataset,
        generator,
        baselines,
        reward,
        device,
    } = inputs;
    let (split, index, _) = key;
    let request = &dataset.split(split)[index];
    let one = std::slice::from_ref(request);
    let l = dataset.config.list_len;
    let mut error = None;
    let mut lists: Vec<(String, Vec<u32>)> = vec![("logged".into(), request.logged.clone())];
    let mut candidate_scores = None;
    if let Some(generator) = &generator {
        match generator_rankings_async(generator, &dataset, one, 1, &device).await {
            Ok(mut r) => {
                let ranking: Ranking = r.remove(0);
                candidate_scores = Some(ranking.scores);
                lists.push((GOALRANK_LIST.into(), ranking.list));
            }
            Err(e) => error = Some(e.to_string()),
        }
    }
    for (name, baseline) in &baselines {
        let ranked = match baseline {
            Baseline::Generator(m) => generator_rankings_async(m, &dataset, one, 1, &device).await,
            Baseline::Pointwise(m) => pointwise_rankings_async(m, &dataset, one, 1, &device).await,
        };
        match ranked {
            Ok(mut r) => lists.push((name.clone(), r.remove(0).list)),
            Err(e) => error = Some(e.to_string()),
        }
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(index as u64);
    for policy in SimplePolicy::ALL {
        let ranking = policy.rank(&dataset, request, l, &mut rng);
        lists.push((policy.name().into(), ranking.list));
    }
    if let Some(world) = &dataset.world {
        let sorted = world
            .attraction_order(request.user, &request.candidates)
            .iter()
            .take(l)
            .map(|&p| request.candidates[p])
            .collect();
        lists.push(("true attractions sorted (oracle)".into(), sorted));
        let best = world.best_list(request.user, &request.candidates, l);
        lists.push(("exact optimum (oracle)".into(), best.list));
    }
    let scored = match &reward {
        Some(reward) => {
            let items: Vec<Vec<u32>> = lists.iter().map(|(_, l)| l.clone()).collect();
            match score_lists_async(reward, &dataset, request, &items, &device).await {
                Ok(s) => s.into_iter().map(Some).collect(),
                Err(e) => {
                    error = Some(e.to_string());
                    vec![None; lists.len()]
                }
            }
        }
        None => vec![None; lists.len()],
    };
    RequestView {
        key,
        candidate_scores,
        lists: lists
            .into_iter()
            .zip(scored)
            .map(|((name, items), s)| named(&name, items, request, &dataset, s))
            .collect(),
        error,
    }
}

/// An item's title, shortened.
pub fn title(dataset: &Dataset, item: u32) -> String {
    let t = &dataset.items[item as usize].title;
    if t.chars().count() > 34 {
        format!("{}...", t.chars().take(31).collect::<String>())
    } else {
        t.clone()
    }
}

pub fn lists_ui(app: &mut GoalRankApp, ui: &mut egui::Ui) {
    ensure_view(app, ui.ctx());
    let Some(dataset) = app.dataset.clone() else {
        ui.label("Open a data source to compare lists.");
        return;
    };
    let Some(view) = app.view.as_ref() else {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Ranking the request...");
        });
        return;
    };
    let Some(request) = dataset.split(app.split).get(app.request) else {
        return;
    };
    if let Some(e) = &view.error {
        ui.colored_label(egui::Color32::RED, e);
    }
    let labels = request.candidate_labels();
    ui.label(
        "Each list with the reward model's engagement probability p at each position and the \
         list reward R = sum p_i / log2(i + 1); [+] marks a logged positive.",
    );
    egui::ScrollArea::vertical().show(ui, |ui| {
        let per_row = ((ui.available_width() / 340.0).floor() as usize).max(1);
        for row in view.lists.chunks(per_row) {
            ui.horizontal_top(|ui| {
                for list in row {
                    ui.group(|ui| {
                        ui.vertical(|ui| {
                            ui.set_width(320.0);
                            ui.strong(&list.name);
                            let mut summary = format!("hits {}", list.hits);
                            if let Some(s) = &list.scored {
                                summary += &format!(", R {:.3}", s.reward);
                            }
                            if let Some(u) = list.utility {
                                summary += &format!(", utility {u:.3}");
                            }
                            ui.label(summary);
                            egui::Grid::new(format!("list-{}", list.name))
                                .striped(true)
                                .show(ui, |ui| {
                                    for (i, &item) in list.items.iter().enumerate() {
                                        let positive = request
                                            .candidates
                                            .iter()
                                            .position(|&c| c == item)
                                            .is_some_and(|p| labels[p] > 0);
                                        ui.label(format!("{}", i + 1));
                                        ui.label(if positive { "[+]" } else { "" });
                                        ui.label(title(&dataset, item));
                                        match &list.scored {
                                            Some(s) => {
                                                ui.label(format!("{:.3}", s.position_scores[i]))
                                            }
                                            None => ui.label(""),
                                        };
                                        ui.end_row();
                                    }
                                });
                        });
                    });
                }
            });
        }
    });
}
