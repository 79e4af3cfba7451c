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
    goalrank::web::start();
}
