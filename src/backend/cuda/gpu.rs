//! The device under [`super::CudaBackend`], as one trait: the GPU through the CUDA driver
//! ([`super::driver`]) and the host emulator ([`super::emulator`]) each implement [`Device`],
//! and neither knows the other. The backend sees only what both provide: zeroed buffers
//! addressed by raw device pointers, copies, kernel launches with plain [`KernelArg`]s on one
//! in-order stream, captured graphs of launches, the device's launch limits and its free memory.
//!
//! Launches on the driver are asynchronous and copies wait for the stream; on the emulator every
//! launch runs to completion at once. Both give one in-order stream, which is all the backend
//! assumes. Both check every launch against the hardware's limits ([`check_launch`]) before
//! running it, so that the emulator refuses what a GPU would refuse (issue 11).

use std::any::Any;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::ensure;

use super::modules::ModuleConfig;
use super::nvrtc::KernelReport;

/// A scalar kernel argument (device pointers are `U64`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    U64(u64),
    U32(u32),
    I32(i32),
    F32(f32),
}

impl KernelArg {
    /// A pointer to the value, as cuLaunchKernel's parameter array holds them.
    pub fn as_mut_ptr(&mut self) -> *mut std::ffi::c_void {
        match self {
            KernelArg::U64(v) => v as *mut u64 as *mut _,
            KernelArg::U32(v) => v as *mut u32 as *mut _,
            KernelArg::I32(v) => v as *mut i32 as *mut _,
            KernelArg::F32(v) => v as *mut f32 as *mut _,
        }
    }
}

macro_rules! kernel_arg_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for KernelArg {
            fn from(x: $t) -> Self {
                KernelArg::$v(x)
            }
        }
    )*};
}
kernel_arg_from!(u64 => U64, u32 => U32, i32 => I32, f32 => F32);

/// Kernel arguments from a list of plain values: `args![x, n64, lambda]`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$($crate::backend::cuda::gpu::KernelArg::from($a)),*] };
}
pub(crate) use args;

/// Grid and block dimensions and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid_dim: (u32, u32, u32),
    pub block_dim: (u32, u32, u32),
    pub shared_mem_bytes: u32,
}

/// What a device allows one launch (cuDeviceGetAttribute's names in the comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// MAX_GRID_DIM_X/Y/Z: 2^31 − 1, 65,535, 65,535 on every architecture since sm_30.
    pub max_grid: (u32, u32, u32),
    /// MAX_BLOCK_DIM_X/Y/Z: 1,024, 1,024, 64.
    pub max_block: (u32, u32, u32),
    /// MAX_THREADS_PER_BLOCK: 1,024.
    pub max_threads_per_block: u32,
    /// MAX_REGISTERS_PER_BLOCK: 65,536.
    pub registers_per_block: u32,
    /// MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: what one block may opt into (227 KiB on sm_90, 99 KiB
    /// on sm_86/89), static and dynamic together.
    pub shared_per_block_optin: u32,
}

/// Dynamic shared memory a kernel may use without opting in (CUDA's default).
pub const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;

impl DeviceLimits {
    /// An sm_90 GPU (H100/H200): what the emulator enforces.
    pub const SM_90: Self = Self {
        max_grid: (i32::MAX as u32, 65_535, 65_535),
        max_block: (1024, 1024, 64),
        max_threads_per_block: 1024,
        registers_per_block: 65_536,
        shared_per_block_optin: 227 * 1024,
    };
}

/// What a device knows of one kernel's resources.
#[derive(Clone, Debug)]
pub struct KernelResources {
    /// Registers per thread (the driver's NUM_REGS; the emulator does not know).
    pub registers: Option<u32>,
    /// Static `__shared__` bytes (the driver's SHARED_SIZE_BYTES; 0 on the emulator).
    pub static_shared: u32,
    /// Dynamic shared memory the kernel may launch with: 48 KiB until
    /// [`Device::allow_shared`] raises it (MAX_DYNAMIC_SHARED_SIZE_BYTES). Shared by clones.
    pub dynamic_shared_allowed: Arc<AtomicU32>,
}

impl KernelResources {
    pub fn new(registers: Option<u32>, static_shared: u32) -> Self {
        Self { registers, static_shared, dynamic_shared_allowed: Arc::new(AtomicU32::new(DEFAULT_DYNAMIC_SHARED)) }
    }
}

