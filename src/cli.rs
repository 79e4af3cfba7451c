//! The command line. Parses arguments, calls the library, prints `{err:#}` on error and exits
//! with code 2 when the input was at fault.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use goalrank::data::{
    self, DataStats, Dataset, Origin, RequestConfig, SimConfig, Split, simulator,
};
use goalrank::device::DeviceKind;
use goalrank::eval::{SimplePolicy, reward_diagnostics};
use goalrank::experiment::{
    CompareOptions, ExperimentOptions, MainExperimentConfig, Study, compare, compare_json,
    compare_table, run_logging_study, run_main, run_study,
};
use goalrank::model::RewardKind;
use goalrank::run::{
    FitOptions, fit_goalrank, fit_pointwise, fit_reward, load_generator, load_reward,
};
use goalrank::train::{
    GoalRankConfig, GroupSampling, Objective, PointwiseTrainingConfig, Reward, RewardSelection,
    RewardTrainingConfig,
};

/// Writes a line to stdout. A failed write is an error the command returns: a closed pipe
/// (`goalrank rank ... | head -1`) ends the command quietly, anything else is reported.
macro_rules! out {
    () => {
        writeln!(std::io::stdout()).context(STDOUT)?
    };
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).context(STDOUT)?
    };
}

const STDOUT: &str = "writing to standard output";

