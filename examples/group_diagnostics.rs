//! The reward model on the lists GoalRank's step compares, at several sampling temperatures:
//! groups of K lists sampled from trained generators of one `experiment main` seed on the
//! simulator, against the exact utility (`goalrank::eval::group_diagnostics`).
//!
//! ```bash
//! cargo run --release --example group_diagnostics -- artifacts/runs/sim-small/main/seed-0 \
//!     supervised,goalrank-oracle 1,1.5,2,3,5
//! ```

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::Device;
use goalrank::data::Split;
use goalrank::data::simulator::{self, SimConfig};
use goalrank::eval::group_diagnostics;
use goalrank::run::{load_generator, load_reward};

/// Lists per group (experiment main's K) and validation requests looked at.
const GROUP_SIZE: usize = 20;
const REQUESTS: usize = 500;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seed_dir, generators, temperatures] = args.as_slice() else {
        anyhow::bail!(
            "usage: group_diagnostics SEED_DIR GENERATOR[,GENERATOR...] TEMPERATURE[,...] \
             (SEED_DIR holds `reward` and the generators' run folders of one experiment main \
             seed on sim:small)"
        );
    };
    let seed_dir = PathBuf::from(seed_dir);
    let temperatures: Vec<f32> = temperatures
        .split(',')
        .map(|t| t.parse().with_context(|| format!("temperature {t:?}")))
        .collect::<anyhow::Result<_>>()?;
    let dataset = simulator::build(&SimConfig::preset("small")?)?;
    let device = Device::flex();
    let reward = load_reward(&seed_dir.join("reward"), &dataset, &device)?;
    let valid = dataset.split(Split::Valid);
    let probe = &valid[..valid.len().min(REQUESTS)];
    println!("generator  temperature  Spearman(R,U)  pairs as U  U spread  R error  wide pairs");
    for name in generators.split(',') {
        let generator = load_generator(&seed_dir.join(name), &dataset, &device)?;
        for &t in &temperatures {
            let g = group_diagnostics(
                &generator, &reward, &dataset, probe, GROUP_SIZE, t, 128, 0, &device,
            )?
            .context("sim:small has an exact utility")?;
            println!(
                "{name}  {t}  {:.3}  {:.3}  {:.3}  {:.3}  {:.3}",
                g.spearman, g.pair_accuracy, g.utility_spread, g.centred_error, g.gap_exceeds_error
            );
        }
    }
    Ok(())
}
