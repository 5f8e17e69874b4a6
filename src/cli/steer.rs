//! `flowsteer steer`: Feynman–Kac steering (docs/steering.md, docs/resampling.md, docs/schedules.md), and the options every particle command
//! shares with `flowsteer search` ([`CommonArgs`]).
//!
//! With no options it steers the checkerboard model towards the Gaussian reward around
//! (2.25, 2.25) with `rt`, λ = 1, 4,096 particles, 100 steps of the marginal SDE, 5 resamplings
//! between t = 0.6 and 0.95 and a final one at t = 1, and prints a short summary against an
//! unsteered run of the same noises (docs/steering.md "Defaults").

use std::path::PathBuf;

use super::common::{BackendArgs, ModelArgs, SamplerArgs};
use crate::methods::ScheduleSpec;
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::reward::RewardOn;
use crate::run::{CommonConfig, SteerConfig, DEFAULT_REWARD, DEFAULT_STEER_POTENTIAL};
use crate::sampler::SamplerKind;

/// Options shared by `steer` and every `search` method.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reward (docs/writing-a-reward.md): an expression over x, x[0], t and numbers with
    /// + - * / ^, comparisons, where(c,a,b), abs sqrt exp log min max clamp sin cos tanh norm dot,
    /// and the shapes point([x,y]), line(axis, c), gaussian([x,y], sigma),
    /// obstacle([x,y], rho, q_star, eta), e.g. "-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)".
    #[arg(long, default_value = DEFAULT_REWARD, allow_hyphen_values = true)]
    pub reward: String,
    /// A program that computes the reward (instead of --reward), e.g. "python3 my_reward.py":
    /// started once, it reads batches ("<t> <nbytes>\n" + a [B, D] float32 .npy) on stdin and
    /// answers "<nbytes>\n" + a [B] float32 .npy on stdout (docs/writing-a-reward.md). On the CUDA
    /// backend each batch is copied to the host and the rewards back.
    #[arg(long, value_name = "CMD", conflicts_with = "reward")]
    pub reward_cmd: Option<String>,
    /// Seconds the --reward-cmd program may take to answer one batch before the run ends.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub reward_timeout: f64,
    /// Where intermediate rewards are evaluated: the predicted data x̂1 or the noisy state.
    #[arg(long, value_enum, default_value_t)]
    pub reward_on: RewardOn,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Seed of every random draw (docs/random.md).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Write summary.json, samples.npy, trace.csv and log_weights.npy into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace a non-empty --out directory whole (its old files are deleted); without it such a
    /// directory is refused, so that two runs never mix their files.
    #[arg(long)]
    pub force: bool,
    /// Also write plot.png (needs --out).
    #[arg(long)]
    pub plot: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Particles per group N [default: 4096, or the rows of --init divided by --groups].
    #[arg(long)]
    pub particles: Option<usize>,
    /// Independent populations run side by side (docs/steering.md `groups`).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Potential (docs/steering.md).
    #[arg(long, value_enum, default_value_t = DEFAULT_STEER_POTENTIAL.kind)]
    pub potential: PotentialKind,
    /// Temperature λ > 0: the target is p(x)·exp(λ·r(x)).
    #[arg(long, default_value_t = DEFAULT_STEER_POTENTIAL.lambda, allow_hyphen_values = true, value_parser = crate::potential::parse_lambda)]
    pub lambda: f32,
    /// Start of the running max / previous reward of `max` and `diff`.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub r_min: f32,
    /// Resampling scheme (docs/resampling.md).
    #[arg(long, value_enum, default_value_t)]
    pub resample: ResampleScheme,
    /// Resampling points between --t-start and --t-end (docs/schedules.md).
    #[arg(long, default_value_t = 5)]
    pub resample_count: usize,
    /// Resample every K grid steps between --t-start and --t-end instead (not with
    /// --resample-count; docs/schedules.md).
    #[arg(long, value_name = "K", conflicts_with = "resample_count")]
    pub resample_every: Option<usize>,
    /// Start of the resampling range: the first point (docs/schedules.md).
    #[arg(long, default_value_t = 0.6, allow_hyphen_values = true)]
    pub t_start: f64,
    /// End of the resampling range: points sit at t_start + j·(t_end − t_start)/count, j < count,
    /// and the final time t = 1 is always added (docs/schedules.md).
    #[arg(long, default_value_t = 0.95, allow_hyphen_values = true)]
    pub t_end: f64,
    /// Resample only when ESS < TAU·N (TAU defaults to 0.5 when the flag is bare); off by default.
    #[arg(long, value_name = "TAU", num_args = 0..=1, default_missing_value = "0.5")]
    pub adaptive_ess: Option<f32>,
    /// Starting points: a .npy file of shape [N·G, D] instead of Philox noise.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Also write ancestry.npy, [K, N·G] ancestor indices (one row per resampling).
    #[arg(long)]
    pub ancestry: bool,
    /// Run each resampling interval as one backend call (no per-phase times).
    #[arg(long)]
    pub fused: bool,
    /// λ per resampling point (docs/steering.md "Tempering"): constant (λ everywhere), linear
    /// (λ·k/K), geometric (doubling to λ), or adaptive (increments chosen so that the ESS after
    /// each point is --target-ess·N; potential rt). The final point always uses --lambda.
    #[arg(long, value_enum, default_value_t)]
    pub lambda_schedule: crate::methods::LambdaSchedule,
    /// The ESS fraction adaptive tempering keeps at each resampling point, in (0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub target_ess: f32,
    /// Keep the weighted sample at t = 1 (samples.npy with its weights in log_weights.npy)
    /// instead of resampling it once more into an equally weighted one (docs/outputs.md).
    #[arg(long)]
    pub no_final_resample: bool,
    /// Clamp every incremental weight exp(log G) to [0, C] before normalising, as the 2025
    /// tutorial's FK code does with C = 1e10. BIASED (the target is no longer p·exp(λ r)): only to
    /// reproduce that tutorial's figures (docs/steering.md "Clamped weights"). CPU backend only.
    #[arg(long, value_name = "C")]
    pub clamp_weights: Option<f32>,
    /// Skip the unsteered run of the same noises that the summary compares against.
    #[arg(long)]
    pub no_baseline: bool,
    /// Profile with Nsight: run only the first INTERVALS resampling intervals (2 when bare), with
    /// NVTX ranges on the CUDA backend; prints per-phase times and writes no output files.
    #[arg(long, value_name = "INTERVALS", num_args = 0..=1, default_missing_value = super::profile::DEFAULT_INTERVALS,
          value_parser = super::profile::parse_intervals)]
    pub profile: Option<usize>,
    /// Under mpirun/srun: each rank writes its share of the particles (samples.r{rank}.npy, …)
    /// and rank 0 a manifest.json saying how to join them, instead of gathering every particle
    /// on rank 0 (docs/distributed.md). For populations too large for one process's memory.
    #[arg(long)]
    pub shard_outputs: bool,
}