/// GoalRank re-ranking: data, training and evaluation.
#[derive(Parser)]
#[command(name = "goalrank", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build (or load from cache) the re-ranking requests and print per-split statistics.
    Data {
        #[command(flatten)]
        data: DataArgs,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Train a reward model or a GoalRank generator; writes a run folder.
    Train {
        #[command(subcommand)]
        what: TrainCommand,
    },
    /// Rank requests from a JSON-lines file with a trained GoalRank run; JSON lines out.
    Rank {
        #[command(flatten)]
        data: DataArgs,
        /// GoalRank run folder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// JSON lines: {"user": id, "history": [ids], "history_labels": [0|1], "candidates": [ids]}.
        #[arg(long)]
        requests: PathBuf,
    },
    /// Speed of the default model: GoalRank training step, greedy ranking, batch-1 latency.
    Bench {
        #[command(flatten)]
        data: DataArgs,
        /// Devices to measure (comma-separated): `flex`, `wgpu` (needs a Vulkan adapter) or
        /// `remote:ws://HOST:PORT` (a `goalrank serve` process).
        #[arg(long, value_delimiter = ',', default_value = "flex")]
        device: Vec<DeviceKind>,
        /// Requests per training step and per greedy batch (at most the train split's: a
        /// larger batch is the whole split, and the header says so).
        #[arg(long, default_value_t = 512)]
        batch_size: usize,
        #[arg(long, default_value_t = 128)]
        d_model: usize,
        #[arg(long, default_value_t = 2)]
        layers: usize,
        /// Hidden width of the decoder's MLP as a multiple of d.
        #[arg(long, default_value_t = goalrank::model::DECODER_MLP)]
        decoder_mlp: usize,
        #[arg(long, default_value_t = GoalRankConfig::new().group_size)]
        group_size: usize,
        /// Timed training steps (after one warm-up step).
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Requests timed one at a time for the latency percentiles.
        #[arg(long, default_value_t = 100)]
        latency_requests: usize,
        /// Also time each phase of the training step (the device is synchronised at each
        /// phase boundary, which slows a GPU's step).
        #[arg(long)]
        profile: bool,
        /// Train data-parallel on this many copies of each device (as `train goalrank
        /// --devices flex,flex`).
        #[arg(long, default_value_t = 1)]
        data_parallel: usize,
        /// A JSON array, a row per device: its settings (the table's header), figures and, with
        /// --profile, its phases.
        #[arg(long)]
        json: bool,
    },
    /// Serve this machine's CPU (flex) or wgpu device to other goalrank processes over
    /// WebSocket: they train on it with `--devices remote:ws://HOST:PORT`. Runs until Ctrl+C or
    /// SIGTERM. WebSocket is unencrypted; serve on a network you trust.
    Serve {
        /// The device to serve: `flex` or `wgpu`.
        #[arg(long, default_value = "flex")]
        device: DeviceKind,
        /// Address to listen on (`0.0.0.0` for every interface).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Port to listen on (0: any free port, printed at start).
        #[arg(long, default_value_t = 3000)]
        port: u16,
        /// Accept only clients that present this token (they set GOALRANK_REMOTE_TOKEN).
        #[arg(long)]
        token: Option<String>,
    },
    /// Train a small reward model for a few steps on the CPU and on wgpu (Vulkan) from the same
    /// weights and compare the losses, run each WGSL kernel against its tensor-op twin on wgpu,
    /// and load half-precision (f16) weights on both; exits 1 when they differ.
    CheckDevice {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, default_value_t = 2)]
        steps: usize,
        /// Largest accepted relative loss difference.
        #[arg(long, value_parser = float32, default_value_t = 1e-3)]
        tolerance: f32,
    },
    /// Run a named, reproducible experiment and write its table to results/<dataset>/.
    Experiment {
        #[command(subcommand)]
        what: ExperimentCommand,
    },
    /// Open the app: browse requests, compare lists, inspect a group, train live.
    App {
        /// Data source to open (a MovieLens folder or sim:small / sim:tiny) instead of the last
        /// session's. sim:small opens with the browser demo's models, sim:tiny without any.
        #[arg(long)]
        data: Option<String>,
        /// Run the models on the GPU (wgpu on a Vulkan adapter) from the start.
        #[arg(long)]
        gpu: bool,
    },
    /// Score policies on the requests of a split with H@L, N@L, MAP@L, F1@L and AUC.
    Eval {
        #[command(flatten)]
        data: DataArgs,
        /// Simple policies to score (comma-separated); all three when no --checkpoint is given.
        #[arg(long, value_enum, value_delimiter = ',')]
        policy: Vec<SimplePolicy>,
        /// GoalRank or pointwise run folders to score (repeatable).
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// A reward-model run folder: adds each list's mean reward under it as a column
        /// (use the independent evaluator, trained with `train reward --split valid`).
        #[arg(long)]
        reward: Option<PathBuf>,
        /// Generator–Evaluator rows: each checkpoint samples --pick-k lists and this reward-model
        /// run picks the best (use the reward model the generators were trained against).
        #[arg(long)]
        pick_with: Option<PathBuf>,
        /// Lists sampled per request for the Generator–Evaluator rows (with --pick-with).
        #[arg(long, default_value_t = MainExperimentConfig::new().pick_k, requires = "pick_with")]
        pick_k: usize,
        /// With --pick-with: one more row in which every GoalRank checkpoint samples --pick-k
        /// lists and the reward model picks the best of all (Multi-Generator–Evaluator).
        #[arg(long)]
        multi: bool,
        /// Split to score.
        #[arg(long, value_enum, default_value_t = Split::Test)]
        split: Split,
        /// Seed of the random policy.
        #[arg(long, default_value_t = 0)]
        policy_seed: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExperimentCommand {
    /// GoalRank against every baseline on the test split, mean ± std over seeds; writes
    /// results/<dataset>/main.md, .csv and .json. About 15–45 min on 2 CPU cores for
    /// ml-latest-small with the defaults.
    Main(ExperimentArgs),
    /// GoalRank at 5 generator sizes (d 8 / 1 layer to d 192 / 4 layers); writes
    /// results/<dataset>/scaling.md, .csv, .json and .svg.
    Scaling(ExperimentArgs),
    /// GoalRank with K = 2, 4, 8, 16, 32, 64 lists per group; writes group-size.{md,csv,json,svg}.
    GroupSize(ExperimentArgs),
    /// GoalRank with the reward model's list rewards perturbed by noise λ = 0, 0.25, 0.5, 1
    /// during training; writes reward-noise.{md,csv,json,svg}.
    RewardNoise(ExperimentArgs),
    /// Simulator only: the world logged with an ε share of uniformly random lists, ε = 0, 0.25,
    /// 0.5, 1; the supervised-only generator and GoalRank at each; writes logging.{md,csv,json,svg}.
    Logging(ExperimentArgs),
}

/// Settings shared by every experiment. Studies reuse experiment main's reward models and
/// supervised-only generators (same seeds and steps) when they exist.
#[derive(Args)]
struct ExperimentArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Folder for the tables (a subfolder per dataset).
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Seeds [default: 3, or 2 with --smoke].
    #[arg(long)]
    seeds: Option<usize>,
    /// GoalRank and supervised-only generator steps [default: 1000, or 4 with --smoke].
    #[arg(long)]
    steps: Option<usize>,
    /// Steps of the exact-reward (oracle) GoalRank rows on the simulator [default: 2000, or 4
    /// with --smoke].
    #[arg(long)]
    oracle_steps: Option<usize>,
    /// A tiny configuration (2 seeds, d 16, a few steps) to check the pipeline end to end;
    /// --seeds, --steps and --oracle-steps still apply.
    #[arg(long)]
    smoke: bool,
    /// Studies on the simulator (not `experiment main`, whose exact-reward rows are part of its
    /// table): GoalRank learns from the exact utility (settings of the exact-reward rows,
    /// --oracle-steps steps) instead of the reward model; files and runs get an `-exact` suffix.
    #[arg(long)]
    exact_reward: bool,
}

impl ExperimentArgs {
    fn config(&self) -> MainExperimentConfig {
        let mut config = if self.smoke {
            MainExperimentConfig::smoke()
        } else {
            MainExperimentConfig::new()
        };
        if let Some(seeds) = self.seeds {
            config.seeds = seeds;
        }
        if let Some(steps) = self.steps {
            config.steps = steps;
        }
        if let Some(steps) = self.oracle_steps {
            config.oracle_steps = steps;
        }
        config
    }
}

