//! On-disk cache of built datasets.
//!
//! A dataset is stored as JSON under `<artifacts>/data/<name>-<key>.json`, where `key` hashes the
//! cache format, the bytes of the input files and the request config. A changed file or config
//! gives a new key and a rebuild. Writes are atomic ([`crate::files`]), so an interrupted run never
//! leaves a truncated cache behind.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Dataset, RequestConfig, movielens};
use crate::{Error, Result, files};

/// Bump when the cached layout of [`Dataset`] changes.
const FORMAT: &str = "goalrank-dataset-v1";

/// Where a dataset came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Built,
    Cached,
}

/// Loads the dataset of `dir` from the cache in `artifacts`, or builds and caches it.
pub fn load_or_build(
    dir: &Path,
    config: &RequestConfig,
    artifacts: &Path,
    progress: bool,
) -> Result<(Dataset, Origin, PathBuf)> {
    let log = movielens::load(dir)?;
    let key = cache_key(&log.files, config)?;
    let name = super::dataset_name(dir);
    let path = artifacts.join("data").join(format!("{name}-{key}.json"));
    // An unreadable cache (say, from an older format) is rebuilt, not reported.
    if path.is_file()
        && let Ok(dataset) = read(&path)
    {
        return Ok((dataset, Origin::Cached, path));
    }
    let dataset = config.build(&log, &name, progress)?;
    files::save_json_compact(&dataset, &path)?;
    Ok((dataset, Origin::Built, path))
}

/// Hex digest (16 characters) of the format, the input files and the config.
pub fn cache_key(files: &[PathBuf], config: &RequestConfig) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT.as_bytes());
    for file in files {
        let bytes = std::fs::read(file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    let config = serde_json::to_vec(config).map_err(|err| Error::Invalid(err.to_string()))?;
    hasher.update(&config);
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

fn read(path: &Path) -> Result<Dataset> {
    let artifact = |what, source: Box<dyn std::error::Error + Send + Sync>| Error::Artifact {
        path: path.to_path_buf(),
        what,
        source,
    };
    let bytes = std::fs::read(path).map_err(|err| artifact("cannot read", err.into()))?;
    let dataset: Dataset = serde_json::from_slice(&bytes)
        .map_err(|err| artifact("not a cached dataset", err.into()))?;
    dataset.check()?;
    Ok(dataset)
}
