//! Checkpoints: burnpack weights plus the config as JSON, each written atomically (temporary
//! file, then rename), so an interrupted run never leaves a half-written checkpoint.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::Error;

fn artifact(path: &Path, message: impl ToString) -> Error {
    Error::Artifact {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| artifact(path, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(artifact(path, err));
    }
    Ok(())
}

/// A module's weights as burnpack bytes.
pub fn module_bytes<M: Module>(module: &M) -> crate::Result<Vec<u8>> {
    module
        .clone()
        .into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| crate::Error::Backend(format!("serialising weights: {e:?}")))
}

/// Loads burnpack bytes from [`module_bytes`] into a freshly initialised `module`.
pub fn module_from_bytes<M: Module>(module: M, bytes: Vec<u8>) -> crate::Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| crate::Error::Backend(format!("not burnpack weights: {e:?}")))?;
    module
        .try_load_record(record)
        .map_err(|e| crate::Error::Backend(format!("weights do not fit the model: {e:?}")))
}

/// Saves a module's weights (burnpack) to `path`.
pub fn save_module<M: Module>(module: &M, path: &Path) -> crate::Result<()> {
    write_bytes_atomic(path, &module_bytes(module)?)
}

/// Loads weights saved by [`save_module`] into a freshly initialised `module`.
pub fn load_module<M: Module>(module: M, path: &Path) -> crate::Result<M> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| artifact(path, format!("not a burnpack checkpoint: {e:?}")))?;
    module
        .try_load_record(record)
        .map_err(|e| artifact(path, format!("does not fit the model: {e:?}")))
}

/// Saves a config (or any serialisable value) as pretty JSON.
pub fn save_json<T: serde::Serialize>(value: &T, path: &Path) -> crate::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| artifact(path, e))?;
    write_bytes_atomic(path, &text)
}

/// Loads JSON written by [`save_json`].
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> crate::Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::parse(path, e.line(), "json", e.to_string()))
}