#[derive(Subcommand)]
enum TrainCommand {
    /// Train the list-aware reward model (BCE on logged lists; best epoch on validation).
    Reward {
        #[command(flatten)]
        data: DataArgs,
        /// Run folder (default: <artifacts>/runs/<dataset>/reward, or reward-<split>).
        #[arg(long)]
        run: Option<PathBuf>,
        /// Split to train on: `valid` trains the independent evaluator (checked on train).
        #[arg(long, value_enum, default_value_t = Split::Train)]
        split: Split,
        /// The reward model's shape.
        #[arg(long, value_enum, default_value_t = RewardTrainingConfig::new().kind)]
        kind: RewardKind,
        #[arg(long, default_value_t = RewardTrainingConfig::new().epochs)]
        epochs: usize,
        #[arg(long, default_value_t = RewardTrainingConfig::new().d_model)]
        d_model: usize,
        #[arg(long, default_value_t = RewardTrainingConfig::new().layers)]
        layers: usize,
        #[arg(long, default_value_t = RewardTrainingConfig::new().batch_size)]
        batch_size: usize,
        #[arg(long, value_parser = float64, default_value_t = RewardTrainingConfig::new().learning_rate)]
        lr: f64,
        /// Weight of the listwise term: each clicked item against all candidates.
        #[arg(long, value_parser = float32, default_value_t = RewardTrainingConfig::new().listwise)]
        listwise: f32,
        /// Weight of the imitation term: the logged list's Plackett-Luce likelihood under the
        /// attraction logits, clicked or not (the logging policy's choices as a second signal).
        #[arg(long, value_parser = float32, default_value_t = RewardTrainingConfig::new().imitation)]
        imitation: f32,
        /// List-aware model: an explicit penalty from the items above each position (`false`
        /// trains the model without it).
        #[arg(long, default_value_t = RewardTrainingConfig::new().redundancy, action = clap::ArgAction::Set)]
        redundancy: bool,
        /// Random candidate lists per request and step (retrieved items labelled 0).
        #[arg(long, default_value_t = RewardTrainingConfig::new().random_lists)]
        random_lists: usize,
        /// What keeps an epoch: validation log-loss of the clicks, the validation objective
        /// (log-loss plus the weighted listwise and imitation terms), or how often R(logged
        /// list) > R(random list) on validation requests.
        #[arg(long, value_enum, default_value_t = RewardTrainingConfig::new().select)]
        select: RewardSelection,
        #[arg(long, default_value_t = RewardTrainingConfig::new().seed)]
        model_seed: u64,
    },
    /// Train a pointwise baseline: a DNN (default) or, with --context-layers 2, a PRM-style
    /// context-aware transformer; candidates are sorted by score.
    Pointwise {
        #[command(flatten)]
        data: DataArgs,
        /// Run folder (default: <artifacts>/runs/<dataset>/pointwise, or prm).
        #[arg(long)]
        run: Option<PathBuf>,
        /// Transformer layers over the candidate set (0 = pointwise DNN).
        #[arg(long, default_value_t = PointwiseTrainingConfig::new().context_layers)]
        context_layers: usize,
        #[arg(long, default_value_t = PointwiseTrainingConfig::new().epochs)]
        epochs: usize,
        #[arg(long, default_value_t = PointwiseTrainingConfig::new().d_model)]
        d_model: usize,
        #[arg(long, default_value_t = PointwiseTrainingConfig::new().batch_size)]
        batch_size: usize,
        #[arg(long, value_parser = float64, default_value_t = PointwiseTrainingConfig::new().learning_rate)]
        lr: f64,
        #[arg(long, default_value_t = PointwiseTrainingConfig::new().seed)]
        model_seed: u64,
    },
    /// Train a GoalRank generator against a frozen reward model.
    Goalrank {
        #[command(flatten)]
        data: DataArgs,
        /// Reward-model run folder (from `goalrank train reward`), or `oracle` for the
        /// simulator's exact utility (sim: data only).
        #[arg(long)]
        reward: PathBuf,
        /// What to minimise on each group: GoalRank's cross-entropy to the reference policy,
        /// or the policy-gradient baseline on the same advantages.
        #[arg(long, value_enum, default_value_t = GoalRankConfig::new().objective)]
        objective: Objective,
        /// Noise λ added to the group's rewards: R + λ · std_G(R) · ε.
        #[arg(long, value_parser = float32, default_value_t = GoalRankConfig::new().reward_noise)]
        reward_noise: f32,
        /// Temperature of the group's sampling (above 1: more varied lists).
        #[arg(long, value_parser = float32, default_value_t = GoalRankConfig::new().group_temperature)]
        group_temperature: f32,
        /// Run folder (default: <artifacts>/runs/<dataset>/goalrank).
        #[arg(long)]
        run: Option<PathBuf>,
        /// Continue an interrupted run from its last checkpoint.
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        #[arg(long, default_value_t = 100)]
        eval_every: usize,
        /// Lists per request in a group (K).
        #[arg(long, default_value_t = GoalRankConfig::new().group_size)]
        group_size: usize,
        /// Reference-policy temperature.
        #[arg(long, value_parser = float32, default_value_t = GoalRankConfig::new().tau)]
        tau: f32,
        #[arg(long, value_parser = float32, default_value_t = GoalRankConfig::new().w_ref)]
        w_ref: f32,
        #[arg(long, value_parser = float32, default_value_t = GoalRankConfig::new().w_sup)]
        w_sup: f32,
        #[arg(long, value_enum, default_value_t = GoalRankConfig::new().sampling)]
        sampling: GroupSampling,
        /// Leave the logged list out of the groups.
        #[arg(long)]
        no_logged: bool,
        #[arg(long, default_value_t = GoalRankConfig::new().d_model)]
        d_model: usize,
        #[arg(long, default_value_t = GoalRankConfig::new().layers)]
        layers: usize,
        #[arg(long, default_value_t = GoalRankConfig::new().heads)]
        heads: usize,
        /// Hidden width of the decoder's MLP as a multiple of d.
        #[arg(long, default_value_t = goalrank::model::DECODER_MLP)]
        decoder_mlp: usize,
        #[arg(long, default_value_t = GoalRankConfig::new().batch_size)]
        batch_size: usize,
        #[arg(long, value_parser = float64, default_value_t = GoalRankConfig::new().learning_rate)]
        lr: f64,
        #[arg(long, default_value_t = GoalRankConfig::new().seed)]
        model_seed: u64,
        /// Validate on the first this many validation requests [default: all].
        #[arg(long)]
        valid_requests: Option<usize>,
        /// Devices to train on, data-parallel (comma-separated, e.g. `flex,flex` or
        /// `wgpu,wgpu`): each takes a share of every batch and the gradients are summed on the
        /// first; the same checkpoint either way. `remote:ws://HOST:PORT` is the device a
        /// `goalrank serve` process hosts, on this machine or another.
        #[arg(long, value_delimiter = ',', default_value = "flex")]
        devices: Vec<DeviceKind>,
    },
}

