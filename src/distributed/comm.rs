//! The few collective operations the distributed algorithm needs (docs/distributed.md), and the
//! point-to-point messages of a sweep across ranks (`super::sweep`), behind one small trait so
//! that the algorithm is written once and tested without `mpirun`:
//! [`ThreadWorld`] runs P ranks as threads of one process; `super::mpi` (feature `mpi`) is the
//! real thing. Everything moves as bytes; [`Bytes`] and [`Reader`] pack the records.

use std::collections::VecDeque;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// A tagged point-to-point message: (source rank, tag, bytes).
type Mail = (usize, i32, Vec<u8>);

/// How long [`Communicator::receive_any`] sleeps between polls: a waiting rank costs no core.
pub const POLL: Duration = Duration::from_millis(1);

/// One rank's view of a group of `size` processes.
///
/// Every method but the point-to-point ones ([`send`](Communicator::send),
/// [`try_receive`](Communicator::try_receive), [`receive_any`](Communicator::receive_any)) is
/// collective: all ranks call it, in the same order. Results come back in rank order, so any
/// reduction computed from them is the same on every rank.
pub trait Communicator {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's bytes, in rank order (lengths may differ).
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>>;
    /// `sends[q]` goes to rank q; returns what each rank sent to this one, in rank order.
    fn all_to_all_v(&self, sends: &[Vec<u8>]) -> Vec<Vec<u8>>;
    /// Rank `root`'s bytes, on every rank.
    fn broadcast(&self, root: usize, data: &mut Vec<u8>);
    /// Element-wise maximum over ranks (exact: the order does not matter).
    fn all_reduce_max(&self, v: &mut [f64]) {
        let all = self.all_gather(&Bytes::f64s(v));
        for bytes in all {
            let mut r = Reader::new(&bytes);
            for x in v.iter_mut() {
                *x = x.max(r.f64());
            }
        }
    }
    /// Element-wise sum over ranks, added in rank order (the same bits on every rank for a given
    /// P; the bits may change with P — used only for times and counters, never for the weights).
    fn all_reduce_sum(&self, v: &mut [f64]) {
        let all = self.all_gather(&Bytes::f64s(v));
        v.fill(0.0);
        for bytes in all {
            let mut r = Reader::new(&bytes);
            for x in v.iter_mut() {
                *x += r.f64();
            }
        }
    }
    /// Every rank's bytes on rank `root` (None elsewhere).
    fn gather(&self, root: usize, mine: &[u8]) -> Option<Vec<Vec<u8>>> {
        let all = self.all_gather(mine);
        (self.rank() == root).then_some(all)
    }
    /// Sends `bytes` to rank `dest` under `tag` (point-to-point, not collective). Messages from
    /// one rank to another with the same tag arrive in the order they were sent. Only for short
    /// messages (a sweep's orders and rows): the send may wait until the receiver takes it.
    fn send(&self, dest: usize, tag: i32, bytes: &[u8]);
    /// The first message with `tag` waiting for this rank, from any rank: `(source, bytes)`;
    /// None when none has arrived.
    fn try_receive(&self, tag: i32) -> Option<(usize, Vec<u8>)>;
    /// Waits for a message with `tag` from any rank (polling every [`POLL`]).
    fn receive_any(&self, tag: i32) -> (usize, Vec<u8>) {
        loop {
            if let Some(m) = self.try_receive(tag) {
                return m;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The first message with `tag` in `queue`, taken out of it.
fn take_tagged(queue: &mut VecDeque<Mail>, tag: i32) -> Option<(usize, Vec<u8>)> {
    let i = queue.iter().position(|m| m.1 == tag)?;
    queue.remove(i).map(|(from, _, bytes)| (from, bytes))
}

/// Byte packing (little-endian), for the records the ranks exchange.
#[derive(Default, Clone, Debug)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    pub fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    pub fn u32s(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}

/// Reads what [`Bytes`] packed, in the same order. Panics on a short buffer: the records are
/// produced by this program on every rank, so a short one is a bug, not bad input.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }
    fn take<const K: usize>(&mut self) -> [u8; K] {
        let out: [u8; K] = self.bytes[self.at..self.at + K].try_into().unwrap();
        self.at += K;
        out
    }
    pub fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    pub fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    pub fn f32(&mut self) -> f32 {
        f32::from_le_bytes(self.take())
    }
    pub fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.take())
    }
}

pub fn decode_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn decode_f64s(bytes: &[u8]) -> Vec<f64> {
    bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

pub fn decode_u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A single process: P = 1, every collective is the identity; messages go to itself.
#[derive(Default)]
pub struct SelfComm {
    mail: Mutex<VecDeque<Mail>>,
}

impl Communicator for SelfComm {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        vec![mine.to_vec()]
    }
    fn all_to_all_v(&self, sends: &[Vec<u8>]) -> Vec<Vec<u8>> {
        sends.to_vec()
    }
    fn broadcast(&self, _root: usize, _data: &mut Vec<u8>) {}
    fn send(&self, dest: usize, tag: i32, bytes: &[u8]) {
        assert_eq!(dest, 0, "a single process has rank 0 only");
        self.mail.lock().unwrap().push_back((0, tag, bytes.to_vec()));
    }
    fn try_receive(&self, tag: i32) -> Option<(usize, Vec<u8>)> {
        take_tagged(&mut self.mail.lock().unwrap(), tag)
    }
}

/// P ranks as threads of one process, exchanging through shared mailboxes: the distributed
/// algorithm's tests run on it without `mpirun`.
pub struct ThreadWorld {
    size: usize,
    /// `slots[from][to]`.
    slots: Mutex<Vec<Vec<Vec<u8>>>>,
    barrier: Barrier,
    /// Point-to-point messages waiting for each rank, in arrival order.
    mail: Mutex<Vec<VecDeque<Mail>>>,
}

/// One rank of a [`ThreadWorld`].
pub struct ThreadComm {
    rank: usize,
    world: Arc<ThreadWorld>,
}

impl ThreadWorld {
    /// Runs `f` on `size` ranks (one thread each) and returns their results in rank order.
    pub fn run<T: Send>(size: usize, f: impl Fn(&ThreadComm) -> T + Sync) -> Vec<T> {
        assert!(size >= 1);
        let world = Arc::new(ThreadWorld { size, slots: Mutex::new(vec![vec![Vec::new(); size]; size]), barrier: Barrier::new(size), mail: Mutex::new(vec![VecDeque::new(); size]) });
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..size)
                .map(|rank| {
                    let comm = ThreadComm { rank, world: world.clone() };
                    let f = &f;
                    s.spawn(move || f(&comm))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
        })
    }
}

