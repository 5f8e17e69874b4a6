//! The device under [`super::CudaBackend`]: a GPU through the CUDA driver (cudarc), or the host
//! emulator ([`super::emulator`]) that runs the same kernels on the CPU. The backend sees only
//! what both provide: zeroed buffers addressed by raw device pointers, copies, kernel launches
//! with plain arguments on one in-order stream, and captured graphs of launches.
//!
//! Launches on the driver are asynchronous and copies wait for the stream; on the emulator every
//! launch runs to completion at once. Both give one in-order stream, which is all the backend
//! assumes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

use super::emulator::{self, EmulatedModule};
use super::modules::ModuleConfig;
use super::nvrtc::{self, KernelReport};

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

/// A device buffer of `len` values of `T`, zeroed when allocated.
pub struct Buffer<T> {
    storage: Storage,
    len: usize,
    _t: PhantomData<T>,
}

enum Storage {
    Driver(CudaSlice<u8>),
    Host(HostAllocation),
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
        // SAFETY: allocated in `alloc` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        self.in_use.fetch_sub(self.layout.size(), Ordering::Relaxed);
    }
}

impl<T> Buffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One loaded module.
pub enum Module {
    Driver { _module: Arc<CudaModule>, functions: HashMap<&'static str, CudaFunction> },
    Emulated(Arc<EmulatedModule>),
}

/// A kernel ready to launch.
#[derive(Clone)]
pub enum Kernel {
    Driver(CudaFunction),
    Emulated(Arc<EmulatedModule>, &'static str),
}

/// A captured sequence of launches, replayed as one.
pub enum Graph {
    Driver(CudaGraph),
    Emulated(Vec<RecordedLaunch>),
}

/// A launch as the emulator records it while capturing.
pub struct RecordedLaunch {
    kernel: Kernel,
    config: LaunchConfig,
    args: Vec<KernelArg>,
}

/// The GPU itself, through the driver.
pub struct DriverDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

/// The host emulator: a pretend device with `memory` bytes.
pub struct EmulatedDevice {
    memory: usize,
    in_use: Arc<AtomicUsize>,
    /// `Some` while a graph is being captured: launches are recorded, not run.
    capture: RefCell<Option<Vec<RecordedLaunch>>>,
}

pub enum Device {
    Driver(DriverDevice),
    Emulated(EmulatedDevice),
}

fn drv<T>(r: Result<T, cudarc::driver::DriverError>, what: &str) -> anyhow::Result<T> {
    r.map_err(|e| {
        let msg = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        anyhow!("CUDA driver error while {what}: {e:?} {msg}")
    })
}

/// The device's name and architecture (`sm_90`, or `emulated`).
pub struct Identity {
    pub name: String,
    pub arch: String,
}

impl Device {
    /// Device 0 with one non-default stream. Fails (never panics) without a driver or device.
    pub fn open_driver() -> anyhow::Result<(Self, Identity)> {
        super::availability().map_err(anyhow::Error::msg)?;
        let ctx = drv(CudaContext::new(0), "creating a context on device 0")?;
        // One stream and no cross-stream sharing: no per-buffer events, so launches and graph
        // captures stay free of event records.
        // SAFETY: every buffer is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let stream = drv(ctx.new_stream(), "creating a stream")?;
        let (major, minor) = drv(ctx.compute_capability(), "reading the compute capability")?;
        let name = drv(ctx.name(), "reading the device name")?;
        Ok((Device::Driver(DriverDevice { ctx, stream }), Identity { name, arch: nvrtc::arch_name(major, minor) }))
    }

    /// The host emulator with `memory` bytes of pretend device memory.
    pub fn open_emulated(memory: usize) -> anyhow::Result<(Self, Identity)> {
        emulator::compiler_version().map_err(anyhow::Error::msg)?;
        let device = EmulatedDevice { memory, in_use: Arc::new(AtomicUsize::new(0)), capture: RefCell::new(None) };
        Ok((Device::Emulated(device), Identity { name: "CUDA emulator on the host".into(), arch: "emulated".into() }))
    }