/// Refuses more data-parallel copies (`flag`'s count) than a batch has requests (`batch_size`,
/// at most the train split's): each copy takes a share of at least one request.
fn check_copies(
    flag: &'static str,
    copies: usize,
    batch_size: usize,
    dataset: &goalrank::data::Dataset,
) -> Result<()> {
    let batch = batch_size.min(dataset.train.len());
    if copies > batch.max(1) {
        anyhow::bail!(goalrank::Error::Setting {
            name: flag,
            value: copies.to_string(),
            rule: format!(
                "more copies than the {batch} requests of a batch: each needs at least one"
            ),
        });
    }
    Ok(())
}

/// Where the data comes from and how requests are cut.
#[derive(Args)]
struct DataArgs {
    /// MovieLens folder (ml-latest(-small) CSV, ml-100k or ml-1m layout, detected from its
    /// files), or `sim:tiny` / `sim:small` / `sim:large` for the simulator (options after a
    /// comma: `sim:small,epsilon=0.5,temperature=2` for the logging policy).
    #[arg(long, default_value = "assets/data/movielens-latest-small")]
    data: PathBuf,
    /// Folder for cached requests (and, later, runs).
    #[arg(long, default_value = "artifacts")]
    artifacts: PathBuf,
    /// Candidates per request (N) [default: 50 for MovieLens, the preset's for sim:].
    #[arg(long)]
    candidates: Option<usize>,
    /// List length (L); metrics are computed at k = L [default: 6, or the preset's for sim:].
    #[arg(long)]
    list_len: Option<usize>,
    /// Most history items per request.
    #[arg(long, default_value_t = RequestConfig::new().history_len)]
    history_len: usize,
    /// Seed of the retriever and the candidate shuffle.
    #[arg(long, default_value_t = RequestConfig::new().seed)]
    seed: u64,
}

impl DataArgs {
    fn config(&self) -> RequestConfig {
        let defaults = RequestConfig::new();
        defaults
            .clone()
            .with_candidates(self.candidates.unwrap_or(defaults.candidates))
            .with_list_len(self.list_len.unwrap_or(defaults.list_len))
            .with_history_len(self.history_len)
            .with_seed(self.seed)
    }

    /// The simulator settings when `--data` is `sim:<preset>`, with N, L, history and seed
    /// taken from the command line where given.
    fn simulator(&self) -> Result<Option<SimConfig>> {
        let source = self.data.to_string_lossy();
        let Some(name) = simulator::preset_name(&source) else {
            return Ok(None);
        };
        let preset = SimConfig::preset(name)?;
        Ok(Some(
            preset
                .clone()
                .with_candidates(self.candidates.unwrap_or(preset.candidates))
                .with_list_len(self.list_len.unwrap_or(preset.list_len))
                .with_history_len(self.history_len)
                .with_seed(self.seed),
        ))
    }

    /// The folder that holds this dataset's training runs.
    fn runs(&self, dataset: &Dataset) -> PathBuf {
        self.artifacts.join("runs").join(&dataset.name)
    }

    /// Loads the dataset from the cache or builds it, telling the user which on stderr.
    fn load(&self) -> Result<Dataset> {
        refuse_file("--artifacts", &self.artifacts)?;
        let start = Instant::now();
        if let Some(config) = self.simulator()? {
            let dataset = simulator::build(&config)?;
            goalrank::say!(
                "{}: simulated in {:.1}s",
                dataset.name,
                start.elapsed().as_secs_f64()
            );
            return Ok(dataset);
        }
        let (dataset, origin, path) =
            data::load_or_build(&self.data, &self.config(), &self.artifacts, true)?;
        let verb = match origin {
            Origin::Built => "built and cached",
            Origin::Cached => "loaded from cache",
        };
        goalrank::say!(
            "{}: {verb} in {:.1}s ({})",
            dataset.name,
            start.elapsed().as_secs_f64(),
            path.display()
        );
        Ok(dataset)
    }
}