impl ThreadComm {
    /// Posts `sends[q]` for every q, waits for all ranks, collects what was sent here.
    fn exchange(&self, sends: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let w = &self.world;
        {
            let mut slots = w.slots.lock().unwrap();
            slots[self.rank] = sends;
        }
        w.barrier.wait();
        let got = {
            let slots = w.slots.lock().unwrap();
            (0..w.size).map(|from| slots[from][self.rank].clone()).collect()
        };
        // Nobody posts the next exchange before everyone has read this one.
        w.barrier.wait();
        got
    }
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.world.size
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        self.exchange(vec![mine.to_vec(); self.world.size])
    }
    fn all_to_all_v(&self, sends: &[Vec<u8>]) -> Vec<Vec<u8>> {
        assert_eq!(sends.len(), self.world.size);
        self.exchange(sends.to_vec())
    }
    fn broadcast(&self, root: usize, data: &mut Vec<u8>) {
        let got = self.exchange(vec![data.clone(); self.world.size]);
        *data = got[root].clone();
    }
    fn send(&self, dest: usize, tag: i32, bytes: &[u8]) {
        assert!(dest < self.world.size, "rank {dest} does not exist in a world of {}", self.world.size);
        self.world.mail.lock().unwrap()[dest].push_back((self.rank, tag, bytes.to_vec()));
    }
    fn try_receive(&self, tag: i32) -> Option<(usize, Vec<u8>)> {
        take_tagged(&mut self.world.mail.lock().unwrap()[self.rank], tag)
    }
}

/// Time spent in, and bytes sent through, a communicator (the summary's communication figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Traffic {
    /// Wall seconds inside collective calls (waiting for slower ranks included).
    pub seconds: f64,
    /// Bytes this rank handed to collectives for other ranks.
    pub bytes_sent: u64,
    pub calls: u64,
}

/// A communicator that counts its [`Traffic`].
pub struct Metered<'a> {
    pub inner: &'a dyn Communicator,
    traffic: Mutex<Traffic>,
}

impl<'a> Metered<'a> {
    pub fn new(inner: &'a dyn Communicator) -> Self {
        Self { inner, traffic: Mutex::new(Traffic::default()) }
    }
    pub fn traffic(&self) -> Traffic {
        *self.traffic.lock().unwrap()
    }
    fn count<T>(&self, bytes: usize, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let mut t = self.traffic.lock().unwrap();
        t.seconds += start.elapsed().as_secs_f64();
        t.bytes_sent += bytes as u64;
        t.calls += 1;
        out
    }
}

