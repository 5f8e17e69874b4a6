//! [`AnyBackend`]: the CPU or the CUDA engine behind one type, so that a command resolves
//! `--backend` once and runs the same generic method code on either (methods never branch on
//! the backend; this enum only forwards).

use std::ops::Range;

use super::device::{CudaBackend, CudaParticles};
use crate::backend::cpu::{CpuBackend, CpuParticles};
use crate::backend::{Backend, BackendChoice, BackendInfo, GroupResample, GroupWeights, Init, IntervalPlan, IntervalReport, Layout, RunSpec, ScoreOn, WeighAt};
use crate::sampler::RenoiseForm;

/// The engine a command runs on.
#[allow(clippy::large_enum_variant)]
pub enum AnyBackend {
    Cpu(CpuBackend),
    Cuda(CudaBackend),
}

/// A population of either engine (one per run: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
pub enum AnyParticles {
    Cpu(CpuParticles),
    Cuda(CudaParticles),
}

impl AnyBackend {
    /// `cpu` (and `auto`, which picks the CPU while [`super::AUTO_SELECTS_CUDA`] is false, or
    /// when no device is usable), `cuda` (an error naming the reason when it is unusable) or
    /// `cuda-emulated` (the CUDA backend over the host emulator of its kernels).
    /// `FLOWSTEER_NO_GRAPH=1` launches every kernel plainly instead of replaying CUDA graphs.
    pub fn resolve(choice: BackendChoice) -> anyhow::Result<AnyBackend> {
        Self::resolve_on(choice, 0)
    }

    /// [`Self::resolve`] with the CUDA backend on device `gpu` (an MPI rank's own).
    pub fn resolve_on(choice: BackendChoice, gpu: usize) -> anyhow::Result<AnyBackend> {
        let cuda = |b: anyhow::Result<CudaBackend>| -> anyhow::Result<AnyBackend> {
            let mut b = b?;
            b.use_graph = !std::env::var("FLOWSTEER_NO_GRAPH").map(|v| v == "1").unwrap_or(false);
            Ok(AnyBackend::Cuda(b))
        };
        match choice {
            BackendChoice::Cpu => Ok(AnyBackend::Cpu(CpuBackend::new())),
            BackendChoice::CudaEmulated => cuda(
                CudaBackend::emulated(super::emulator::host_memory())
                    .map_err(|e| e.context("--backend cuda-emulated builds the kernels for the host with a C++ compiler")),
            ),
            BackendChoice::Cuda => {
                super::availability().map_err(|why| {
                    let fix = if why.contains("--backend cpu") { "" } else { "; run with --backend cpu instead" };
                    anyhow::anyhow!("--backend cuda: no usable CUDA device: {why}{fix}")
                })?;
                cuda(CudaBackend::on_device(gpu))
            }
            BackendChoice::Auto => {
                if super::AUTO_SELECTS_CUDA && super::availability().is_ok() {
                    cuda(CudaBackend::on_device(gpu))
                } else {
                    Ok(AnyBackend::Cpu(CpuBackend::new()))
                }
            }
        }
    }
}

macro_rules! both {
    ($self:expr, $p:expr, $b:ident, $q:ident => $e:expr) => {
        match ($self, $p) {
            (AnyBackend::Cpu($b), AnyParticles::Cpu($q)) => $e,
            (AnyBackend::Cuda($b), AnyParticles::Cuda($q)) => $e,
            _ => anyhow::bail!("particles of one backend were handed to the other"),
        }
    };
}

impl Backend for AnyBackend {
    type Particles = AnyParticles;

    fn info(&self) -> BackendInfo {
        match self {
            AnyBackend::Cpu(b) => b.info(),
            AnyBackend::Cuda(b) => b.info(),
        }
    }

    fn init(&mut self, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<AnyParticles> {
        Ok(match self {
            AnyBackend::Cpu(b) => AnyParticles::Cpu(b.init(spec, layout, init)?),
            AnyBackend::Cuda(b) => AnyParticles::Cuda(b.init(spec, layout, init)?),
        })
    }

    fn propagate(&mut self, spec: &RunSpec, p: &mut AnyParticles, steps: Range<usize>) -> anyhow::Result<()> {
        both!(self, p, b, q => b.propagate(spec, q, steps))
    }

    fn weigh(&mut self, spec: &RunSpec, p: &mut AnyParticles, at: WeighAt) -> anyhow::Result<Vec<GroupWeights>> {
        both!(self, p, b, q => b.weigh(spec, q, at))
    }

    fn resample(&mut self, spec: &RunSpec, p: &mut AnyParticles, step: usize, keep_ancestors: bool) -> anyhow::Result<(Vec<GroupResample>, Option<Vec<u32>>)> {
        both!(self, p, b, q => b.resample(spec, q, step, keep_ancestors))
    }

    fn interval(&mut self, spec: &RunSpec, p: &mut AnyParticles, plan: &IntervalPlan) -> anyhow::Result<IntervalReport> {
        both!(self, p, b, q => b.interval(spec, q, plan))
    }

    fn read_positions(&mut self, p: &AnyParticles) -> anyhow::Result<Vec<f32>> {
        both!(self, p, b, q => b.read_positions(q))
    }

    fn read_log_weights(&mut self, p: &AnyParticles) -> anyhow::Result<Vec<f64>> {
        both!(self, p, b, q => b.read_log_weights(q))
    }

    fn read_root_ids(&mut self, p: &AnyParticles) -> anyhow::Result<Vec<u32>> {
        both!(self, p, b, q => b.read_root_ids(q))
    }

    fn score(&mut self, spec: &RunSpec, p: &mut AnyParticles, on: ScoreOn) -> anyhow::Result<Vec<f32>> {
        both!(self, p, b, q => b.score(spec, q, on))
    }

    fn select_top(&mut self, spec: &RunSpec, p: &mut AnyParticles, on: ScoreOn, keep: usize) -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
        both!(self, p, b, q => b.select_top(spec, q, on, keep))
    }

    fn replicate(&mut self, p: &mut AnyParticles, copies: usize) -> anyhow::Result<()> {
        both!(self, p, b, q => b.replicate(q, copies))
    }

    fn renoise(&mut self, spec: &RunSpec, p: &mut AnyParticles, from: usize, to: usize, form: RenoiseForm, round: u32) -> anyhow::Result<()> {
        both!(self, p, b, q => b.renoise(spec, q, from, to, form, round))
    }
}
