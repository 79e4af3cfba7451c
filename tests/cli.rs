//! The `goalrank` binary: exit codes, one-line errors, JSON output.

use std::process::Output;

use crate::common::{copy_fixture, fixture, goalrank, replace_line, stderr};

/// Asserts exit code 2 and a single `error:` line naming `place`.
fn assert_input_error(out: &Output, place: &str) {
    let text = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains(place), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn help_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["data", "--help"],
        vec!["eval", "--help"],
        vec!["train", "--help"],
        vec!["train", "reward", "--help"],
        vec!["train", "goalrank", "--help"],
        vec!["train", "pointwise", "--help"],
        vec!["rank", "--help"],
        vec!["bench", "--help"],
        vec!["check-device", "--help"],
        vec!["experiment", "main", "--help"],
    ] {
        let out = goalrank(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn malformed_row_exits_2_naming_file_line_and_field() {
    let dir = copy_fixture("ml-latest-tiny");
    replace_line(&dir.path().join("ratings.csv"), 4, "1,3,4.0,yesterday");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = goalrank(&["data", "--data", data, "--artifacts", data]);
    assert_input_error(&out, "ratings.csv:4: field `timestamp`");
}

#[test]
fn missing_file_exits_2() {
    let dir = copy_fixture("ml-100k-tiny");
    std::fs::remove_file(dir.path().join("u.item")).expect("remove");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = goalrank(&["eval", "--data", data, "--artifacts", data]);
    assert_input_error(&out, "u.item: missing file");
}

#[test]
fn unknown_layout_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), "hello").expect("write");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = goalrank(&["data", "--data", data, "--artifacts", data]);
    assert_input_error(&out, "unknown data layout");
}

