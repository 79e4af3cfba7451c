//! Property-based fuzzing (proptest) of the input readers.
//!
//! - Damage: the three MovieLens layouts and the `rank` JSON-lines reader get the committed
//!   fixtures with one to four random edits (set, inserted and deleted bytes, copied pieces, a
//!   cut, a byte-order mark, swapped lines). Whatever the input, a reader must not panic, an error
//!   must be one line, and a parse error must name a line of the file.
//! - Structure: `rank` request files are generated field by field, each field either valid or
//!   broken in one of several ways, and the reader must accept exactly the valid files (with
//!   their candidates as written) and refuse the others naming the broken line and field.
//!
//! A failure is shrunk by proptest to a smallest input that still fails, which is saved under the
//! system's temporary folder (`goalrank-fuzz-<reader>-*`) and named in the failure.
//! `cargo test --release --test tests fuzz` runs a short round of each (as CI does);
//! `GOALRANK_FUZZ_SECONDS=600 cargo test --release --test tests fuzz::ml_latest -- --nocapture`
//! runs one for ten minutes, in rounds with fresh seeds.

use std::path::Path;
use std::time::{Duration, Instant};

use goalrank::Error;
use goalrank::data::movielens;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::common::{fixture, small_config};

/// Cases per round; one round unless a duration is asked for.
const ROUND: u32 = 300;

/// Bytes that make parsers take unusual paths.
const INTERESTING: &[u8] = b",\"\n\r:|\t -.eE0123456789\xEF\xBB\xBF\xFF\x00{}[]";

/// One edit of an input; positions are resolved against the input's length when applied.
#[derive(Clone, Debug)]
enum Edit {
    Set(Index, u8),
    Insert(Index, Index),
    Delete(Index, usize),
    Copy(Index, usize, Index),
    Truncate(Index),
    Bom,
    SwapLines(Index, Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<Index>(), 1usize..64).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<Index>(), 1usize..200, any::<Index>()).prop_map(|(a, n, b)| Edit::Copy(a, n, b)),
        any::<Index>().prop_map(Edit::Truncate),
        Just(Edit::Bom),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// `input` with `edits` applied in turn.
fn damage(input: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = input.to_vec();
    for edit in edits {
        let len = out.len();
        match edit {
            Edit::Set(at, byte) if len > 0 => out[at.index(len)] = *byte,
            Edit::Insert(at, which) => {
                let byte = INTERESTING[which.index(INTERESTING.len())];
                out.insert(at.index(len + 1), byte);
            }
            Edit::Delete(at, n) if len > 0 => {
                let start = at.index(len);
                out.drain(start..(start + n).min(len));
            }
            Edit::Copy(from, n, to) if len > 0 => {
                let start = from.index(len);
                let piece = out[start..(start + n).min(len)].to_vec();
                let to = to.index(len + 1);
                out.splice(to..to, piece);
            }
            Edit::Truncate(at) => out.truncate(at.index(len + 1)),
            Edit::Bom => {
                out.splice(0..0, [0xEF, 0xBB, 0xBF]);
            }
            Edit::SwapLines(a, b) => {
                let text = String::from_utf8_lossy(&out).into_owned();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let n = lines.len();
                lines.swap(a.index(n), b.index(n));
                out = lines.join("\n").into_bytes();
            }
            _ => {}
        }
    }
    out
}

/// The seconds asked for by `GOALRANK_FUZZ_SECONDS`, if any.
fn duration() -> Option<Duration> {
    std::env::var("GOALRANK_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

/// Runs `test` on values of `strategy` for one round, or in rounds with fresh seeds until the
/// time asked for by `GOALRANK_FUZZ_SECONDS` has passed. A failure is shrunk, `save` writes the
/// smallest failing value's input under the temporary folder, and the test fails naming it.
fn fuzz<S: Strategy>(
    reader: &str,
    strategy: S,
    save: impl Fn(&S::Value) -> Vec<u8>,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let deadline = duration().map(|d| Instant::now() + d);
    let config = Config {
        cases: ROUND,
        failure_persistence: None,
        ..Config::default()
    };
    let mut round = 0u64;
    loop {
        // Reproducible rounds: the seed is the reader's name and the round's number.
        let mut seed = [0u8; 32];
        for (i, b) in reader.bytes().chain(round.to_le_bytes()).enumerate() {
            seed[i % 32] ^= b;
        }
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
        let mut runner = TestRunner::new_with_rng(config.clone(), rng);
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(why, value)) => {
                let saved = std::env::temp_dir().join(format!("goalrank-fuzz-{reader}-{round}"));
                let _ = std::fs::write(&saved, save(&value));
                panic!(
                    "{reader}: {why}; smallest input saved as {}",
                    saved.display()
                );
            }
            Err(TestError::Abort(why)) => panic!("{reader}: aborted: {why}"),
        }
        round += 1;
        if deadline.is_none_or(|d| Instant::now() >= d) {
            break;
        }
    }
    eprintln!(
        "fuzz {reader}: {} rounds of {ROUND} inputs, no failure",
        round
    );
}