pub fn main() -> ExitCode {
    // Every command computes on the CPU (flex) unless it builds a wgpu device itself, but Burn
    // materialises a resumed optimiser state on its *default* device first, which would start
    // a GPU driver (or, without Vulkan, wgpu's slow OpenGL fallback). Pin the default to flex
    // unless the user chose one.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: nothing else runs yet; no other thread reads the environment.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    // Reuse freed memory (a third faster on the CPU backend); GOALRANK_RELEASE_MEMORY=1
    // keeps the C library's defaults, which hand large blocks back to the system.
    if std::env::var_os("GOALRANK_RELEASE_MEMORY").is_none() {
        goalrank::device::keep_freed_memory();
    }
    let cli = parse();
    // The app's window must stay on the main thread (its training runs on the pool itself).
    let result = match cli.command {
        Command::App { .. } => run(cli),
        _ => goalrank::model::on_thread_pool(move || run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): stop quietly, as other Unix tools do.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            goalrank::say!("error: {err:#}");
            let input = err
                .downcast_ref::<goalrank::Error>()
                .is_some_and(goalrank::Error::is_input);
            ExitCode::from(if input { 2 } else { 1 })
        }
    }
}

/// A 32-bit float flag's value. A number written in range that f32 cannot hold (`1e300`, or
/// `1e-50`, which would become infinite or 0) is refused as written, rather than reaching the
/// range checks as `inf` or `0`; `inf` and `NaN` as written reach them (and are refused there).
fn float32(text: &str) -> std::result::Result<f32, String> {
    let wide = float64(text)?;
    let value = wide as f32;
    let overflows = wide.is_finite() && value.is_infinite();
    let underflows = wide != 0.0 && value == 0.0;
    if overflows || underflows {
        return Err(format!(
            "{text} is outside the range of a 32-bit float (nonzero magnitudes 1.4e-45 to 3.4e38)"
        ));
    }
    Ok(value)
}

/// A 64-bit float flag's value; a number too large for f64 (`1e400`) is refused as written.
fn float64(text: &str) -> std::result::Result<f64, String> {
    let written = text.trim();
    let value: f64 = written
        .parse()
        .map_err(|_| format!("{text} is not a number"))?;
    let written_infinite = written
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase()
        .starts_with("inf");
    if value.is_infinite() && !written_infinite {
        return Err(format!("{text} is outside the range of a 64-bit float"));
    }
    Ok(value)
}

