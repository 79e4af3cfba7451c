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
    /// The backend failed: a device, a read-back, or (de)serialising weights or optimiser state.
    #[error("{what}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing a file failed (the disk, not the input).
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A setting is outside its allowed range (checked before any work starts).
    #[error("{name} = {value}: {rule}")]
    Setting {
        name: &'static str,
        value: String,
        rule: String,
    },
    /// A weights file that cannot be used: not a checkpoint, another model's, or not finite.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Training stopped: a loss or a weight became NaN or infinite.
    #[error("{0}")]
    NonFinite(String),
    /// A check of the machine failed (e.g. wgpu and the CPU disagree).
    #[error("{0}")]
    Check(String),
    /// Writing or reading a cached artifact failed.
    #[error("{path}: {what}")]
    Artifact {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A backend failure whose cause implements `std::error::Error`.
    pub(crate) fn backend(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// A backend failure whose cause only has a `Debug` form (some of Burn's error types).
    pub(crate) fn backend_debug(what: impl Into<String>, cause: impl std::fmt::Debug) -> Self {
        Error::Backend {
            what: what.into(),
            source: Box::new(Cause(debug_line(&cause))),
        }
    }

    /// A backend failure with no underlying error value.
    pub(crate) fn backend_message(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            what: what.into(),
            source: Box::new(Cause(message.into())),
        }
    }
    /// True when the error is the user's input, not the machine: the CLI exits with code 2.
    pub fn is_input(&self) -> bool {
        !matches!(
            self,
            Error::Artifact { .. }
                | Error::Backend { .. }
                | Error::Check(_)
                | Error::Write { .. }
                | Error::NonFinite(_)
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
            message: one_line(&message.into()),
        }
    }
}

/// The cause of an error, as text, for causes that are not `std::error::Error` values.
#[derive(Debug)]
pub struct Cause(pub String);

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Cause {}

/// A value's debug text (a backend's error) on one line: whitespace runs (indentation,
/// newlines) collapsed, then escaped and cut as in [`one_line`].
pub(crate) fn debug_line(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    one_line(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A message from the input (it may quote the input) made safe for one line of a terminal:
/// control characters escaped, and cut at 200 characters.
pub(crate) fn one_line(message: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (n, c) in message.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Range checks of settings, shared by every config's `validate`: each names the setting as the
/// command line spells it and says what is allowed.
pub mod check {
    use super::{Error, Result};

    fn fail(name: &'static str, value: impl std::fmt::Display, rule: impl Into<String>) -> Error {
        Error::Setting {
            name,
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// The most values one tensor may hold: 8 GiB of f32. A setting that would need more is
    /// refused by name rather than left to abort on allocation.
    pub const MAX_TENSOR_ELEMENTS: u128 = 1 << 31;

    /// `elements` (what `name` = `value` makes a tensor or a model hold, computed saturating)
    /// within [`MAX_TENSOR_ELEMENTS`].
    pub fn fits(name: &'static str, value: usize, elements: u128) -> Result<()> {
        if elements > MAX_TENSOR_ELEMENTS {
            return Err(too_large(name, value, elements, ""));
        }
        Ok(())
    }

    /// The error of `name` = `value`, which needs a tensor of `elements` values, above
    /// [`MAX_TENSOR_ELEMENTS`]; `advice` (may be empty) follows the figures.
    pub fn too_large(name: &'static str, value: usize, elements: u128, advice: &str) -> Error {
        fail(
            name,
            value,
            format!(
                "too large: {elements} values ({:.0} GiB) would be needed, above the \
                 {MAX_TENSOR_ELEMENTS} (8 GiB) allowed{advice}",
                elements as f64 * 4.0 / (1u64 << 30) as f64
            ),
        )
    }

    /// A transformer's sizes: a layer's feed-forward weight (`d × 4d`) and all `layers`
    /// layers' weights (about `12 d²` each) within [`MAX_TENSOR_ELEMENTS`], `width` and
    /// `depth` naming the flags.
    pub fn transformer(
        (width, d): (&'static str, usize),
        (depth, layers): (&'static str, usize),
    ) -> Result<()> {
        let d2 = (d as u128).saturating_mul(d as u128);
        fits(width, d, d2.saturating_mul(4))?;
        fits(
            depth,
            layers,
            d2.saturating_mul(12).saturating_mul(layers as u128),
        )
    }

    /// `value ≥ min`.
    pub fn at_least(name: &'static str, value: usize, min: usize) -> Result<()> {
        if value < min {
            return Err(fail(name, value, format!("must be at least {min}")));
        }
        Ok(())
    }

    /// A finite number > 0.
    pub fn positive(name: &'static str, value: f64) -> Result<()> {
        if !(value.is_finite() && value > 0.0) {
            return Err(fail(name, value, "must be a finite number > 0"));
        }
        Ok(())
    }

    /// A finite number ≥ 0.
    pub fn non_negative(name: &'static str, value: f64) -> Result<()> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(fail(name, value, "must be a finite number ≥ 0"));
        }
        Ok(())
    }

    /// A number in [0, 1).
    pub fn fraction(name: &'static str, value: f64) -> Result<()> {
        if !(0.0..1.0).contains(&value) {
            return Err(fail(name, value, "must be in [0, 1)"));
        }
        Ok(())
    }

    /// Model width `d` split into `heads` attention heads. `name` is the setting the user
    /// chose: the width (`--d-model`, checked to be a multiple of the heads) or the heads.
    pub fn heads(name: &'static str, d_model: usize, heads: usize) -> Result<()> {
        let width = name.ends_with("d-model") || name.ends_with("d_model");
        if heads == 0 {
            return Err(fail(
                name,
                if width { d_model } else { heads },
                "needs at least 1 attention head",
            ));
        }
        if !d_model.is_multiple_of(heads) {
            return Err(if width {
                fail(
                    name,
                    d_model,
                    format!("must be a multiple of the {heads} attention heads"),
                )
            } else {
                fail(
                    name,
                    heads,
                    format!("must divide the model width {d_model}"),
                )
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_backend_error_keeps_its_cause_as_the_source() {
        let io = std::io::Error::other("device lost");
        let err = Error::backend("reading a tensor back", io);
        assert_eq!(err.to_string(), "reading a tensor back");
        let source = err.source().expect("a source");
        assert_eq!(source.to_string(), "device lost");

        #[derive(Debug)]
        #[allow(dead_code)]
        struct Opaque {
            reason: &'static str,
        }
        let err = Error::backend_debug(
            "optimizer state",
            Opaque {
                reason: "bad\nbytes",
            },
        );
        let cause = err.source().expect("a source").to_string();
        assert!(cause.contains("bad\\nbytes"), "{cause}");
        assert!(!cause.contains('\n'), "one line: {cause}");
    }
}
