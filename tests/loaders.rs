//! The three MovieLens layouts and their errors.

use goalrank::Error;
use goalrank::data::{Layout, detect_layout, movielens};

use crate::common::{copy_fixture, fixture, replace_line, small_config};

const LAYOUTS: [(&str, Layout); 3] = [
    ("ml-latest-tiny", Layout::Latest),
    ("ml-100k-tiny", Layout::Ml100k),
    ("ml-1m-tiny", Layout::Ml1m),
];

#[test]
fn each_layout_is_detected_and_loaded() {
    for (name, layout) in LAYOUTS {
        let dir = fixture(name);
        assert_eq!(detect_layout(&dir).expect("layout"), layout, "{name}");
        let log = movielens::load(&dir).expect("load");
        assert_eq!(log.ratings.len(), 245, "{name}");
        assert_eq!(log.movies.len(), 60, "{name}");
        // Latin-1 in ml-100k and ml-1m, UTF-8 in ml-latest: the same title either way.
        let amelie = log.movies.iter().find(|m| m.id == 33).expect("movie 33");
        assert_eq!(amelie.title, "Amélie (2001)", "{name}");
        assert_eq!(amelie.year, Some(2001), "{name}");
        // A quoted CSV title with a comma survives.
        let creme = log.movies.iter().find(|m| m.id == 21).expect("movie 21");
        assert!(creme.title.contains("Crème, La"), "{name}: {}", creme.title);
        let genres: usize = log.movies.iter().map(|m| m.genres.len()).sum();
        assert!(genres >= 60, "{name}: every movie has a genre");
    }
}

#[test]
fn the_three_layouts_give_the_same_requests() {
    let config = small_config();
    let build = |name: &str| {
        let log = movielens::load(&fixture(name)).expect("load");
        config.build(&log, name, false).expect("build")
    };
    let latest = build("ml-latest-tiny");
    for name in ["ml-100k-tiny", "ml-1m-tiny"] {
        let other = build(name);
        assert_eq!(latest.train, other.train, "{name}");
        assert_eq!(latest.valid, other.valid, "{name}");
        assert_eq!(latest.test, other.test, "{name}");
    }
}

