//! `goalrank bench`: training and inference speed of the default model on one device.
//!
//! Inputs are the first requests of a dataset's train split (N, L and history as built). Numbers
//! are wall-clock on a shared machine: compare devices or implementations measured in one run.

use std::fmt::Write;

use web_time::Instant;

use burn::tensor::Device;
use serde::Serialize;

use crate::Result;
use crate::data::{Dataset, Request};
use crate::eval::generator_rankings;
use crate::model::{DECODER_MLP, RewardModel, multiply_adds, read_backs};
use crate::train::{
    GoalRankConfig, GoalRankTrainer, KernelCount, Launches, Phase, RewardTrainingConfig,
};

/// What `goalrank bench` measures and on how much.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub batch_size: usize,
    pub train_steps: usize,
    pub warmup_steps: usize,
    pub latency_requests: usize,
    /// Times each phase of the training step (synchronising the device at each boundary).
    pub profile: bool,
    /// Copies of the device the training step runs on, data-parallel (1: one).
    pub data_parallel: usize,
}

/// What a row was measured at: the settings `bench` prints above its table.
#[derive(Clone, Debug, Serialize)]
pub struct BenchSettings {
    pub d_model: usize,
    pub layers: usize,
    /// The decoder MLP's hidden width as a multiple of d.
    pub decoder_mlp: usize,
    /// Candidates N and list length L of the data's requests.
    pub candidates: usize,
    pub list_len: usize,
    pub group_size: usize,
    /// Requests per training step and per greedy batch (at most the train split's).
    pub batch_size: usize,
    /// Copies of the device the training step runs on (1: one).
    pub data_parallel: usize,
    /// Timed training steps the figures are means of (after one warm-up step).
    pub train_steps: usize,
}

/// One device's figures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub device: String,
    pub settings: BenchSettings,
    pub generator_params: usize,
    pub train_step_ms: f64,
    pub train_requests_per_s: f64,
    /// The median of [`GREEDY_BATCHES`] timed batches.
    pub greedy_batch_ms: f64,
    pub greedy_requests_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    /// GPU kernel launches per training step and per greedy batch (CubeCL's launch observer;
    /// `None` where none were seen: the CPU backend launches no kernels).
    pub train_launches_per_step: Option<f64>,
    pub greedy_launches: Option<u64>,
    /// Tensors read back to the host per training step and per greedy batch.
    pub train_read_backs_per_step: f64,
    pub greedy_read_backs: u64,
    /// Matrix-product FLOPs (2 per multiply-add, backward included) per training step and per
    /// greedy batch, counted as the CPU backend runs them (`None` elsewhere).
    pub train_gflop_per_step: Option<f64>,
    pub greedy_gflop: Option<f64>,
    /// Those FLOPs over the step's and the greedy batch's wall time.
    pub train_gflops_per_s: Option<f64>,
    pub greedy_gflops_per_s: Option<f64>,
    /// The kernels a greedy batch launched, by name, most launched first (empty on the CPU).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub greedy_kernels: Vec<KernelCount>,
    /// The kernels the timed training steps launched together (`train_steps` of them), by
    /// name, most launched first (empty on the CPU).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub train_kernels: Vec<KernelCount>,
    /// Mean time per phase of a training step, when profiled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
}

