//! Model weights as burnpack bytes, in memory and on disk (written atomically through
//! [`crate::files`]).

use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, DType, Tensor};

use crate::error::debug_line;
use crate::{Error, files};

/// A module's weights as burnpack bytes.
pub fn module_bytes<M: Module>(module: &M) -> crate::Result<Vec<u8>> {
    module
        .clone()
        .into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| Error::backend_debug("serialising weights", e))
}

/// A module's weights as burnpack bytes with every float weight rounded to half precision
/// (f16, round to nearest): half the bytes, for weights compiled into a binary (the browser
/// demo's). Refuses weights that f16 cannot hold (beyond ±65,504, or NaN).
pub fn module_bytes_f16<M: Module>(module: &M) -> crate::Result<Vec<u8>> {
    /// Casts every float parameter to f16.
    struct Half;
    impl ModuleMapper for Half {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|tensor| tensor.cast(DType::F16))
        }
    }
    let half = module.clone().map(&mut Half);
    if let Some(name) = first_non_finite(&half) {
        return Err(Error::NonFinite(format!(
            "weight `{name}` does not fit in half precision (f16)"
        )));
    }
    module_bytes(&half)
}

/// Loads burnpack bytes from [`module_bytes`] into a freshly initialised `module`.
pub fn module_from_bytes<M: Module>(module: M, bytes: Vec<u8>) -> crate::Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::backend_debug("not burnpack weights", e))?;
    module
        .try_load_record(record)
        .map_err(|e| Error::backend_debug("weights do not fit the model", e))
}

/// Loads burnpack bytes whose weights may be in another float precision (f16 from
/// [`module_bytes_f16`]) into `module`, converting each on the host to the dtype of the
/// module's parameter. Each parameter of `module` is initialised first to read its dtype, so
/// load on the CPU and move the module afterwards.
pub fn module_from_bytes_converted<M: Module>(module: M, bytes: Vec<u8>) -> crate::Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::backend_debug("not burnpack weights", e))?;
    module
        .try_load_record(record.cast_to_module_dtype())
        .map_err(|e| Error::backend_debug("weights do not fit the model", e))
}

/// Saves a module's weights (burnpack) to `path`; refuses weights that are NaN or infinite, so a
/// diverged model is never written where it could be served.
pub fn save_module<M: Module>(module: &M, path: &Path) -> crate::Result<()> {
    if let Some(name) = first_non_finite(module) {
        return Err(Error::NonFinite(format!(
            "{}: not written: weight `{name}` holds NaN or infinite values",
            path.display()
        )));
    }
    files::write_bytes(path, &module_bytes(module)?)
}

/// Loads weights saved by [`save_module`] into a freshly initialised `module`; weights saved in
/// another float precision (f16 from [`module_bytes_f16`]) are converted to the model's. A file
/// that is not a checkpoint, does not fit the model, or holds NaN or infinite weights is refused
/// with one line naming it.
pub fn load_module<M: Module>(module: M, path: &Path) -> crate::Result<M> {
    let refuse = |what: &str, detail: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("{what}{detail}"),
    };
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(files::read_bytes(path)?))
        .map_err(|e| refuse("not a goalrank weights file (burnpack): ", debug_line(&e)))?;
    let module = module
        .try_load_record(record.cast_to_module_dtype())
        .map_err(|e| {
            refuse(
                "weights do not fit the model its config.json describes: ",
                debug_line(&e),
            )
        })?;
    if let Some(name) = first_non_finite(&module) {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("weight `{name}` holds NaN or infinite values"),
        });
    }
    Ok(module)
}

/// The path of the first float parameter with a NaN or infinite value (reads every weight).
pub fn first_non_finite<M: Module>(module: &M) -> Option<String> {
    /// The module path being visited, and the first bad parameter found.
    struct Finite {
        path: Vec<String>,
        bad: Option<String>,
    }
    impl ModuleVisitor for Finite {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.bad.is_some() {
                return;
            }
            let finite = param
                .val()
                .is_finite()
                .all()
                .try_into_scalar::<bool>()
                .unwrap_or(false);
            if !finite {
                self.bad = Some(self.path.join("."));
            }
        }
    }
    let mut check = Finite {
        path: Vec::new(),
        bad: None,
    };
    module.visit(&mut check);
    check.bad
}
