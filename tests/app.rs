//! The app, driven through egui_kittest (no GPU): open the shipped data and model, pick a
//! request, sample a group, and start and stop a live training run.

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use goalrank::app::{GoalRankApp, Settings};

fn harness(settings: Settings) -> Harness<'static, GoalRankApp> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .allow_missing_glyphs()
        .build_eframe(move |_cc| GoalRankApp::with_settings(settings.clone()))
}

#[test]
fn shipped_model_samples_a_group_whose_reference_policy_sums_to_one() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        artifacts: artifacts.path().to_string_lossy().into_owned(),
        group_size: 8,
        ..Settings::default()
    };
    let mut h = harness(settings);
    h.run();
    let app = h.state();
    assert!(app.message.is_empty(), "{}", app.message);
    assert_eq!(
        app.settings.live.w_ref,
        goalrank::experiment::MainExperimentConfig::new().logged_w_ref,
        "live training on logged data takes experiment main's logged-data w_ref"
    );
    assert_eq!(
        app.settings.live.group_size,
        goalrank::experiment::MainExperimentConfig::new().logged_group_size,
        "and its logged-data group size"
    );
    assert!(
        app.models.generator.is_some(),
        "the shipped generator loads"
    );
    assert!(
        app.models.reward.is_some(),
        "the shipped reward model loads"
    );

    h.get_by_label("Next").click();
    h.run();
    assert_eq!(h.state().request, 1);
    assert!(
        h.query_by_label("GoalRank (greedy)").is_some(),
        "the lists tab shows GoalRank"
    );

    h.get_by_label("Inspect group").click();
    h.run();
    h.get_by_label("Sample group").click();
    h.run();
    let group = &h.state().group;
    assert_eq!(group.len(), 8);
    let sum: f32 = group.iter().map(|m| m.pi_ref).sum();
    assert!((sum - 1.0).abs() < 1e-4, "pi_ref sums to {sum}");
    for i in 1..=8 {
        assert!(
            h.query_by_label(&format!("#{i}")).is_some(),
            "row #{i} shown"
        );
    }
    assert!(h.query_by_label("#9").is_none());
    assert!(
        h.query_by_label_contains("sum of pi_ref = 1.0000")
            .is_some()
    );
}

/// Steps the harness until `done` holds or `limit` passes.
fn step_until(
    h: &mut Harness<'static, GoalRankApp>,
    limit: Duration,
    done: impl Fn(&GoalRankApp) -> bool,
) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < limit,
            "timed out: {}",
            h.state().history.status
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn live_training_on_the_simulator_starts_reports_and_stops() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings {
        source: "sim:tiny".into(),
        generator: String::new(),
        reward: String::new(),
        artifacts: artifacts.path().to_string_lossy().into_owned(),
        ..Settings::default()
    };
    settings.live.steps = 100_000;
    settings.live.eval_every = 2;
    settings.live.d_model = 16;
    settings.live.group_size = 4;
    let mut h = harness(settings);
    h.run();
    assert!(h.state().models.generator.is_none());
    assert_eq!(
        h.state().settings.live.w_ref,
        goalrank::experiment::MainExperimentConfig::new().w_ref,
        "live training on simulated data takes experiment main's simulated-data w_ref"
    );
    h.get_by_label("Train live").click();
    h.run();
    h.get_by_label("Start training").click();
    // The worker trains a reward model first (none was loaded), then GoalRank steps arrive and
    // the app swaps in the new generator at each validation.
    step_until(&mut h, Duration::from_secs(120), |app| {
        app.history.valid.len() >= 2 && app.models.generator.is_some()
    });
    assert!(
        h.state().models.reward.is_some(),
        "the trained reward model is adopted"
    );
    let loss = h.state().history.steps.iter().map(|r| r.loss);
    assert!(loss.clone().all(f32::is_finite));
    h.get_by_label("Stop").click();
    step_until(&mut h, Duration::from_secs(60), |app| {
        app.job.as_ref().is_some_and(|j| j.is_finished()) && app.history.status.contains("finished")
    });
    let steps = h.state().history.steps.len();
    assert!(
        (2..100_000).contains(&steps),
        "stopped early after {steps} steps"
    );
    // The lists panel now ranks with the live generator.
    h.get_by_label("Compare lists").click();
    h.run();
    assert!(h.query_by_label("GoalRank (greedy)").is_some());
    assert!(h.query_by_label("exact optimum (oracle)").is_some());
}

#[test]
fn experiment_main_baselines_appear_next_to_goalrank() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let dataset = goalrank::data::Source::parse("sim:tiny")
        .and_then(|s| s.load(artifacts.path()))
        .expect("sim:tiny");
    let options = goalrank::experiment::ExperimentOptions {
        runs: artifacts.path().join("runs").join(&dataset.name),
        progress: false,
        device: burn::tensor::Device::flex(),
    };
    let config = goalrank::experiment::MainExperimentConfig::smoke().with_seeds(1);
    goalrank::experiment::run_main(&dataset, &config, &options).expect("experiment main");
    let settings = Settings {
        source: "sim:tiny".into(),
        generator: String::new(),
        reward: String::new(),
        artifacts: artifacts.path().to_string_lossy().into_owned(),
        ..Settings::default()
    };
    let mut h = harness(settings);
    h.run();
    assert_eq!(h.state().models.baselines.len(), 3, "{}", h.state().message);
    for name in [
        "supervised-only generator",
        "pointwise DNN",
        "PRM-style",
        "popularity",
    ] {
        assert!(h.query_by_label(name).is_some(), "{name} list shown");
    }
}

