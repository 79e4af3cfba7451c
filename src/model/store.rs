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
/// demo's). Refuses weights that are NaN or infinite, and weights that f16 cannot hold (from
/// about ±65,520 on they would round to infinity); weights below f16's smallest step round to 0.
pub fn module_bytes_f16<M: Module>(module: &M) -> crate::Result<Vec<u8>> {
    /// Casts every float parameter to f16.
    struct Half;
    impl ModuleMapper for Half {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|tensor| tensor.cast(DType::F16))
        }
    }
    if let Some(name) = first_non_finite(module) {
        return Err(Error::NonFinite(format!(
            "weight `{name}` holds NaN or infinite values"
        )));
    }
    let half = module.clone().map(&mut Half);
    if let Some(name) = first_non_finite(&half) {
        return Err(Error::NonFinite(format!(
            "weight `{name}` does not fit in half precision (f16)"
        )));
    }
    module_bytes(&half)
}

/// Loads burnpack bytes from [`module_bytes`] (or [`module_bytes_f16`]) into a freshly
/// initialised `module`; half-precision weights are made f32 (see [`weights_to_f32`]).
pub fn module_from_bytes<M: Module>(module: M, bytes: Vec<u8>) -> crate::Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::backend_debug("not burnpack weights", e))?;
    let module = module
        .try_load_record(record)
        .map_err(|e| Error::backend_debug("weights do not fit the model", e))?;
    Ok(weights_to_f32(module))
}

/// Makes every float weight that is not f32 (half-precision weights, as loaded from
/// [`module_bytes_f16`]) f32, keeping whether it is trained. Loading takes each weight in the
/// dtype it was saved in; Burn's alternative, casting on load to the module's dtype, would
/// first initialise every weight to read that dtype, drawing from the device's random numbers,
/// and so change what a seeded run draws after loading a checkpoint. The values are converted
/// on the host (read back and uploaded again), so a GPU without f16 arithmetic never runs a
/// kernel on them; that read-back blocks, so on WebGPU in the browser load on the CPU and move
/// the module (as the demo does). Only loaded weights may come here: mapping a parameter that
/// was never initialised would initialise it (a strict load initialises every one).
fn weights_to_f32<M: Module>(module: M) -> M {
    /// Makes the float parameters that are not f32 f32.
    struct ToF32;
    impl ModuleMapper for ToF32 {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|tensor| {
                if tensor.dtype() == DType::F32 {
                    return tensor;
                }
                let tracked = tensor.is_require_grad();
                let device = tensor.device();
                let data = tensor.into_data().convert_dtype(DType::F32);
                Tensor::from_data(data, (&device, DType::F32)).set_require_grad(tracked)
            })
        }
    }
    module.map(&mut ToF32)
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

/// Loads weights saved by [`save_module`] into a freshly initialised `module`; weights saved at
/// half precision (f16, [`module_bytes_f16`]) are made f32 ([`weights_to_f32`]). A file
/// that is not a checkpoint, does not fit the model, or holds NaN or infinite weights is refused
/// with one line naming it.
pub fn load_module<M: Module>(module: M, path: &Path) -> crate::Result<M> {
    let refuse = |what: &str, detail: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("{what}{detail}"),
    };
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(files::read_bytes(path)?))
        .map_err(|e| refuse("not a goalrank weights file (burnpack): ", debug_line(&e)))?;
    let module = module.try_load_record(record).map_err(|e| {
        refuse(
            "weights do not fit the model its config.json describes: ",
            debug_line(&e),
        )
    })?;
    let module = weights_to_f32(module);
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
