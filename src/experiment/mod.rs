//! Experiments: the main table (`experiment main`), the paper's studies, their reports
//! (Markdown, CSV, JSON) and SVG figures, and the speed and device checks (`bench`,
//! `check-device`).
//!
//! May import every layer below it: `data`, `model`, `train`, `eval` and `run`.

mod bench;
mod compare;
mod device_check;
mod kernel_check;
mod logging;
mod main_table;
mod plot;
mod report;
mod study;

pub use bench::{BenchOptions, BenchRow, bench_device, bench_table};
pub use compare::{CompareOptions, CompareRow, compare, compare_json, compare_table};
#[cfg(not(target_arch = "wasm32"))]
pub use device_check::check_wgpu;
pub use device_check::{DeviceCheck, check_device};
pub use kernel_check::{AdamCheck, KernelCheck, check_adam_step, check_decode_step};
pub use logging::{EPSILONS, run_logging_study};
pub use main_table::{ExperimentOptions, MainExperimentConfig, run_main};
pub use plot::{LinePlot, Series};
pub use report::{Column, Goal, Report, ReportRow, mean_std};
pub use study::{GROUP_SIZES, NOISE_LEVELS, SCALING_SIZES, Study, run_study, study_file_name};
