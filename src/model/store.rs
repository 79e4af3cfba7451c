//! Model weights as burnpack bytes, in memory and on disk (written atomically through
//! [`crate::files`]).

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::{Error, files};

/// A module's weights as burnpack bytes.
pub fn module_bytes<M: Module>(module: &M) -> crate::Result<Vec<u8>> {
    module
        .clone()
        .into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| Error::Backend(format!("serialising weights: {e:?}")))
}

/// Loads burnpack bytes from [`module_bytes`] into a freshly initialised `module`.
pub fn module_from_bytes<M: Module>(module: M, bytes: Vec<u8>) -> crate::Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::Backend(format!("not burnpack weights: {e:?}")))?;
    module
        .try_load_record(record)
        .map_err(|e| Error::Backend(format!("weights do not fit the model: {e:?}")))
}

/// Saves a module's weights (burnpack) to `path`.
pub fn save_module<M: Module>(module: &M, path: &Path) -> crate::Result<()> {
    files::write_bytes(path, &module_bytes(module)?)
}

/// Loads weights saved by [`save_module`] into a freshly initialised `module`.
pub fn load_module<M: Module>(module: M, path: &Path) -> crate::Result<M> {
    let artifact = |message: String| Error::Artifact {
        path: path.to_path_buf(),
        message,
    };
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(files::read_bytes(path)?))
        .map_err(|e| artifact(format!("not a burnpack checkpoint: {e:?}")))?;
    module
        .try_load_record(record)
        .map_err(|e| artifact(format!("does not fit the model: {e:?}")))
}
