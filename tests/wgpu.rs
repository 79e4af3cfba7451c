//! wgpu smoke tests: the same reward-model steps on Vulkan (Mesa's software driver in CI) and on
//! the CPU give the same losses, the fused WGSL decoder step agrees with its tensor-op twin,
//! half-precision weights load on Vulkan as on the CPU, and
//! `bench` counts a training step's kernel launches by phase and by kernel.
//!
//! Without a Vulkan adapter each reports itself skipped, unless `GOALRANK_REQUIRE_WGPU` is set
//! (as `.ci/run` sets it).
//!
//! They run `goalrank` in a child process: a wgpu device created in a test thread
//! crashed the test binary at exit (SIGSEGV after all tests passed) on Mesa's lavapipe, while
//! the command line exits cleanly.

use std::process::Command;

use crate::common::fixture;

/// Runs `goalrank ARGS` (a command that needs a Vulkan adapter) and returns its JSON output, or
/// `None` where there is no adapter and `GOALRANK_REQUIRE_WGPU` is not set (the test is then
/// skipped, and says so).
fn run_on_vulkan(test: &str, args: &[&str]) -> Option<serde_json::Value> {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let data = fixture("ml-latest-tiny");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_goalrank"))
            .args(args)
            .args(["--candidates", "15", "--data"])
            .arg(&data)
            .arg("--artifacts")
            .arg(artifacts.path())
            .output()
            .expect("run goalrank")
    };
    // Mesa's software Vulkan driver has been seen to crash (SIGSEGV) while the process exits,
    // after the comparison was printed, about once in a few dozen runs on a loaded machine. A
    // run killed by a signal is retried twice and reported; an error exit is not retried.
    let mut out = run();
    for _ in 0..2 {
        if out.status.code().is_some() {
            break;
        }
        eprintln!(
            "{} ended by a signal ({:?}); retrying:\n{}",
            args[0],
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out = run();
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A machine without a Vulkan driver skips the check and says so; CI sets
    // GOALRANK_REQUIRE_WGPU=1 so that a missing adapter fails there instead.
    if !out.status.success()
        && stderr.contains("no Vulkan adapter")
        && std::env::var_os("GOALRANK_REQUIRE_WGPU").is_none()
    {
        eprintln!(
            "skipped: {test} needs a Vulkan adapter; install one (apt-get install \
             mesa-vulkan-drivers) to run it, or set GOALRANK_REQUIRE_WGPU=1 to make its absence \
             a failure"
        );
        return None;
    }
    assert!(
        out.status.success(),
        "{} failed ({:?}); without a Vulkan adapter install one, e.g. \
         `apt-get install mesa-vulkan-drivers` (as .ci/run does):\n{stderr}",
        args[0],
        out.status
    );
    Some(serde_json::from_slice(&out.stdout).expect("json"))
}

#[test]
fn wgpu_and_flex_give_the_same_losses() {
    let Some(check) = run_on_vulkan("wgpu_and_flex_give_the_same_losses", &["check-device"]) else {
        return;
    };
    let reference = check["reference"].as_array().expect("losses");
    assert_eq!(reference.len(), 2);
    assert!(
        reference
            .iter()
            .all(|l| l.as_f64().is_some_and(f64::is_finite))
    );
    assert!(check["max_relative_difference"].as_f64().expect("diff") <= 1e-3);
    // The fused WGSL decoder step ran on wgpu and agreed with its tensor-op twin.
    let kernels = &check["kernels"];
    assert_eq!(kernels["kernel_ran"], true, "{kernels}");
    assert_eq!(kernels["different_picks"], 0, "{kernels}");
    assert!(kernels["max_log_prob_difference"].as_f64().expect("diff") <= 1e-4);
    assert_eq!(kernels["max_chosen_difference"], 0.0, "{kernels}");
    // So did the fused Adam update, against Burn's.
    let adam = &check["adam"];
    assert_eq!(adam["kernel_ran"], true, "{adam}");
    assert_eq!(adam["steps"], 6, "{adam}");
    assert!(adam["max_relative_difference"].as_f64().expect("diff") <= 1e-4);
    // f16 weights loaded on wgpu are, as f32, the ones loaded on the CPU.
    assert_eq!(check["half_precision_load_equal"], true, "{check}");
}

#[test]
fn bench_counts_a_training_steps_launches_by_phase_and_by_kernel() {
    let Some(rows) = run_on_vulkan(
        "bench_counts_a_training_steps_launches_by_phase_and_by_kernel",
        &[
            "bench",
            "--device",
            "wgpu",
            "--profile",
            "--json",
            "--batch-size",
            "4",
            "--d-model",
            "16",
            "--layers",
            "1",
            "--group-size",
            "2",
            "--steps",
            "1",
            "--latency-requests",
            "1",
        ],
    ) else {
        return;
    };
    let row = &rows[0];
    let per_step = row["train_launches_per_step"].as_f64().expect("launches");
    assert!(per_step > 0.0, "{row}");
    // One timed step: its phases and its kernels each account for every launch of the step.
    let launches = |items: &serde_json::Value| -> f64 {
        let items = items.as_array().expect("a list");
        items
            .iter()
            .map(|i| i["launches"].as_u64().expect("n"))
            .sum::<u64>() as f64
    };
    assert_eq!(launches(&row["phases"]), per_step, "{}", row["phases"]);
    for phase in ["encode", "backward"] {
        let phases = row["phases"].as_array().expect("phases");
        let p = phases.iter().find(|p| p["name"] == phase).expect(phase);
        assert!(p["launches"].as_u64() > Some(0), "{p}");
    }
    assert_eq!(
        launches(&row["train_kernels"]),
        per_step,
        "{}",
        row["train_kernels"]
    );
}
