//! Mutation fuzzing of the input readers: the three MovieLens layouts and the `rank` JSON-lines
//! reader get the committed fixtures with random damage (flipped bytes, separators, quotes,
//! newlines, byte-order marks, cut, repeated and swapped pieces). Whatever the input, a reader
//! must not panic, and an error must be one line; a parse error must name a line of the file.
//!
//! `cargo test --release --test tests fuzz` runs a short round of each (as CI does);
//! `GOALRANK_FUZZ_SECONDS=600 cargo test --release --test tests fuzz::ml_latest -- --nocapture`
//! runs one reader for ten minutes. A failing input is saved under the system's temporary
//! folder (`goalrank-fuzz-<reader>-*`) and named in the failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use goalrank::Error;
use goalrank::data::movielens;

use crate::common::{fixture, small_config};

/// Cases per reader when no duration is asked for.
const SHORT_ROUND: usize = 300;

/// Bytes that make parsers take unusual paths.
const INTERESTING: &[u8] = b",\"\n\r:|\t -.eE0123456789\xEF\xBB\xBF\xFF\x00{}[]";

/// A xorshift generator: reproducible damage without a dependency.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// One to four random edits of `input`.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len();
            let at = self.below(len + 1);
            match self.below(7) {
                0 if len > 0 => out[at.min(len - 1)] = self.next() as u8,
                1 => out.insert(at, INTERESTING[self.below(INTERESTING.len())]),
                2 if len > 0 => {
                    let end = (at + 1 + self.below(64)).min(len);
                    out.drain(at.min(end)..end);
                }
                3 if len > 0 => {
                    let start = self.below(len);
                    let end = (start + 1 + self.below(200)).min(len);
                    let piece = out[start..end].to_vec();
                    out.splice(at..at, piece);
                }
                4 => out.truncate(at),
                5 => {
                    let bom = [0xEF, 0xBB, 0xBF];
                    out.splice(0..0, bom);
                }
                _ => {
                    // Swap two lines.
                    let text = String::from_utf8_lossy(&out).into_owned();
                    let mut lines: Vec<&str> = text.split('\n').collect();
                    if lines.len() > 2 {
                        let (a, b) = (self.below(lines.len()), self.below(lines.len()));
                        lines.swap(a, b);
                    }
                    out = lines.join("\n").into_bytes();
                }
            }
        }
        out
    }
}

/// Runs `check` on damaged variants of `seeds` (file name, contents) until the time asked for by
/// `GOALRANK_FUZZ_SECONDS` has passed, or for a short round. `check` gets the damaged file's
/// index and bytes and returns the reader's error text, if any.
fn fuzz(reader: &str, seeds: &[(&str, Vec<u8>)], check: impl Fn(usize, &[u8]) -> Option<String>) {
    let seconds: Option<u64> = std::env::var("GOALRANK_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut mutator = Mutator(0x9E37_79B9_7F4A_7C15 ^ reader.len() as u64);
    let mut cases = 0usize;
    let mut errors = 0usize;
    loop {
        match deadline {
            Some(d) if Instant::now() >= d => break,
            None if cases >= SHORT_ROUND => break,
            _ => {}
        }
        let which = mutator.below(seeds.len());
        let input = mutator.mutate(&seeds[which].1);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(which, &input)));
        let failure = match outcome {
            Err(_) => Some("panicked".to_string()),
            Ok(Some(text)) if text.contains('\n') => Some(format!("a multi-line error: {text}")),
            Ok(Some(_)) => {
                errors += 1;
                None
            }
            Ok(None) => None,
        };
        if let Some(failure) = failure {
            let saved = std::env::temp_dir()
                .join(format!("goalrank-fuzz-{reader}-{cases}-{}", seeds[which].0));
            let _ = std::fs::write(&saved, &input);
            panic!("{reader}: {failure}; input saved as {}", saved.display());
        }
        cases += 1;
    }
    eprintln!("fuzz {reader}: {cases} inputs, {errors} refused with one line, no panic");
}

/// The fixture files of a MovieLens layout.
fn layout_files(name: &str, files: [&'static str; 2]) -> Vec<(&'static str, Vec<u8>)> {
    files
        .iter()
        .map(|f| (*f, std::fs::read(fixture(name).join(f)).expect("fixture")))
        .collect()
}

/// Loads a MovieLens folder whose file `which` is replaced by `input`.
fn load_damaged(
    dir: &Path,
    files: &[(&'static str, Vec<u8>)],
    which: usize,
    input: &[u8],
) -> Option<String> {
    for (i, (name, bytes)) in files.iter().enumerate() {
        let contents = if i == which { input } else { bytes };
        std::fs::write(dir.join(name), contents).expect("write");
    }
    match movielens::load(dir) {
        Ok(log) => {
            assert!(
                !log.ratings.is_empty(),
                "a log without ratings was accepted"
            );
            None
        }
        Err(err) => {
            if let Error::Parse { line, path, .. } = &err {
                let lines = std::fs::read(path)
                    .expect("read")
                    .split(|&b| b == b'\n')
                    .count();
                assert!(
                    (1..=lines + 1).contains(line),
                    "line {line} of {lines}: {err}"
                );
            }
            Some(err.to_string())
        }
    }
}

fn fuzz_layout(reader: &str, fixture_name: &str, files: [&'static str; 2]) {
    let files = layout_files(fixture_name, files);
    let dir = tempfile::tempdir().expect("tempdir");
    fuzz(reader, &files, |which, input| {
        load_damaged(dir.path(), &files, which, input)
    });
}

#[test]
fn ml_latest() {
    fuzz_layout("ml_latest", "ml-latest-tiny", ["ratings.csv", "movies.csv"]);
}

#[test]
fn ml_100k() {
    fuzz_layout("ml_100k", "ml-100k-tiny", ["u.data", "u.item"]);
}

#[test]
fn ml_1m() {
    fuzz_layout("ml_1m", "ml-1m-tiny", ["ratings.dat", "movies.dat"]);
}

#[test]
fn rank_requests() {
    let log = movielens::load(&fixture("ml-latest-tiny")).expect("load");
    let dataset = small_config().build(&log, "tiny", false).expect("build");
    let seeds = [(
        "rank-requests.jsonl",
        std::fs::read(fixture("rank-requests.jsonl")).expect("fixture"),
    )];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("requests.jsonl");
    fuzz("rank_requests", &seeds, |_, input| {
        std::fs::write(&path, input).expect("write");
        match goalrank::rank::read_rank_requests(&path, &dataset) {
            Ok(requests) => {
                // What the reader promises of every request it accepts.
                for (_, request) in &requests {
                    let c = &request.candidates;
                    assert!(c.len() >= dataset.config.list_len, "too few candidates");
                    assert!(c.iter().all(|&i| (i as usize) < dataset.items.len()));
                    let distinct: std::collections::HashSet<_> = c.iter().collect();
                    assert_eq!(distinct.len(), c.len(), "a repeated candidate");
                }
                None
            }
            Err(err) => Some(err.to_string()),
        }
    });
}
