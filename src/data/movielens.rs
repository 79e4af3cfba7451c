//! Loaders for the three MovieLens layouts a user will have on disk.
//!
//! | layout     | ratings                                      | movies                                   |
//! |------------|----------------------------------------------|------------------------------------------|
//! | ml-latest  | `ratings.csv` (userId,movieId,rating,timestamp) | `movies.csv` (movieId,title,genres)   |
//! | ml-100k    | `u.data` (tab-separated, no header)          | `u.item` (pipe-separated, Latin-1)       |
//! | ml-1m      | `ratings.dat` (`::`-separated, Latin-1)      | `movies.dat` (`::`-separated, Latin-1)   |
//!
//! Every parse error names the file, the 1-based line and the field.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The on-disk layout of a MovieLens folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// ml-latest and ml-latest-small: `ratings.csv` + `movies.csv`.
    Latest,
    /// ml-100k: `u.data` + `u.item`.
    Ml100k,
    /// ml-1m: `ratings.dat` + `movies.dat`.
    Ml1m,
    /// Not a folder: requests from the simulator (`sim:<preset>`).
    Simulator,
}

impl Layout {
    /// The (ratings, movies) file names of this layout.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            Layout::Latest => ("ratings.csv", "movies.csv"),
            Layout::Ml100k => ("u.data", "u.item"),
            Layout::Ml1m => ("ratings.dat", "movies.dat"),
            Layout::Simulator => ("", ""),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Layout::Latest => "ml-latest",
            Layout::Ml100k => "ml-100k",
            Layout::Ml1m => "ml-1m",
            Layout::Simulator => "simulator",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 19 genre flags of ml-100k's `u.item`, in column order.
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// One rating as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct Rating {
    pub user: u64,
    pub movie: u64,
    pub rating: f32,
    pub timestamp: i64,
}

/// One movie of the catalogue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Movie {
    /// The id used in the files.
    pub id: u64,
    pub title: String,
    /// Indices into [`RatingLog::genres`].
    pub genres: Vec<u16>,
    /// Release year parsed from the title's trailing `(YYYY)`.
    pub year: Option<u16>,
}

/// A whole MovieLens folder in memory.
#[derive(Clone, Debug)]
pub struct RatingLog {
    pub layout: Layout,
    /// The two files read, ratings first.
    pub files: [PathBuf; 2],
    pub ratings: Vec<Rating>,
    /// Sorted by id.
    pub movies: Vec<Movie>,
    /// Genre vocabulary.
    pub genres: Vec<String>,
    /// Ratings of a (user, movie) pair seen before in the file: requests keep only the earliest
    /// rating of a movie per user (the loader says how many it left out).
    pub repeated_ratings: usize,
}

/// Finds which layout `dir` holds.
pub fn detect_layout(dir: &Path) -> Result<Layout> {
    if !dir.is_dir() {
        let source = match std::fs::metadata(dir) {
            Err(err) => err,
            Ok(_) => std::io::Error::other("not a directory"),
        };
        return Err(Error::Read {
            path: dir.to_path_buf(),
            source,
        });
    }
    for layout in [Layout::Latest, Layout::Ml100k, Layout::Ml1m] {
        let (ratings, movies) = layout.files();
        if dir.join(ratings).is_file() {
            let movies = dir.join(movies);
            if !movies.is_file() {
                return Err(Error::MissingFile {
                    path: movies,
                    layout: layout.name(),
                });
            }
            return Ok(layout);
        }
    }
    Err(Error::UnknownLayout {
        dir: dir.to_path_buf(),
    })
}

