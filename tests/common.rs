//! Shared fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use goalrank::data::RequestConfig;

/// Runs the `goalrank` binary with `args`.
pub fn goalrank(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_goalrank"))
        .args(args)
        .output()
        .expect("run goalrank")
}

/// A finished command's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A committed fixture folder under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Request config small enough for the fixtures: 15 candidates, lists of 6.
pub fn small_config() -> RequestConfig {
    RequestConfig::new().with_candidates(15)
}

/// Copies a fixture folder into a fresh temporary folder, to corrupt it safely.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

/// Replaces 1-based line `line` of `path` with `text`.
pub fn replace_line(path: &Path, line: usize, text: &str) {
    let content = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<&str> = content.lines().collect();
    lines[line - 1] = text;
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}
