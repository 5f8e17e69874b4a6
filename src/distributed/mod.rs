//! One particle population across processes (issue 10; docs/distributed.md).
//!
//! The algorithm is written against the small [`comm::Communicator`] trait, so that it is tested
//! in one process ([`comm::ThreadWorld`]) and runs under `mpirun`/`srun` with the `mpi` cargo
//! feature ([`mpi`]). [`population`] holds a rank's share and the global weighing,
//! [`resample`] the global resampling, [`fk`] the steering loop, [`search`] best-of-N and
//! zeroth-order search, [`paths`] search over paths, [`driver`] what a rank does around them
//! (configuration check, outputs on rank 0, errors naming the rank), [`shards`] the per-rank
//! outputs of `--shard-outputs` with [`global_stats`], the summary's statistics taken across
//! ranks; [`sweep`] a sweep's points handed out to the ranks by rank 0.

pub mod comm;
pub mod driver;
pub mod engine;
pub mod fk;
pub mod global_stats;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod paths;
pub mod population;
pub mod resample;
pub mod search;
pub mod share;
pub mod shards;
pub mod sweep;
#[cfg(test)]
mod tests;