impl Communicator for Metered<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        self.count(mine.len() * (self.size() - 1), || self.inner.all_gather(mine))
    }
    fn all_to_all_v(&self, sends: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let me = self.rank();
        let bytes = sends.iter().enumerate().filter(|(q, _)| *q != me).map(|(_, s)| s.len()).sum();
        self.count(bytes, || self.inner.all_to_all_v(sends))
    }
    fn broadcast(&self, root: usize, data: &mut Vec<u8>) {
        let bytes = if self.rank() == root { data.len() * (self.size() - 1) } else { 0 };
        self.count(bytes, || self.inner.broadcast(root, data))
    }
    fn all_reduce_max(&self, v: &mut [f64]) {
        self.count(v.len() * 8, || self.inner.all_reduce_max(v))
    }
    fn all_reduce_sum(&self, v: &mut [f64]) {
        self.count(v.len() * 8, || self.inner.all_reduce_sum(v))
    }
    fn gather(&self, root: usize, mine: &[u8]) -> Option<Vec<Vec<u8>>> {
        let bytes = if self.rank() == root { 0 } else { mine.len() };
        self.count(bytes, || self.inner.gather(root, mine))
    }
    fn send(&self, dest: usize, tag: i32, bytes: &[u8]) {
        let n = if dest == self.rank() { 0 } else { bytes.len() };
        self.count(n, || self.inner.send(dest, tag, bytes))
    }
    fn try_receive(&self, tag: i32) -> Option<(usize, Vec<u8>)> {
        self.count(0, || self.inner.try_receive(tag))
    }
    fn receive_any(&self, tag: i32) -> (usize, Vec<u8>) {
        self.count(0, || self.inner.receive_any(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_world_collectives_deliver_in_rank_order() {
        let out = ThreadWorld::run(3, |c| {
            let r = c.rank() as u8;
            let gathered = c.all_gather(&[r; 2]);
            let sends: Vec<Vec<u8>> = (0..3).map(|q| vec![r * 10 + q as u8]).collect();
            let got = c.all_to_all_v(&sends);
            let mut b = if c.rank() == 1 { vec![7, 7, 7] } else { vec![] };
            c.broadcast(1, &mut b);
            let mut m = [c.rank() as f64, -(c.rank() as f64)];
            c.all_reduce_max(&mut m);
            (gathered, got, b, m)
        });
        for (rank, (gathered, got, b, m)) in out.into_iter().enumerate() {
            assert_eq!(gathered, vec![vec![0, 0], vec![1, 1], vec![2, 2]]);
            assert_eq!(got, (0..3).map(|from| vec![from * 10 + rank as u8]).collect::<Vec<_>>());
            assert_eq!(b, vec![7, 7, 7]);
            assert_eq!(m, [2.0, 0.0]);
        }
    }

    #[test]
    fn point_to_point_messages_arrive_in_order_by_tag() {
        let out = ThreadWorld::run(3, |c| {
            if c.rank() == 0 {
                // Two from each worker, in any interleaving; per sender, in order.
                let mut got: Vec<(usize, Vec<u8>)> = (0..4).map(|_| c.receive_any(7)).collect();
                got.sort();
                assert!(c.try_receive(7).is_none());
                for q in 1..3 {
                    c.send(q, 8, &[q as u8]);
                }
                got
            } else {
                c.send(0, 7, &[c.rank() as u8, 0]);
                c.send(0, 7, &[c.rank() as u8, 1]);
                let (from, bytes) = c.receive_any(8);
                assert_eq!((from, bytes), (0, vec![c.rank() as u8]));
                Vec::new()
            }
        });
        assert_eq!(out[0], vec![(1, vec![1, 0]), (1, vec![1, 1]), (2, vec![2, 0]), (2, vec![2, 1])]);
        let me = SelfComm::default();
        me.send(0, 3, b"x");
        assert!(me.try_receive(4).is_none());
        assert_eq!(me.receive_any(3), (0, b"x".to_vec()));
    }

    #[test]
    fn metered_counts_bytes_sent_to_other_ranks() {
        let out = ThreadWorld::run(2, |c| {
            let m = Metered::new(c);
            m.all_to_all_v(&[vec![0; 5], vec![0; 7]]);
            m.traffic().bytes_sent
        });
        // Rank 0 keeps its 5 and sends 7; rank 1 sends 5 and keeps its 7.
        assert_eq!(out, vec![7, 5]);
    }
}