    pub fn is_emulated(&self) -> bool {
        matches!(self, Device::Emulated(_))
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> anyhow::Result<(usize, usize)> {
        match self {
            Device::Driver(d) => drv(d.ctx.mem_get_info(), "querying free memory"),
            Device::Emulated(e) => Ok((e.memory.saturating_sub(e.in_use.load(Ordering::Relaxed)), e.memory)),
        }
    }

    /// A zeroed buffer of `len` values (at least one, so that every buffer has an address).
    pub fn alloc<T: bytemuck::Pod>(&self, len: usize, what: &str) -> anyhow::Result<Buffer<T>> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        let storage = match self {
            Device::Driver(d) => Storage::Driver(drv(d.stream.alloc_zeros::<u8>(bytes), &format!("allocating {what}"))?),
            Device::Emulated(e) => {
                let free = e.memory.saturating_sub(e.in_use.load(Ordering::Relaxed));
                ensure!(bytes <= free, "allocating {what}: {bytes} bytes asked of the emulated device, {free} free");
                let layout = std::alloc::Layout::from_size_align(bytes, 256).map_err(|e| anyhow!("allocating {what}: {e}"))?;
                // SAFETY: the layout has a non-zero size.
                let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
                ensure!(!ptr.is_null(), "allocating {what}: the host is out of memory ({bytes} bytes)");
                e.in_use.fetch_add(bytes, Ordering::Relaxed);
                Storage::Host(HostAllocation { ptr, layout, in_use: e.in_use.clone() })
            }
        };
        Ok(Buffer { storage, len, _t: PhantomData })
    }

    /// The buffer's device address, for kernel arguments.
    pub fn ptr<T>(&self, b: &Buffer<T>) -> u64 {
        match (&b.storage, self) {
            (Storage::Driver(s), Device::Driver(d)) => s.device_ptr(&d.stream).0,
            (Storage::Host(h), _) => h.ptr as u64,
            (Storage::Driver(_), Device::Emulated(_)) => unreachable!("a driver buffer on the emulated device"),
        }
    }

    fn not_capturing(&self, what: &str) -> anyhow::Result<()> {
        if let Device::Emulated(e) = self {
            ensure!(e.capture.borrow().is_none(), "{what} during a graph capture (a GPU refuses synchronous copies there)");
        }
        Ok(())
    }

