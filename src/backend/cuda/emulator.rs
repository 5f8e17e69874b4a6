//! The host emulator of the CUDA kernels: each module of `kernels/` compiled as C++ by the
//! system's C++ compiler, with `kernels/emulator.hpp` standing in for the CUDA runtime, and run
//! on the CPU one block at a time (threads as fibers). The CUDA backend's whole host code runs
//! over it unchanged ([`EmulatedDevice`] implements [`Device`] as the driver does), so the GPU
//! tests and every command's
//! `--backend cuda-emulated` check the kernels' logic and the orchestration on a machine without
//! a GPU. It is a test instrument: slow (one CPU thread), and silent on timing, races and the
//! memory model; a kernel that passes here has still to run on a GPU.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context};

use super::gpu::{check_launch, Allocation, Device, DeviceLimits, Graph, Identity, Kernel, KernelArg, KernelResources, LaunchConfig, LoadedModule};
use super::modules::ModuleConfig;

const EMULATOR_HPP: &str = include_str!("../../../kernels/emulator.hpp");

/// One launch at a time in the whole process: a module's library is loaded once however many
/// backends use it, and its emulator state (the running block, `__shared__` statics) is global.
static LAUNCH: Mutex<()> = Mutex::new(());

/// `fs_emu_launch(name, grid[3], block[3], shared bytes, args, error buffer, its length)`.
type LaunchFn = unsafe extern "C" fn(*const c_char, *const c_uint, *const c_uint, c_uint, *mut *mut c_void, *mut c_char, usize) -> c_int;

