//! The GPU itself, through the CUDA driver (cudarc, loaded at run time): the [`Device`] the
//! CUDA backend runs on when there is a GPU. Device 0, one non-default stream, buffers from the
//! stream-ordered pool, modules compiled by NVRTC for the device's own architecture.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, PushKernelArg};

use super::gpu::{check_launch, Allocation, Device, DeviceLimits, Graph, Identity, Kernel, KernelArg, KernelResources, LaunchConfig, LoadedModule};
use super::modules::ModuleConfig;
use super::nvrtc;

/// The GPU, through the driver.
pub struct DriverDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    limits: DeviceLimits,
}

fn drv<T>(r: Result<T, cudarc::driver::DriverError>, what: &str) -> anyhow::Result<T> {
    r.map_err(|e| {
        let msg = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        anyhow!("CUDA driver error while {what}: {e:?} {msg}")
    })
}

/// A driver allocation and its address.
struct DriverAllocation {
    _slice: CudaSlice<u8>,
    ptr: u64,
}

impl Allocation for DriverAllocation {
    fn ptr(&self) -> u64 {
        self.ptr
    }
}

/// The CUDA version the driver supports (cuDriverGetVersion), e.g. (12, 4).
pub fn driver_cuda_version() -> anyhow::Result<(i32, i32)> {
    let mut v = 0;
    // SAFETY: writes one int.
    drv(unsafe { sys::cuDriverGetVersion(&mut v) }.result(), "reading the driver's CUDA version")?;
    Ok((v / 1000, (v % 1000) / 10))
}

/// What to upgrade when a cubin from NVRTC `nvrtc` cannot load on a driver for CUDA `driver`:
/// a driver loads cubins of its own CUDA version and older only.
pub fn version_advice(driver: (i32, i32), nvrtc: (i32, i32)) -> String {
    let v = |(a, b): (i32, i32)| format!("{a}.{b}");
    if nvrtc > driver {
        format!(
            "NVRTC is CUDA {} but the driver supports CUDA {} only: upgrade the NVIDIA driver to one for CUDA {} or newer, \
             or point FLOWSTEER_NVRTC_LIB at an NVRTC of CUDA {} or older",
            v(nvrtc),
            v(driver),
            v(nvrtc),
            v(driver)
        )
    } else {
        format!(
            "NVRTC (CUDA {}) is not newer than the driver (CUDA {}), so the versions are not the cause; \
             check that NVRTC supports this GPU's architecture (`flowsteer info`)",
            v(nvrtc),
            v(driver)
        )
    }
}

impl DriverDevice {
    /// Device `ordinal` with one non-default stream. Fails (never panics) without a driver or
    /// device.
    pub fn open(ordinal: usize) -> anyhow::Result<(Self, Identity)> {
        super::availability().map_err(anyhow::Error::msg)?;
        let ctx = drv(CudaContext::new(ordinal), &format!("creating a context on device {ordinal}"))?;
        // One stream and no cross-stream sharing: no per-buffer events, so launches and graph
        // captures stay free of event records.
        // SAFETY: every buffer is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let stream = drv(ctx.new_stream(), "creating a stream")?;
        let (major, minor) = drv(ctx.compute_capability(), "reading the compute capability")?;
        let name = drv(ctx.name(), "reading the device name")?;
        use sys::CUdevice_attribute as A;
        let attr = |a: A, what: &str| drv(ctx.attribute(a), what).map(|v| v.max(0) as u32);
        let limits = DeviceLimits {
            max_grid: (
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, "reading the grid limits")?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, "reading the grid limits")?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, "reading the grid limits")?,
            ),
            max_block: (
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, "reading the block limits")?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y, "reading the block limits")?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, "reading the block limits")?,
            ),
            max_threads_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "reading the block limits")?,
            registers_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, "reading the register limit")?,
            shared_per_block_optin: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "reading the shared memory limit")?,
        };
        Ok((Self { ctx, stream, limits }, Identity { name, arch: nvrtc::arch_name(major, minor) }))
    }

    fn function<'k>(&self, kernel: &'k Kernel) -> anyhow::Result<&'k CudaFunction> {
        kernel.handle::<CudaFunction>().ok_or_else(|| anyhow!("kernel {}: a kernel of the emulator handed to the GPU", kernel.name))
    }

    /// Gives the memory of freed buffers back from the stream-ordered pool to the device.
    fn trim_pool(&self) -> anyhow::Result<()> {
        if !self.ctx.has_async_alloc() {
            return Ok(());
        }
        drv(self.ctx.bind_to_thread(), "binding the context")?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: the device handle is the context's; the pool is the device's default pool, the
        // one cuMemAllocAsync (cudarc's allocations) draws from.
        unsafe {
            drv(sys::cuDeviceGetDefaultMemPool(&mut pool, self.ctx.cu_device()).result(), "finding the memory pool")?;
            drv(cudarc::driver::result::mem_pool::trim_to(pool, 0), "trimming the memory pool")
        }
    }
}

impl Device for DriverDevice {
    fn is_emulated(&self) -> bool {
        false
    }

    fn limits(&self) -> DeviceLimits {
        self.limits
    }

    fn memory(&self) -> anyhow::Result<(usize, usize)> {
        // Dropped buffers are freed in stream order: wait for them, then release the pool's hold,
        // or cuMemGetInfo counts them as used (issue 11: ~45 GB of 141 on a second repeat).
        drv(self.stream.synchronize(), "waiting for the device before checking free memory")?;
        self.trim_pool()?;
        drv(self.ctx.mem_get_info(), "querying free memory")
    }