impl CommonArgs {
    /// The run layer's configuration of these options, with the midpoint sampler unless
    /// `--sampler` says otherwise (`search`).
    pub fn config(&self) -> CommonConfig {
        self.config_with(SamplerKind::Midpoint)
    }

    /// [`CommonArgs::config`] with `sampler` when `--sampler` is not given.
    pub fn config_with(&self, sampler: SamplerKind) -> CommonConfig {
        CommonConfig {
            model: self.model.model.clone(),
            reward: self.reward.clone(),
            reward_cmd: self.reward_cmd.clone(),
            reward_timeout: self.reward_timeout,
            reward_on: self.reward_on,
            sampler: self.sampler.sampler(sampler),
            seed: self.seed,
            backend: self.backend.backend,
            no_graph: self.backend.no_graph,
            out: self.out.clone(),
            force: self.force,
            plot: self.plot,
            quiet: self.quiet,
        }
    }
}

impl Args {
    /// The run layer's configuration of a steering run.
    pub fn config(&self) -> anyhow::Result<SteerConfig> {
        Ok(SteerConfig {
            common: self.common.config_with(SamplerKind::Sde),
            particles: self.particles,
            groups: self.groups,
            potential: Potential { kind: self.potential, lambda: self.lambda, r_min: self.r_min, clamp_weights: self.clamp_weights },
            resample: self.resample,
            schedule: ScheduleSpec { t_start: self.t_start, t_end: self.t_end, count: self.resample_count, every: self.resample_every },
            adaptive_ess: self.adaptive_ess,
            init: self.init.clone(),
            ancestry: self.ancestry,
            fused: self.fused,
            baseline: !self.no_baseline,
            profile: self.profile,
            tempering: crate::methods::Tempering::new(self.lambda_schedule, self.target_ess).map_err(anyhow::Error::msg)?,
            final_resample: !self.no_final_resample,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    use crate::distributed::driver::{self, OutputForm};
    let form = if args.shard_outputs { OutputForm::Sharded } else { OutputForm::Gathered };
    match driver::world() {
        // Under mpirun/srun: one population across the ranks; rank 0 reports (docs/distributed.md).
        Some(w) => driver::steer(&*w, &args.config()?, form)?.map_or(Ok(()), |o| o.report()),
        None if args.shard_outputs => anyhow::bail!(
            "--shard-outputs splits the output files across MPI ranks, but this run has none; run it under mpirun/srun \
             (with a flowsteer built with --features mpi), or drop --shard-outputs"
        ),
        None => crate::run::steer(&args.config()?)?.report(),
    }
}
