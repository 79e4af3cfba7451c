//! The library's error type.
//!
//! Every error that comes from the user's input (a file, a line, a field, a config value) says
//! where, so that the command line can print it on one line and exit with code 2.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in goalrank.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A row of an input file could not be parsed.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        field: &'static str,
        message: String,
    },
    /// An input file is missing or unreadable.
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file the detected layout needs is not there.
    #[error("{path}: missing file (needed by the {layout} layout)")]
    MissingFile { path: PathBuf, layout: &'static str },
    /// The folder holds none of the known MovieLens layouts.
    #[error(
        "{dir}: unknown data layout: expected ratings.csv + movies.csv (ml-latest), \
         u.data + u.item (ml-100k) or ratings.dat + movies.dat (ml-1m)"
    )]
    UnknownLayout { dir: PathBuf },
    /// The data or a config value makes the requested job impossible.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A tensor could not be read back from the device.
    #[error("backend: {0}")]
    Backend(String),
    /// Writing a file failed (the disk, not the input).
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a cached artifact failed.
    #[error("{path}: {message}")]
    Artifact { path: PathBuf, message: String },
}

impl Error {
    /// True when the error is the user's input, not the machine: the CLI exits with code 2.
    pub fn is_input(&self) -> bool {
        !matches!(
            self,
            Error::Artifact { .. } | Error::Backend(_) | Error::Write { .. }
        )
    }

    pub(crate) fn parse(
        path: impl Into<PathBuf>,
        line: usize,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            field,
            message: message.into(),
        }
    }
}