#[test]
fn data_and_eval_print_json() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let artifacts = artifacts.path().to_str().expect("utf-8 path");
    let data = fixture("ml-1m-tiny");
    let data = data.to_str().expect("utf-8 path");
    let common = [
        "--data",
        data,
        "--artifacts",
        artifacts,
        "--candidates",
        "15",
    ];

    let out = goalrank(&[&["data", "--json"][..], &common].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let requests = &json["requests"];
    let total: u64 = ["train", "valid", "test"]
        .iter()
        .map(|s| requests[s].as_u64().expect("count"))
        .sum();
    assert!(total > 0);
    let rate = json["positive_rate"].as_f64().expect("rate");
    assert!((0.0..=1.0).contains(&rate));
    assert!(json["retriever_recall_at_50"].as_f64().is_some());

    let out = goalrank(&[&["eval", "--json"][..], &common].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for policy in ["random", "popularity", "retriever"] {
        let m = &json["policies"][policy];
        for metric in ["hit_ratio", "ndcg", "map", "f1", "auc"] {
            let v = m[metric].as_f64().expect(metric);
            assert!((0.0..=1.0).contains(&v), "{policy} {metric} = {v}");
        }
    }
}

fn count_lines(path: &std::path::Path, kind: &str) -> usize {
    std::fs::read_to_string(path)
        .expect("metrics.jsonl")
        .lines()
        .filter(|l| l.contains(&format!("\"kind\":\"{kind}\"")))
        .count()
}

#[test]
fn train_resume_and_evaluate_a_checkpoint() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let root = artifacts.path();
    let data = fixture("ml-latest-tiny");
    let data = data.to_str().expect("utf-8 path");
    let art = root.to_str().expect("utf-8 path");
    let common = ["--data", data, "--artifacts", art, "--candidates", "15"];
    let reward = root.join("reward");
    let run = root.join("goalrank");
    let (reward_s, run_s) = (reward.to_str().expect("path"), run.to_str().expect("path"));

    let out = goalrank(
        &[
            &["train", "reward", "--run", reward_s, "--epochs", "2"][..],
            &["--d-model", "16", "--layers", "1", "--batch-size", "16"],
            &common,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(reward.join("model.bpk").is_file() && reward.join("config.json").is_file());
    assert_eq!(count_lines(&reward.join("metrics.jsonl"), "valid"), 2);

    let goalrank_args = |steps: &'static str| -> Vec<&str> {
        [
            &["train", "goalrank", "--reward", reward_s, "--run", run_s][..],
            &[
                "--steps",
                steps,
                "--eval-every",
                "2",
                "--d-model",
                "16",
                "--layers",
                "1",
            ],
            &["--heads", "2", "--batch-size", "8", "--group-size", "4"],
            &common,
        ]
        .concat()
    };
    let out = goalrank(&goalrank_args("4"));
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = run.join("metrics.jsonl");
    assert_eq!(count_lines(&metrics, "train"), 4);
    assert_eq!(count_lines(&metrics, "valid"), 2);
    // Each validation logs the reward model's mean R of the chosen lists; logged data has no
    // exact utility.
    for line in std::fs::read_to_string(&metrics).expect("metrics").lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("json line");
        if record["kind"] == "valid" {
            let r = record["reward"].as_f64().expect("validation logs mean R");
            assert!(r.is_finite() && r >= 0.0, "mean R {r}");
            assert!(record["utility"].is_null(), "{record}");
        }
    }

    // Resume to 6 steps: the log continues rather than restarting.
    let out = goalrank(&[goalrank_args("6"), vec!["--resume"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count_lines(&metrics, "train"), 6);
    let current = std::fs::read_to_string(run.join("checkpoint")).expect("pointer");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join(current).join("state.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(state["state"]["step"], 6);

    let out = goalrank(
        &[
            &[
                "eval",
                "--json",
                "--checkpoint",
                run_s,
                "--reward",
                reward_s,
            ][..],
            &[
                "--policy",
                "random",
                "--pick-with",
                reward_s,
                "--pick-k",
                "4",
                "--multi",
            ],
            &common,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let best_of = format!("{run_s} best-of-4");
    for name in [run_s, "random", &best_of, "multi-generator k=1 best-of-4"] {
        let row = &json["policies"][name];
        let h = row["hit_ratio"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {json}"));
        let reward = row["reward"].as_f64().expect("reward");
        assert!((0.0..=1.0).contains(&h), "{name}: {row}");
        // R = Σ p_i / log2(i + 1) over 6 positions is below Σ 1 / log2(i + 1) ≈ 2.95.
        assert!(reward > 0.0 && reward < 2.95, "{name}: {row}");
    }

    // `rank`: JSON lines in, one answer per request with L distinct candidates out.
    let requests = fixture("rank-requests.jsonl");
    let requests_s = requests.to_str().expect("path");
    let out = goalrank(
        &[
            &["rank", "--checkpoint", run_s, "--requests", requests_s][..],
            &common,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let inputs: Vec<serde_json::Value> = std::fs::read_to_string(&requests)
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(answers.len(), inputs.len());
    assert_eq!(answers[2]["line"], 4, "line numbers count the blank line");
    for (answer, input) in answers.iter().zip(&inputs) {
        let list: Vec<u64> = serde_json::from_value(answer["list"].clone()).expect("list");
        let candidates: Vec<u64> = serde_json::from_value(input["candidates"].clone()).expect("c");
        assert_eq!(list.len(), 6);
        assert_eq!(
            list.iter().collect::<std::collections::HashSet<_>>().len(),
            6
        );
        assert!(list.iter().all(|i| candidates.contains(i)));
        assert_eq!(
            answer["scores"].as_array().expect("scores").len(),
            candidates.len()
        );
        assert_eq!(answer["user"], input["user"]);
    }
    // A UTF-8 byte-order mark is skipped, as the CSV loader skips it.
    let bom = root.join("bom.jsonl");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(&requests).expect("fixture"));
    std::fs::write(&bom, bytes).expect("write");
    let out = goalrank(
        &[
            &["rank", "--checkpoint", run_s, "--requests"][..],
            &[bom.to_str().expect("path")],
            &common,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        inputs.len()
    );
    let bad = root.join("bad.jsonl");
    let rank_bad = |lines: &str| {
        std::fs::write(&bad, lines).expect("write");
        let args = [
            "rank",
            "--checkpoint",
            run_s,
            "--requests",
            bad.to_str().expect("path"),
        ];
        goalrank(&[&args[..], &common].concat())
    };
    let out = rank_bad(
        "{\"user\": 1, \"candidates\": [3, 6, 9, 12, 15, 18]}\n{\"user\": 1, \"candidates\": [3, 6, 9, 12, 15, 7]}\n",
    );
    assert_input_error(
        &out,
        "bad.jsonl:2: field `candidates`: item 7 is not in the catalogue",
    );
    // A line without a required field names it.
    let out = rank_bad("{\"candidates\": [3, 6, 9, 12, 15, 18]}\n");
    assert_input_error(&out, "bad.jsonl:1: field `user`: missing field `user`");

    // Pointwise DNN and PRM-style baselines train and evaluate through the same commands.
    for (name, layers) in [("pointwise", "0"), ("prm", "1")] {
        let dir = root.join(name);
        let dir_s = dir.to_str().expect("path");
        let out = goalrank(
            &[
                &[
                    "train",
                    "pointwise",
                    "--run",
                    dir_s,
                    "--context-layers",
                    layers,
                ][..],
                &["--epochs", "1", "--d-model", "16", "--batch-size", "16"],
                &common,
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let out = goalrank(&[&["eval", "--json", "--checkpoint", dir_s][..], &common].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let h = json["policies"][dir_s]["hit_ratio"].as_f64().expect("H");
        assert!((0.0..=1.0).contains(&h));
    }

    // A checkpoint used with other request settings is refused with exit code 2.
    let out = goalrank(&[
        "eval",
        "--checkpoint",
        run_s,
        "--data",
        data,
        "--artifacts",
        art,
        "--candidates",
        "14",
    ]);
    assert_input_error(&out, "another config");
    assert_input_error(&out, "data.candidates = 15, not 14");
}

/// `bench --json` on the tiny fixture (15 candidates, batch 8, d 16, one layer, K 4) with
/// `extra` flags: the first device's row.
fn bench_row(extra: &[&str]) -> serde_json::Value {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let data = fixture("ml-latest-tiny");
    let mut args = vec![
        "bench",
        "--json",
        "--data",
        data.to_str().expect("path"),
        "--artifacts",
        artifacts.path().to_str().expect("path"),
        "--candidates",
        "15",
        "--batch-size",
        "8",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--group-size",
        "4",
    ];
    args.extend_from_slice(extra);
    let out = goalrank(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    rows[0].clone()
}

#[test]
fn bench_reports_positive_speeds() {
    let row = bench_row(&["--steps", "1", "--latency-requests", "3"]);
    assert_eq!(row["device"], "flex (CPU)");
    for field in [
        "train_requests_per_s",
        "greedy_requests_per_s",
        "latency_p50_ms",
    ] {
        let v = row[field].as_f64().expect(field);
        assert!(v.is_finite() && v > 0.0, "{field} = {v}");
    }
    assert!(row["latency_p90_ms"].as_f64() >= row["latency_p50_ms"].as_f64());
}

#[test]
fn bench_profile_charges_each_phase_its_products() {
    let row = bench_row(&["--profile", "--steps", "1", "--latency-requests", "1"]);
    let phases = row["phases"].as_array().expect("phases");
    let field = |p: &serde_json::Value, f: &str| p[f].as_f64().expect(f);
    let mut multiply_adds = 0.0;
    for p in phases {
        let (ms, products) = (field(p, "ms"), field(p, "product_ms"));
        // The products run inside their phase, on the step's thread.
        assert!((0.0..=ms + 1e-3).contains(&products), "{p}");
        multiply_adds += field(p, "multiply_adds");
    }
    let phase = |name: &str| {
        phases
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} phase"))
    };
    for name in ["encode", "backward"] {
        assert!(field(phase(name), "product_ms") > 0.0, "{name}");
        assert!(field(phase(name), "multiply_adds") > 0.0, "{name}");
    }
    assert_eq!(field(phase("batch"), "multiply_adds"), 0.0);
    // Each phase's processor time is its own (not the process's total since it started, which
    // includes loading the data), at most every core busy for the whole step.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let cpu: f64 = phases.iter().map(|p| field(p, "cpu_ms")).sum();
        let wall: f64 = phases.iter().map(|p| field(p, "ms")).sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(
            phases.iter().all(|p| field(p, "cpu_ms") >= 0.0),
            "{phases:?}"
        );
        assert!(
            cpu > 0.0 && cpu <= 1.5 * cores * wall + 20.0,
            "{cpu} ms of processor time in {wall} ms"
        );
    }
    // The phases' products are the step's counted products.
    let gflop = row["train_gflop_per_step"].as_f64().expect("gflop");
    assert!(
        (2.0 * multiply_adds / 1e9 - gflop).abs() < 1e-12,
        "{multiply_adds} {gflop}"
    );
}

/// The counted product GFLOP per training step and per greedy batch on the tiny fixture with
/// L 4 and the decoder MLP `ratio · d` wide.
fn bench_gflop(ratio: usize) -> (f64, f64) {
    let ratio = ratio.to_string();
    let row = bench_row(&[
        "--list-len",
        "4",
        "--decoder-mlp",
        &ratio,
        "--steps",
        "2",
        "--latency-requests",
        "1",
    ]);
    let gflop = |field: &str| row[field].as_f64().expect(field);
    (gflop("train_gflop_per_step"), gflop("greedy_gflop"))
}

#[test]
fn bench_counts_the_decoder_mlps_products_exactly() {
    let (train_1, greedy_1) = bench_gflop(1);
    let (train_3, greedy_3) = bench_gflop(3);
    // Only the decoder MLP's two layers (d → r·d → d, 2 r d² multiply-adds per row) change.
    // On the CPU a step decodes the group's K lists of L steps on the autodiff graph and
    // teacher-forces the 2 others (the logged list, and the supervised target): forward and two
    // gradient products each. A request's lists share their first step's row, so each request
    // has 1 + K' (L − 1) rows for K' lists. A greedy batch decodes one list of L steps
    // per request; the ranking's per-candidate scores reuse its first step's query. 2 FLOPs
    // per multiply-add; b 8, K 4, L 4, d 16, r 3 − 1.
    let (b, k, l, d, dr) = (8.0, 4.0, 4.0, 16.0, 2.0);
    let per_row = 2.0 * 2.0 * dr * d * d;
    let rows = |lists: f64| b * (1.0 + lists * (l - 1.0));
    let train = per_row * 3.0 * (rows(k) + rows(2.0)) / 1e9;
    let greedy = per_row * b * l / 1e9;
    assert!(train_1 > 0.0 && greedy_1 > 0.0);
    assert!(
        ((train_3 - train_1) - train).abs() < 1e-12,
        "{train_1} {train_3} {train}"
    );
    assert!(
        ((greedy_3 - greedy_1) - greedy).abs() < 1e-12,
        "{greedy_1} {greedy_3} {greedy}"
    );
}

#[test]
fn experiment_main_writes_every_method_and_reuses_finished_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8 path");
    let data = fixture("ml-latest-tiny");
    let results = dir.path().join("results");
    let args = [
        "experiment",
        "main",
        "--smoke",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--candidates",
        "15",
        "--artifacts",
        root,
        "--results",
        results.to_str().expect("utf-8 path"),
    ];
    let out = goalrank(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = results.join("ml-latest-tiny");
    let csv = std::fs::read_to_string(table.join("main.csv")).expect("main.csv");
    let md = std::fs::read_to_string(table.join("main.md")).expect("main.md");
    for method in [
        "random",
        "pointwise DNN",
        "PRM-style",
        "supervised-only generator",
        "Generator–Evaluator",
        "Multi-Generator–Evaluator, k = 3",
        "Multi-Generator–Evaluator, k = 5",
        "GoalRank",
    ] {
        assert!(csv.contains(method), "{method} missing:\n{csv}");
        assert!(md.contains(method), "{method} missing:\n{md}");
    }
    // Logged data trains GoalRank and the policy gradient with the weights chosen on logged data.
    let main = goalrank::experiment::MainExperimentConfig::new();
    assert_ne!(main.logged_w_ref, main.w_ref);
    assert!(
        md.contains(&format!("w_ref {} (on per-step log π)", main.logged_w_ref)),
        "{md}"
    );
    assert!(
        md.contains(&format!("w {} (both its own choice", main.logged_pg_w_ref)),
        "{md}"
    );
    assert_ne!(main.logged_group_size, main.group_size);
    assert!(
        md.contains(&format!("GoalRank: K {}, τ", main.logged_group_size)),
        "{md}"
    );
    // Two seeds per row, and every H@6 mean is a fraction.
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let h = header
        .iter()
        .position(|c| *c == "h_at_6_mean")
        .expect("H@6 column");
    for line in lines {
        // The method is quoted and may hold commas: split the other cells off from the right.
        let cells: Vec<&str> = line.rsplitn(header.len(), ',').collect();
        let cells: Vec<&str> = cells.into_iter().rev().collect();
        assert_eq!(cells[1], "2", "{line}");
        let hit: f64 = cells[h].parse().expect("H@6 value");
        assert!((0.0..=1.0).contains(&hit), "{line}");
    }
    // A second run reuses the finished runs and reproduces the table.
    let run = dir.path().join("runs/ml-latest-tiny/main/seed-1/goalrank");
    assert!(run.join("done.json").is_file(), "finished runs are marked");
    let modified = |p: std::path::PathBuf| p.metadata().and_then(|m| m.modified()).expect("mtime");
    let before = modified(run.join("metrics.jsonl"));
    let again = goalrank(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        modified(run.join("metrics.jsonl")),
        before,
        "nothing is retrained"
    );
    let csv_again = std::fs::read_to_string(table.join("main.csv")).expect("main.csv");
    assert_eq!(csv, csv_again);
}

#[test]
fn eval_on_the_simulator_reports_utility_and_regret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8 path");
    let out = goalrank(&["eval", "--data", "sim:tiny", "--artifacts", root, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["dataset"], "sim-tiny");
    for policy in ["random", "popularity", "retriever"] {
        let p = &json["policies"][policy];
        let (u, r, o) = (
            p["utility"].as_f64().expect("utility"),
            p["regret"].as_f64().expect("regret"),
            p["optimum"].as_f64().expect("optimum"),
        );
        assert!(u > 0.0 && r >= 0.0 && (u + r - o).abs() < 1e-9, "{p}");
    }
    let bad = goalrank(&["eval", "--data", "sim:nope", "--artifacts", root]);
    assert_input_error(&bad, "sim:nope");
}

#[test]
fn studies_write_a_table_and_a_figure_on_the_simulator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8 path");
    let results = dir.path().join("results");
    let results_arg = results.to_str().expect("utf-8 path");
    for (study, exact, rows, points) in [
        ("group-size", false, vec!["K = 2", "K = 64"], 6),
        ("reward-noise", false, vec!["λ = 0", "λ = 0.5", "λ = 1"], 4),
        // On the exact utility: its own files, noise up to 4.
        ("reward-noise", true, vec!["λ = 0", "λ = 2", "λ = 4"], 5),
    ] {
        let mut args = vec![
            "experiment",
            study,
            "--smoke",
            "--data",
            "sim:tiny",
            "--artifacts",
            root,
            "--results",
            results_arg,
        ];
        if exact {
            args.push("--exact-reward");
        }
        let out = goalrank(&args);
        assert!(out.status.success(), "{study}: {}", stderr(&out));
        let name = if exact {
            format!("{study}-exact")
        } else {
            study.to_string()
        };
        let base = results.join("sim-tiny");
        let md = std::fs::read_to_string(base.join(format!("{name}.md"))).expect("md");
        for row in rows.iter().chain(&["reference: supervised-only generator"]) {
            assert!(md.contains(row), "{name}: {row} missing\n{md}");
        }
        assert!(md.contains("| utility | regret |"), "{md}");
        assert_eq!(md.contains("GoalRank on the exact reward"), exact, "{md}");
        let svg = std::fs::read_to_string(base.join(format!("{name}.svg"))).expect("svg");
        assert_eq!(
            svg.matches("<circle").count(),
            points,
            "{name}: one point per setting"
        );
    }

    // It needs the simulator, and it belongs to the studies.
    let ml = goalrank(&[
        "experiment",
        "reward-noise",
        "--exact-reward",
        "--smoke",
        "--artifacts",
        root,
        "--candidates",
        "15",
        "--data",
        fixture("ml-latest-tiny").to_str().expect("utf-8"),
    ]);
    assert_input_error(&ml, "--exact-reward");
    let main = goalrank(&[
        "experiment",
        "main",
        "--exact-reward",
        "--smoke",
        "--data",
        "sim:tiny",
    ]);
    assert_input_error(&main, "--exact-reward");
}

/// With data-parallel copies each copy's thread runs its own products at the same time: a
/// phase's products are those of the step's thread, within the phase's time (the totals over
/// every thread came to more than the phase). The simulator's default model, where the copies'
/// products are large enough to overlap.
#[test]
fn bench_profile_with_copies_keeps_each_phases_products_within_it() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let out = goalrank(&[
        "bench",
        "--json",
        "--data",
        "sim:tiny",
        "--artifacts",
        artifacts.path().to_str().expect("path"),
        "--batch-size",
        "64",
        "--data-parallel",
        "4",
        "--profile",
        "--steps",
        "1",
        "--latency-requests",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let phases = rows[0]["phases"].as_array().expect("phases");
    assert!(phases.iter().any(|p| p["name"] == "replicas"), "{phases:?}");
    for p in phases {
        let (ms, products) = (
            p["ms"].as_f64().expect("ms"),
            p["product_ms"].as_f64().expect("product_ms"),
        );
        assert!((0.0..=ms + 1e-3).contains(&products), "{p}");
    }
}

/// A batch larger than the train split runs on the whole split: the settings, the header and
/// the requests per second say so (they were the asked batch's).
#[test]
fn bench_reports_the_batch_it_ran_and_its_settings() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let data = fixture("ml-latest-tiny");
    let run = |json: bool| {
        let mut args = vec![
            "bench",
            "--data",
            data.to_str().expect("path"),
            "--artifacts",
            artifacts.path().to_str().expect("path"),
            "--candidates",
            "15",
            "--batch-size",
            "100000",
            "--d-model",
            "16",
            "--layers",
            "1",
            "--group-size",
            "4",
            "--steps",
            "1",
            "--latency-requests",
            "1",
        ];
        if json {
            args.push("--json");
        }
        let out = goalrank(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        out
    };
    let rows: serde_json::Value = serde_json::from_slice(&run(true).stdout).expect("json");
    let row = &rows[0];
    let settings = &row["settings"];
    let batch = settings["batch_size"].as_f64().expect("batch_size");
    assert!((1.0..100000.0).contains(&batch), "{settings}");
    for (field, value) in [("d_model", 16.0), ("layers", 1.0), ("group_size", 4.0)] {
        assert_eq!(settings[field].as_f64(), Some(value), "{field}");
    }
    assert_eq!(settings["candidates"].as_f64(), Some(15.0));
    let step_s = row["train_step_ms"].as_f64().expect("step") / 1e3;
    let rate = row["train_requests_per_s"].as_f64().expect("rate");
    assert!(
        (rate * step_s - batch).abs() < 1e-6 * batch,
        "{rate} {step_s} {batch}"
    );
    let flops = row["train_gflop_per_step"].as_f64().expect("gflop");
    let flops_rate = row["train_gflops_per_s"].as_f64().expect("gflop/s");
    assert!((flops_rate * step_s - flops).abs() < 1e-9 + 1e-6 * flops);
    let table = String::from_utf8_lossy(&run(false).stdout).to_string();
    assert!(
        table.contains(&format!("batch {batch} (all the train split")),
        "{table}"
    );
}

#[test]
fn malformed_row_of_a_crlf_file_names_its_own_line() {
    let dir = copy_fixture("ml-latest-tiny");
    let ratings = dir.path().join("ratings.csv");
    replace_line(&ratings, 4, "1,3,4.0,yesterday");
    let text = std::fs::read_to_string(&ratings).expect("read");
    std::fs::write(&ratings, text.replace('\n', "\r\n")).expect("write");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = goalrank(&["data", "--data", data, "--artifacts", data]);
    assert_input_error(&out, "ratings.csv:4: field `timestamp`");
}

/// Settings `bench` refuses name its own flags: the model width where the heads do not split
/// it (`bench` has no --heads), the simulator's sizes however large, and more copies than a
/// batch has requests.
#[test]
fn bench_refuses_bad_sizes_naming_its_flags() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let art = artifacts.path().to_str().expect("path");
    let huge = usize::MAX.to_string();
    for (flags, place) in [
        (vec!["--d-model", "3"], "--d-model = 3"),
        (vec!["--candidates", huge.as_str()], "--candidates"),
        (vec!["--list-len", huge.as_str()], "--list-len"),
        (
            vec!["--batch-size", "8", "--data-parallel", "9"],
            "--data-parallel = 9",
        ),
    ] {
        let mut args = vec!["bench", "--data", "sim:tiny", "--artifacts", art];
        args.extend(flags.iter().copied());
        let out = goalrank(&args);
        assert_input_error(&out, place);
    }
}

/// Sizes no machine can hold are refused naming their flag, whatever the command, instead of
/// overflowing or aborting on allocation.
#[test]
fn huge_sizes_are_refused_by_flag_not_by_a_crash() {
    let root = tempfile::tempdir().expect("tempdir");
    let art = root.path().to_str().expect("path");
    let run = root.path().join("run");
    let run = run.to_str().expect("path");
    let huge = usize::MAX.to_string();
    let wide = (usize::MAX - 3).to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "reward", "--d-model", &wide], "--d-model"),
        (vec!["train", "reward", "--layers", &huge], "--layers"),
        (
            vec!["train", "reward", "--random-lists", "1000000"],
            "--random-lists",
        ),
        (vec!["train", "pointwise", "--d-model", &wide], "--d-model"),
        (
            vec!["train", "pointwise", "--context-layers", &huge],
            "--context-layers",
        ),
        (
            vec!["train", "goalrank", "--reward", "oracle", "--layers", &huge],
            "--layers",
        ),
        (
            vec!["eval", "--pick-with", art, "--pick-k", &huge],
            "--pick-k",
        ),
    ];
    for (command, flag) in cases {
        let mut args = command.clone();
        args.extend(["--data", "sim:tiny", "--artifacts", art]);
        if command[0] == "train" {
            args.extend(["--run", run]);
        }
        let out = goalrank(&args);
        assert_input_error(&out, &format!("{flag} = "));
        assert!(
            !std::path::Path::new(run).exists(),
            "{command:?} wrote the run"
        );
    }
}

/// A figure that was not measured is not reported as 0: `data --json` gives no retriever
/// recall on the simulator (the table leaves it out), and `eval` on logged data whose split
/// holds no positive refuses rather than print means over no request.
#[test]
fn figures_not_measured_are_not_zeros() {
    let root = tempfile::tempdir().expect("tempdir");
    let art = root.path().to_str().expect("path");
    let out = goalrank(&["data", "--data", "sim:tiny", "--artifacts", art, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(json["retriever_recall_at_50"].is_null(), "{json}");
    assert!(json["popularity_recall_at_50"].is_null(), "{json}");

    let dir = copy_fixture("ml-latest-tiny");
    let ratings = dir.path().join("ratings.csv");
    let text = std::fs::read_to_string(&ratings).expect("read");
    let mut lines = text.lines();
    let mut low = vec![lines.next().expect("header").to_string()];
    for line in lines {
        let mut fields: Vec<&str> = line.split(',').collect();
        fields[2] = "1.0";
        low.push(fields.join(","));
    }
    std::fs::write(&ratings, low.join("\n") + "\n").expect("write");
    let data = dir.path().to_str().expect("path");
    let out = goalrank(&[
        "eval",
        "--data",
        data,
        "--artifacts",
        art,
        "--candidates",
        "15",
    ]);
    assert_input_error(&out, "--split test: none of its");
}

/// A setting given twice is one setting or an error, never two answers: `eval` scores a
/// repeated policy once, a simulator option given twice is refused, and `experiment logging`
/// refuses an ε it would override.
#[test]
fn repeated_or_overridden_settings_are_not_silent() {
    let root = tempfile::tempdir().expect("tempdir");
    let art = root.path().to_str().expect("path");
    let eval = |json: bool| {
        let mut args = vec![
            "eval",
            "--data",
            "sim:tiny",
            "--artifacts",
            art,
            "--policy",
            "random,random",
        ];
        if json {
            args.push("--json");
        }
        let out = goalrank(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let rows = eval(false)
        .lines()
        .filter(|l| l.starts_with("random "))
        .count();
    assert_eq!(rows, 1);
    let json: serde_json::Value = serde_json::from_str(&eval(true)).expect("json");
    assert_eq!(json["policies"].as_object().map(|m| m.len()), Some(1));
    let out = goalrank(&[
        "data",
        "--data",
        "sim:tiny,epsilon=0.5,epsilon=0.2",
        "--artifacts",
        art,
    ]);
    assert_input_error(&out, "given twice");
    let out = goalrank(&[
        "experiment",
        "logging",
        "--data",
        "sim:tiny,epsilon=0.5",
        "--artifacts",
        art,
    ]);
    assert_input_error(&out, "--data = sim:tiny,epsilon=0.5");
}

/// A file where a folder is needed, and an exact-reward study on logged data, are refused
/// before any data is built or folder made.
#[test]
fn folders_and_the_simulator_are_checked_before_any_work() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let file_s = file.to_str().expect("path");
    let art = root.path().join("art");
    let art_s = art.to_str().expect("path");
    let out = goalrank(&["data", "--data", "sim:tiny", "--artifacts", file_s]);
    assert_input_error(&out, "--artifacts");
    let out = goalrank(&[
        "experiment",
        "scaling",
        "--data",
        "sim:tiny",
        "--artifacts",
        art_s,
        "--results",
        file_s,
    ]);
    assert_input_error(&out, "--results");
    let results = root.path().join("results");
    let movielens = fixture("ml-latest-tiny");
    let out = goalrank(&[
        "experiment",
        "scaling",
        "--exact-reward",
        "--data",
        movielens.to_str().expect("path"),
        "--artifacts",
        art_s,
        "--results",
        results.to_str().expect("path"),
    ]);
    assert_input_error(&out, "--exact-reward");
    assert!(!results.exists() && !art.exists());
}

/// A usage error names what it is about in its one line: the argument a "not provided" error
/// lacks (`--pick-k` needs `--pick-with`; `train goalrank` needs `--reward`).
#[test]
fn usage_errors_name_the_missing_argument() {
    let root = tempfile::tempdir().expect("tempdir");
    let art = root.path().to_str().expect("path");
    let out = goalrank(&[
        "eval",
        "--data",
        "sim:tiny",
        "--artifacts",
        art,
        "--pick-k",
        "3",
    ]);
    assert_input_error(&out, "not provided: --pick-with");
    let out = goalrank(&[
        "train",
        "goalrank",
        "--data",
        "sim:tiny",
        "--artifacts",
        art,
    ]);
    assert_input_error(&out, "not provided: --reward");
}