#[test]
fn malformed_rating_names_file_line_and_field() {
    let dir = copy_fixture("ml-latest-tiny");
    let ratings = dir.path().join("ratings.csv");
    replace_line(&ratings, 5, "3,9,abc,1000000000");
    match movielens::load(dir.path()) {
        Err(Error::Parse {
            path, line, field, ..
        }) => {
            assert_eq!(path, ratings);
            assert_eq!(line, 5);
            assert_eq!(field, "rating");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn short_dat_row_names_the_line() {
    let dir = copy_fixture("ml-1m-tiny");
    replace_line(&dir.path().join("ratings.dat"), 7, "3::9::4");
    let err = movielens::load(dir.path()).expect_err("short row");
    let text = err.to_string();
    assert!(text.contains("ratings.dat:7:"), "{text}");
    assert!(err.is_input());
}

#[test]
fn rating_of_unknown_movie_is_an_error() {
    let dir = copy_fixture("ml-100k-tiny");
    replace_line(&dir.path().join("u.data"), 3, "1\t99999\t4\t1000000000");
    let text = movielens::load(dir.path())
        .expect_err("unknown movie")
        .to_string();
    assert!(
        text.contains("u.data:3:") && text.contains("99999"),
        "{text}"
    );
}

#[test]
fn missing_file_and_unknown_layout() {
    let dir = copy_fixture("ml-latest-tiny");
    std::fs::remove_file(dir.path().join("movies.csv")).expect("remove");
    match detect_layout(dir.path()) {
        Err(Error::MissingFile { path, .. }) => assert!(path.ends_with("movies.csv")),
        other => panic!("expected a missing file, got {other:?}"),
    }
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        detect_layout(empty.path()),
        Err(Error::UnknownLayout { .. })
    ));
    let gone = empty.path().join("nope");
    assert!(matches!(detect_layout(&gone), Err(Error::Read { .. })));
}

/// The `(line, field)` of a parse error, or a panic naming what came instead.
fn place(result: goalrank::Result<movielens::RatingLog>) -> (String, usize, &'static str) {
    match result {
        Err(Error::Parse {
            path, line, field, ..
        }) => (
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            line,
            field,
        ),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn an_unclosed_quote_is_blamed_on_its_own_file_and_line() {
    let dir = copy_fixture("ml-latest-tiny");
    replace_line(
        &dir.path().join("movies.csv"),
        3,
        "6,\"Broken (1995),Comedy",
    );
    assert_eq!(
        place(movielens::load(dir.path())),
        ("movies.csv".into(), 3, "title")
    );
}

#[test]
fn a_whitespace_line_is_skipped_and_later_lines_keep_their_numbers() {
    let dir = copy_fixture("ml-latest-tiny");
    let ratings = dir.path().join("ratings.csv");
    replace_line(&ratings, 3, "   ");
    replace_line(&ratings, 5, "1,3,4.0,yesterday");
    assert_eq!(
        place(movielens::load(dir.path())),
        ("ratings.csv".into(), 5, "timestamp")
    );
}

#[test]
fn invalid_utf8_names_its_column() {
    let dir = copy_fixture("ml-latest-tiny");
    let movies = dir.path().join("movies.csv");
    let mut bytes = std::fs::read(&movies).expect("read");
    bytes.extend_from_slice(b"999,Caf\xe9 (1990),Comedy\n");
    std::fs::write(&movies, bytes).expect("write");
    let (file, _, field) = place(movielens::load(dir.path()));
    assert_eq!((file.as_str(), field), ("movies.csv", "title"));
}

#[test]
fn a_movie_listed_twice_is_refused_and_repeated_ratings_are_counted() {
    let dir = copy_fixture("ml-latest-tiny");
    let movies = dir.path().join("movies.csv");
    let text = std::fs::read_to_string(&movies).expect("read");
    let second = text.lines().nth(2).expect("a movie").to_string();
    std::fs::write(&movies, format!("{text}{second}\n")).expect("write");
    let lines = text.lines().count() + 1;
    assert_eq!(
        place(movielens::load(dir.path())),
        ("movies.csv".into(), lines, "movieId")
    );

    let dir = copy_fixture("ml-latest-tiny");
    let clean = movielens::load(dir.path()).expect("load");
    assert_eq!(clean.repeated_ratings, 0);
    let ratings = dir.path().join("ratings.csv");
    let text = std::fs::read_to_string(&ratings).expect("read");
    let first = text.lines().nth(1).expect("a rating").to_string();
    std::fs::write(&ratings, format!("{text}{first}\n")).expect("write");
    let log = movielens::load(dir.path()).expect("load");
    assert_eq!(log.repeated_ratings, 1);
    assert_eq!(log.ratings.len(), clean.ratings.len() + 1);
}

#[test]
fn a_shortage_of_candidates_names_the_user_as_the_file_does() {
    let log = movielens::load(&fixture("ml-latest-tiny")).expect("load");
    let err = small_config()
        .with_candidates(58)
        .build(&log, "tiny", false)
        .expect_err("too many candidates");
    let text = err.to_string();
    let user: u64 = text
        .split("user ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(log.ratings.iter().any(|r| r.user == user), "{text}");
}

#[test]
fn a_rank_request_of_the_wrong_type_is_blamed_on_its_field() {
    let log = movielens::load(&fixture("ml-latest-tiny")).expect("load");
    let dataset = small_config().build(&log, "tiny", false).expect("build");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("requests.jsonl");
    let good = r#"{"user": 1, "history": [3, 6], "candidates": [18, 21, 24, 27, 30, 33, 36, 39]}"#;
    for (row, field) in [
        (r#"{"user": "one", "candidates": [18]}"#, "user"),
        (
            r#"{"user": 1, "history": 3, "candidates": [18]}"#,
            "history",
        ),
        (
            r#"{"user": 1, "history_labels": [1, -1], "candidates": [18]}"#,
            "history_labels",
        ),
        (r#"{"user": 1, "candidates": [18, "x"]}"#, "candidates"),
        (r#"{"user": 1, "candidates": [18"#, "json"),
        // A required field missing is blamed on that field.
        (r#"{"user": 1}"#, "candidates"),
        (r#"{"candidates": [18]}"#, "user"),
        (r#"[1, 2]"#, "json"),
    ] {
        std::fs::write(&path, format!("{good}\n{row}\n")).expect("write");
        match goalrank::rank::read_rank_requests(&path, &dataset) {
            Err(Error::Parse {
                line, field: got, ..
            }) => {
                assert_eq!((line, got), (2, field), "{row}");
            }
            other => panic!("{row}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn a_rating_off_the_scale_or_a_row_with_extra_fields_is_refused() {
    let dir = copy_fixture("ml-latest-tiny");
    replace_line(&dir.path().join("ratings.csv"), 4, "3,159,99,1000006354");
    assert_eq!(
        place(movielens::load(dir.path())),
        ("ratings.csv".into(), 4, "rating")
    );
    let dir = copy_fixture("ml-1m-tiny");
    replace_line(&dir.path().join("ratings.dat"), 7, "3::9::4::1000000000::5");
    assert_eq!(
        place(movielens::load(dir.path())),
        ("ratings.dat".into(), 7, "user")
    );
    let dir = copy_fixture("ml-100k-tiny");
    replace_line(&dir.path().join("u.data"), 2, "2\t99\t-1\t1000008932");
    assert_eq!(
        place(movielens::load(dir.path())),
        ("u.data".into(), 2, "rating")
    );
}
