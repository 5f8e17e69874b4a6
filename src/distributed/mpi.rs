//! [`Communicator`] over MPI (feature `mpi`: rsmpi over Open MPI or any MPI-3 library).
//!
//! MPI is initialised once, on the main thread, with `MPI_THREAD_SINGLE` semantics: only the
//! main thread calls into it (rayon's workers never do), which is why this type may be stored
//! behind the `Send + Sync` bounds of the driver's slot.

use mpi::collective::SystemOperation;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;

use super::comm::Communicator;

/// `MPI_COMM_WORLD`; dropping it finalises MPI.
pub struct MpiComm {
    world: SimpleCommunicator,
    // Dropped last: MPI_Finalize.
    _universe: Universe,
}

// SAFETY: used from the main thread only (module doc); MPI handles are plain integers/pointers.
unsafe impl Send for MpiComm {}
unsafe impl Sync for MpiComm {}

fn counts_and_displs(lens: &[Count]) -> Vec<Count> {
    lens.iter()
        .scan(0 as Count, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect()
}

fn count(len: usize) -> Count {
    Count::try_from(len).expect("one MPI message holds at most 2^31 − 1 bytes; use more ranks or fewer particles per rank")
}

impl MpiComm {
    /// Initialises MPI; None when it was already initialised.
    pub fn init() -> Option<MpiComm> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        Some(MpiComm { world, _universe: universe })
    }

    /// Ends every rank of the job (`MPI_Abort`).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        let size = self.size();
        let mut lens = vec![0 as Count; size];
        self.world.all_gather_into(&count(mine.len()), &mut lens[..]);
        let displs = counts_and_displs(&lens);
        let mut buf = buffer(lens.iter().map(|&c| c as usize).sum());
        let send = owned(mine);
        {
            let mut part = PartitionMut::new(&mut buf[..], &lens[..], &displs[..]);
            self.world.all_gather_varcount_into(&send[..], &mut part);
        }
        split(&buf, &lens, &displs)
    }
    fn all_to_all_v(&self, sends: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let size = self.size();
        let send_lens: Vec<Count> = sends.iter().map(|s| count(s.len())).collect();
        let mut recv_lens = vec![0 as Count; size];
        self.world.all_to_all_into(&send_lens[..], &mut recv_lens[..]);
        let send_displs = counts_and_displs(&send_lens);
        let recv_displs = counts_and_displs(&recv_lens);
        let flat = owned(&sends.concat());
        let mut buf = buffer(recv_lens.iter().map(|&c| c as usize).sum());
        {
            let send = Partition::new(&flat[..], &send_lens[..], &send_displs[..]);
            let mut recv = PartitionMut::new(&mut buf[..], &recv_lens[..], &recv_displs[..]);
            self.world.all_to_all_varcount_into(&send, &mut recv);
        }
        split(&buf, &recv_lens, &recv_displs)
    }
    fn broadcast(&self, root: usize, data: &mut Vec<u8>) {
        let root = self.world.process_at_rank(root as i32);
        let mut len = data.len() as u64;
        root.broadcast_into(&mut len);
        data.resize(len as usize, 0);
        root.broadcast_into(&mut data[..]);
    }
    fn all_reduce_max(&self, v: &mut [f64]) {
        let mine = v.to_vec();
        self.world.all_reduce_into(&mine[..], v, SystemOperation::max());
    }
    fn send(&self, dest: usize, tag: i32, bytes: &[u8]) {
        let buf = owned(bytes);
        self.world.process_at_rank(dest as i32).send_with_tag(&buf[..], tag);
    }
    fn try_receive(&self, tag: i32) -> Option<(usize, Vec<u8>)> {
        let probed = self.world.any_process().immediate_matched_probe_with_tag(tag)?;
        let (bytes, status) = probed.matched_receive_vec::<u8>();
        Some((status.source_rank() as usize, bytes))
    }
}

/// A zeroed buffer of `len` bytes that owns an allocation even when empty: an empty Vec's
/// dangling pointer can equal another's, and Open MPI refuses a send buffer equal to the
/// receive buffer (MPI_ERR_ARG).
fn buffer(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(1));
    v.resize(len, 0);
    v
}

fn owned(bytes: &[u8]) -> Vec<u8> {
    let mut v = buffer(0);
    v.extend_from_slice(bytes);
    v
}

fn split(buf: &[u8], lens: &[Count], displs: &[Count]) -> Vec<Vec<u8>> {
    lens.iter().zip(displs).map(|(&l, &d)| buf[d as usize..(d + l) as usize].to_vec()).collect()
}
