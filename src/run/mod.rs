//! The run layer: configuration → prepared run → outcome → report and outputs. Every command
//! that runs particles (`steer`, `search`, `sample`, `sweep`) goes through it the same way, and
//! so can any caller without a command line (an MPI rank, a test, another program).
//!
//! - [`config`]: plain configuration structs ([`SteerConfig`], [`SearchConfig`],
//!   [`SampleConfig`]); the command line only fills these in.
//! - [`prepare`]: configuration → [`Prepared`] (backend resolved, model loaded, reward parsed,
//!   everything checked with messages that name the fix).
//! - [`method`]: a prepared run on an engine → `methods::RunResult` (shared with the sweep).
//! - [`steer()`], [`search()`], [`sample()`]: one whole run → an [`Outcome`] (or
//!   [`sample::SampleOutcome`]): result, weights, trace, timings, and what reporting needs.
//! - [`Outcome::report`]: prints the summary and writes the files, whole or not at all
//!   (`crate::summary` renders, `crate::output` writes). [`Outcome::write`] writes to any
//!   directory; [`Outcome::summary_json`] gives `summary.json` without writing.
//! - [`sweep`]: the loop over a grid of points, each a run through [`method`].
//!
//! A steering run without a command line:
//!
//! ```no_run
//! use flowsteer::run::{self, CommonConfig, SteerConfig};
//! let defaults = SteerConfig::defaults();
//! let cfg = SteerConfig {
//!     common: CommonConfig { quiet: true, ..defaults.common.clone() },
//!     particles: Some(1024),
//!     baseline: false,
//!     ..defaults
//! };
//! let outcome = run::steer(&cfg)?;
//! println!("best reward {:?}", outcome.result.rewards.iter().cloned().fold(f32::MIN, f32::max));
//! outcome.write(std::path::Path::new("runs/mine"), false)?;
//! # anyhow::Ok(())
//! ```
//!
//! Searches are the same with [`SearchConfig`] and [`search()`]; sampling with [`SampleConfig`],
//! [`sample()`] and [`sample::SampleOutcome::write`].

pub mod config;
pub mod method;
pub mod outcome;
pub mod prepare;
pub mod profile;
pub mod sample;
pub mod search;
pub mod steer;
pub mod sweep;

pub use config::{CommonConfig, SampleConfig, SearchConfig, SearchMethod, SteerConfig, DEFAULT_REWARD, DEFAULT_STEER_POTENTIAL, DEFAULT_STEER_SAMPLER};
pub use outcome::Outcome;
pub use prepare::{Prepared, ResolvedBackend, DEFAULT_MODEL};
pub use sample::sample;
pub use search::search;
pub use steer::steer;
