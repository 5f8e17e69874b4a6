//! What the tests that run flowsteer under `mpirun` share (tests/mpi.rs, mpi_paths.rs,
//! mpi_sweep.rs). Each test file uses part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

/// `mpirun -n P` (oversubscribed: CI has 2 cores), as root when need be (CI runs as root), before
/// the program and its arguments.
pub fn launcher(p: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "--allow-run-as-root", "-n", &p.to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

fn run(mut c: Command) -> Output {
    c.output().expect("mpirun (Open MPI's openmpi-bin) must be installed to test the mpi feature")
}

/// `mpirun -n P flowsteer ARGS`, run to the end.
pub fn mpirun<S: AsRef<OsStr>>(p: usize, args: &[S]) -> Output {
    let mut c = launcher(p);
    c.arg(BIN).args(args);
    run(c)
}

/// `mpirun -n P sh -c SCRIPT`: each rank runs the shell script (which may read
/// `$OMPI_COMM_WORLD_RANK`), run to the end.
pub fn mpirun_shell(p: usize, script: &str) -> Output {
    let mut c = launcher(p);
    c.args(["sh", "-c", script]);
    run(c)
}

/// `flowsteer ARGS` without mpirun.
pub fn plain<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The bytes of `dir/name`.
pub fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// Fails with the run's stderr unless it succeeded.
pub fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}