    fn alloc_bytes(&self, bytes: usize, what: &str) -> anyhow::Result<Box<dyn Allocation>> {
        let slice = drv(self.stream.alloc_zeros::<u8>(bytes.max(1)), &format!("allocating {what}"))?;
        let ptr = slice.device_ptr(&self.stream).0;
        Ok(Box::new(DriverAllocation { _slice: slice, ptr }))
    }

    fn copy_to_device(&self, src: &[u8], dst: u64, what: &str) -> anyhow::Result<()> {
        // SAFETY: `dst` is a live allocation of at least `src.len()` bytes (Buffer::upload checks
        // the length); a copy from pageable memory has read `src` when the call returns.
        drv(unsafe { cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }, what)
    }

    fn copy_to_host(&self, src: u64, dst: &mut [u8], what: &str) -> anyhow::Result<()> {
        // SAFETY: `src` is a live allocation of at least `dst.len()` bytes; the stream is waited
        // for before `dst` is read.
        drv(unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }, what)?;
        drv(self.stream.synchronize(), what)
    }

    fn load(&self, config: &ModuleConfig, arch: &str, use_cache: bool) -> anyhow::Result<LoadedModule> {
        let label = &config.label;
        let compiled = nvrtc::compile(label, &config.source(), &config.defines, arch, use_cache)?;
        let module = self.ctx.load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin.clone())).map_err(|e| {
            let advice = match (driver_cuda_version(), nvrtc::nvrtc_version()) {
                (Ok(d), Ok(n)) => version_advice(d, n),
                _ => "the driver's or NVRTC's version could not be read".into(),
            };
            anyhow!("loading the {label} module ({} bytes of cubin for {arch}) failed: {e:?}; {advice}", compiled.cubin.len())
        })?;
        let mut kernels = Vec::new();
        for &name in config.kernels {
            let f = module.load_function(name).map_err(|e| anyhow!("kernel {name} missing from module {label}: {e:?}"))?;
            use sys::CUfunction_attribute_enum as F;
            let registers = drv(f.get_attribute(F::CU_FUNC_ATTRIBUTE_NUM_REGS), "reading a kernel's registers")?;
            let shared = drv(f.get_attribute(F::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES), "reading a kernel's shared memory")?;
            let resources = KernelResources::new(Some(registers.max(0) as u32), shared.max(0) as u32);
            kernels.push(Kernel::new(name, resources, Arc::new(f)));
        }
        Ok(LoadedModule { kernels, reports: compiled.kernels })
    }

    fn allow_shared(&self, kernel: &Kernel, bytes: u32) -> anyhow::Result<()> {
        let f = self.function(kernel)?;
        drv(
            f.set_attribute(sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32),
            "allowing the MLP weights in shared memory",
        )?;
        kernel.resources.dynamic_shared_allowed.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn resident_blocks(&self, kernel: &Kernel, block: u32, shared: u32) -> anyhow::Result<u32> {
        let f = self.function(kernel)?;
        let sms = drv(self.ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), "reading the multiprocessor count")?;
        let per_sm = drv(f.occupancy_max_active_blocks_per_multiprocessor(block, shared as usize, None), "computing the occupancy")?;
        Ok((sms.max(1) as u32) * per_sm.max(1))
    }

    fn grid_x_cap(&self) -> u32 {
        self.limits.max_grid.0
    }

    fn launch(&self, kernel: &Kernel, config: LaunchConfig, args: &[KernelArg], what: &str) -> anyhow::Result<()> {
        check_launch(&self.limits, what, &kernel.resources, &config).map_err(anyhow::Error::msg)?;
        let f = self.function(kernel)?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                KernelArg::U64(v) => b.arg(v),
                KernelArg::U32(v) => b.arg(v),
                KernelArg::I32(v) => b.arg(v),
                KernelArg::F32(v) => b.arg(v),
            };
        }
        let cfg = cudarc::driver::LaunchConfig { grid_dim: config.grid_dim, block_dim: config.block_dim, shared_mem_bytes: config.shared_mem_bytes };
        // SAFETY: callers pass the kernel's parameters in order, as kernels/*.cu declare them, and
        // pointers to buffers of the sizes the kernel indexes.
        drv(unsafe { b.launch(cfg) }, &format!("launching {what}")).map(|_| ())
    }

    fn sync(&self, what: &str) -> anyhow::Result<()> {
        drv(self.stream.synchronize(), what)
    }

    fn begin_capture(&self) -> anyhow::Result<()> {
        drv(self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "beginning a graph capture")
    }

    fn end_capture(&self) -> anyhow::Result<Graph> {
        let graph = drv(self.stream.end_capture(sys::CUgraphInstantiate_flags(0)), "instantiating the interval graph")?;
        Ok(Graph(Box::new(graph.ok_or_else(|| anyhow!("the graph capture of an interval was empty"))?)))
    }

    fn replay(&self, graph: &Graph) -> anyhow::Result<()> {
        let Some(g) = graph.0.downcast_ref::<CudaGraph>() else { bail!("replaying a graph the emulator captured on the GPU") };
        drv(g.launch(), "replaying the interval graph")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_names_what_to_upgrade() {
        let a = version_advice((12, 4), (13, 0));
        assert!(a.contains("upgrade the NVIDIA driver to one for CUDA 13.0"), "{a}");
        assert!(a.contains("NVRTC of CUDA 12.4 or older"), "{a}");
        let a = version_advice((13, 0), (12, 8));
        assert!(a.contains("not the cause"), "{a}");
        // A minor version counts: CUDA 12.8's cubins do not load on a 12.4 driver.
        assert!(version_advice((12, 4), (12, 8)).contains("upgrade"));
    }
}
