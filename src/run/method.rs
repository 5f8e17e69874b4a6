//! Prepared run → outcome on a given engine: the one place that maps a method's configuration
//! onto `crate::methods`, shared by `steer`, `search` and the sweep's points.

use crate::backend::{Backend, Init, Layout, RunSpec};
use crate::methods::{self, BonConfig, FkConfig, PathsConfig, RunResult, ZerothConfig};
use crate::potential::{Potential, PotentialKind};
use crate::summary::Baseline;

/// A method with its configuration (its layout included).
#[derive(Clone, Debug)]
pub enum Method {
    /// FK steering (docs/steering.md).
    Steer(FkConfig),
    /// Best-of-N (docs/search.md).
    BestOfN(BonConfig),
    /// Zeroth-order noise search; it draws its own starting points.
    Zeroth(ZerothConfig),
    /// Search over paths.
    Paths(PathsConfig),
}

/// Runs `method` on `backend` from `init` (ignored by zeroth-order search).
pub fn execute<B: Backend>(backend: &mut B, spec: &RunSpec, method: &Method, init: Init<'_>) -> anyhow::Result<RunResult> {
    match method {
        Method::Steer(cfg) => methods::steer(backend, spec, cfg, init),
        Method::BestOfN(cfg) => methods::best_of_n(backend, spec, cfg, init),
        Method::Zeroth(cfg) => methods::zeroth_order(backend, spec, cfg),
        Method::Paths(cfg) => methods::search_over_paths(backend, spec, cfg, init),
    }
}

/// The potential of the search methods: they weigh nothing (`bon`; the resampling scheme is
/// unused).
pub fn search_potential() -> Potential {
    Potential { kind: PotentialKind::Bon, ..Potential::default() }
}

/// An unsteered run of the same starting points (potential `is`, no reordering): what steering
/// is compared against.
pub fn baseline<B: Backend>(backend: &mut B, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<Baseline> {
    let mut plain = spec.clone();
    plain.potential = Potential { kind: PotentialKind::Is, ..spec.potential };
    let mut p = backend.init(&plain, layout, init)?;
    backend.propagate(&plain, &mut p, 0..plain.sampler.steps)?;
    let rewards = backend.score(&plain, &mut p, crate::backend::ScoreOn::Sample)?;
    Ok(Baseline { rewards, positions: backend.read_positions(&p)? })
}