/// Fuzzes a reader with damaged variants of `seeds` (file name, contents): `check` gets the
/// damaged file's index and bytes and returns the reader's error text, if any.
fn fuzz_damage(
    reader: &str,
    seeds: &[(&str, Vec<u8>)],
    check: impl Fn(usize, &[u8]) -> Option<String>,
) {
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 1..5));
    fuzz(
        reader,
        strategy,
        |(which, edits)| damage(&seeds[*which].1, edits),
        |(which, edits)| {
            let input = damage(&seeds[which].1, &edits);
            if let Some(text) = check(which, &input) {
                prop_assert!(!text.contains('\n'), "a multi-line error: {text}");
            }
            Ok(())
        },
    );
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
    fuzz_damage(reader, &files, |which, input| {
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
    fuzz_damage("rank_requests", &seeds, |_, input| {
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

/// How a generated request field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    User,
    History,
    HistoryLabels,
    Candidates,
}

/// One way of breaking a field: the reader must refuse it, naming the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Break {
    /// An id that is not in the data.
    Unknown,
    /// A value of the wrong JSON type.
    WrongType(usize),
    /// Candidates: an item twice; history labels: one label too many.
    Repeat,
    /// Candidates: fewer than L; history labels: a label that is not 0 or 1.
    Short,
}

/// A generated request, by dense indices into the dataset's users and items.
#[derive(Clone, Debug)]
struct GenRequest {
    user: Index,
    history: Vec<Index>,
    labels: Option<Vec<u8>>,
    candidates: Vec<Index>,
}

fn gen_request() -> impl Strategy<Value = GenRequest> {
    (
        any::<Index>(),
        prop::collection::vec(any::<Index>(), 0..8),
        any::<bool>(),
        prop::collection::vec(any::<Index>(), 6..20),
    )
        .prop_flat_map(|(user, history, with_labels, candidates)| {
            let n = history.len();
            let labels = if with_labels {
                prop::collection::vec(0u8..=1, n..=n).prop_map(Some).boxed()
            } else {
                Just(None).boxed()
            };
            (Just(user), Just(history), labels, Just(candidates))
        })
        .prop_map(|(user, history, labels, candidates)| GenRequest {
            user,
            history,
            labels,
            candidates,
        })
}

/// Wrong JSON types for a field of ids.
const WRONG_TYPES: [&str; 6] = ["\"7\"", "1.5", "-1", "true", "{}", "[[1]]"];

/// Writes `request` as a JSON line, with `broken` applied. Returns the line and the raw
/// candidates the reader must return when nothing is broken.
fn write_request(
    dataset: &goalrank::data::Dataset,
    request: &GenRequest,
    broken: Option<(Field, Break)>,
) -> (String, Vec<u64>) {
    let l = dataset.config.list_len;
    let unknown_item = dataset.items.iter().map(|i| i.raw_id).max().unwrap_or(0) + 1;
    let ids = |v: &[u64]| {
        format!(
            "[{}]",
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        )
    };
    let is = |f: Field| broken.filter(|(b, _)| *b == f).map(|(_, k)| k);

    let user = match is(Field::User) {
        Some(Break::WrongType(i)) => WRONG_TYPES[i % WRONG_TYPES.len()].replace("[[1]]", "[1]"),
        Some(_) => (dataset.users.iter().max().copied().unwrap_or(0) + 1).to_string(),
        None => dataset.users[request.user.index(dataset.users.len())].to_string(),
    };
    // Distinct candidates, at least L of them.
    let mut candidates: Vec<u64> = Vec::new();
    for c in &request.candidates {
        let raw = dataset.items[c.index(dataset.items.len())].raw_id;
        if !candidates.contains(&raw) {
            candidates.push(raw);
        }
    }
    let mut next = 0;
    while candidates.len() < l {
        let raw = dataset.items[next].raw_id;
        if !candidates.contains(&raw) {
            candidates.push(raw);
        }
        next += 1;
    }
    let mut history: Vec<u64> = request
        .history
        .iter()
        .map(|h| dataset.items[h.index(dataset.items.len())].raw_id)
        .collect();
    let mut labels = request.labels.clone();

    let candidates_json = match is(Field::Candidates) {
        Some(Break::Unknown) => {
            let mut c = candidates.clone();
            let at = request.user.index(c.len());
            c[at] = unknown_item;
            ids(&c)
        }
        Some(Break::WrongType(i)) => WRONG_TYPES[i % WRONG_TYPES.len()].to_string(),
        Some(Break::Repeat) => {
            let mut c = candidates.clone();
            c.push(c[0]);
            ids(&c)
        }
        Some(Break::Short) => ids(&candidates[..l - 1]),
        None => ids(&candidates),
    };
    let history_json = match is(Field::History) {
        Some(Break::WrongType(i)) => WRONG_TYPES[i % WRONG_TYPES.len()].to_string(),
        Some(_) => {
            history.push(unknown_item);
            if let Some(y) = labels.as_mut() {
                y.push(1);
            }
            ids(&history)
        }
        None => ids(&history),
    };
    let labels_json = match (is(Field::HistoryLabels), &labels) {
        (Some(Break::WrongType(i)), _) => {
            Some(["\"1\"", "[0.5]", "[-1]", "[300]", "{}"][i % 5].to_string())
        }
        (Some(Break::Short), _) => {
            let mut y = labels.clone().unwrap_or_else(|| vec![1; history.len()]);
            y.push(2);
            history.push(candidates[0]);
            Some(format!(
                "[{}]",
                y.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
            ))
        }
        (Some(_), _) => {
            let mut y = labels.clone().unwrap_or_else(|| vec![1; history.len()]);
            y.push(0);
            Some(format!(
                "[{}]",
                y.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
            ))
        }
        (None, Some(y)) => Some(format!(
            "[{}]",
            y.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
        )),
        (None, None) => None,
    };
    // The history may have grown above (a label break adds an item to make the lengths agree).
    let history_json = if is(Field::HistoryLabels) == Some(Break::Short) {
        ids(&history)
    } else {
        history_json
    };
    let mut line = format!("{{\"user\": {user}, \"history\": {history_json}");
    if let Some(y) = labels_json {
        line.push_str(&format!(", \"history_labels\": {y}"));
    }
    line.push_str(&format!(", \"candidates\": {candidates_json}}}"));
    (line, candidates)
}

/// Generated request files, valid or with one field of one line broken: the reader accepts
/// exactly the valid ones, with their candidates in order, and refuses the others naming the
/// broken line and field.
#[test]
fn rank_requests_by_field() {
    let log = movielens::load(&fixture("ml-latest-tiny")).expect("load");
    let dataset = small_config().build(&log, "tiny", false).expect("build");
    let field = prop_oneof![
        Just(Field::User),
        Just(Field::History),
        Just(Field::HistoryLabels),
        Just(Field::Candidates),
    ];
    let kind = prop_oneof![
        Just(Break::Unknown),
        (0usize..6).prop_map(Break::WrongType),
        Just(Break::Repeat),
        Just(Break::Short),
    ];
    let strategy = (
        prop::collection::vec(gen_request(), 1..5),
        any::<Index>(),
        prop::option::of((field, kind)),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("requests.jsonl");
    let write = |(requests, at, broken): &(Vec<GenRequest>, Index, Option<(Field, Break)>)| {
        let at = at.index(requests.len());
        let lines: Vec<(String, Vec<u64>)> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| write_request(&dataset, r, broken.filter(|_| i == at)))
            .collect();
        lines
    };
    fuzz(
        "rank_requests_by_field",
        strategy,
        |value| {
            write(value)
                .into_iter()
                .map(|(line, _)| line + "\n")
                .collect::<String>()
                .into_bytes()
        },
        |value| {
            let lines = write(&value);
            let text: String = lines.iter().map(|(line, _)| format!("{line}\n")).collect();
            std::fs::write(&path, &text).expect("write");
            let (requests, at, broken) = value;
            let at = at.index(requests.len());
            // A user or history item that breaks nothing else: which field is named is the
            // property under test; the dataset must not happen to hold the "unknown" ids.
            match (goalrank::rank::read_rank_requests(&path, &dataset), broken) {
                (Ok(read), None) => {
                    prop_assert_eq!(read.len(), lines.len());
                    for ((line, request), (_, candidates)) in read.iter().zip(&lines) {
                        let raw: Vec<u64> = request
                            .candidates
                            .iter()
                            .map(|&c| dataset.items[c as usize].raw_id)
                            .collect();
                        prop_assert_eq!(&raw, candidates, "line {}", line);
                    }
                }
                (Ok(_), Some(broken)) => {
                    return Err(TestCaseError::fail(format!(
                        "accepted a broken {broken:?} on line {}",
                        at + 1
                    )));
                }
                (Err(err), None) => {
                    return Err(TestCaseError::fail(format!("refused a valid file: {err}")));
                }
                (Err(err), Some((field, _))) => {
                    let Error::Parse {
                        line, field: named, ..
                    } = &err
                    else {
                        return Err(TestCaseError::fail(format!("not a parse error: {err}")));
                    };
                    prop_assert_eq!(*line, at + 1, "{}", err);
                    let expected = match field {
                        Field::User => "user",
                        Field::History => "history",
                        Field::HistoryLabels => "history_labels",
                        Field::Candidates => "candidates",
                    };
                    prop_assert_eq!(*named, expected, "{}", err);
                    prop_assert!(!err.to_string().contains('\n'));
                }
            }
            Ok(())
        },
    );
}