#[test]
fn the_browser_demo_ranks_and_trains_through_its_script_hook() {
    // What web/test.mjs does in the page, natively and on the CPU.
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .allow_missing_glyphs()
        .build_eframe(|_cc| {
            GoalRankApp::demo(burn::tensor::Device::flex(), "CPU (flex)".into(), false)
        });
    h.run();
    let state = h.state().state();
    assert_eq!(state["ready"], true, "{state}");
    let list: Vec<u64> = serde_json::from_value(state["request"]["goalrank_list"].clone())
        .expect("GoalRank's list is in the state");
    let candidates: Vec<u64> =
        serde_json::from_value(state["request"]["candidates"].clone()).expect("candidates");
    assert_eq!(Some(list.len() as u64), state["list_len"].as_u64());
    let distinct: std::collections::HashSet<_> = list.iter().collect();
    assert_eq!(distinct.len(), list.len(), "{list:?}");
    assert!(list.iter().all(|i| candidates.contains(i)));

    let ctx = h.ctx.clone();
    h.state_mut().command("next", &ctx).expect("next");
    assert_eq!(h.state().state()["request"]["index"], 1);
    assert!(h.state_mut().command("jump", &ctx).is_err());
    for bad in [
        "train 2 batch=0",
        "train 2 group=1",
        "train 2 lr=3",
        "train 2 batch",
    ] {
        let err = h.state_mut().command(bad, &ctx).expect_err(bad);
        assert!(
            err.contains(bad.trim_start_matches("train 2 ")),
            "{bad}: {err}"
        );
        assert!(h.state().job.is_none(), "{bad} started a run");
    }
    h.state_mut()
        .command("train 2 batch=4 group=3", &ctx)
        .expect("train");
    assert_eq!(h.state().settings.live.batch_size, 4);
    assert_eq!(h.state().settings.live.group_size, 3);
    step_until(&mut h, Duration::from_secs(120), |app| app.history.finished);
    let training = &h.state().state()["training"];
    assert!(
        training["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("finished")),
        "{training}"
    );
    let losses: Vec<f32> = serde_json::from_value(training["losses"].clone()).expect("losses");
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite()));
    let seconds: Vec<f64> = serde_json::from_value(training["seconds"].clone()).expect("seconds");
    assert_eq!(seconds.len(), 2);
    assert!(seconds.iter().all(|s| *s > 0.0));
    assert!(training["valid_ndcg"].as_f64().is_some());
}

#[test]
fn the_demo_ranks_on_the_cpu_first_and_moves_to_the_warmed_up_device() {
    // What a WebGPU page does (`app::warmup`), natively, with a second CPU device in WebGPU's
    // place: the first list comes from the CPU, live training waits, and once the other device
    // has ranked the shown request the app moves there and ranks the same list.
    use burn::tensor::Device;
    use goalrank::app::warmup::Warmup;
    let mut app = GoalRankApp::demo(Device::flex(), "CPU (flex)".into(), false);
    app.warmup = Some(Warmup::new(Device::flex(), "the other device".into()));
    let ctx = egui::Context::default();
    app.command("train 2", &ctx).expect("train");
    assert!(app.job.is_none(), "a live run started while warming up");
    assert!(
        app.message.contains("the other device is ready"),
        "{}",
        app.message
    );
    let state = app.state();
    assert_eq!(state["backend"], "CPU (flex)", "{state}");
    assert_eq!(state["warmup"]["preparing"], true, "{state}");
    let first: Vec<u64> = serde_json::from_value(state["request"]["goalrank_list"].clone())
        .expect("the CPU's list is shown at once");
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .allow_missing_glyphs()
        .build_eframe(move |_cc| app);
    step_until(&mut h, Duration::from_secs(60), |app| app.warmup.is_none());
    h.run();
    let state = h.state().state();
    assert_eq!(state["backend"], "the other device", "{state}");
    assert_eq!(state["warmup"]["preparing"], false, "{state}");
    let times = h.state().warmup_times;
    let (shown, switched) = (
        times.first_list_s.expect("first list timed"),
        times.switched_s.expect("switch timed"),
    );
    assert!(shown <= switched, "{times:?}");
    let after: Vec<u64> = serde_json::from_value(state["request"]["goalrank_list"].clone())
        .expect("the moved models rank");
    assert_eq!(after, first);
    let ctx = h.ctx.clone();
    h.state_mut().command("train 2", &ctx).expect("train");
    assert!(h.state().job.is_some(), "{}", h.state().message);
}