/// Parses the command line. Negative numbers are values (`--tau -1` is refused by the range
/// check naming `--tau`, not taken for an unknown flag).
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    fn negatives(command: clap::Command) -> clap::Command {
        command
            .allow_negative_numbers(true)
            .mut_subcommands(negatives)
    }
    let one_line = |e: clap::Error| -> ! {
        use clap::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            e.exit();
        }
        // A usage error is one line, like every other input error (exit code 2): clap's first
        // line, with the indented lines under it (the arguments a "not provided" error names).
        let text = e.render().to_string();
        let mut lines = text.lines();
        let mut first = lines
            .next()
            .unwrap_or("error: invalid arguments")
            .to_string();
        for named in lines.take_while(|l| l.starts_with("  ")) {
            first.push(' ');
            first.push_str(named.trim());
        }
        goalrank::say!("{first} (see --help)");
        std::process::exit(2)
    };
    let matches = negatives(Cli::command())
        .try_get_matches()
        .unwrap_or_else(|e| one_line(e));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| one_line(e))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data { data, json } => {
            let stats = DataStats::of(&data.load()?);
            if json {
                out!("{}", stats.json());
            } else {
                out!("{}", stats.table());
            }
        }
        Command::Train { what } => train(what)?,
        Command::Experiment { what } => experiment(what)?,
        Command::App { data, gpu } => {
            let mut settings = data.map(goalrank::app::Settings::for_source);
            if gpu {
                settings.get_or_insert_with(Default::default).use_wgpu = true;
            }
            goalrank::app::run_native(settings).map_err(|e| anyhow::anyhow!("app: {e}"))?;
        }
        Command::CheckDevice {
            data,
            steps,
            tolerance,
        } => {
            let check = goalrank::experiment::check_wgpu(&data.load()?, steps, tolerance)?;
            out!("{}", serde_json::to_string(&check)?);
            goalrank::say!(
                "wgpu matches flex (max relative difference {})",
                check.max_relative_difference
            );
        }
        Command::Bench {
            data,
            device,
            batch_size,
            d_model,
            layers,
            decoder_mlp,
            group_size,
            steps,
            latency_requests,
            profile,
            data_parallel,
            json,
        } => {
            let config = GoalRankConfig::new()
                .with_d_model(d_model)
                .with_layers(layers)
                .with_decoder_mlp(goalrank::model::decoder_mlp_setting(decoder_mlp))
                .with_group_size(group_size);
            config.validate()?;
            goalrank::error::check::at_least("--steps", steps, 1)?;
            goalrank::error::check::at_least("--data-parallel", data_parallel, 1)?;
            let dataset = data.load()?;
            let options = goalrank::experiment::BenchOptions {
                batch_size,
                train_steps: steps,
                warmup_steps: 1,
                latency_requests,
                profile,
                data_parallel,
            };
            check_copies("--data-parallel", data_parallel, batch_size, &dataset)?;
            if batch_size > dataset.train.len() {
                goalrank::say!(
                    "bench: the train split has {} requests: batches of that many (--batch-size {batch_size} asked)",
                    dataset.train.len()
                );
            }
            let reward = RewardTrainingConfig::new();
            let mut rows = Vec::new();
            // A device that fails keeps the figures of those measured before it: they are
            // printed, then the error.
            let mut failed = None;
            for d in device {
                let measured = d.init().and_then(|dev| {
                    let name = d.label_with_adapter();
                    goalrank::say!("bench: {name} ...");
                    goalrank::experiment::bench_device(
                        &dataset, &config, &reward, &options, &name, &dev,
                    )
                });
                match measured {
                    Ok(row) => rows.push(row),
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            if rows.is_empty() {
                // Nothing was measured: only the error below.
            } else if json {
                out!("{}", serde_json::to_string(&rows)?);
            } else {
                out!(
                    "{}",
                    goalrank::experiment::bench_table(&dataset, &config, &options, &rows)
                );
            }
            if let Some(err) = failed {
                return Err(err.into());
            }
        }
        Command::Serve {
            device,
            bind,
            port,
            token,
        } => {
            if matches!(device, DeviceKind::Remote(_)) {
                anyhow::bail!(goalrank::Error::Setting {
                    name: "--device",
                    value: device.to_string(),
                    rule: "must be flex or wgpu (a server hosts one of its own devices)".into(),
                });
            }
            let server = goalrank::device::remote_server(device.init()?, token)?;
            let listener = std::net::TcpListener::bind((bind.as_str(), port)).map_err(|err| {
                goalrank::Error::Setting {
                    name: "--bind/--port",
                    value: format!("{bind}:{port}"),
                    rule: format!("cannot listen there: {err}"),
                }
            })?;
            let address = listener.local_addr()?;
            out!(
                "serving {} on ws://{address} (Ctrl+C stops); clients: --devices remote:ws://{address}",
                device.label()
            );
            goalrank::device::serve(&server, listener)?;
        }
        Command::Rank {
            data,
            checkpoint,
            requests,
        } => {
            // On logged data a run built on other request settings is refused before the
            // requests are built (the simulator's come from its preset).
            if data.simulator()?.is_none() {
                goalrank::run::check_run_requests(&checkpoint, "goalrank", &data.config())?;
            }
            let dataset = data.load()?;
            let device = Device::flex();
            let model = load_generator(&checkpoint, &dataset, &device)?;
            for answer in goalrank::rank::rank_file(&model, &dataset, &requests, &device)? {
                out!("{}", serde_json::to_string(&answer)?);
            }
        }
        Command::Eval {
            data,
            policy,
            checkpoint,
            reward,
            pick_with,
            pick_k,
            multi,
            split,
            policy_seed,
            json,
        } => {
            let dataset = data.load()?;
            let options = CompareOptions {
                policies: policy,
                checkpoints: checkpoint,
                reward,
                pick_with,
                pick_k,
                multi,
                split,
                seed: policy_seed,
                progress: true,
            };
            let rows = compare(&dataset, &options, &Device::flex())?;
            if json {
                out!("{}", compare_json(&dataset, split, &rows));
            } else {
                out!("{}", compare_table(&dataset, split, &rows));
            }
        }
    }
    Ok(())
}

/// `--exact-reward` belongs to the studies (main has its exact-reward rows already).
fn refuse_exact_reward(args: &ExperimentArgs, command: &str) -> Result<()> {
    if args.exact_reward {
        anyhow::bail!(goalrank::Error::Setting {
            name: "--exact-reward",
            value: "true".into(),
            rule: format!(
                "applies to the studies (scaling, group-size, reward-noise), not to experiment \
                 {command}"
            ),
        });
    }
    Ok(())
}

