//! The engine a rank runs its share on (docs/distributed.md, "One GPU per rank"): the CPU
//! backend's loops, or its own GPU through the CUDA backend.
//!
//! Only the per-particle work moves to the GPU: integration (the MLP fused into the sampler
//! step) and the rewards. The weighing, the exact sums and the resampling stay on the host,
//! where the ranks exchange them (`super::population`, `super::resample`), so the CUDA path
//! resamples exactly as the CPU path does. The share's positions go up before and come back
//! after each call (D·4 bytes per particle each way, in the host's own layout: no
//! transposition), which keeps the host copy the only truth.
//!
//! Rank r takes local GPU r mod count: the local rank comes from the launcher's environment
//! (Open MPI, Slurm, MPICH/Intel MPI, PMI); without one, the global rank.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::comm::Communicator;
use crate::backend::cuda::{CudaBackend, CudaParticles};
use crate::backend::{soa_to_rows, Backend, BackendChoice, BackendInfo, RunSpec, ScoreOn};

/// Where a rank's share is computed.
#[derive(Clone)]
pub enum RankEngine {
    /// The CPU backend's loops on this rank's cores.
    Cpu,
    /// The CUDA backend (a GPU, or its host emulator) holding the share between calls.
    Cuda(Arc<Mutex<GpuShare>>),
}

impl std::fmt::Debug for RankEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RankEngine::Cpu => f.write_str("Cpu"),
            RankEngine::Cuda(_) => f.write_str("Cuda"),
        }
    }
}

/// A rank's CUDA backend and the device copy of its share with the fingerprint of the model it
/// was allocated for, kept while the share's size, first index and model stay the same (a fresh
/// copy is allocated otherwise).
pub struct GpuShare {
    backend: CudaBackend,
    particles: Option<(CudaParticles, u64)>,
}

/// The local rank on this machine, from the launcher's environment (None without one).
pub fn local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}

/// The GPU a rank uses: local rank mod the number of devices (docs/distributed.md).
pub fn gpu_for_rank(local_rank: usize, devices: usize) -> usize {
    local_rank % devices.max(1)
}

/// This rank's GPU: its local rank (the global rank without a launcher's) mod the number of
/// devices it sees.
pub fn rank_gpu(comm: &dyn Communicator) -> usize {
    gpu_for_rank(local_rank().unwrap_or(comm.rank()), crate::backend::cuda::device_count())
}

impl RankEngine {
    /// The engine of `--backend choice` on this rank: `cpu` and `auto` run the CPU backend
    /// (auto never picks a GPU path that has not run on a GPU, crate::backend::cuda), `cuda`
    /// the rank's own GPU, `cuda-emulated` the host emulator of the kernels.
    pub fn open(choice: BackendChoice, comm: &dyn Communicator) -> anyhow::Result<RankEngine> {
        let backend = match choice {
            BackendChoice::Cpu | BackendChoice::Auto => return Ok(RankEngine::Cpu),
            BackendChoice::CudaEmulated => CudaBackend::emulated(crate::backend::cuda::emulator::host_memory())
                .context("--backend cuda-emulated builds the kernels for the host with a C++ compiler")?,
            BackendChoice::Cuda => {
                crate::backend::cuda::availability().map_err(|why| anyhow::anyhow!("--backend cuda: no usable CUDA device on this rank: {why}"))?;
                let gpu = rank_gpu(comm);
                CudaBackend::on_device(gpu).with_context(|| format!("opening GPU {gpu} of {} on this node", crate::backend::cuda::device_count()))?
            }
        };
        Ok(RankEngine::Cuda(Arc::new(Mutex::new(GpuShare { backend, particles: None }))))
    }

    /// Backend and device, for the summary.
    pub fn info(&self) -> BackendInfo {
        match self {
            RankEngine::Cpu => crate::backend::cpu::CpuBackend::new().info(),
            RankEngine::Cuda(g) => g.lock().unwrap_or_else(|e| e.into_inner()).backend.info(),
        }
    }

    /// Refuses a model the kernels cannot run (before any work).
    pub fn check_model(&self, model: &crate::model::Mlp) -> anyhow::Result<()> {
        match self {
            RankEngine::Cpu => Ok(()),
            RankEngine::Cuda(g) => g.lock().unwrap_or_else(|e| e.into_inner()).backend.check_model(model),
        }
    }

    /// Integrates grid steps `steps` of the share `x` (structure of arrays, `len` particles,
    /// global indices from `first`) on the GPU. Not called for [`RankEngine::Cpu`].
    pub(super) fn propagate_on_gpu(&self, spec: &RunSpec, x: &mut [f32], len: usize, first: u64, steps: Range<usize>) -> anyhow::Result<()> {
        let RankEngine::Cuda(g) = self else { unreachable!("the CPU engine integrates on the host") };
        let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
        let (backend, p) = g.load(spec, x, len, first)?;
        backend.propagate(spec, p, steps)?;
        backend.read_share(p, x)
    }

    /// The share's rewards at grid index `step` (`on_sample`: the final reward at t = 1) on
    /// the GPU, as the CUDA backend scores them. Not called for [`RankEngine::Cpu`].
    pub(super) fn rewards_on_gpu(&self, spec: &RunSpec, x: &[f32], len: usize, first: u64, step: usize, on_sample: bool) -> anyhow::Result<Vec<f32>> {
        let RankEngine::Cuda(g) = self else { unreachable!("the CPU engine scores on the host") };
        let mut g = g.lock().unwrap_or_else(|e| e.into_inner());
        let (backend, p) = g.load(spec, x, len, first)?;
        let on = if on_sample { ScoreOn::Sample } else { ScoreOn::Intermediate { step } };
        backend.score(spec, p, on)
    }
}

impl GpuShare {
    /// Puts the share `x` (coordinate-major, `len` particles from global index `first`) on the
    /// device, reusing the device population when it has the same size, first index and model;
    /// returns the backend and that population.
    fn load(&mut self, spec: &RunSpec, x: &[f32], len: usize, first: u64) -> anyhow::Result<(&mut CudaBackend, &mut CudaParticles)> {
        let model = model_fingerprint(spec);
        let reusable = matches!(&self.particles, Some((p, m)) if p.total() == len && CudaBackend::share_first(p) == Some(first) && *m == model);
        if reusable {
            let (p, _) = self.particles.as_mut().expect("checked above");
            self.backend.write_share(p, x)?;
        } else {
            self.particles = None; // free the old copy before allocating the new one
            let rows = soa_to_rows(x, spec.model.dim, len, len);
            self.particles = Some((self.backend.init_share(spec, &rows, first)?, model));
        }
        let (p, _) = self.particles.as_mut().expect("loaded above");
        Ok((&mut self.backend, p))
    }
}

/// Tells models apart cheaply (a sweep runs several specs on one engine).
fn model_fingerprint(spec: &RunSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in &spec.model.layers {
        l.weight.len().hash(&mut h);
        for v in l.weight.iter().chain(&l.bias) {
            v.to_bits().hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_r_takes_local_gpu_r_mod_count() {
        assert_eq!((0..6).map(|r| gpu_for_rank(r, 4)).collect::<Vec<_>>(), vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(gpu_for_rank(3, 1), 0);
        // No device counted: GPU 0, whose opening then says why it failed.
        assert_eq!(gpu_for_rank(5, 0), 0);
    }
}
