//! `--reward-cmd` on the CUDA backend (docs/writing-a-reward.md, "A reward from any program"):
//! the user's program runs on the host, so at every reward evaluation (a weighing, the final
//! reward, a search score) the backend copies the reward input (x̂1, x_t or the sample, already
//! emitted into the scratch rows `alt` by `fs_propagate`) to the host, calls the same
//! [`crate::reward::Reward::eval_rows_by_command`] as the CPU backend, and writes the rewards
//! over coordinate 0 of that input. The generated `fs_reward` of a program reward returns `x[0]`
//! (`reward_codegen.rs`), so `fs_weigh` and `fs_score` run unchanged and read the program's
//! values: the same rewards, bit for bit, as the CPU backend given the same points.
//!
//! The copies cannot sit inside a captured CUDA graph, so a run with a program uses the plain
//! primitives for each interval; the time in the copies is added to the program's account
//! (`reward_command.copy_seconds` in `summary.json`).

use std::time::Instant;

use super::{CudaBackend, CudaParticles};
use crate::backend::RunSpec;

impl CudaBackend {
    /// With a reward program: replaces coordinate 0 of the reward input in `alt` (which must hold
    /// the input for grid step `step`) by the program's rewards at that step's time. Afterwards
    /// `alt` no longer holds the reward input (`p.rin` is cleared). Without one: nothing.
    pub(super) fn rewards_from_host(&self, spec: &RunSpec, p: &mut CudaParticles, step: usize) -> anyhow::Result<()> {
        let Some(program) = spec.reward.command() else { return Ok(()) };
        let (total, dim, cap) = (p.total(), p.dim, p.capacity);
        let start = Instant::now();
        let mut soa = vec![0f32; dim * cap];
        // Downloads wait for the launches before them (fs_propagate's emit).
        self.device.download(&p.alt, &mut soa, "copying the reward input to the host for --reward-cmd")?;
        let rows = crate::backend::soa_to_rows(&soa, dim, cap, total);
        let mut copying = start.elapsed().as_secs_f64();
        // The same call, on the same rows, as the CPU backend (Reward::eval_soa).
        let rewards = spec.reward.eval_rows_by_command(&rows, dim, spec.sampler.time(step))?;
        let start = Instant::now();
        self.device.upload(&rewards, &mut p.alt, "copying the --reward-cmd rewards to the device")?;
        copying += start.elapsed().as_secs_f64();
        program.add_copy_time(copying);
        p.rin = None;
        Ok(())
    }
}