fn experiment(what: ExperimentCommand) -> Result<()> {
    let (study, args) = match what {
        ExperimentCommand::Main(args) => (None, args),
        ExperimentCommand::Scaling(args) => (Some(Study::Scaling), args),
        ExperimentCommand::GroupSize(args) => (Some(Study::GroupSize), args),
        ExperimentCommand::RewardNoise(args) => (Some(Study::RewardNoise), args),
        ExperimentCommand::Logging(args) => {
            refuse_exact_reward(&args, "logging")?;
            return logging_study(&args);
        }
    };
    if study.is_none() {
        refuse_exact_reward(&args, "main")?;
    }
    if args.exact_reward && args.data.simulator()?.is_none() {
        anyhow::bail!(goalrank::Error::Setting {
            name: "--exact-reward",
            value: "true".into(),
            rule: format!(
                "needs the simulator's exact utility; --data {} is logged data",
                args.data.data.display()
            ),
        });
    }
    refuse_file("--results", &args.results)?;
    args.config().validate()?;
    let dataset = args.data.load()?;
    let mut config = args.config();
    if dataset.world.is_some() {
        // Random candidate lists (labelled 0 off the logged list) teach a MovieLens reward model
        // about retrieved items that are never logged; on the simulator every candidate can be
        // logged, and an unlogged one is not a known non-click, so they are left out.
        config = config.with_random_lists(0);
    } else {
        config = config.for_logged_data();
    }
    let options = ExperimentOptions {
        runs: args.data.runs(&dataset),
        progress: true,
        device: Device::flex(),
    };
    let start = Instant::now();
    let dir = args.results.join(&dataset.name);
    // The results folder must be writable before hours of training, not after.
    std::fs::create_dir_all(&dir).map_err(|source| goalrank::Error::Write {
        path: dir.clone(),
        source,
    })?;
    let name = study.map_or("main".to_string(), |s| {
        goalrank::experiment::study_file_name(s, args.exact_reward)
    });
    let name = name.as_str();
    let report = match study {
        None => run_main(&dataset, &config, &options)?,
        Some(study) => {
            let (report, plot) = run_study(&dataset, study, &config, args.exact_reward, &options)?;
            let svg = dir.join(format!("{name}.svg"));
            goalrank::files::write_bytes(&svg, plot.svg().as_bytes())?;
            report
        }
    };
    report.write(&dir, name)?;
    goalrank::files::save_json(&config, &dir.join(format!("{name}.config.json")))?;
    out!("{}", report.markdown());
    goalrank::say!(
        "experiment {name}: {:.0} s; wrote {}/{name}.md, .csv, .json{}",
        start.elapsed().as_secs_f64(),
        dir.display(),
        if study.is_some() { ", .svg" } else { "" }
    );
    Ok(())
}

