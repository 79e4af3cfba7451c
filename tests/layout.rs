//! The layers of `src/lib.rs` hold: every `crate::<module>` a file names belongs to its own
//! layer or one below it, and nothing names an entry (`web`, `cli`).

use std::path::{Path, PathBuf};

/// Layer of each top-level module, lowest first (see the crate docs).
const LAYERS: &[(&str, usize)] = &[
    ("error", 0),
    // The crate-root macro that writes a line to stderr without panicking.
    ("say", 0),
    ("files", 0),
    ("device", 0),
    ("data", 1),
    ("model", 2),
    ("train", 3),
    ("eval", 4),
    ("run", 5),
    ("experiment", 6),
    ("rank", 6),
    ("app", 7),
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<name>` in `text` (use lines and paths alike), with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, name));
            rest = after;
        }
    }
    found
}

/// Names used inside `use crate::{a, b::c}` groups.
fn grouped_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(i) = line.find("use crate::{") {
            let group = &line[i + "use crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name.chars().next().is_some_and(|c| c.is_lowercase()) {
                    found.push((n + 1, name));
                }
            }
        }
    }
    found
}

#[test]
fn no_upward_imports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("name")
            .trim_end_matches(".rs")
            .to_string();
        // Entries (lib, main, cli, web) may use every layer.
        let Some(own) = layer(&top) else { continue };
        let text = std::fs::read_to_string(file).expect("read");
        for (line, name) in crate_paths(&text).into_iter().chain(grouped_paths(&text)) {
            if name.is_empty() || name == "Error" || name == "Result" || name == top {
                continue;
            }
            match layer(&name) {
                Some(l) if l < own || (l == own && own == 0) => {}
                Some(_) => problems.push(format!(
                    "{}:{line}: `{top}` imports `{name}`, which is not below it",
                    relative.display()
                )),
                None => problems.push(format!(
                    "{}:{line}: `{top}` imports `{name}`, an entry or unknown module",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layer violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_an_upward_import() {
    let text = "use crate::experiment::Report;\nfn f() { crate::web::start(); }\n";
    let names: Vec<String> = crate_paths(text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["experiment", "web"]);
    assert!(layer("experiment") > layer("train"));
    assert_eq!(layer("web"), None);
    let grouped: Vec<String> = grouped_paths("use crate::{Error, files, run::fit};")
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(grouped, ["files", "run"]);
}
