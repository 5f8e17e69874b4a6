//! The real [`PointRunner`] of a sweep: each point is a run of the run layer's methods
//! (`super::super::method`) on an engine started once per backend and kept across points.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use anyhow::Context;

use super::{Point, PointOutcome, PointRunner, SweepMethod};
use crate::backend::cuda::AnyBackend;
use crate::backend::{Backend, BackendChoice, Init, Layout, RunSpec};
use crate::methods::{BonConfig, FkConfig, PathsConfig, ScheduleSpec, ZerothConfig};
use crate::model::Mlp;
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn};
use crate::run::method::{self, Method};
use crate::run::prepare::backend_name;
use crate::sampler::{Sampler, SamplerKind, SdeForm};

/// What every point shares: the model, the reward and the methods' parameters.
pub struct Shared {
    pub model: Mlp,
    pub reward: Reward,
    pub steps: usize,
    pub k: f32,
    pub lambda: f32,
    pub cycles: usize,
    pub radius: f32,
    pub paths: PathsConfig,
}

impl Shared {
    /// The method a point runs, with its configuration; one process and the MPI ranks
    /// (`crate::distributed::sweep`) run the same.
    pub fn method(&self, point: &Point) -> anyhow::Result<Method> {
        let n = usize::try_from(point.particles).context("particle count does not fit this machine's usize")?;
        let layout = Layout { n, groups: 1 };
        Ok(match point.method {
            SweepMethod::FkMax | SweepMethod::FkAdd | SweepMethod::FkDiff => Method::Steer(FkConfig {
                layout,
                schedule: ScheduleSpec::default(),
                keep_ancestors: false,
                // One process fuses each interval where its backend can; across ranks it has no effect.
                fused: true,
                snapshots: false,
                max_intervals: None,
                // The sweep compares methods by their final (weighted) statistics at equal compute;
                // its recorded points stay comparable with earlier sweeps.
                final_resample: false,
            }, crate::methods::Tempering::Constant),
            SweepMethod::Bon => Method::BestOfN(BonConfig { layout, top_k: 1 }),
            SweepMethod::Plain => Method::BestOfN(BonConfig { layout, top_k: n }),
            SweepMethod::Zeroth => Method::Zeroth(ZerothConfig { layout, cycles: self.cycles, radius: self.radius, pivot: None }),
            SweepMethod::Paths => Method::Paths(PathsConfig { layout, ..self.paths.clone() }),
        })
    }

    /// The run specification of `method` at `seed`: FK steering and plain sampling on the SDE,
    /// the search methods on the midpoint ODE (docs/search.md runs candidates "through the ODE").
    pub fn spec(&self, method: SweepMethod, seed: u64) -> RunSpec {
        let sde = Sampler { kind: SamplerKind::Sde, steps: self.steps, k: self.k, form: SdeForm::Marginal };
        let ode = Sampler { kind: SamplerKind::Midpoint, steps: self.steps, ..Sampler::default() };
        let (sampler, kind) = match method {
            SweepMethod::FkMax => (sde, PotentialKind::Max),
            SweepMethod::FkAdd => (sde, PotentialKind::Add),
            SweepMethod::FkDiff => (sde, PotentialKind::Diff),
            SweepMethod::Plain => (sde, PotentialKind::Bon),
            SweepMethod::Bon | SweepMethod::Zeroth | SweepMethod::Paths => (ode, PotentialKind::Bon),
        };
        RunSpec {
            model: self.model.clone(),
            sampler,
            reward: self.reward.clone(),
            reward_on: RewardOn::X1Hat,
            potential: Potential { kind, lambda: self.lambda, r_min: 0.0, clamp_weights: None },
            resample: ResampleScheme::Multinomial,
            adaptive_ess: None,
            seed,
        }
    }
}

/// One point on one backend. FK steering keeps its whole final population; best-of-N, zeroth-order
/// search and search over paths return their single best sample; plain sampling all N samples
/// (best-of-N with top-k = N).
fn run_point<B: Backend>(backend: &mut B, shared: &Shared, point: &Point) -> anyhow::Result<PointOutcome> {
    let (spec, method) = (shared.spec(point.method, point.seed), shared.method(point)?);
    let result = method::execute(backend, &spec, &method, Init::Noise)?;
    Ok(PointOutcome::from_result(result, point.method, backend.info().device))
}

/// The engines of a sweep by backend name (`cpu`, `cuda`), each started when its first point
/// runs, so that a resumed sweep with nothing left on an engine never starts it.
#[derive(Default)]
pub struct Engines {
    opened: HashMap<String, AnyBackend>,
    /// The GPU a `cuda` point runs on: 0 in one process, an MPI rank's own under mpirun
    /// (docs/distributed.md).
    pub gpu: usize,
}

/// The backend a sweep's backend column names.
pub fn backend_choice(name: &str) -> anyhow::Result<BackendChoice> {
    [BackendChoice::Cpu, BackendChoice::Cuda, BackendChoice::CudaEmulated]
        .into_iter()
        .find(|&c| backend_name(c) == name)
        .with_context(|| format!("the sweep has no `{name}` backend; use cpu, cuda or cuda-emulated"))
}

impl Engines {
    pub fn get(&mut self, name: &str) -> anyhow::Result<&mut AnyBackend> {
        match self.opened.entry(name.to_string()) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => Ok(e.insert(AnyBackend::resolve_on(backend_choice(name)?, self.gpu)?)),
        }
    }
}

/// The real runner: the methods of `crate::methods` on the engines the sweep resolved.
pub struct MethodRunner {
    pub shared: Shared,
    pub engines: Engines,
    /// (engine, method) pairs already run once untimed.
    pub warmed: HashSet<(String, SweepMethod)>,
}

/// Particles of the untimed warm-up run.
const WARM_UP_PARTICLES: u64 = 64;

impl PointRunner for MethodRunner {
    fn run(&mut self, point: &Point) -> anyhow::Result<PointOutcome> {
        let engine = self.engines.get(&point.backend)?;
        // The first point of each method on each engine would otherwise time the kernel
        // compilation (or cache load) of its modules, and the CPU's thread-pool start: one small
        // untimed run first keeps that out of the throughput curves.
        if self.warmed.insert((point.backend.clone(), point.method)) {
            let warm_up = Point { particles: point.particles.min(WARM_UP_PARTICLES), ..point.clone() };
            run_point(engine, &self.shared, &warm_up)?;
        }
        run_point(engine, &self.shared, point)
    }
}

