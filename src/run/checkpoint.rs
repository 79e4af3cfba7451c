//! A training run's checkpoint as one unit: the weights, the optimiser state and the run state
//! of the same step, or nothing.
//!
//! A checkpoint is written into `checkpoint-<step>.tmp/`, every file synced, the folder renamed
//! to `checkpoint-<step>/`, and only then does the pointer file `checkpoint` (written atomically)
//! switch to it; older checkpoint folders are removed after the switch. A crash at any moment
//! leaves the pointer on a complete checkpoint. Its `state.json` records the SHA-256 of its
//! weights and optimiser state, so a resume refuses parts that do not belong together.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::{load_json, read_bytes, save_json, write_bytes};
use crate::{Error, Result};

/// Progress of a run, saved next to its last checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    pub step: usize,
    pub best_step: usize,
    /// Best validation value (N@L for GoalRank, log-loss for reward models).
    pub best: Option<f64>,
    pub seconds: f64,
    /// Length of `metrics.jsonl` in bytes when the state was saved (what a resume keeps).
    #[serde(default)]
    pub log_bytes: u64,
    /// SHA-256 of those bytes: a resume refuses a log damaged since.
    #[serde(default)]
    pub log_sha256: String,
}

/// The pointer file naming the current checkpoint folder.
const POINTER: &str = "checkpoint";
const WEIGHTS: &str = "model.bpk";
const OPTIMIZER: &str = "optimizer.bin";
const STATE: &str = "state.json";

/// What a checkpoint folder's `state.json` holds.
#[derive(Serialize, Deserialize)]
struct Manifest {
    state: RunState,
    weights_sha256: String,
    optimizer_sha256: String,
}

/// A checkpoint read back and verified.
pub(crate) struct Checkpoint {
    pub state: RunState,
    pub weights: Vec<u8>,
    pub optimizer: Vec<u8>,
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn folder_name(step: usize) -> String {
    format!("checkpoint-{step:08}")
}

/// True when `run_dir` holds a checkpoint to resume from.
pub fn has_checkpoint(run_dir: &Path) -> bool {
    current(run_dir).is_some()
}

/// The name of the current checkpoint folder: the one the pointer names, or, when the pointer is
/// missing (deleted by hand), the latest complete `checkpoint-<step>/` folder.
fn current(run_dir: &Path) -> Option<String> {
    if let Ok(name) = std::fs::read_to_string(run_dir.join(POINTER)) {
        return Some(name.trim().to_string());
    }
    let mut complete: Vec<String> = std::fs::read_dir(run_dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-") && !n.contains(".tmp"))
        .filter(|n| run_dir.join(n).join(STATE).is_file())
        .collect();
    complete.sort();
    complete.pop()
}

/// Writes the checkpoint of `state.step` and makes it the current one.
pub(crate) fn save(
    run_dir: &Path,
    state: &RunState,
    weights: &[u8],
    optimizer: &[u8],
) -> Result<()> {
    let name = folder_name(state.step);
    let tmp = run_dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_error(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    write_bytes(&tmp.join(WEIGHTS), weights)?;
    write_bytes(&tmp.join(OPTIMIZER), optimizer)?;
    let manifest = Manifest {
        state: state.clone(),
        weights_sha256: sha256(weights),
        optimizer_sha256: sha256(optimizer),
    };
    save_json(&manifest, &tmp.join(STATE))?;
    sync_dir(&tmp)?;
    let done = run_dir.join(&name);
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io_error(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io_error(&done))?;
    sync_dir(run_dir)?;
    write_bytes(&run_dir.join(POINTER), name.as_bytes())?;
    remove_stale(run_dir)
}

/// The current checkpoint, verified; `None` when the run has none.
pub(crate) fn load(run_dir: &Path) -> Result<Option<Checkpoint>> {
    let pointer = run_dir.join(POINTER);
    let Some(name) = current(run_dir) else {
        return Ok(None);
    };
    let broken = |message: String| Error::Checkpoint {
        path: pointer.clone(),
        message,
    };
    if !name.starts_with("checkpoint-") || name.contains(['/', '\\']) {
        return Err(broken(format!("names `{name}`, not a checkpoint folder")));
    }
    let dir = run_dir.join(&name);
    let manifest: Manifest = load_json(&dir.join(STATE))?;
    let weights = read_bytes(&dir.join(WEIGHTS))?;
    let optimizer = read_bytes(&dir.join(OPTIMIZER))?;
    if folder_name(manifest.state.step) != name {
        return Err(broken(format!(
            "{name}/state.json is for step {}",
            manifest.state.step
        )));
    }
    if sha256(&weights) != manifest.weights_sha256
        || sha256(&optimizer) != manifest.optimizer_sha256
    {
        return Err(broken(format!(
            "{name}: the weights or optimiser state do not match its state.json (parts of \
             different checkpoints)"
        )));
    }
    Ok(Some(Checkpoint {
        state: manifest.state,
        weights,
        optimizer,
    }))
}

/// Drops the run's checkpoint (a fresh run in a used folder must never resume the old one).
pub(crate) fn forget(run_dir: &Path) -> Result<()> {
    let pointer = run_dir.join(POINTER);
    if pointer.exists() {
        std::fs::remove_file(&pointer).map_err(io_error(&pointer))?;
    }
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint-")
            {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            }
        }
    }
    remove_stale(run_dir)
}

/// Removes what an interrupted write left behind: temporary files (`*.tmp<pid>`), unfinished
/// checkpoint folders and checkpoint folders the pointer no longer names.
pub(crate) fn remove_stale(run_dir: &Path) -> Result<()> {
    // Without a pointer, no checkpoint folder is removed: the newest complete one is current.
    let current = std::fs::read_to_string(run_dir.join(POINTER))
        .ok()
        .map(|n| n.trim().to_string());
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary = name
            .rsplit_once(".tmp")
            .is_some_and(|(_, pid)| pid.chars().all(|c| c.is_ascii_digit()));
        let old_checkpoint = name.starts_with("checkpoint-")
            && current.as_deref().is_some_and(|c| c != name.as_str());
        if !(temporary || old_checkpoint) {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_error(&path))?;
    }
    Ok(())
}

/// Makes a folder's entries (new names, renames) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
