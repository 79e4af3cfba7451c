//! `goalrank`: the command line on native targets ([`cli`]), the browser demo on wasm
//! (`goalrank::web`). One binary, two entries, eframe_template style.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    run_static_constructors();
    goalrank::web::start();
}

/// Runs the module's static constructors (CubeCL registers its IR operations through them) once,
/// here, at the start.
///
/// A wasm binary with a `main` is linked as a command: unless the code calls
/// `__wasm_call_ctors` itself, the linker wraps every exported function so that it runs all
/// constructors before its body. JS calls into the module thousands of times while WebGPU
/// kernels are prepared (each GPU object handed to Rust, each callback), and each call re-ran
/// every constructor: most of the page's frozen time. Calling it explicitly turns the wrappers off.
#[cfg(target_arch = "wasm32")]
fn run_static_constructors() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker's constructor function, called once, before any other code runs.
    unsafe { __wasm_call_ctors() };
}