    /// Copies `src` into the start of `dst`.
    pub fn upload<T: bytemuck::Pod>(&self, src: &[T], dst: &mut Buffer<T>, what: &str) -> anyhow::Result<()> {
        ensure!(src.len() <= dst.len.max(1), "{what}: {} values do not fit a buffer of {}", src.len(), dst.len);
        self.not_capturing(what)?;
        let bytes: &[u8] = bytemuck::cast_slice(src);
        match (&mut dst.storage, self) {
            (Storage::Driver(s), Device::Driver(d)) => drv(d.stream.memcpy_htod(bytes, &mut s.slice_mut(..bytes.len())), what),
            // SAFETY: the allocation holds at least `bytes.len()` bytes (checked above).
            (Storage::Host(h), _) => unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), h.ptr, bytes.len());
                Ok(())
            },
            (Storage::Driver(_), Device::Emulated(_)) => unreachable!("a driver buffer on the emulated device"),
        }
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
        self.not_capturing(what)?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
        match (&src.storage, self) {
            (Storage::Driver(s), Device::Driver(d)) => {
                drv(d.stream.memcpy_dtoh(&s.slice(..bytes.len()), bytes), what)?;
                drv(d.stream.synchronize(), what)
            }
            // SAFETY: the allocation holds at least `bytes.len()` bytes (checked above).
            (Storage::Host(h), _) => unsafe {
                std::ptr::copy_nonoverlapping(h.ptr, bytes.as_mut_ptr(), bytes.len());
                Ok(())
            },
            (Storage::Driver(_), Device::Emulated(_)) => unreachable!("a driver buffer on the emulated device"),
        }
    }

    /// Compiles (or takes from the cache) and loads a module; returns it with the ptxas report
    /// of its kernels (none on the emulator).
    pub fn load(&self, config: &ModuleConfig, arch: &str, use_cache: bool) -> anyhow::Result<(Module, Vec<KernelReport>)> {
        let label = &config.label;
        match self {
            Device::Driver(d) => {
                let compiled = nvrtc::compile(label, &config.source(), &config.defines, arch, use_cache)?;
                let module = d
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin.clone()))
                    .map_err(|e| anyhow!("loading the {label} module ({} bytes of cubin for {arch}) failed: {e:?}", compiled.cubin.len()))?;
                let mut functions = HashMap::new();
                for &name in config.kernels {
                    let f = module.load_function(name).map_err(|e| anyhow!("kernel {name} missing from module {label}: {e:?}"))?;
                    functions.insert(name, f);
                }
                Ok((Module::Driver { _module: module, functions }, compiled.kernels))
            }
            Device::Emulated(_) => Ok((Module::Emulated(Arc::new(EmulatedModule::load(config, use_cache)?)), Vec::new())),
        }
    }

    /// A kernel of a loaded module.
    pub fn kernel(module: &Module, config: &ModuleConfig, name: &str) -> anyhow::Result<Kernel> {
        let known = config.kernels.iter().find(|&&k| k == name).ok_or_else(|| anyhow!("kernel {name} is not in module {}", config.label))?;
        match module {
            Module::Driver { functions, .. } => Ok(Kernel::Driver(functions[known].clone())),
            Module::Emulated(m) => Ok(Kernel::Emulated(m.clone(), known)),
        }
    }

    /// Lets `kernel` launch with more than the default 48 KiB of dynamic shared memory.
    pub fn allow_shared(&self, kernel: &Kernel, bytes: u32) -> anyhow::Result<()> {
        match kernel {
            Kernel::Driver(f) => drv(
                f.set_attribute(sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32),
                "allowing the MLP weights in shared memory",
            ),
            Kernel::Emulated(..) => Ok(()),
        }
    }

    /// How many blocks of `kernel` (launched with `block` threads and `shared` bytes of dynamic
    /// shared memory) the whole device runs at once: multiprocessors × resident blocks per
    /// multiprocessor. The emulator answers 2 (a pretend device of 2 × 1), small so that the
    /// tests exercise the persistent kernels' grid-stride loops (kernels/propagate.cu).
    pub fn resident_blocks(&self, kernel: &Kernel, block: u32, shared: u32) -> anyhow::Result<u32> {
        match (self, kernel) {
            (Device::Driver(d), Kernel::Driver(f)) => {
                let sms = drv(d.ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), "reading the multiprocessor count")?;
                let per_sm = drv(f.occupancy_max_active_blocks_per_multiprocessor(block, shared as usize, None), "computing the occupancy")?;
                Ok((sms.max(1) as u32) * per_sm.max(1))
            }
            _ => Ok(2),
        }
    }

    /// Enqueues one launch (recorded instead while the emulator captures a graph).
    pub fn launch(&self, kernel: &Kernel, config: LaunchConfig, args: &[KernelArg], what: &str) -> anyhow::Result<()> {
        match (self, kernel) {
            (Device::Driver(d), Kernel::Driver(f)) => {
                let mut b = d.stream.launch_builder(f);
                for a in args {
                    match a {
                        KernelArg::U64(v) => b.arg(v),
                        KernelArg::U32(v) => b.arg(v),
                        KernelArg::I32(v) => b.arg(v),
                        KernelArg::F32(v) => b.arg(v),
                    };
                }
                // SAFETY: callers pass the kernel's parameters in order, as kernels/*.cu
                // declare them, and pointers to buffers of the sizes the kernel indexes.
                drv(unsafe { b.launch(config) }, &format!("launching {what}")).map(|_| ())
            }
            (Device::Emulated(e), Kernel::Emulated(m, name)) => {
                if let Some(recorded) = e.capture.borrow_mut().as_mut() {
                    recorded.push(RecordedLaunch { kernel: kernel.clone(), config, args: args.to_vec() });
                    return Ok(());
                }
                m.launch(name, config.grid_dim, config.block_dim, config.shared_mem_bytes, args).map_err(|e| e.context(format!("launching {what}")))
            }
            _ => bail!("launching {what}: a kernel of one device handed to the other"),
        }
    }

    /// Waits for every queued launch (a kernel's failure surfaces here on the driver).
    pub fn sync(&self, what: &str) -> anyhow::Result<()> {
        match self {
            Device::Driver(d) => drv(d.stream.synchronize(), what),
            Device::Emulated(_) => Ok(()),
        }
    }

    /// Starts recording the launches that follow into a graph.
    pub fn begin_capture(&self) -> anyhow::Result<()> {
        match self {
            Device::Driver(d) => drv(d.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "beginning a graph capture"),
            Device::Emulated(e) => {
                let mut c = e.capture.borrow_mut();
                ensure!(c.is_none(), "a graph capture is already under way");
                *c = Some(Vec::new());
                Ok(())
            }
        }
    }

    /// Ends the capture begun by [`Device::begin_capture`].
    pub fn end_capture(&self) -> anyhow::Result<Graph> {
        match self {
            Device::Driver(d) => {
                let graph = drv(d.stream.end_capture(sys::CUgraphInstantiate_flags(0)), "instantiating the interval graph")?;
                Ok(Graph::Driver(graph.ok_or_else(|| anyhow!("the graph capture of an interval was empty"))?))
            }
            Device::Emulated(e) => {
                let recorded = e.capture.borrow_mut().take().ok_or_else(|| anyhow!("no graph capture is under way"))?;
                ensure!(!recorded.is_empty(), "the graph capture of an interval was empty");
                Ok(Graph::Emulated(recorded))
            }
        }
    }

    /// Replays a captured graph.
    pub fn replay(&self, graph: &Graph) -> anyhow::Result<()> {
        match graph {
            Graph::Driver(g) => drv(g.launch(), "replaying the interval graph"),
            Graph::Emulated(launches) => {
                for l in launches {
                    self.launch(&l.kernel, l.config, &l.args, "a kernel of the replayed interval graph")?;
                }
                Ok(())
            }
        }
    }
}