/// Detects the layout of `dir` and loads its ratings and movies.
///
/// Every rating must name a movie of the catalogue.
pub fn load(dir: &Path) -> Result<RatingLog> {
    let layout = detect_layout(dir)?;
    let (ratings_name, movies_name) = layout.files();
    let ratings_path = dir.join(ratings_name);
    let movies_path = dir.join(movies_name);

    let (mut movies, genres) = match layout {
        Layout::Latest => read_latest_movies(&movies_path)?,
        Layout::Ml100k => read_ml100k_movies(&movies_path)?,
        Layout::Ml1m => read_ml1m_movies(&movies_path)?,
        Layout::Simulator => {
            return Err(Error::Invalid(format!(
                "{}: simulated data has no files to load",
                dir.display()
            )));
        }
    };
    movies.sort_by_key(|m| m.id);
    let known: HashMap<u64, ()> = movies.iter().map(|m| (m.id, ())).collect();

    let rows = match layout {
        Layout::Latest => read_latest_ratings(&ratings_path)?,
        Layout::Ml100k => read_separated_ratings(&ratings_path, "\t")?,
        Layout::Ml1m => read_separated_ratings(&ratings_path, "::")?,
        Layout::Simulator => Vec::new(),
    };
    let mut ratings = Vec::with_capacity(rows.len());
    let mut pairs = HashSet::with_capacity(rows.len());
    let mut repeated_ratings = 0;
    for (line, rating) in rows {
        if !pairs.insert((rating.user, rating.movie)) {
            repeated_ratings += 1;
        }
        if !known.contains_key(&rating.movie) {
            // The column as the ratings reader names it.
            let field = match layout {
                Layout::Latest => "movieId",
                _ => "movie",
            };
            return Err(Error::parse(
                &ratings_path,
                line,
                field,
                format!("movie {} is not in {}", rating.movie, movies_path.display()),
            ));
        }
        ratings.push(rating);
    }
    if ratings.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no ratings",
            ratings_path.display()
        )));
    }
    Ok(RatingLog {
        layout,
        files: [ratings_path, movies_path],
        ratings,
        movies,
        genres,
        repeated_ratings,
    })
}

/// Refuses a movie id listed twice in a catalogue (its title and genres would be ambiguous).
fn first_listing(
    seen: &mut HashMap<u64, usize>,
    id: u64,
    path: &Path,
    line: usize,
    field: &'static str,
) -> Result<()> {
    if let Some(first) = seen.insert(id, line) {
        return Err(Error::parse(
            path,
            line,
            field,
            format!("movie {id} is already listed on line {first}"),
        ));
    }
    Ok(())
}

/// Parses one field, naming the place on failure.
fn parse_field<T: FromStr>(
    value: &str,
    path: &Path,
    line: usize,
    field: &'static str,
) -> Result<T> {
    value.trim().parse().map_err(|_| {
        Error::parse(
            path,
            line,
            field,
            format!("cannot parse {:?} as {}", value, std::any::type_name::<T>()),
        )
    })
}

fn parse_rating(value: &str, path: &Path, line: usize) -> Result<f32> {
    let rating: f32 = parse_field(value, path, line, "rating")?;
    if !rating.is_finite() || !(0.0..=5.0).contains(&rating) {
        return Err(Error::parse(
            path,
            line,
            "rating",
            format!("rating {value:?} is outside MovieLens's 0 to 5 stars"),
        ));
    }
    Ok(rating)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Decodes Latin-1 (ISO-8859-1): every byte is the code point of the same value.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The non-empty lines of a text, with their 1-based line numbers.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.trim().is_empty())
}

/// Splits a line into exactly `expected` fields (at least, with `at_least`).
fn split_fields<'a>(
    line: &'a str,
    separator: &str,
    expected: usize,
    path: &Path,
    number: usize,
    first_field: &'static str,
    at_least: bool,
) -> Result<Vec<&'a str>> {
    let fields: Vec<&str> = line.split(separator).collect();
    if fields.len() < expected || (!at_least && fields.len() > expected) {
        return Err(Error::parse(
            path,
            number,
            first_field,
            format!(
                "expected {expected} {separator:?}-separated fields, found {}",
                fields.len()
            ),
        ));
    }
    Ok(fields)
}

/// Release year from a title such as `Toy Story (1995)` or `Babylon 5 (1994–1998)`.
pub fn year_from_title(title: &str) -> Option<u16> {
    let title = title.trim();
    let open = title.rfind('(')?;
    let inner = title[open + 1..].strip_suffix(')')?;
    let digits: String = inner.chars().take(4).collect();
    if digits.len() == 4 && digits.chars().all(|c| c.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn csv_reader(path: &Path) -> Result<csv::Reader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new().flexible(true).from_reader(file))
}

/// Column indices of `names` in a CSV header, or an error naming the missing column.
fn columns<const K: usize>(
    reader: &mut csv::Reader<std::fs::File>,
    path: &Path,
    names: [&'static str; K],
) -> Result<[usize; K]> {
    let header = reader
        .headers()
        .map_err(|err| Error::parse(path, 1, names[0], err.to_string()))?
        .clone();
    let mut found = [0; K];
    for (slot, name) in found.iter_mut().zip(names) {
        *slot = header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| Error::parse(path, 1, name, "column missing from the header"))?;
    }
    Ok(found)
}

fn record_line(record: &csv::StringRecord, fallback: usize) -> usize {
    record
        .position()
        .map(|p| p.line() as usize)
        .unwrap_or(fallback)
}

