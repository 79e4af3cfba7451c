//! wgpu smoke test: the same reward-model steps on Vulkan (Mesa's software driver in CI) and on
//! the CPU give the same losses, and the fused WGSL decoder step agrees with its tensor-op twin.
//!
//! Without a Vulkan adapter it reports itself skipped, unless `GOALRANK_REQUIRE_WGPU` is set
//! (as `.ci/run` sets it).
//!
//! It runs `goalrank check-device` in a child process: a wgpu device created in a test thread
//! crashed the test binary at exit (SIGSEGV after all tests passed) on Mesa's lavapipe, while
//! the command line exits cleanly.

use std::process::Command;

use crate::common::fixture;

#[test]
fn wgpu_and_flex_give_the_same_losses() {
    let artifacts = tempfile::tempdir().expect("tempdir");
    let data = fixture("ml-latest-tiny");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_goalrank"))
            .args(["check-device", "--candidates", "15", "--data"])
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
            "check-device ended by a signal ({:?}); retrying:\n{}",
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
            "skipped: wgpu_and_flex_give_the_same_losses needs a Vulkan adapter; install one \
             (apt-get install mesa-vulkan-drivers) to run it, or set GOALRANK_REQUIRE_WGPU=1 to \
             make its absence a failure"
        );
        return;
    }
    assert!(
        out.status.success(),
        "check-device failed ({:?}); without a Vulkan adapter install one, e.g. \
         `apt-get install mesa-vulkan-drivers` (as .ci/run does):\n{stderr}",
        out.status
    );
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
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
}