/// Refuses a launch a GPU with `limits` would refuse, naming the kernel, the limit and what to do.
pub fn check_launch(limits: &DeviceLimits, kernel: &str, resources: &KernelResources, config: &LaunchConfig) -> Result<(), String> {
    let (g, b) = (config.grid_dim, config.block_dim);
    let (mg, mb) = (limits.max_grid, limits.max_block);
    if g.0 == 0 || g.1 == 0 || g.2 == 0 || g.0 > mg.0 || g.1 > mg.1 || g.2 > mg.2 {
        return Err(format!(
            "launching {kernel}: grid ({}, {}, {}) is outside the device's limits (1..={}, 1..={}, 1..={}); \
             this is a bug in flowsteer's launch configuration, please report it",
            g.0, g.1, g.2, mg.0, mg.1, mg.2
        ));
    }
    let threads = b.0 as u64 * b.1 as u64 * b.2 as u64;
    if b.0 == 0 || b.1 == 0 || b.2 == 0 || b.0 > mb.0 || b.1 > mb.1 || b.2 > mb.2 || threads > limits.max_threads_per_block as u64 {
        return Err(format!(
            "launching {kernel}: a block of ({}, {}, {}) threads is outside the device's limits ({} threads, ({}, {}, {}))",
            b.0, b.1, b.2, limits.max_threads_per_block, mb.0, mb.1, mb.2
        ));
    }
    if let Some(regs) = resources.registers {
        // Registers are allocated per warp in units of 256 (as occupancy.rs counts them).
        let warps = threads.div_ceil(32);
        let per_warp = (regs as u64 * 32).div_ceil(256) * 256;
        if warps * per_warp > limits.registers_per_block as u64 {
            return Err(format!(
                "launching {kernel}: {threads} threads × {regs} registers need {} registers, the device has {} per block; \
                 use a smaller block (FLOWSTEER_PROPAGATE) or a build that caps the registers",
                warps * per_warp,
                limits.registers_per_block
            ));
        }
    }
    let dynamic = config.shared_mem_bytes;
    let allowed = resources.dynamic_shared_allowed.load(Ordering::Relaxed);
    if dynamic > allowed {
        return Err(format!(
            "launching {kernel}: {dynamic} bytes of dynamic shared memory but the kernel is allowed {allowed} \
             (above 48 KiB it must opt in first); this is a bug in flowsteer, please report it"
        ));
    }
    let shared = dynamic as u64 + resources.static_shared as u64;
    if shared > limits.shared_per_block_optin as u64 {
        return Err(format!(
            "launching {kernel}: {shared} bytes of shared memory per block, the device allows {}",
            limits.shared_per_block_optin
        ));
    }
    Ok(())
}

/// Grid dimensions for `blocks` blocks numbered x first, then y (`fs_block_index` in
/// kernels/block.cuh): up to `x_cap` along x, at least enough that y stays within 65,535. A count
/// past (2^31 − 1) × 65,535 saturates y, which [`check_launch`] then refuses.
pub fn linear_grid(blocks: u64, x_cap: u32) -> (u32, u32, u32) {
    let blocks = blocks.max(1);
    let x = blocks.min(x_cap.max(1) as u64).max(blocks.div_ceil(65_535)).min(i32::MAX as u64);
    let y = u32::try_from(blocks.div_ceil(x)).unwrap_or(u32::MAX);
    (x as u32, y, 1)
}

/// Device memory owned by a buffer; freed when dropped.
pub trait Allocation: Send {
    /// The device address.
    fn ptr(&self) -> u64;
}

/// A device buffer of `len` values of `T`, zeroed when allocated.
pub struct Buffer<T> {
    allocation: Box<dyn Allocation>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Buffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's device address, for kernel arguments.
    pub fn ptr(&self) -> u64 {
        self.allocation.ptr()
    }
}

/// A kernel ready to launch: its name, resources and the device's own handle.
#[derive(Clone)]
pub struct Kernel {
    pub name: &'static str,
    pub resources: KernelResources,
    handle: Arc<dyn Any + Send + Sync>,
}

impl Kernel {
    pub fn new(name: &'static str, resources: KernelResources, handle: Arc<dyn Any + Send + Sync>) -> Self {
        Self { name, resources, handle }
    }

    /// The device's handle, if this kernel was loaded by a device of that kind.
    pub fn handle<H: Any>(&self) -> Option<&H> {
        self.handle.downcast_ref()
    }
}

/// A captured sequence of launches, replayed as one (the device's own representation).
pub struct Graph(pub Box<dyn Any>);

/// The device's name and architecture (`sm_90`, or `emulated`).
pub struct Identity {
    pub name: String,
    pub arch: String,
}

/// A module's kernels by name, with the ptxas report of each (none on the emulator).
pub struct LoadedModule {
    pub kernels: Vec<Kernel>,
    pub reports: Vec<KernelReport>,
}

