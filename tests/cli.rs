//! The `goalrank` binary: exit codes, one-line errors, JSON output.

use std::process::{Command, Output};

use crate::common::{copy_fixture, fixture, replace_line};

fn goalrank(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goalrank"))
        .args(args)
        .output()
        .expect("run goalrank")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

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
