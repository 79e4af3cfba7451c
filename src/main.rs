//! `goalrank`: the command line. Parses arguments, calls the library, prints `{err:#}` on error
//! and exits with code 2 when the input was at fault.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use goalrank::data::{self, DataStats, Dataset, Origin, RequestConfig, Split, SplitStats};
use goalrank::eval::{Metrics, SimplePolicy, evaluate};
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

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
    /// Score policies on the requests of a split with H@L, N@L, MAP@L, F1@L and AUC.
    Eval {
        #[command(flatten)]
        data: DataArgs,
        /// Policies to score (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = SimplePolicy::ALL)]
        policy: Vec<SimplePolicy>,
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

/// Where the data comes from and how requests are cut.
#[derive(Args)]
struct DataArgs {
    /// MovieLens folder: ml-latest(-small) CSV, ml-100k or ml-1m layout, detected from its files.
    #[arg(long, default_value = "assets/data/movielens-latest-small")]
    data: PathBuf,
    /// Folder for cached requests (and, later, runs).
    #[arg(long, default_value = "artifacts")]
    artifacts: PathBuf,
    /// Candidates per request (N).
    #[arg(long, default_value_t = 50)]
    candidates: usize,
    /// List length (L); metrics are computed at k = L.
    #[arg(long, default_value_t = 6)]
    list_len: usize,
    /// Most history items per request.
    #[arg(long, default_value_t = 50)]
    history_len: usize,
    /// Seed of the retriever and the candidate shuffle.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

impl DataArgs {
    fn config(&self) -> RequestConfig {
        RequestConfig::new()
            .with_candidates(self.candidates)
            .with_list_len(self.list_len)
            .with_history_len(self.history_len)
            .with_seed(self.seed)
    }

    /// Loads the dataset from the cache or builds it, telling the user which on stderr.
    fn load(&self) -> Result<Dataset> {
        let start = Instant::now();
        let (dataset, origin, path) =
            data::load_or_build(&self.data, &self.config(), &self.artifacts, true)?;
        let verb = match origin {
            Origin::Built => "built and cached",
            Origin::Cached => "loaded from cache",
        };
        eprintln!(
            "{}: {verb} in {:.1}s ({})",
            dataset.name,
            start.elapsed().as_secs_f64(),
            path.display()
        );
        Ok(dataset)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let input = err
                .downcast_ref::<goalrank::Error>()
                .is_some_and(goalrank::Error::is_input);
            ExitCode::from(if input { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data { data, json } => {
            let stats = DataStats::of(&data.load()?);
            if json {
                println!("{}", data_json(&stats));
            } else {
                print_data(&stats);
            }
        }
        Command::Eval {
            data,
            policy,
            split,
            policy_seed,
            json,
        } => {
            let dataset = data.load()?;
            let k = dataset.config.list_len;
            let requests = dataset.split(split);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(policy_seed);
            let rows: Vec<(SimplePolicy, Metrics)> = policy
                .iter()
                .map(|&p| {
                    let metrics = evaluate(requests, k, |r| p.rank(&dataset, r, k, &mut rng));
                    (p, metrics)
                })
                .collect();
            if json {
                println!("{}", eval_json(&dataset, split, &rows));
            } else {
                print_eval(&dataset, split, &rows);
            }
        }
    }
    Ok(())
}

fn data_json(stats: &DataStats) -> serde_json::Value {
    serde_json::json!({
        "name": stats.name,
        "layout": stats.layout,
        "catalogue_items": stats.catalogue_items,
        "requests": {
            "train": stats.train.requests,
            "valid": stats.valid.requests,
            "test": stats.test.requests,
        },
        "positive_rate": stats.positive_rate,
        "retriever_recall_at_50": stats.retriever_recall_at_50,
        "popularity_recall_at_50": stats.popularity_recall_at_50,
        "splits": {"train": stats.train, "valid": stats.valid, "test": stats.test},
    })
}

fn print_data(stats: &DataStats) {
    println!(
        "{} ({} layout), {} items in the catalogue",
        stats.name, stats.layout, stats.catalogue_items
    );
    println!(
        "{:<6} {:>6} {:>6} {:>9} {:>9} {:>12} {:>13}",
        "split", "users", "items", "requests", "positive", "no positive", "mean history"
    );
    let row = |name: &str, s: &SplitStats| {
        println!(
            "{:<6} {:>6} {:>6} {:>9} {:>9.4} {:>12} {:>13.1}",
            name,
            s.users,
            s.items,
            s.requests,
            s.positive_rate,
            s.requests_without_positives,
            s.mean_history_len
        );
    };
    row("train", &stats.train);
    row("valid", &stats.valid);
    row("test", &stats.test);
    let total = stats.train.requests + stats.valid.requests + stats.test.requests;
    println!(
        "all    {total} requests, positive rate {:.4}",
        stats.positive_rate
    );
    println!(
        "retriever recall@50 of test positives: {:.4} (train popularity: {:.4})",
        stats.retriever_recall_at_50, stats.popularity_recall_at_50
    );
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Valid => "valid",
        Split::Test => "test",
    }
}

fn eval_json(
    dataset: &Dataset,
    split: Split,
    rows: &[(SimplePolicy, Metrics)],
) -> serde_json::Value {
    let policies: serde_json::Map<String, serde_json::Value> = rows
        .iter()
        .map(|(p, m)| (p.name().to_string(), serde_json::json!(m)))
        .collect();
    serde_json::json!({
        "dataset": dataset.name,
        "split": split_name(split),
        "policies": policies,
    })
}

fn print_eval(dataset: &Dataset, split: Split, rows: &[(SimplePolicy, Metrics)]) {
    let k = dataset.config.list_len;
    println!(
        "{} / {}: N = {}, L = {k}",
        dataset.name,
        split_name(split),
        dataset.config.candidates
    );
    let heads = [
        format!("H@{k}"),
        format!("N@{k}"),
        format!("MAP@{k}"),
        format!("F1@{k}"),
        "AUC".to_string(),
    ];
    println!(
        "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "policy", heads[0], heads[1], heads[2], heads[3], heads[4]
    );
    for (p, m) in rows {
        println!(
            "{:<12} {:>8.4} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
            p.name(),
            m.hit_ratio,
            m.ndcg,
            m.map,
            m.f1,
            m.auc
        );
    }
    if let Some((_, m)) = rows.first() {
        println!(
            "{} requests; {} without a logged positive are excluded from every metric",
            m.requests, m.without_positives
        );
    }
}
