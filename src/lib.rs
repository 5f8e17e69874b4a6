//! flowsteer: inference-time scaling and steering of flow-matching models with particles.
//!
//! Layers, each importing only those below it (README, "Architecture"): the command line (`cli`)
//! parses options into plain configuration; the run layer (`run`) prepares a run, executes it,
//! reports it (`summary`, `plot`) and writes its files whole (`output`); `methods` holds FK
//! steering and the search baselines, written once against the [`backend::Backend`] trait;
//! `backend::cpu` (the reference) and `backend::cuda` implement it. Shared pieces: the model and
//! its files, the samplers' formulas, Philox, rewards and potentials.

pub mod backend;
pub mod checkerboard;
pub mod cli;
pub mod distributed;
pub mod finite;
pub mod format;
pub mod memory;
pub mod methods;
pub mod model;
pub mod npy;
pub mod output;
pub mod plot;
pub mod plot_scaling;
pub mod potential;
pub mod resample;
pub mod reward;
pub mod reward_parse;
pub mod rng;
pub mod run;
pub mod sampler;
pub mod stats;
pub mod summary;
pub mod train;