/// `experiment logging` (the simulator's exploration study).
fn logging_study(args: &ExperimentArgs) -> Result<()> {
    let Some(world) = args.data.simulator()? else {
        return Err(goalrank::Error::Invalid(format!(
            "--data {}: experiment logging needs the simulator (--data sim:small)",
            args.data.data.display()
        ))
        .into());
    };
    if args.data.data.to_string_lossy().contains("epsilon=") {
        return Err(goalrank::Error::Setting {
            name: "--data",
            value: args.data.data.display().to_string(),
            rule: "experiment logging sets the logging policy's ε itself (0, 0.25, 0.5 and 1): \
                   leave epsilon= out"
                .into(),
        }
        .into());
    }
    let config = args.config().with_random_lists(0);
    let start = Instant::now();
    let (report, plot) = run_logging_study(
        &world,
        &config,
        &args.data.artifacts.join("runs"),
        true,
        &Device::flex(),
    )?;
    let dir = args.results.join(format!("sim-{}", world.name));
    goalrank::files::write_bytes(&dir.join("logging.svg"), plot.svg().as_bytes())?;
    report.write(&dir, "logging")?;
    goalrank::files::save_json(&config, &dir.join("logging.config.json"))?;
    out!("{}", report.markdown());
    goalrank::say!(
        "experiment logging: {:.0} s; wrote {}/logging.md, .csv, .json, .svg",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// Refuses `flag`'s `path` where it names something other than a folder (it may not exist yet).
fn refuse_file(flag: &str, path: &std::path::Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        anyhow::bail!(goalrank::Error::Invalid(format!(
            "{flag} {}: is a file, not a folder",
            path.display()
        )));
    }
    Ok(())
}

/// Refuses a `--run` that is a file, or that holds a run already where the command would start
/// one afresh. `resume` is `None` for commands that cannot continue a run (the reward and
/// pointwise models train in one go), else whether `--resume` was given.
fn check_run_folder(run: &std::path::Path, resume: Option<bool>) -> Result<()> {
    refuse_file("--run", run)?;
    if resume != Some(true) && run.join("config.json").is_file() {
        let how = if resume.is_some() {
            "continue it with --resume, or delete it or choose another folder to start afresh"
        } else {
            "delete it or choose another folder"
        };
        anyhow::bail!(goalrank::Error::Invalid(format!(
            "--run {}: already holds a run; {how}",
            run.display()
        )));
    }
    Ok(())
}

fn train(what: TrainCommand) -> Result<()> {
    let device = Device::flex();
    match what {
        TrainCommand::Reward {
            data,
            run,
            split,
            kind,
            epochs,
            d_model,
            layers,
            batch_size,
            lr,
            listwise,
            imitation,
            redundancy,
            random_lists,
            select,
            model_seed,
        } => {
            let config = RewardTrainingConfig::new()
                .with_kind(kind)
                .with_epochs(epochs)
                .with_d_model(d_model)
                .with_layers(layers)
                .with_batch_size(batch_size)
                .with_learning_rate(lr)
                .with_random_lists(random_lists)
                .with_listwise(listwise)
                .with_imitation(imitation)
                .with_redundancy(redundancy)
                .with_select(select)
                .with_seed(model_seed);
            config.validate()?;
            let dataset = data.load()?;
            let (default_name, check) = match split {
                Split::Valid => ("reward-valid", Split::Train),
                _ => ("reward", Split::Valid),
            };
            let run = run.unwrap_or_else(|| data.runs(&dataset).join(default_name));
            check_run_folder(&run, None)?;
            let options = FitOptions::new(run.clone(), device);
            let device = options.device.clone();
            let (model, state) = fit_reward(&dataset, split, check, &config, &options)?;
            out!(
                "reward model: best {} {} {:.4} at step {} ({:.0}s) -> {}",
                check.name(),
                match config.select {
                    RewardSelection::LogLoss => "log-loss",
                    RewardSelection::Objective => "objective",
                    RewardSelection::LoggedOverRandom => "1 − share of R(logged) > R(random)",
                },
                state.best.unwrap_or(f64::NAN),
                state.best_step,
                state.seconds,
                run.display()
            );
            // How it ranks lists, on (up to 500) requests of the split it was checked on.
            let requests = goalrank::eval::diagnostic_probe(dataset.split(check));
            let diagnostics = reward_diagnostics(&model, &dataset, requests, 128, 0, &device)?;
            out!(
                "reward model on {} {} requests: {}",
                requests.len(),
                check.name(),
                diagnostics.summary()
            );
        }
        TrainCommand::Pointwise {
            data,
            run,
            context_layers,
            epochs,
            d_model,
            batch_size,
            lr,
            model_seed,
        } => {
            let config = PointwiseTrainingConfig::new()
                .with_context_layers(context_layers)
                .with_epochs(epochs)
                .with_d_model(d_model)
                .with_batch_size(batch_size)
                .with_learning_rate(lr)
                .with_seed(model_seed);
            config.validate()?;
            let dataset = data.load()?;
            let name = if context_layers == 0 {
                "pointwise"
            } else {
                "prm"
            };
            let run = run.unwrap_or_else(|| data.runs(&dataset).join(name));
            check_run_folder(&run, None)?;
            let options = FitOptions::new(run.clone(), device);
            let (_, state) = fit_pointwise(&dataset, &config, &options)?;
            out!(
                "{name}: best valid N@{} {:.4} at step {} ({:.0}s) -> {}",
                dataset.config.list_len,
                state.best.unwrap_or(f64::NAN),
                state.best_step,
                state.seconds,
                run.display()
            );
        }
        TrainCommand::Goalrank {
            data,
            reward,
            run,
            resume,
            steps,
            eval_every,
            group_size,
            tau,
            w_ref,
            w_sup,
            sampling,
            objective,
            reward_noise,
            group_temperature,
            no_logged,
            d_model,
            layers,
            heads,
            decoder_mlp,
            batch_size,
            lr,
            model_seed,
            valid_requests,
            devices,
        } => {
            let config = GoalRankConfig::new()
                .with_group_size(group_size)
                .with_tau(tau)
                .with_w_ref(w_ref)
                .with_w_sup(w_sup)
                .with_sampling(sampling)
                .with_objective(objective)
                .with_reward_noise(reward_noise)
                .with_group_temperature(group_temperature)
                .with_include_logged(!no_logged)
                .with_d_model(d_model)
                .with_layers(layers)
                .with_heads(heads)
                .with_decoder_mlp(goalrank::model::decoder_mlp_setting(decoder_mlp))
                .with_batch_size(batch_size)
                .with_learning_rate(lr)
                .with_seed(model_seed);
            config.validate()?;
            goalrank::error::check::at_least("--steps", steps, 1)?;
            goalrank::error::check::at_least("--eval-every", eval_every, 1)?;
            if no_logged && group_size < 2 {
                anyhow::bail!(goalrank::Error::Setting {
                    name: "--group-size",
                    value: group_size.to_string(),
                    rule: "must be at least 2 with --no-logged (a group of one list compares \
                           nothing)"
                        .into(),
                });
            }
            let dataset = data.load()?;
            check_copies("--devices", devices.len(), batch_size, &dataset)?;
            // The first device holds the batches, the frozen reward model and the optimiser.
            let mut devices = devices.iter().map(DeviceKind::init);
            let main = devices.next().unwrap_or(Ok(device))?;
            let reward = if reward.as_os_str() == "oracle" {
                Reward::oracle(&dataset)?
            } else {
                Reward::from(load_reward(&reward, &dataset, &main)?)
            };
            let run = run.unwrap_or_else(|| data.runs(&dataset).join("goalrank"));
            check_run_folder(&run, Some(resume))?;
            let options = FitOptions {
                steps,
                eval_every,
                resume,
                valid_requests,
                replicas: devices.collect::<goalrank::Result<_>>()?,
                ..FitOptions::new(run.clone(), main)
            };
            // A run on the exact utility is selected on it; any other on N@L.
            let measure = match &reward {
                Reward::Oracle(_) => "utility".to_string(),
                Reward::Model(_) => format!("N@{}", dataset.config.list_len),
            };
            let (_, state) = fit_goalrank(&dataset, reward, &config, &options)?;
            out!(
                "goalrank: best valid {measure} {:.4} at step {} ({:.0}s) -> {}",
                state.best.unwrap_or(f64::NAN),
                state.best_step,
                state.seconds,
                run.display()
            );
        }
    }
    Ok(())
}