/// What the CUDA backend needs of a device.
pub trait Device {
    fn is_emulated(&self) -> bool;

    /// The launch limits every launch is checked against.
    fn limits(&self) -> DeviceLimits;

    /// Free and total device memory in bytes, after the queued work and with memory freed by
    /// dropped buffers given back (a stream-ordered pool keeps it otherwise).
    fn memory(&self) -> anyhow::Result<(usize, usize)>;

    /// `bytes` zeroed bytes (at least one).
    fn alloc_bytes(&self, bytes: usize, what: &str) -> anyhow::Result<Box<dyn Allocation>>;

    /// Copies `src` to device address `dst` (which holds at least `src.len()` bytes).
    fn copy_to_device(&self, src: &[u8], dst: u64, what: &str) -> anyhow::Result<()>;

    /// Copies from device address `src` into `dst`, after the work queued before.
    fn copy_to_host(&self, src: u64, dst: &mut [u8], what: &str) -> anyhow::Result<()>;

    /// Compiles (or takes from the cache) and loads a module for `arch`.
    fn load(&self, config: &ModuleConfig, arch: &str, use_cache: bool) -> anyhow::Result<LoadedModule>;

    /// Lets `kernel` launch with up to `bytes` of dynamic shared memory (above 48 KiB).
    fn allow_shared(&self, kernel: &Kernel, bytes: u32) -> anyhow::Result<()>;

    /// How many blocks of `kernel` (`block` threads, `shared` dynamic bytes) the whole device
    /// runs at once, for the persistent kernels' grids.
    fn resident_blocks(&self, kernel: &Kernel, block: u32, shared: u32) -> anyhow::Result<u32>;

    /// The most blocks a tiled launch lays along grid.x before it continues on grid.y (kernels'
    /// `fs_block_index`): the device's limit on a GPU; a few on the emulator, so that the tests
    /// use both dimensions.
    fn grid_x_cap(&self) -> u32;

    /// Checks the launch against [`Device::limits`] and enqueues it (records it while capturing).
    fn launch(&self, kernel: &Kernel, config: LaunchConfig, args: &[KernelArg], what: &str) -> anyhow::Result<()>;

    /// Waits for every queued launch (a kernel's failure surfaces here on the driver).
    fn sync(&self, what: &str) -> anyhow::Result<()>;

    /// Starts recording the launches that follow into a graph.
    fn begin_capture(&self) -> anyhow::Result<()>;

    /// Ends the capture begun by [`Device::begin_capture`].
    fn end_capture(&self) -> anyhow::Result<Graph>;

    /// Replays a captured graph.
    fn replay(&self, graph: &Graph) -> anyhow::Result<()>;
}