/// Greedy batches timed after the warm-up one; `bench` reports their median (one batch's time
/// varies by several per cent from run to run on a shared machine).
const GREEDY_BATCHES: usize = 3;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Times the GoalRank step, greedy ranking of a batch, and batch-1 latency on `device`.
pub fn bench_device(
    dataset: &Dataset,
    config: &GoalRankConfig,
    reward: &RewardTrainingConfig,
    options: &BenchOptions,
    name: &str,
    device: &Device,
) -> Result<BenchRow> {
    config.validate()?;
    crate::error::check::at_least("--batch-size", options.batch_size, 1)?;
    crate::error::check::at_least("--latency-requests", options.latency_requests, 1)?;
    device.seed(config.seed);
    let reward: RewardModel = reward.model(dataset).init(device);
    // A step's batch is at most the train split (the sampler's batches stop there).
    let batch_size = options.batch_size.min(dataset.train.len()).max(1);
    let config = config.clone().with_batch_size(batch_size);
    config.check_size(dataset)?;
    let mut trainer = GoalRankTrainer::new(dataset, reward, config.clone(), device);
    #[cfg(not(target_arch = "wasm32"))]
    trainer.set_replicas(vec![
        device.clone();
        options.data_parallel.saturating_sub(1)
    ]);

    for _ in 0..options.warmup_steps {
        trainer.step()?;
    }
    trainer.set_profile(options.profile);
    let steps = options.train_steps.max(1);
    let mut phases: Vec<Phase> = Vec::new();
    let _launches = Launches::observe();
    let counts = Counts::start(device);
    let before = Launches::by_kernel();
    let start = Instant::now();
    for _ in 0..steps {
        let record = trainer.step()?;
        for (i, phase) in record.phases.into_iter().enumerate() {
            match phases.get_mut(i) {
                Some(total) => {
                    total.ms += phase.ms;
                    total.product_ms += phase.product_ms;
                    total.multiply_adds += phase.multiply_adds;
                    total.launches += phase.launches;
                    total.cpu_ms = total.cpu_ms.zip(phase.cpu_ms).map(|(a, b)| a + b);
                }
                None => phases.push(phase),
            }
        }
    }
    let (train_launches, train_read_backs, train_flops) = counts.finish(device);
    let train_kernels = Launches::since(&before);
    let train_step_ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    // Means per step (launches rounded down).
    for phase in &mut phases {
        phase.ms /= steps as f64;
        phase.product_ms /= steps as f64;
        phase.multiply_adds /= steps as u64;
        phase.launches /= steps as u64;
        phase.cpu_ms = phase.cpu_ms.map(|ms| ms / steps as f64);
    }

    let model = trainer.model();
    let batch: Vec<Request> = dataset.train.iter().take(batch_size).cloned().collect();
    generator_rankings(&model, dataset, &batch, batch.len(), device)?;
    // The first timed batch is also the one whose launches, read-backs and FLOPs are counted.
    let counts = Counts::start(device);
    let before = Launches::by_kernel();
    let mut greedy_ms = Vec::with_capacity(GREEDY_BATCHES);
    let start = Instant::now();
    generator_rankings(&model, dataset, &batch, batch.len(), device)?;
    greedy_ms.push(start.elapsed().as_secs_f64() * 1e3);
    let (greedy_launches, greedy_read_backs, greedy_flops) = counts.finish(device);
    let greedy_kernels = Launches::since(&before);
    for _ in 1..GREEDY_BATCHES {
        let start = Instant::now();
        generator_rankings(&model, dataset, &batch, batch.len(), device)?;
        greedy_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    greedy_ms.sort_by(f64::total_cmp);
    let greedy_batch_ms = greedy_ms[GREEDY_BATCHES / 2];

    let mut latencies = Vec::with_capacity(options.latency_requests);
    for (i, request) in dataset
        .train
        .iter()
        .cycle()
        .take(options.latency_requests + 10)
        .enumerate()
    {
        let start = Instant::now();
        let ranking =
            generator_rankings(&model, dataset, std::slice::from_ref(request), 1, device)?;
        std::hint::black_box(ranking);
        if i >= 10 {
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let train_gflop_per_step = (train_flops > 0).then(|| train_flops as f64 / 1e9 / steps as f64);
    let greedy_gflop = (greedy_flops > 0).then(|| greedy_flops as f64 / 1e9);
    Ok(BenchRow {
        device: name.to_string(),
        settings: BenchSettings {
            d_model: config.d_model,
            layers: config.layers,
            decoder_mlp: config.decoder_mlp.unwrap_or(DECODER_MLP),
            candidates: dataset.config.candidates,
            list_len: dataset.config.list_len,
            group_size: config.group_size,
            batch_size,
            data_parallel: options.data_parallel,
            train_steps: steps,
        },
        generator_params: burn::module::Module::num_params(&model),
        train_step_ms,
        train_requests_per_s: batch_size as f64 / (train_step_ms / 1e3),
        greedy_batch_ms,
        greedy_requests_per_s: batch.len() as f64 / (greedy_batch_ms / 1e3),
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p90_ms: percentile(&latencies, 0.9),
        train_launches_per_step: (train_launches > 0).then(|| train_launches as f64 / steps as f64),
        greedy_launches: (greedy_launches > 0).then_some(greedy_launches),
        train_read_backs_per_step: train_read_backs as f64 / steps as f64,
        greedy_read_backs,
        train_gflop_per_step,
        greedy_gflop,
        train_gflops_per_s: train_gflop_per_step.map(|g| g / (train_step_ms / 1e3)),
        greedy_gflops_per_s: greedy_gflop.map(|g| g / (greedy_batch_ms / 1e3)),
        greedy_kernels,
        train_kernels,
        phases,
    })
}

/// Launches, read-backs and product FLOPs from `start` to `finish`, each taken once the
/// device has finished the work queued before it.
struct Counts {
    launches: u64,
    read_backs: u64,
    multiply_adds: u64,
}

impl Counts {
    fn start(device: &Device) -> Self {
        let _ = device.sync();
        Self {
            launches: Launches::total(),
            read_backs: read_backs(),
            multiply_adds: multiply_adds(),
        }
    }

    /// Launches, read-backs and product FLOPs (2 per multiply-add) since `start`.
    fn finish(self, device: &Device) -> (u64, u64, u64) {
        let _ = device.sync();
        (
            Launches::total() - self.launches,
            read_backs() - self.read_backs,
            2 * (multiply_adds() - self.multiply_adds),
        )
    }
}

/// A kernel's type name without module paths, and with only its first type argument:
/// `a::b::KernelBinop<a::AddOp>` → `KernelBinop<AddOp>` (`--json` keeps the whole name).
fn short_kernel_name(name: &str) -> String {
    let last = |path: &str| path.rsplit("::").next().unwrap_or(path).to_string();
    match name.split_once('<') {
        Some((base, rest)) => {
            let first = rest.split([',', '<', '>']).next().unwrap_or("");
            format!("{}<{}>", last(base), last(first.trim()))
        }
        None => last(name),
    }
}

/// The rows as `goalrank bench` prints them: the settings, a line per device, and the phases of
/// the training step where they were profiled.
pub fn bench_table(
    dataset: &Dataset,
    config: &GoalRankConfig,
    options: &BenchOptions,
    rows: &[BenchRow],
) -> String {
    let mut out = format!(
        "GoalRank d {}, {} layers, decoder MLP {}d, N {}, L {}, K {}, batch {}{}\n",
        config.d_model,
        config.layers,
        config.decoder_mlp.unwrap_or(DECODER_MLP),
        dataset.config.candidates,
        dataset.config.list_len,
        config.group_size,
        match rows.first().map(|r| r.settings.batch_size) {
            Some(batch) if batch != options.batch_size => format!(
                "{batch} (all the train split's requests; --batch-size {} asked)",
                options.batch_size
            ),
            _ => options.batch_size.to_string(),
        },
        if options.data_parallel > 1 {
            format!(
                ", training on {} copies of each device",
                options.data_parallel
            )
        } else {
            String::new()
        }
    );
    // The device column is as wide as its longest name (a served device's includes its URL).
    let w = rows
        .iter()
        .map(|r| r.device.chars().count())
        .max()
        .unwrap_or(0)
        .max(14);
    let _ = write!(
        out,
        "{:<w$} {:>8} {:>10} {:>11} {:>12} {:>13} {:>9} {:>9}",
        "device", "params", "step ms", "train rq/s", "greedy ms", "greedy rq/s", "p50 ms", "p90 ms"
    );
    for r in rows {
        let _ = write!(
            out,
            "\n{:<w$} {:>8} {:>10.1} {:>11.1} {:>12.1} {:>13.1} {:>9.2} {:>9.2}",
            r.device,
            r.generator_params,
            r.train_step_ms,
            r.train_requests_per_s,
            r.greedy_batch_ms,
            r.greedy_requests_per_s,
            r.latency_p50_ms,
            r.latency_p90_ms
        );
    }
    let count = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    let _ = write!(
        out,
        "\n\n{:<w$} {:>16} {:>16} {:>17} {:>17}",
        "device",
        "launches / step",
        "read-backs / step",
        "launches / greedy",
        "read-backs / greedy"
    );
    for r in rows {
        let _ = write!(
            out,
            "\n{:<w$} {:>16} {:>16.0} {:>17} {:>17}",
            r.device,
            count(r.train_launches_per_step),
            r.train_read_backs_per_step,
            count(r.greedy_launches.map(|v| v as f64)),
            r.greedy_read_backs
        );
    }
    let counted: Vec<&BenchRow> = rows
        .iter()
        .filter(|r| r.train_gflop_per_step.is_some())
        .collect();
    if !counted.is_empty() {
        let _ = write!(
            out,
            "\n\n{:<w$} {:>16} {:>10} {:>17} {:>10}   (matrix products, backward included)",
            "device", "GFLOP / step", "GFLOP/s", "GFLOP / greedy", "GFLOP/s"
        );
    }
    for r in counted {
        let step = r.train_gflop_per_step.unwrap_or(0.0);
        let greedy = r.greedy_gflop.unwrap_or(0.0);
        let _ = write!(
            out,
            "\n{:<w$} {:>16.1} {:>10.1} {:>17.1} {:>10.1}",
            r.device,
            step,
            step / (r.train_step_ms / 1e3),
            greedy,
            greedy / (r.greedy_batch_ms / 1e3)
        );
    }
    for r in rows.iter().filter(|r| !r.greedy_kernels.is_empty()) {
        let _ = write!(out, "\n\nkernels of a greedy batch on {}:", r.device);
        for k in &r.greedy_kernels {
            let _ = write!(
                out,
                "\n  {:>5}  {}",
                k.launches,
                short_kernel_name(&k.kernel)
            );
        }
    }
    for r in rows.iter().filter(|r| !r.train_kernels.is_empty()) {
        let _ = write!(
            out,
            "\n\nkernels of a training step on {} (mean of {}):",
            r.device, options.train_steps
        );
        for k in &r.train_kernels {
            let _ = write!(
                out,
                "\n  {:>7.1}  {}",
                k.launches as f64 / options.train_steps.max(1) as f64,
                short_kernel_name(&k.kernel)
            );
        }
    }
    for r in rows.iter().filter(|r| !r.phases.is_empty()) {
        let launches = r.phases.iter().any(|p| p.launches > 0);
        let products = r.phases.iter().any(|p| p.multiply_adds > 0);
        let threads = r.phases.iter().all(|p| p.cpu_ms.is_some());
        let _ = write!(
            out,
            "\n\ntraining step on {}, ms per phase (mean of {}){}{}{}:",
            r.device,
            options.train_steps,
            if threads {
                "; busy threads (the process's processor time / the phase's)"
            } else {
                ""
            },
            if products {
                "; of it in matrix products: ms, GFLOP/s"
            } else {
                ""
            },
            if launches { "; kernel launches" } else { "" }
        );
        for phase in &r.phases {
            let _ = write!(
                out,
                "\n  {:<16} {:>9.1} {:>5.1} %",
                phase.name,
                phase.ms,
                100.0 * phase.ms / r.train_step_ms
            );
            if threads {
                match phase.cpu_ms {
                    Some(cpu) if phase.ms > 0.0 => {
                        let _ = write!(out, " {:>6.2}", cpu / phase.ms);
                    }
                    _ => {
                        let _ = write!(out, " {:>6}", "–");
                    }
                }
            }
            if products {
                let _ = write!(out, " {:>9.1}", phase.product_ms);
                if phase.product_ms > 0.0 {
                    let rate = 2.0 * phase.multiply_adds as f64 / (phase.product_ms * 1e6);
                    let _ = write!(out, " {rate:>7.1}");
                } else {
                    let _ = write!(out, " {:>7}", "–");
                }
            }
            if launches {
                let _ = write!(out, " {:>7}", phase.launches);
            }
        }
        if products {
            let total: f64 = r.phases.iter().map(|p| p.ms).sum();
            let in_products: f64 = r.phases.iter().map(|p| p.product_ms).sum();
            let _ = write!(out, "\n  {:<16} {:>9.1}        ", "sum", total);
            if threads {
                let cpu: f64 = r.phases.iter().filter_map(|p| p.cpu_ms).sum();
                let _ = write!(out, " {:>6.2}", cpu / total.max(f64::MIN_POSITIVE));
            }
            let _ = write!(
                out,
                " {:>9.1}   (the rest: {:.1} ms)",
                in_products,
                total - in_products
            );
        }
    }
    out
}
