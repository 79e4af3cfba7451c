//! Files written whole or not at all: every artifact (datasets, weights, configs, reports,
//! figures) goes through a temporary file in the same folder, `fsync`, then a rename, so an
//! interrupted run never leaves a half-written file behind.

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes whatever `fill` writes to `path`, atomically (temporary file, fsync, rename).
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| write_error(path, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        fill(&mut file)?;
        file.flush()?;
        file.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_error(path, err));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn save_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<()> {
    write_with(path, |w| {
        serde_json::to_writer_pretty(w, value).map_err(std::io::Error::other)
    })
}

/// Writes `value` as compact JSON to `path` atomically (large artifacts such as datasets).
pub fn save_json_compact<T: serde::Serialize>(value: &T, path: &Path) -> Result<()> {
    write_with(path, |w| {
        serde_json::to_writer(w, value).map_err(std::io::Error::other)
    })
}

/// Reads a whole file, naming it in the error.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads JSON written by [`save_json`]; a parse error names the file and line.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_bytes(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::parse(path, e.line(), "json", e.to_string()))
}
