//! The CPU backend: the reference every CUDA kernel is checked against, and the engine that runs
//! where there is no GPU. Rayon over blocks of particles; the hot loop is in [`propagate`].

pub mod propagate;

use std::ops::Range;

use anyhow::{bail, ensure};

use super::{Backend, BackendInfo, GroupResample, GroupWeights, Init, Layout, RunSpec, ScoreOn, WeighAt};
use crate::potential::PotentialState;
use crate::rng::{Philox, Purpose};
use crate::sampler::RenoiseForm;

/// A population on the host, structure of arrays.
#[derive(Clone, Debug)]
pub struct CpuParticles {
    pub layout: Layout,
    pub dim: usize,
    /// Positions, `x[d·total + i]`.
    pub x: Vec<f32>,
    /// Potential state carried along the ancestry (SPEC §5).
    pub state: Vec<PotentialState>,
    /// Log-weights carried since the last resampling.
    pub log_w: Vec<f32>,
    /// The within-group index each particle descends from at t = 0.
    pub root: Vec<u32>,
}

impl CpuParticles {
    pub fn total(&self) -> usize {
        self.layout.total()
    }
}

/// The CPU engine.
#[derive(Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        Self
    }
}

/// A short description of this CPU, e.g. "x86_64, 2 threads, avx2+fma".
pub fn cpu_description() -> String {
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "x86_64")]
    let features = {
        let mut f = Vec::new();
        if std::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if std::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        f.join("+")
    };
    #[cfg(not(target_arch = "x86_64"))]
    let features = String::from("-");
    format!("{}, {threads} threads, {features}", std::env::consts::ARCH)
}

impl Backend for CpuBackend {
    type Particles = CpuParticles;

    fn info(&self) -> BackendInfo {
        BackendInfo { backend: "cpu".into(), device: cpu_description() }
    }

    fn init(&mut self, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<CpuParticles> {
        let dim = spec.model.dim;
        let total = layout.total();
        ensure!(total > 0, "a population needs at least one particle (got n = {}, groups = {})", layout.n, layout.groups);
        let mut x = vec![0f32; dim * total];
        match init {
            Init::Noise => {
                let rng = Philox::new(spec.seed);
                let mut z = vec![0f32; dim];
                for i in 0..total {
                    rng.normal_vector(i as u64, 0, Purpose::InitialNoise, &mut z);
                    for d in 0..dim {
                        x[d * total + i] = z[d];
                    }
                }
            }
            Init::Given(rows) => {
                ensure!(rows.len() == total * dim, "initial points hold {} values, expected {total} × {dim}", rows.len());
                for i in 0..total {
                    for d in 0..dim {
                        x[d * total + i] = rows[i * dim + d];
                    }
                }
            }
            Init::AroundPivot { .. } => bail!("zeroth-order candidates are not implemented on the CPU backend yet"),
        }
        Ok(CpuParticles {
            layout,
            dim,
            x,
            state: vec![spec.potential.initial_state(); total],
            log_w: vec![0.0; total],
            root: (0..total).map(|i| (i % layout.n) as u32).collect(),
        })
    }

    fn propagate(&mut self, spec: &RunSpec, p: &mut CpuParticles, steps: Range<usize>) -> anyhow::Result<()> {
        let total = p.total();
        propagate::propagate(&spec.model, &spec.sampler, spec.seed, &mut p.x, total, 0, steps);
        Ok(())
    }

    fn weigh(&mut self, _spec: &RunSpec, _p: &mut CpuParticles, _at: WeighAt) -> anyhow::Result<Vec<GroupWeights>> {
        bail!("weighing is not implemented on the CPU backend yet")
    }

    fn resample(
        &mut self,
        _spec: &RunSpec,
        _p: &mut CpuParticles,
        _step: usize,
        _keep_ancestors: bool,
    ) -> anyhow::Result<(Vec<GroupResample>, Option<Vec<u32>>)> {
        bail!("resampling is not implemented on the CPU backend yet")
    }

    fn read_positions(&mut self, p: &CpuParticles) -> anyhow::Result<Vec<f32>> {
        let (total, dim) = (p.total(), p.dim);
        let mut rows = vec![0f32; total * dim];
        for i in 0..total {
            for d in 0..dim {
                rows[i * dim + d] = p.x[d * total + i];
            }
        }
        Ok(rows)
    }

    fn read_log_weights(&mut self, p: &CpuParticles) -> anyhow::Result<Vec<f32>> {
        Ok(p.log_w.clone())
    }

    fn read_root_ids(&mut self, p: &CpuParticles) -> anyhow::Result<Vec<u32>> {
        Ok(p.root.clone())
    }

    fn score(&mut self, _spec: &RunSpec, _p: &mut CpuParticles, _on: ScoreOn) -> anyhow::Result<Vec<f32>> {
        bail!("scoring is not implemented on the CPU backend yet")
    }

    fn select_top(&mut self, _spec: &RunSpec, _p: &mut CpuParticles, _on: ScoreOn, _keep: usize) -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
        bail!("top-k selection is not implemented on the CPU backend yet")
    }

    fn replicate(&mut self, _p: &mut CpuParticles, _copies: usize) -> anyhow::Result<()> {
        bail!("replication is not implemented on the CPU backend yet")
    }

    fn renoise(&mut self, _spec: &RunSpec, _p: &mut CpuParticles, _from: usize, _to: usize, _form: RenoiseForm, _round: u32) -> anyhow::Result<()> {
        bail!("renoising is not implemented on the CPU backend yet")
    }
}