/// The compiler: `$CXX`, else `c++`.
fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// The compiler's version line, or why there is none (the emulator needs a C++17 compiler).
pub fn compiler_version() -> Result<String, String> {
    let cxx = compiler();
    let out = Command::new(&cxx).arg("--version").output().map_err(|e| {
        format!("the CUDA emulator needs a C++ compiler and `{cxx}` cannot be run ({e}); install g++ or set CXX")
    })?;
    if !out.status.success() {
        return Err(format!("`{cxx} --version` failed; install g++ or set CXX"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_string())
}

/// Pretend device memory for a command run on the emulator: the host's available memory
/// (`MemAvailable` of /proc/meminfo), else 8 GiB.
pub fn host_memory() -> usize {
    let available_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("MemAvailable:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok()))
    });
    available_kib.map_or(8 << 30, |k| k * 1024)
}

/// The C++ translation unit of a module: the emulator header, the module's source with its
/// `extern __shared__` arrays pointed at the launch's dynamic shared memory, and a launcher
/// that finds a kernel by name.
fn translation_unit(source: &str, kernels: &[&str]) -> String {
    let mut out = String::from(EMULATOR_HPP);
    out.push_str("\n// ---- module ----\n");
    for line in source.lines() {
        out.push_str(&rewrite_dynamic_shared(line).unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out.push_str(
        "\nextern \"C\" int fs_emu_launch(const char* name, const unsigned int* grid, const unsigned int* block,\n\
         \x20                            unsigned int shared_bytes, void** args, char* error, size_t error_len) {\n",
    );
    for k in kernels {
        out.push_str(&format!(
            "    if (strcmp(name, \"{k}\") == 0) return fs_emu::launch({k}, grid, block, shared_bytes, args, error, error_len);\n"
        ));
    }
    out.push_str("    snprintf(error, error_len, \"no kernel named %s in this module\", name);\n    return 2;\n}\n");
    out
}

/// `extern __shared__ __align__(16) float fs_w[];` → `float* fs_w = (float*)fs_emu::dynamic_shared();`
fn rewrite_dynamic_shared(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("extern __shared__")?.trim();
    let rest = match rest.strip_prefix("__align__(") {
        Some(r) => r.split_once(')')?.1.trim(),
        None => rest,
    };
    let decl = rest.strip_suffix("[];")?;
    let (ty, name) = decl.rsplit_once(' ')?;
    Some(format!("    {ty}* {name} = ({ty}*)fs_emu::dynamic_shared();"))
}

/// One module compiled for the emulator and loaded.
pub struct EmulatedModule {
    launch: LaunchFn,
    label: String,
    // Keeps the code of `launch` mapped.
    _library: libloading::Library,
}

// SAFETY: the library's state is only touched through `launch`, which the backend calls from
// one thread at a time (it takes `&self` of a backend that is not shared between threads).
unsafe impl Send for EmulatedModule {}
unsafe impl Sync for EmulatedModule {}

impl EmulatedModule {
    /// Compiles (or finds in the cache) and loads a module.
    pub fn load(config: &ModuleConfig, use_cache: bool) -> anyhow::Result<Self> {
        Self::from_source(&config.label, &config.source(), config.kernels, &config.defines, use_cache)
    }

    /// Compiles and loads CUDA source whose entry points are `kernels` (extern "C" __global__).
    pub fn from_source(label: &str, source: &str, kernels: &[&str], defines: &[String], use_cache: bool) -> anyhow::Result<Self> {
        let version = compiler_version().map_err(anyhow::Error::msg)?;
        let unit = translation_unit(source, kernels);
        let flags = flags(defines);
        let key = super::nvrtc::cache_key(&unit, &flags, &format!("emulator {version}"));
        let dir = super::nvrtc::cache_dir().join("emulator");
        let library = dir.join(format!("{key}.so"));
        if !(use_cache && library.exists()) {
            build(label, &unit, &flags, &dir, &library)?;
        }
        // SAFETY: the library is ours, built from the source above; loading runs no initialiser
        // beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&library) }.with_context(|| format!("loading the emulated {label} module from {}", library.display()))?;
        // SAFETY: fs_emu_launch has exactly the LaunchFn signature (translation_unit writes it).
        let launch = unsafe { *lib.get::<LaunchFn>(b"fs_emu_launch\0").context("the emulated module has no fs_emu_launch")? };
        Ok(Self { launch, label: label.to_string(), _library: lib })
    }

    /// Runs one kernel over a whole grid, synchronously.
    pub fn launch(&self, name: &str, grid: (u32, u32, u32), block: (u32, u32, u32), shared_bytes: u32, args: &[KernelArg]) -> anyhow::Result<()> {
        let cname = CString::new(name).expect("kernel names have no NUL");
        let mut values: Vec<KernelArg> = args.to_vec();
        let mut pointers: Vec<*mut c_void> = values.iter_mut().map(KernelArg::as_mut_ptr).collect();
        let (g, b) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
        let mut error = vec![0 as c_char; 1024];
        // A launch that failed left no state behind that the next one reads: a poisoned lock
        // is still a usable lock.
        let _one_at_a_time = LAUNCH.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: `pointers` points at values of the kernel's parameter types in order (the
        // callers pass each kernel's parameters as kernels/*.cu declare them); the buffers they
        // address are host allocations of the emulated device that outlive the call.
        let rc = unsafe { (self.launch)(cname.as_ptr(), g.as_ptr(), b.as_ptr(), shared_bytes, pointers.as_mut_ptr(), error.as_mut_ptr(), error.len()) };
        if rc != 0 {
            // SAFETY: the launcher writes a NUL-terminated message within the buffer.
            let msg = unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy().into_owned();
            bail!("emulated kernel {name} (module {}) failed: {msg}", self.label);
        }
        Ok(())
    }
}

/// Host memory standing in for device memory (256-byte aligned, as cuMemAlloc's); gives its
/// bytes back to the emulated device's budget when dropped.
struct HostAllocation {
    ptr: *mut u8,
    layout: std::alloc::Layout,
    in_use: Arc<AtomicUsize>,
}

// SAFETY: the allocation is owned by its buffer alone.
unsafe impl Send for HostAllocation {}

impl Drop for HostAllocation {
    fn drop(&mut self) {
        // SAFETY: allocated in `alloc_bytes` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        self.in_use.fetch_sub(self.layout.size(), Ordering::Relaxed);
    }
}

impl Allocation for HostAllocation {
    fn ptr(&self) -> u64 {
        self.ptr as u64
    }
}

/// A launch as the emulator records it while capturing.
struct RecordedLaunch {
    kernel: Kernel,
    config: LaunchConfig,
    args: Vec<KernelArg>,
    what: String,
}

/// The kernel handle of the emulator: its module and its name there.
struct EmulatedKernel {
    module: Arc<EmulatedModule>,
    name: &'static str,
}

/// The host emulator as a device: `memory` bytes of pretend device memory, an sm_90's launch
/// limits, launches that run at once.
pub struct EmulatedDevice {
    memory: usize,
    in_use: Arc<AtomicUsize>,
    limits: DeviceLimits,
    /// `Some` while a graph is being captured: launches are recorded, not run.
    capture: RefCell<Option<Vec<RecordedLaunch>>>,
}

/// Blocks a tiled launch lays along grid.x on the emulator: few and odd, so that the tests
/// number blocks across grid.y too (a GPU takes up to 2^31 − 1 along x).
pub const EMULATED_GRID_X: u32 = 7;

impl EmulatedDevice {
    /// The host emulator with `memory` bytes of pretend device memory.
    pub fn open(memory: usize) -> anyhow::Result<(Self, Identity)> {
        compiler_version().map_err(anyhow::Error::msg)?;
        let device = Self { memory, in_use: Arc::new(AtomicUsize::new(0)), limits: DeviceLimits::SM_90, capture: RefCell::new(None) };
        Ok((device, Identity { name: "CUDA emulator on the host".into(), arch: "emulated".into() }))
    }

    fn not_capturing(&self, what: &str) -> anyhow::Result<()> {
        ensure!(self.capture.borrow().is_none(), "{what} during a graph capture (a GPU refuses synchronous copies there)");
        Ok(())
    }

    fn free(&self) -> usize {
        self.memory.saturating_sub(self.in_use.load(Ordering::Relaxed))
    }
}

impl Device for EmulatedDevice {
    fn is_emulated(&self) -> bool {
        true
    }

    fn limits(&self) -> DeviceLimits {
        self.limits
    }

    fn memory(&self) -> anyhow::Result<(usize, usize)> {
        Ok((self.free(), self.memory))
    }

    fn alloc_bytes(&self, bytes: usize, what: &str) -> anyhow::Result<Box<dyn Allocation>> {
        let bytes = bytes.max(1);
        let free = self.free();
        ensure!(bytes <= free, "allocating {what}: {bytes} bytes asked of the emulated device, {free} free");
        let layout = std::alloc::Layout::from_size_align(bytes, 256).map_err(|e| anyhow!("allocating {what}: {e}"))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        ensure!(!ptr.is_null(), "allocating {what}: the host is out of memory ({bytes} bytes)");
        self.in_use.fetch_add(bytes, Ordering::Relaxed);
        Ok(Box::new(HostAllocation { ptr, layout, in_use: self.in_use.clone() }))
    }

    fn copy_to_device(&self, src: &[u8], dst: u64, what: &str) -> anyhow::Result<()> {
        self.not_capturing(what)?;
        // SAFETY: `dst` is a host allocation of this device holding at least `src.len()` bytes
        // (Buffer::upload checks the length).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn copy_to_host(&self, src: u64, dst: &mut [u8], what: &str) -> anyhow::Result<()> {
        self.not_capturing(what)?;
        // SAFETY: as in copy_to_device, the other way.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn load(&self, config: &ModuleConfig, _arch: &str, use_cache: bool) -> anyhow::Result<LoadedModule> {
        let module = Arc::new(EmulatedModule::load(config, use_cache)?);
        let kernels = config
            .kernels
            .iter()
            .map(|&name| Kernel::new(name, KernelResources::new(None, 0), Arc::new(EmulatedKernel { module: module.clone(), name })))
            .collect();
        Ok(LoadedModule { kernels, reports: Vec::new() })
    }

    fn allow_shared(&self, kernel: &Kernel, bytes: u32) -> anyhow::Result<()> {
        kernel.resources.dynamic_shared_allowed.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// A pretend device of 2 × 1, small so that the tests exercise the persistent kernels'
    /// grid-stride loops (kernels/propagate.cu).
    fn resident_blocks(&self, _kernel: &Kernel, _block: u32, _shared: u32) -> anyhow::Result<u32> {
        Ok(2)
    }

    fn grid_x_cap(&self) -> u32 {
        EMULATED_GRID_X
    }

    fn launch(&self, kernel: &Kernel, config: LaunchConfig, args: &[KernelArg], what: &str) -> anyhow::Result<()> {
        check_launch(&self.limits, what, &kernel.resources, &config).map_err(anyhow::Error::msg)?;
        let Some(k) = kernel.handle::<EmulatedKernel>() else { bail!("launching {what}: a GPU kernel handed to the emulator") };
        if let Some(recorded) = self.capture.borrow_mut().as_mut() {
            recorded.push(RecordedLaunch { kernel: kernel.clone(), config, args: args.to_vec(), what: what.to_string() });
            return Ok(());
        }
        k.module.launch(k.name, config.grid_dim, config.block_dim, config.shared_mem_bytes, args).map_err(|e| e.context(format!("launching {what}")))
    }

    fn sync(&self, _what: &str) -> anyhow::Result<()> {
        Ok(())
    }

    fn begin_capture(&self) -> anyhow::Result<()> {
        let mut c = self.capture.borrow_mut();
        ensure!(c.is_none(), "a graph capture is already under way");
        *c = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> anyhow::Result<Graph> {
        let recorded = self.capture.borrow_mut().take().ok_or_else(|| anyhow!("no graph capture is under way"))?;
        ensure!(!recorded.is_empty(), "the graph capture of an interval was empty");
        Ok(Graph(Box::new(recorded)))
    }

    fn replay(&self, graph: &Graph) -> anyhow::Result<()> {
        let Some(launches) = graph.0.downcast_ref::<Vec<RecordedLaunch>>() else { bail!("replaying a GPU graph on the emulator") };
        for l in launches {
            self.launch(&l.kernel, l.config, &l.args, &format!("{} (a kernel of the replayed interval graph)", l.what))?;
        }
        Ok(())
    }
}

fn flags(defines: &[String]) -> Vec<String> {
    let mut f: Vec<String> = [
        "-std=c++17",
        "-O2",
        // Built and run on this machine only (the cache key holds the compiler and flags).
        "-march=native",
        // No a*b+c contraction, as the modules' --fmad=false; explicit fmaf stays a fused op.
        "-ffp-contract=off",
        "-fno-strict-aliasing",
        "-fPIC",
        "-shared",
        "-w",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(defines.iter().cloned());
    f
}

fn build(label: &str, source: &str, flags: &[String], dir: &Path, library: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating the kernel cache {}", dir.display()))?;
    // Unique per build, so that two threads or processes building one module never share a file.
    static BUILDS: AtomicU64 = AtomicU64::new(0);
    let unique = format!("{}-{}", std::process::id(), BUILDS.fetch_add(1, Ordering::Relaxed));
    let cpp = library.with_extension(format!("{unique}.cpp"));
    let tmp = library.with_extension(format!("{unique}.so"));
    std::fs::write(&cpp, source).with_context(|| format!("writing {}", cpp.display()))?;
    let out = Command::new(compiler()).args(flags).arg(&cpp).arg("-o").arg(&tmp).output().with_context(|| format!("running {}", compiler()))?;
    let _ = std::fs::remove_file(&cpp);
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let head: String = log.lines().take(40).collect::<Vec<_>>().join("\n");
        return Err(anyhow!("compiling the {label} module for the CUDA emulator failed:\n{head}"));
    }
    // Renamed into place whole, so that a concurrent run never loads half a library.
    std::fs::rename(&tmp, library).with_context(|| format!("moving {} into the cache", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The emulator's own semantics on small kernels: a block scan with shuffles and
    /// __syncthreads (kernels/block.cuh, as the modules use it) against a sequential sum, and
    /// the two launch errors it reports instead of hanging or guessing.
    const PROBE: &str = r#"
#define FS_RBLOCK 64
#include "block.cuh"
extern "C" __global__ void scan(const double* in, double* out, double* totals) {
    double total;
    const double v = fs_block_inclusive_scan(in[blockIdx.x * blockDim.x + threadIdx.x], &total);
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
    if (threadIdx.x == 0) totals[blockIdx.x] = total;
}
extern "C" __global__ void divergent_barrier(int* out) {
    if (threadIdx.x < 3) __syncthreads();
    out[threadIdx.x] = 1;
    __syncthreads();
}
extern "C" __global__ void shuffle_after_exit(int* out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = fs_warp_sum(1);
}
"#;

    fn probe() -> Option<EmulatedModule> {
        if let Err(why) = compiler_version() {
            assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must have a C++ compiler for the emulator: {why}");
            println!("SKIPPED: {why}");
            return None;
        }
        let source = PROBE.replace("#include \"block.cuh\"", include_str!("../../../kernels/block.cuh"));
        Some(EmulatedModule::from_source("probe", &source, &["scan", "divergent_barrier", "shuffle_after_exit"], &[], true).unwrap())
    }

    #[test]
    fn block_scans_match_a_sequential_sum_and_misuse_is_reported() {
        let Some(m) = probe() else { return };
        let input: Vec<f64> = (0..128).map(|i| ((i * 37) % 11) as f64 - 3.0).collect();
        let (mut out, mut totals) = (vec![0f64; 128], vec![0f64; 2]);
        let ptr = |v: &mut Vec<f64>| KernelArg::U64(v.as_mut_ptr() as u64);
        let args = [KernelArg::U64(input.as_ptr() as u64), ptr(&mut out), ptr(&mut totals)];
        m.launch("scan", (2, 1, 1), (64, 1, 1), 0, &args).unwrap();
        for b in 0..2 {
            let mut acc = 0.0;
            for i in 0..64 {
                acc += input[b * 64 + i];
                assert_eq!(out[b * 64 + i], acc, "block {b}, thread {i}");
            }
            assert_eq!(totals[b], acc);
        }
        let mut flags = vec![0i32; 64];
        let arg = [KernelArg::U64(flags.as_mut_ptr() as u64)];
        let e = m.launch("divergent_barrier", (1, 1, 1), (64, 1, 1), 0, &arg).unwrap_err().to_string();
        assert!(e.contains("divergent __syncthreads"), "{e}");
        let e = m.launch("shuffle_after_exit", (1, 1, 1), (64, 1, 1), 0, &arg).unwrap_err().to_string();
        assert!(e.contains("lane 5 has exited"), "{e}");
    }

    /// Issue 11.5: residual resampling when rounding leaves Σ⌊n·w_j⌋ < n with every residual 0.
    /// Only a group total C above Σ W_j gets there (f64 rounding of C over ≳ 2^26 weights), so
    /// the total is set by hand: W = [1, 1, 0, 0] with C = 4 gives one copy each of particles 0
    /// and 1, residuals all 0 and two slots left. The kernels gave both to particle n − 1, whose
    /// weight is 0; src/resample.rs draws them from the weights themselves. The launches are
    /// device.rs's residual sequence, on host arrays.
    #[test]
    fn residual_slots_left_by_rounding_go_to_live_particles_as_on_the_cpu() {
        use crate::resample::{self, Cdf, Stream};
        if let Err(why) = compiler_version() {
            assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must have a C++ compiler for the emulator: {why}");
            return println!("SKIPPED: {why}");
        }
        let m = EmulatedModule::load(&ModuleConfig::resample(), true).unwrap();
        let (seed, step) = (0x1234_5678_9abc_def0u64, 7u32);
        let (k0, k1) = (seed as u32, (seed >> 32) as u32);
        let (n, tiles, groups) = (4u64, 1u32, 1u64);
        let mut w = [1.0f64, 1.0, 0.0, 0.0];
        let mut gr = [0f64; 8];
        gr[6] = 1.0; // the group resamples (FS_GR_RESAMPLE)
        let (w_total, w_last) = (vec![4.0f64], vec![1i64]);
        let (mut tile_count, mut tile_part, mut tile_last, mut tile_sum) = (vec![0u64], vec![0f64], vec![0i64], vec![0f64]);
        let (mut res_total, mut copies, mut res_last, mut e_total) = (vec![0f64], vec![0u64], vec![0i64], vec![0f64]);
        let (mut prefix, mut anc) = (vec![0u64; 4], vec![99u32; 4]);
        let mut iv = [0u32; 16];
        iv[4] = step; // FS_IV_RESAMPLE_STEP
        let p = |v: &mut [u8]| KernelArg::U64(v.as_mut_ptr() as u64);
        macro_rules! a {
            ($v:expr) => {
                p(bytemuck::cast_slice_mut(&mut $v[..]))
            };
        }
        let (wt, wl) = (KernelArg::U64(w_total.as_ptr() as u64), KernelArg::U64(w_last.as_ptr() as u64));
        let (null, u32a, u64a) = (KernelArg::U64(0), KernelArg::U32, KernelArg::U64);
        let tiled = |name: &str, args: &[KernelArg]| m.launch(name, (3, 1, 1), (256, 1, 1), 0, args).unwrap();
        tiled("fs_residual_counts", &[a!(w), u64a(n), a!(gr), wt, a!(tile_count), a!(tile_part), a!(tile_last), u32a(tiles), u64a(groups)]);
        let scan = [a!(gr), a!(tile_part), a!(tile_count), a!(tile_last), u32a(tiles), a!(res_total), a!(copies), a!(res_last), u64a(groups)];
        tiled("fs_scan_tiles", &scan);
        assert_eq!((copies[0], res_total[0], res_last[0]), (2, 0.0, -1), "two copies, no residual");
        tiled("fs_residual_prefix", &[a!(w), u64a(n), a!(gr), wt, a!(tile_count), a!(tile_part), a!(tile_sum), a!(res_last), a!(prefix), u32a(tiles), u64a(groups)]);
        tiled("fs_residual_slots", &[a!(prefix), u64a(n), a!(gr), a!(copies), a!(anc), u32a(tiles), u64a(groups)]);
        tiled("fs_residual_fallback", &[a!(gr), wt, wl, a!(res_total), a!(res_last), u64a(groups)]);
        tiled("fs_exp_tile_sums", &[u64a(n), a!(gr), a!(copies), a!(iv), u32a(k0), u32a(k1), u32a(2), a!(tile_sum), u32a(tiles), u64a(groups)]);
        tiled("fs_scan_tiles", &[a!(gr), a!(tile_sum), null, null, u32a(tiles), a!(e_total), null, null, u64a(groups)]);
        let args = [a!(w), u64a(n), a!(gr), a!(res_total), a!(res_last), a!(copies), a!(tile_sum), a!(e_total), u32a(tiles), a!(anc), a!(iv), u32a(k0), u32a(k1), u32a(2), u32a(3), u64a(groups)];
        tiled("fs_ancestors_multinomial", &args);

        // The CPU's rule on the same numbers: C_{n−1} = 4, clamped to the last positive weight.
        let cdf = Cdf { w: vec![1.0, 1.0, 0.0, 0.0], c: vec![1.0, 2.0, 2.0, 4.0], last_positive: 1, all_neg_inf: false };
        let rng = crate::rng::Philox::new(seed);
        let mut cpu = [0u32; 4];
        resample::residual(&cdf, Stream { rng: &rng, step, group: 0, n }, &mut cpu);
        println!("fallback ancestors: emulated CUDA {anc:?}, CPU {cpu:?}");
        assert_eq!(&anc[..2], &[0, 1], "the deterministic copies first");
        assert!(anc.iter().all(|&a| a <= 1), "a particle of weight 0 got a slot: {anc:?}");
        assert_eq!(anc, cpu);
    }

    #[test]
    fn dynamic_shared_arrays_are_pointed_at_the_launch_buffer() {
        assert_eq!(
            rewrite_dynamic_shared("    extern __shared__ __align__(16) float fs_w[];").as_deref(),
            Some("    float* fs_w = (float*)fs_emu::dynamic_shared();")
        );
        assert_eq!(
            rewrite_dynamic_shared("extern __shared__ unsigned long long s[];").as_deref(),
            Some("    unsigned long long* s = (unsigned long long*)fs_emu::dynamic_shared();")
        );
        assert_eq!(rewrite_dynamic_shared("    __shared__ float part[8];"), None);
    }
}