impl dyn Device + '_ {
    /// A zeroed buffer of `len` values (at least one, so that every buffer has an address).
    pub fn alloc<T: bytemuck::Pod>(&self, len: usize, what: &str) -> anyhow::Result<Buffer<T>> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        Ok(Buffer { allocation: self.alloc_bytes(bytes, what)?, len, _t: PhantomData })
    }

    /// Copies `src` into the start of `dst`.
    pub fn upload<T: bytemuck::Pod>(&self, src: &[T], dst: &mut Buffer<T>, what: &str) -> anyhow::Result<()> {
        ensure!(src.len() <= dst.len.max(1), "{what}: {} values do not fit a buffer of {}", src.len(), dst.len);
        self.copy_to_device(bytemuck::cast_slice(src), dst.ptr(), what)
    }

    /// A new buffer holding `src`.
    pub fn upload_new<T: bytemuck::Pod>(&self, src: &[T], what: &str) -> anyhow::Result<Buffer<T>> {
        let mut b = self.alloc(src.len(), what)?;
        self.upload(src, &mut b, what)?;
        Ok(b)
    }

    /// Copies the first `dst.len()` values of `src` to the host, after the work queued before.
    pub fn download<T: bytemuck::Pod>(&self, src: &Buffer<T>, dst: &mut [T], what: &str) -> anyhow::Result<()> {
        ensure!(dst.len() <= src.len.max(1), "{what}: {} values asked of a buffer of {}", dst.len(), src.len);
        self.copy_to_host(src.ptr(), bytemuck::cast_slice_mut(dst), what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(grid: (u32, u32, u32), block: u32, shared: u32) -> LaunchConfig {
        LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: shared }
    }

    #[test]
    fn launches_within_the_limits_pass_and_each_limit_is_refused() {
        let l = DeviceLimits::SM_90;
        let plain = KernelResources::new(Some(64), 0);
        assert!(check_launch(&l, "k", &plain, &config((i32::MAX as u32, 65_535, 65_535), 1024, 0)).is_ok());
        // grid.y past 65,535: what 70,000 groups on grid.y did.
        let e = check_launch(&l, "fs_weigh", &plain, &config((1, 70_000, 1), 256, 0)).unwrap_err();
        assert!(e.contains("fs_weigh") && e.contains("70000"), "{e}");
        assert!(check_launch(&l, "k", &plain, &config((1 << 31, 1, 1), 256, 0)).is_err());
        assert!(check_launch(&l, "k", &plain, &config((0, 1, 1), 256, 0)).is_err());
        assert!(check_launch(&l, "k", &plain, &config((1, 1, 65_536), 256, 0)).is_err());
        let e = check_launch(&l, "k", &plain, &config((1, 1, 1), 1025, 0)).unwrap_err();
        assert!(e.contains("1025"), "{e}");
        let square = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (64, 32, 1), shared_mem_bytes: 0 };
        assert!(check_launch(&l, "k", &plain, &square).is_err(), "2,048 threads in a 2-D block");
    }

    #[test]
    fn linear_grids_cover_every_block_within_the_limits() {
        let l = DeviceLimits::SM_90;
        let r = KernelResources::new(None, 0);
        for (blocks, cap) in [(1u64, 7u32), (70_000, 7), (70_000, i32::MAX as u32), (1 << 36, i32::MAX as u32), (458_745, 7), (458_746, 7)] {
            let (x, y, z) = linear_grid(blocks, cap);
            let covered = x as u64 * y as u64;
            assert!(covered >= blocks && covered - blocks < x as u64, "{blocks} blocks on ({x}, {y}, {z})");
            let c = LaunchConfig { grid_dim: (x, y, z), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            assert!(check_launch(&l, "k", &r, &c).is_ok(), "{blocks} blocks on ({x}, {y}, {z})");
        }
        // Groups on grid.y, as before issue 11, are what the limits refuse.
        let old = LaunchConfig { grid_dim: (1, 70_000, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        assert!(check_launch(&l, "k", &r, &old).is_err());
        // Past (2^31 − 1) × 65,535 blocks: refused, not truncated.
        let (x, y, z) = linear_grid(u64::MAX / 2, i32::MAX as u32);
        assert!(check_launch(&l, "k", &r, &LaunchConfig { grid_dim: (x, y, z), block_dim: (256, 1, 1), shared_mem_bytes: 0 }).is_err());
    }

    #[test]
    fn registers_are_counted_per_warp_in_units_of_256() {
        let l = DeviceLimits::SM_90;
        // 64 registers × 1,024 threads = 65,536: fits exactly; 65 rounds up to 72 per thread.
        assert!(check_launch(&l, "k", &KernelResources::new(Some(64), 0), &config((1, 1, 1), 1024, 0)).is_ok());
        let e = check_launch(&l, "k", &KernelResources::new(Some(65), 0), &config((1, 1, 1), 1024, 0)).unwrap_err();
        assert!(e.contains("73728") && e.contains("65536"), "{e}");
        // 182 registers (the default propagate kernel) × 256 threads fit; × 512 do not.
        assert!(check_launch(&l, "k", &KernelResources::new(Some(182), 0), &config((1, 1, 1), 256, 0)).is_ok());
        assert!(check_launch(&l, "k", &KernelResources::new(Some(182), 0), &config((1, 1, 1), 512, 0)).is_err());
        // Unknown registers (the emulator): not checked.
        assert!(check_launch(&l, "k", &KernelResources::new(None, 0), &config((1, 1, 1), 1024, 0)).is_ok());
    }

    #[test]
    fn shared_memory_needs_the_opt_in_and_fits_the_device() {
        let l = DeviceLimits::SM_90;
        let r = KernelResources::new(None, 1024);
        assert!(check_launch(&l, "k", &r, &config((1, 1, 1), 256, 48 * 1024)).is_ok());
        let e = check_launch(&l, "k", &r, &config((1, 1, 1), 256, 64 * 1024)).unwrap_err();
        assert!(e.contains("opt in"), "{e}");
        r.dynamic_shared_allowed.store(227 * 1024, Ordering::Relaxed);
        // The clone shares the opt-in, as a kernel handed out twice does.
        let clone = r.clone();
        assert!(check_launch(&l, "k", &clone, &config((1, 1, 1), 256, 64 * 1024)).is_ok());
        // Static + dynamic past 227 KiB.
        let e = check_launch(&l, "k", &clone, &config((1, 1, 1), 256, 227 * 1024)).unwrap_err();
        assert!(e.contains("233472"), "{e}");
    }
}