/// What to add to the `csv` reader's line numbers of a file's records to get the file's: 1
/// where the file's lines end in CR LF (MovieLens ships them so), 0 otherwise. The reader ends
/// a record at the CR and counts the line at the LF, which it reads as the next record starts:
/// each record's position then holds the line before its own.
fn crlf_shift(path: &Path) -> usize {
    use std::io::{BufRead, Read};
    let Ok(file) = std::fs::File::open(path) else {
        return 0;
    };
    let mut first = Vec::new();
    let mut reader = std::io::BufReader::new(file.take(1 << 16));
    match reader.read_until(b'\n', &mut first) {
        Ok(_) if first.ends_with(b"\r\n") => 1,
        _ => 0,
    }
}

/// A CSV reader's error, naming the column it happened in (`columns` are the names and header
/// positions of the columns read).
fn csv_error(
    path: &Path,
    err: csv::Error,
    columns: &[(&'static str, usize)],
    shift: usize,
) -> Error {
    let line = err
        .position()
        .map(|p| p.line() as usize + shift)
        .unwrap_or_default();
    let first = columns.first().map_or("", |c| c.0);
    match err.kind() {
        csv::ErrorKind::Utf8 { err: utf8, .. } => {
            let field = columns
                .iter()
                .find(|(_, i)| *i == utf8.field())
                .map_or(first, |c| c.0);
            Error::parse(
                path,
                line,
                field,
                "not valid UTF-8 (save the file as UTF-8)",
            )
        }
        _ => Error::parse(path, line, first, err.to_string()),
    }
}

/// The next data record of a CSV file: whitespace-only lines are skipped (as the other layouts
/// skip blank lines), and a record whose quoted field runs over several lines is an error at
/// the line where it starts (an unclosed quote would otherwise swallow the rest of the file).
fn next_record(
    records: &mut csv::StringRecordsIter<'_, std::fs::File>,
    path: &Path,
    columns: &[(&'static str, usize)],
    shift: usize,
) -> Result<Option<(usize, csv::StringRecord)>> {
    for record in records {
        let record = record.map_err(|err| csv_error(path, err, columns, shift))?;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let line = record_line(&record, 0) + shift;
        if let Some(i) = record.iter().position(|f| f.contains('\n')) {
            let field = columns
                .iter()
                .find(|(_, c)| *c == i)
                .map_or(columns.first().map_or("", |c| c.0), |c| c.0);
            return Err(Error::parse(
                path,
                line,
                field,
                "a quoted field runs over several lines (an unclosed quote?)",
            ));
        }
        return Ok(Some((line, record)));
    }
    Ok(None)
}

fn get<'a>(
    record: &'a csv::StringRecord,
    index: usize,
    path: &Path,
    line: usize,
    field: &'static str,
) -> Result<&'a str> {
    record
        .get(index)
        .ok_or_else(|| Error::parse(path, line, field, "field missing"))
}

fn read_latest_ratings(path: &Path) -> Result<Vec<(usize, Rating)>> {
    let mut reader = csv_reader(path)?;
    let [user, movie, rating, timestamp] = columns(
        &mut reader,
        path,
        ["userId", "movieId", "rating", "timestamp"],
    )?;
    let named = [
        ("userId", user),
        ("movieId", movie),
        ("rating", rating),
        ("timestamp", timestamp),
    ];
    let mut out = Vec::new();
    let mut records = reader.records();
    let shift = crlf_shift(path);
    while let Some((line, record)) = next_record(&mut records, path, &named, shift)? {
        out.push((
            line,
            Rating {
                user: parse_field(
                    get(&record, user, path, line, "userId")?,
                    path,
                    line,
                    "userId",
                )?,
                movie: parse_field(
                    get(&record, movie, path, line, "movieId")?,
                    path,
                    line,
                    "movieId",
                )?,
                rating: parse_rating(get(&record, rating, path, line, "rating")?, path, line)?,
                timestamp: parse_field(
                    get(&record, timestamp, path, line, "timestamp")?,
                    path,
                    line,
                    "timestamp",
                )?,
            },
        ));
    }
    Ok(out)
}

/// Genre vocabulary and per-movie genre lists from `|`-joined genre names.
fn index_genres(raw: Vec<(Movie, String)>) -> (Vec<Movie>, Vec<String>) {
    let vocabulary: BTreeSet<&str> = raw
        .iter()
        .flat_map(|(_, genres)| genres.split('|'))
        .map(str::trim)
        .filter(|g| !g.is_empty() && *g != "(no genres listed)")
        .collect();
    let genres: Vec<String> = vocabulary.iter().map(|g| g.to_string()).collect();
    let movies = raw
        .iter()
        .map(|(movie, names)| {
            let mut movie = movie.clone();
            movie.genres = names
                .split('|')
                .filter_map(|g| genres.iter().position(|v| v == g.trim()))
                .map(|i| i as u16)
                .collect();
            movie
        })
        .collect();
    (movies, genres)
}

fn read_latest_movies(path: &Path) -> Result<(Vec<Movie>, Vec<String>)> {
    let mut reader = csv_reader(path)?;
    let [id, title, genres] = columns(&mut reader, path, ["movieId", "title", "genres"])?;
    let named = [("movieId", id), ("title", title), ("genres", genres)];
    let mut raw = Vec::new();
    let mut seen = HashMap::new();
    let mut records = reader.records();
    let shift = crlf_shift(path);
    while let Some((line, record)) = next_record(&mut records, path, &named, shift)? {
        let title = get(&record, title, path, line, "title")?.to_string();
        let movie = parse_field(
            get(&record, id, path, line, "movieId")?,
            path,
            line,
            "movieId",
        )?;
        first_listing(&mut seen, movie, path, line, "movieId")?;
        raw.push((
            Movie {
                id: movie,
                year: year_from_title(&title),
                title,
                genres: Vec::new(),
            },
            get(&record, genres, path, line, "genres")?.to_string(),
        ));
    }
    Ok(index_genres(raw))
}

fn read_ml1m_movies(path: &Path) -> Result<(Vec<Movie>, Vec<String>)> {
    let text = latin1(&read_bytes(path)?);
    let mut raw = Vec::new();
    let mut seen = HashMap::new();
    for (line, row) in numbered_lines(&text) {
        let fields = split_fields(row, "::", 3, path, line, "MovieID", true)?;
        let title = fields[1].to_string();
        let movie = parse_field(fields[0], path, line, "MovieID")?;
        first_listing(&mut seen, movie, path, line, "MovieID")?;
        raw.push((
            Movie {
                id: movie,
                year: year_from_title(&title),
                title,
                genres: Vec::new(),
            },
            fields[2].to_string(),
        ));
    }
    Ok(index_genres(raw))
}

fn read_ml100k_movies(path: &Path) -> Result<(Vec<Movie>, Vec<String>)> {
    let text = latin1(&read_bytes(path)?);
    let mut movies = Vec::new();
    let mut seen = HashMap::new();
    for (line, row) in numbered_lines(&text) {
        let fields = split_fields(
            row,
            "|",
            5 + ML100K_GENRES.len(),
            path,
            line,
            "movie id",
            true,
        )?;
        let title = fields[1].to_string();
        let mut genres = Vec::new();
        for (g, flag) in fields[5..5 + ML100K_GENRES.len()].iter().enumerate() {
            match flag.trim() {
                "1" => genres.push(g as u16),
                "0" => {}
                other => {
                    return Err(Error::parse(
                        path,
                        line,
                        "genre flag",
                        format!("genre flag {other:?} is neither 0 nor 1"),
                    ));
                }
            }
        }
        let movie = parse_field(fields[0], path, line, "movie id")?;
        first_listing(&mut seen, movie, path, line, "movie id")?;
        movies.push(Movie {
            id: movie,
            year: year_from_title(&title),
            title,
            genres,
        });
    }
    Ok((
        movies,
        ML100K_GENRES.iter().map(|g| g.to_string()).collect(),
    ))
}

/// `u.data` (tab) and `ratings.dat` (`::`): user, movie, rating, timestamp; no header.
fn read_separated_ratings(path: &Path, separator: &str) -> Result<Vec<(usize, Rating)>> {
    let text = latin1(&read_bytes(path)?);
    let mut out = Vec::new();
    for (line, row) in numbered_lines(&text) {
        let fields = split_fields(row, separator, 4, path, line, "user", false)?;
        out.push((
            line,
            Rating {
                user: parse_field(fields[0], path, line, "user")?,
                movie: parse_field(fields[1], path, line, "movie")?,
                rating: parse_rating(fields[2], path, line)?,
                timestamp: parse_field(fields[3], path, line, "timestamp")?,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_from_titles() {
        assert_eq!(year_from_title("Toy Story (1995)"), Some(1995));
        assert_eq!(year_from_title("Babylon 5 (1994–1998) "), Some(1994));
        assert_eq!(
            year_from_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)"),
            Some(1995)
        );
        assert_eq!(year_from_title("Hyena Road"), None);
        assert_eq!(year_from_title("Something (abcd)"), None);
    }

    #[test]
    fn latin1_keeps_accents() {
        assert_eq!(latin1(&[0x43, 0x69, 0x74, 0xe9]), "Cité");
    }
}
