//! The command line: `flowsteer train | sample | steer | search | bench | sweep | info`.
//! Each command lives in its own module with its arguments and its `run`.

pub mod bench;
pub mod common;
pub mod info;
pub mod particles;
pub mod profile;
pub mod sample;
pub mod search;
pub mod steer;
pub mod sweep;
pub mod train;

use clap::{Parser, Subcommand};

/// Inference-time scaling and steering of flow-matching models with particles, on CPU and CUDA.
#[derive(Parser, Debug)]
#[command(name = "flowsteer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train the velocity MLP on the 2-D checkerboard (docs/quality.md) with the flow-matching loss.
    Train(train::Args),
    /// Sample the model with an ODE or SDE sampler and write samples.npy and summary.json.
    #[command(mut_arg("sampler", |a| a.default_value("midpoint")))]
    Sample(sample::Args),
    /// Feynman–Kac steering towards high reward (docs/steering.md, docs/resampling.md, docs/schedules.md).
    #[command(mut_arg("sampler", |a| a.default_value("sde")))]
    Steer(steer::Args),
    /// Search baselines: best-of-N, zeroth-order noise search, search over paths (docs/search.md).
    Search(search::Args),
    /// Measure throughput of the hot loop and of whole runs.
    Bench(bench::Args),
    /// Sweep particle counts × methods × seeds and plot the scaling curves.
    Sweep(sweep::Args),
    /// Print the backend, CPU features, GPU, kernels and the model's shape.
    Info(info::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let name = match &cli.command {
        Command::Steer(_) => "steer",
        Command::Sample(_) => "sample",
        Command::Info(_) => "info",
        Command::Train(_) => "train",
        Command::Search(a) => match a.method {
            search::Method::Bon(_) => "search bon",
            search::Method::Zeroth(_) => "search zeroth",
            search::Method::Paths(_) => "search paths",
        },
        Command::Bench(_) => "bench",
        Command::Sweep(_) => "sweep",
    };
    crate::distributed::driver::refuse_unless_distributed(name)?;
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Sample(a) => sample::run(a),
        Command::Steer(a) => steer::run(a),
        Command::Search(a) => search::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Info(a) => info::run(a),
    }
}
