//! The CUDA backend proper: a device ([`super::gpu::Device`]: the GPU through [`super::driver`],
//! or the host emulator [`super::emulator`], chosen when the backend is opened),
//! the run's modules (compiled by [`super::nvrtc`] and cached on disk), particle buffers
//! allocated once per run, and the launches behind every [`Backend`] primitive. One resampling
//! interval is captured as a CUDA graph and replayed ([`CudaBackend::use_graph`]; `--no-graph`
//! launches plainly).
//!
//! # Memory per particle (D = 2: 60 bytes)
//! | buffer | bytes | use |
//! |---|---|---|
//! | `x` | 4·D | positions, SoA `x[d·stride + i]` |
//! | `carried`, `acc` | 8 + 8 | potential state, f64 (docs/steering.md, docs/steering.md) |
//! | `lw` | 8 | log-weights, f64; doubles as the "chosen" marks and gather staging while resampling |
//! | `root` | 4 | ancestry ids |
//! | `anc` | 4 | ancestors; scores for the search methods |
//! | `alt` | 4·(D+3) | scratch rows: reward input (x̂1), f64 weights/CDF (first 8 bytes), residual's u64 count prefix (next 8), gather staging |
//!
//! Total `8·D + 44` bytes, plus per group 64 bytes of results and per tile of 1,024 particles
//! 96 bytes of partial sums: 60.1 bytes per particle for the default model, so 10^9 particles
//! need about 60 GB and fit an 80 GB H100.
//!
//! Why one file of ~950 lines: every `Backend` primitive here is a short sequence of launches over
//! the same particle buffers and graph state; split by primitive, each part would reach into the
//! others' buffers. The launch checks, memory fit and device abstraction live in gpu.rs, driver.rs,
//! modules.rs and occupancy.rs.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{anyhow, ensure, Context};
use super::driver::DriverDevice;
use super::emulator::EmulatedDevice;
use super::gpu::{args, linear_grid, Buffer, Device, Graph, Identity, Kernel, KernelArg, LaunchConfig};
use super::modules::{self, ModuleConfig, ModuleKind, PROPAGATE_BLOCK, RBLOCK, TILE};
use super::nvrtc::{self, KernelReport};
use super::nvtx;
use crate::backend::{
    Backend, BackendInfo, GroupResample, GroupWeights, Init, IntervalPlan, IntervalReport, Layout, RunSpec, ScoreOn, WeighAt,
};
use crate::resample::ResampleScheme;
use crate::reward::RewardOn;
use crate::sampler::{self, RenoiseForm};

// Interval parameters read by the kernels (kernels/*.cu FS_IV_*).
const IV_STEP_BEGIN: usize = 0;
const IV_STEP_END: usize = 1;
const IV_IS_FINAL: usize = 3;
const IV_RESAMPLE_STEP: usize = 4;
/// f32 bits of the reward's time `t` at the resampling step (an expression may read `t`).
const IV_REWARD_T: usize = 5;
const IV_LEN: usize = 16;

mod host_reward;

// Per-group result slots (kernels/potential.cu FS_GR_*).
const GR_LOG_Z: usize = 0;
const GR_ESS: usize = 1;
const GR_MAX_LW: usize = 2;
const GR_NONFINITE: usize = 3;
const GR_ALL_NEG_INF: usize = 4;
const GR_MEAN_REWARD: usize = 5;
const GR_RESAMPLE: usize = 6;
const GR_DISTINCT: usize = 7;
const GR_SLOTS: usize = 8;
const TP_SLOTS: usize = 8;

/// Bytes per particle for data dimension `dim` (see the table above).
pub fn bytes_per_particle(dim: usize) -> usize {
    4 * dim + 8 * 3 + 4 * 2 + 4 * (dim + 3).max(2)
}

/// Bytes a population of `total` particles in `groups` groups needs on the device.
pub fn bytes_needed(dim: usize, total: usize, groups: usize) -> usize {
    let tiles = tile_capacity(total, groups);
    total * bytes_per_particle(dim) + groups * (GR_SLOTS * 8 + 4 * 8) + tiles * (TP_SLOTS * 8 + 8 + 8 + 8) + 4096
}

/// Refuses a population of `total` particles in `groups` groups that does not fit `free` bytes of
/// device memory, with the bytes needed and the largest population (a multiple of `groups`) that
/// fits. Pure arithmetic, so that the 10^9-particle case is tested without a GPU.
pub fn check_fits(dim: usize, total: usize, groups: usize, free: usize, device: &str) -> Result<(), String> {
    let need = bytes_needed(dim, total, groups);
    if need <= free {
        return Ok(());
    }
    // The largest n per group that fits: bytes_needed grows with n.
    let (mut lo, mut hi) = (0usize, total / groups.max(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if bytes_needed(dim, mid * groups, groups) <= free {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let fits = lo * groups;
    Err(format!(
        "{total} particles need {need} bytes ({:.2} GB) of device memory but {device} has {free} bytes ({:.2} GB) free; \
         the largest population that fits is {fits} particles ({lo} per group × {groups} groups): lower -n or --groups",
        need as f64 / 1e9,
        free as f64 / 1e9
    ))
}

fn tile_capacity(total: usize, groups: usize) -> usize {
    total.div_ceil(TILE as usize) + groups + 1
}

/// A loaded module's kernels by name.
struct Loaded {
    kernels: HashMap<&'static str, Kernel>,
    config: ModuleConfig,
}

/// The functions of one run's configuration.
struct Kernels {
    propagate: String,
    potential: String,
    resample: String,
    search: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A population on the device. Buffers are sized for `capacity` particles (the row stride).
pub struct CudaParticles {
    id: u64,
    pub layout: Layout,
    pub dim: usize,
    capacity: usize,
    x: Buffer<f32>,
    carried: Buffer<f64>,
    acc: Buffer<f64>,
    lw: Buffer<f64>,
    root: Buffer<u32>,
    anc: Buffer<u32>,
    alt: Buffer<f32>,
    iv: Buffer<u32>,
    weights: Buffer<f32>,
    gr: Buffer<f64>,
    tile_part: Buffer<f64>,
    tile_sum: Buffer<f64>,
    tile_count: Buffer<u64>,
    tile_last: Buffer<i64>,
    group_a: Buffer<f64>,
    group_b: Buffer<f64>,
    group_c: Buffer<f64>,
    group_count: Buffer<u64>,
    group_last: Buffer<i64>,
    group_last_b: Buffer<i64>,
    /// `alt` holds the reward input for (grid step, emit mode).
    rin: Option<(usize, i32)>,
    /// The global index of particle 0 when this is one MPI rank's share of a larger population
    /// ([`CudaBackend::init_share`]): the SDE noise is keyed by `first + i`. None: a whole
    /// population.
    share_first: Option<u64>,
}

impl CudaParticles {
    pub fn total(&self) -> usize {
        self.layout.total()
    }

    /// Refuses the group operations on a rank's share: its groups are cut at the rank's edges,
    /// so they are weighed and resampled across ranks on the host (crate::distributed).
    fn whole(&self, what: &str) -> anyhow::Result<()> {
        ensure!(self.share_first.is_none(), "{what} needs a whole population; this one is an MPI rank's share (crate::distributed weighs and resamples shares across ranks)");
        Ok(())
    }
}

/// Graph cache key: everything baked into a captured interval.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GraphKey {
    particles: u64,
    n: usize,
    groups: usize,
    emit: i32,
    resample: bool,
    scheme: u8,
    labels: String,
}

/// The CUDA engine.
pub struct CudaBackend {
    device: Box<dyn Device>,
    pub arch: String,
    pub device_name: String,
    loaded: HashMap<String, Loaded>,
    graphs: HashMap<GraphKey, Graph>,
    /// Capture each resampling interval as a CUDA graph and replay it (false: `--no-graph`).
    pub use_graph: bool,
    /// Seconds spent compiling (or loading from the cache) modules.
    pub compile_seconds: f64,
    /// ptxas reports of every module loaded so far.
    pub reports: Vec<KernelReport>,
    /// Whether the disk cache may be used.
    pub use_cache: bool,
}

/// Blocks of `per` threads for `count` items; saturates past u32 so that [`super::gpu::check_launch`]
/// refuses the launch instead of a truncated grid running part of it.
fn blocks(count: usize, per: u32) -> u32 {
    u32::try_from(count.div_ceil(per as usize).max(1)).unwrap_or(u32::MAX)
}

impl CudaBackend {
    /// Opens device 0 with a non-default stream. Fails (never panics) without a driver or device.
    pub fn new() -> anyhow::Result<Self> {
        Self::on_device(0)
    }

    /// Opens device `ordinal` (an MPI rank's own GPU, docs/distributed.md).
    pub fn on_device(ordinal: usize) -> anyhow::Result<Self> {
        let (device, id) = DriverDevice::open(ordinal)?;
        Ok(Self::on(Box::new(device), id))
    }

    /// The same backend over the host emulator of the kernels ([`super::emulator`]), with
    /// `memory` bytes of pretend device memory: for testing without a GPU.
    pub fn emulated(memory: usize) -> anyhow::Result<Self> {
        let (device, id) = EmulatedDevice::open(memory)?;
        Ok(Self::on(Box::new(device), id))
    }

    /// Whether the kernels run on the host emulator.
    pub fn is_emulated(&self) -> bool {
        self.device.is_emulated()
    }

    fn on(device: Box<dyn Device>, id: Identity) -> Self {
        Self {
            device,
            arch: id.arch,
            device_name: id.name,
            loaded: HashMap::new(),
            graphs: HashMap::new(),
            use_graph: true,
            compile_seconds: 0.0,
            reports: Vec::new(),
            use_cache: true,
        }
    }

    /// Refuses, before anything is compiled, a model the kernels cannot run on this device: a
    /// shape past the register-resident MLP's limits, or weights past the shared memory a block
    /// may opt into (issue 11.3).
    pub fn check_model(&self, model: &crate::model::Mlp) -> anyhow::Result<()> {
        let shape = model.shape();
        modules::check_shape(&shape).map_err(anyhow::Error::msg)?;
        let variant = modules::PropagateVariant::selected(&shape).map_err(anyhow::Error::msg)?;
        modules::check_shared_fit(&shape, variant, self.device.limits().shared_per_block_optin).map_err(anyhow::Error::msg)
    }

    /// Free and total device memory in bytes.
    pub fn memory(&self) -> anyhow::Result<(usize, usize)> {
        self.device.memory()
    }

    /// Loads (compiling if needed) a module; returns its key in `loaded`. The key holds a hash of
    /// the source and defines, not just the label: two rewards of the same kinds but other
    /// parameters have the same label and different code.
    fn load(&mut self, config: ModuleConfig) -> anyhow::Result<String> {
        let label = config.label.clone();
        let source = config.source();
        let key = format!("{label}#{}", &nvrtc::cache_key(&source, &config.defines, &self.arch)[..16]);
        if self.loaded.contains_key(&key) {
            return Ok(key);
        }
        let start = Instant::now();
        let module = self.device.load(&config, &self.arch, self.use_cache)?;
        self.compile_seconds += start.elapsed().as_secs_f64();
        self.reports.extend(module.reports);
        let kernels = module.kernels.into_iter().map(|k| (k.name, k)).collect();
        self.loaded.insert(key.clone(), Loaded { kernels, config });
        Ok(key)
    }

    fn kernels(&mut self, spec: &RunSpec) -> anyhow::Result<Kernels> {
        let shape = spec.model.shape();
        modules::check_shape(&shape).map_err(anyhow::Error::msg)?;
        let variant = modules::PropagateVariant::selected(&shape).map_err(anyhow::Error::msg)?;
        modules::check_shared_fit(&shape, variant, self.device.limits().shared_per_block_optin).map_err(anyhow::Error::msg)?;
        let propagate = self.load(ModuleConfig::propagate_variant(&shape, &spec.sampler, variant))?;
        let potential = self.load(ModuleConfig::potential(shape.dim, &spec.reward, spec.potential.kind))?;
        let resample = self.load(ModuleConfig::resample())?;
        let search = self.load(ModuleConfig::search(shape.dim))?;
        // Weights (and scratch) beyond the default 48 KiB of dynamic shared memory need an opt-in.
        let smem = variant.shared_bytes(&shape);
        if smem > 48 * 1024 {
            self.device.allow_shared(&self.func(&propagate, "fs_propagate")?, smem)?;
        }
        Ok(Kernels { propagate, potential, resample, search })
    }

    fn func(&self, module: &str, name: &str) -> anyhow::Result<Kernel> {
        let m = self.loaded.get(module).ok_or_else(|| anyhow!("module {module} is not loaded"))?;
        m.kernels.get(name).cloned().ok_or_else(|| anyhow!("kernel {name} is not in module {}", m.config.label))
    }

    fn ptr<T>(&self, s: &Buffer<T>) -> u64 {
        s.ptr()
    }

    fn sync(&self, what: &str) -> anyhow::Result<()> {
        self.device.sync(what)
    }

    fn alloc<T: bytemuck::Pod>(&self, len: usize, what: &str) -> anyhow::Result<Buffer<T>> {
        self.device.alloc(len, what)
    }

    fn allocate(&self, spec: &RunSpec, layout: Layout, capacity: usize) -> anyhow::Result<CudaParticles> {
        let dim = spec.model.dim;
        let groups = layout.groups;
        let (free, _total) = self.memory()?;
        check_fits(dim, capacity, groups, free, &self.device_name).map_err(anyhow::Error::msg)?;
        let tiles = tile_capacity(capacity, groups);
        let weights: Vec<f32> = spec.model.layers.iter().flat_map(|l| l.weight.iter().chain(l.bias.iter()).copied()).collect();
        let wbuf = self.device.upload_new(&weights, "uploading the model weights")?;
        Ok(CudaParticles {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            layout,
            dim,
            capacity,
            x: self.alloc(dim * capacity, "positions")?,
            carried: self.alloc(capacity, "potential state")?,
            acc: self.alloc(capacity, "accumulated log-potentials")?,
            lw: self.alloc(capacity, "log-weights")?,
            root: self.alloc(capacity, "root ids")?,
            anc: self.alloc(capacity, "ancestors")?,
            alt: self.alloc((dim + 3).max(2) * capacity, "scratch rows")?,
            iv: self.alloc(IV_LEN, "interval parameters")?,
            weights: wbuf,
            gr: self.alloc(groups * GR_SLOTS, "group results")?,
            tile_part: self.alloc(tiles * TP_SLOTS, "tile partials")?,
            tile_sum: self.alloc(tiles, "tile sums")?,
            tile_count: self.alloc(tiles, "tile counts")?,
            tile_last: self.alloc(tiles, "tile last indices")?,
            group_a: self.alloc(groups, "group totals")?,
            group_b: self.alloc(groups, "group totals")?,
            group_c: self.alloc(groups, "group totals")?,
            group_count: self.alloc(groups, "group counts")?,
            group_last: self.alloc(groups, "group last indices")?,
            group_last_b: self.alloc(groups, "group last indices")?,
            rin: None,
            share_first: None,
        })
    }

    fn write_iv(&self, spec: &RunSpec, p: &mut CudaParticles, begin: usize, end: usize, is_final: bool, resample_step: usize) -> anyhow::Result<()> {
        let mut iv = [0u32; IV_LEN];
        iv[IV_REWARD_T] = spec.sampler.time(resample_step).to_bits();
        iv[IV_STEP_BEGIN] = begin as u32;
        iv[IV_STEP_END] = end as u32;
        iv[IV_IS_FINAL] = is_final as u32;
        iv[IV_RESAMPLE_STEP] = resample_step as u32;
        self.device.upload(&iv, &mut p.iv, "writing the interval parameters")
    }

    fn key(spec: &RunSpec) -> (u32, u32) {
        (spec.seed as u32, (spec.seed >> 32) as u32)
    }

    // ---- launches (no host synchronisation in any of them: they are captured into graphs) ----

    fn launch_propagate(&self, k: &Kernels, spec: &RunSpec, p: &CudaParticles, emit: i32) -> anyhow::Result<()> {
        let _r = nvtx::range(c"propagate");
        let f = self.func(&k.propagate, "fs_propagate")?;
        let (k0, k1) = Self::key(spec);
        let total = p.total() as u64;
        let stride = p.capacity as u64;
        let (x, iv, w, alt) = (self.ptr(&p.x), self.ptr(&p.iv), self.ptr(&p.weights), self.ptr(&p.alt));
        let steps = spec.sampler.steps as u32;
        let kk = spec.sampler.k;
        let config = &self.loaded[&k.propagate].config;
        let (variant, smem) = (config.propagate.expect("the propagate module has a variant"), config.dynamic_shared_bytes);
        let resident = self.device.resident_blocks(&f, variant.block, smem)?;
        let cfg = modules::propagate_launch(variant, p.total(), resident, smem);
        let first = p.share_first.unwrap_or(0);
        self.device.launch(&f, cfg, args![x, total, stride, iv, steps, kk, k0, k1, w, alt, emit, first], "fs_propagate")
    }

    fn tiles(n: usize) -> usize {
        n.div_ceil(TILE as usize).max(1)
    }

    /// A block per tile of every group, numbered tile + tiles·g along grid.x first (issue 11:
    /// groups on grid.y failed past 65,535).
    fn tiled(&self, n: usize, groups: usize) -> LaunchConfig {
        self.numbered(Self::tiles(n) as u64 * groups as u64)
    }

    /// A block per group, numbered the same way.
    fn per_group(&self, groups: usize) -> LaunchConfig {
        self.numbered(groups as u64)
    }

    fn numbered(&self, blocks: u64) -> LaunchConfig {
        LaunchConfig { grid_dim: linear_grid(blocks, self.device.grid_x_cap()), block_dim: (RBLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn flat(count: usize) -> LaunchConfig {
        LaunchConfig { grid_dim: (blocks(count, RBLOCK), 1, 1), block_dim: (RBLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    fn launch_weigh(&self, k: &Kernels, spec: &RunSpec, p: &CudaParticles) -> anyhow::Result<()> {
        let _r = nvtx::range(c"potential");
        let (n, groups) = (p.layout.n, p.layout.groups);
        let tiles = Self::tiles(n) as u32;
        let n64 = n as u64;
        let stride = p.capacity as u64;
        let lambda = spec.potential.lambda;
        let (alt, carried, acc, lw, iv, tp, gr) =
            (self.ptr(&p.alt), self.ptr(&p.carried), self.ptr(&p.acc), self.ptr(&p.lw), self.ptr(&p.iv), self.ptr(&p.tile_part), self.ptr(&p.gr));
        let g64 = groups as u64;
        let f = self.func(&k.potential, "fs_weigh")?;
        self.device.launch(&f, self.tiled(n, groups), args![alt, stride, carried, acc, lw, n64, iv, lambda, tp, tiles, g64], "fs_weigh")?;
        let tau = spec.adaptive_ess.unwrap_or(-1.0);
        let f = self.func(&k.potential, "fs_weigh_finalize")?;
        self.device.launch(&f, self.per_group(groups), args![tp, tiles, n64, tau, gr, g64], "fs_weigh_finalize")
    }

    /// Scans the tile sums at `sums` (and the tile counts, and the tile last indices, when asked)
    /// of every resampling group into offsets and the group's `total`, `count` and `last`.
    #[allow(clippy::too_many_arguments)]
    fn launch_scan_tiles(&self, k: &Kernels, p: &CudaParticles, sums: u64, with_count: bool, with_last: bool, total: u64, count: u64, last: u64) -> anyhow::Result<()> {
        let tiles = Self::tiles(p.layout.n) as u32;
        let gr = self.ptr(&p.gr);
        let tc = if with_count { self.ptr(&p.tile_count) } else { 0u64 };
        let tl = if with_last { self.ptr(&p.tile_last) } else { 0u64 };
        let g64 = p.layout.groups as u64;
        let f = self.func(&k.resample, "fs_scan_tiles")?;
        self.device.launch(&f, self.per_group(p.layout.groups), args![gr, sums, tc, tl, tiles, total, count, last, g64], "fs_scan_tiles")
    }

    fn launch_resample(&self, k: &Kernels, spec: &RunSpec, p: &CudaParticles) -> anyhow::Result<()> {
        let _r = nvtx::range(c"resample");
        let (n, groups, total) = (p.layout.n, p.layout.groups, p.total());
        let (n64, g64) = (n as u64, groups as u64);
        let tiles = Self::tiles(n) as u32;
        let (k0, k1) = Self::key(spec);
        let (lw, gr, w, ts, tl, tc, tp, anc, iv) = (
            self.ptr(&p.lw),
            self.ptr(&p.gr),
            self.ptr(&p.alt),
            self.ptr(&p.tile_sum),
            self.ptr(&p.tile_last),
            self.ptr(&p.tile_count),
            self.ptr(&p.tile_part),
            self.ptr(&p.anc),
            self.ptr(&p.iv),
        );
        let (ga, gb, gc, gcount, glast, glast_b) =
            (self.ptr(&p.group_a), self.ptr(&p.group_b), self.ptr(&p.group_c), self.ptr(&p.group_count), self.ptr(&p.group_last), self.ptr(&p.group_last_b));
        let tiled = self.tiled(n, groups);
        // Every call below passes fs_<name>'s parameters in order (kernels/resample.cu).
        let launch = |name: &str, cfg: LaunchConfig, args: &[KernelArg]| -> anyhow::Result<()> {
            self.device.launch(&self.func(&k.resample, name)?, cfg, args, name)
        };
        // (1)-(2): W_j, tile sums, group total C_{n−1} (group_a) and last positive (group_last).
        launch("fs_resample_weights", tiled, args![lw, n64, gr, w, ts, tl, tiles, g64])?;
        self.launch_scan_tiles(k, p, ts, false, true, ga, 0, glast)?;
        let null = 0u64;
        // Multinomial draws from the CDF in `w` into the slots after the group's `copies` (null:
        // none): exponential spacings (draws `draw` and `extra`, docs/resampling.md), their tile
        // sums scanned into `e_total`, then one search per slot.
        struct Draws {
            cdf_total: u64,
            cdf_last: u64,
            copies: u64,
            e_total: u64,
            draw: u32,
            extra: u32,
        }
        let multinomial = |d: Draws| -> anyhow::Result<()> {
            launch("fs_exp_tile_sums", tiled, args![n64, gr, d.copies, iv, k0, k1, d.draw, ts, tiles, g64])?;
            self.launch_scan_tiles(k, p, ts, false, false, d.e_total, 0, 0)?;
            let args = args![w, n64, gr, d.cdf_total, d.cdf_last, d.copies, ts, d.e_total, tiles, anc, iv, k0, k1, d.draw, d.extra, g64];
            launch("fs_ancestors_multinomial", tiled, args)
        };
        match spec.resample {
            ResampleScheme::Systematic | ResampleScheme::Stratified => {
                launch("fs_resample_cdf", tiled, args![w, n64, gr, ts, tiles, g64])?;
                let scheme: i32 = if spec.resample == ResampleScheme::Systematic { 1 } else { 2 };
                launch("fs_ancestors_grid", tiled, args![w, n64, gr, ga, glast, anc, iv, k0, k1, scheme, tiles, g64])?;
            }
            ResampleScheme::Multinomial => {
                launch("fs_resample_cdf", tiled, args![w, n64, gr, ts, tiles, g64])?;
                multinomial(Draws { cdf_total: ga, cdf_last: glast, copies: null, e_total: gb, draw: 0, extra: 1 })?;
            }
            ResampleScheme::Residual => {
                // Counts and residuals per tile: residual sums into the tile partials (free after
                // the weighing), so that tile_sum keeps the weights' scanned tile sums for the
                // fallback. Then group_b: Σ residuals, group_count: K, group_last_b.
                launch("fs_residual_counts", tiled, args![w, n64, gr, ga, tc, tp, tl, tiles, g64])?;
                self.launch_scan_tiles(k, p, tp, true, true, gb, gcount, glast_b)?;
                // The counts' prefix in the 8 bytes per particle of `alt` after the f64 CDF.
                let prefix = w + 8 * p.capacity as u64;
                launch("fs_residual_prefix", tiled, args![w, n64, gr, ga, tc, tp, ts, glast_b, prefix, tiles, g64])?;
                launch("fs_residual_slots", tiled, args![prefix, n64, gr, gcount, anc, tiles, g64])?;
                launch("fs_residual_fallback", Self::flat(groups), args![gr, ga, glast, gb, glast_b, g64])?;
                multinomial(Draws { cdf_total: gb, cdf_last: glast_b, copies: gcount, e_total: gc, draw: 2, extra: 3 })?;
            }
        }
        // Distinct parents: marks in lw (reset to 0 on the way).
        let total64 = total as u64;
        launch("fs_marks_clear", Self::flat(total), args![lw, n64, total64, gr])?;
        launch("fs_marks_set", Self::flat(total), args![lw, anc, n64, total64, gr])?;
        launch("fs_marks_count", tiled, args![lw, n64, gr, tiles, g64])?;
        drop(_r);
        let _g = nvtx::range(c"gather");
        let (x, carried, acc, root, alt) = (self.ptr(&p.x), self.ptr(&p.carried), self.ptr(&p.acc), self.ptr(&p.root), self.ptr(&p.alt));
        let dim = p.dim as u32;
        let stride = p.capacity as u64;
        launch("fs_gather", Self::flat(total), args![x, carried, acc, root, anc, alt, lw, dim, n64, total64, stride, gr])?;
        launch("fs_gather_commit", Self::flat(total), args![x, carried, acc, root, alt, lw, dim, n64, total64, stride, gr])?;
        Ok(())
    }

    fn read_groups(&self, p: &CudaParticles) -> anyhow::Result<Vec<f64>> {
        let mut out = vec![0f64; p.layout.groups * GR_SLOTS];
        // The first read after an interval's launches: a failed kernel surfaces here.
        self.device.download(&p.gr, &mut out, "reading the group results (a kernel failed if this errors)")?;
        Ok(out)
    }

    fn group_weights(gr: &[f64]) -> Vec<GroupWeights> {
        gr.chunks(GR_SLOTS)
            .map(|g| GroupWeights {
                log_z_increment: g[GR_LOG_Z],
                ess: g[GR_ESS],
                max_log_weight: g[GR_MAX_LW],
                nonfinite: g[GR_NONFINITE] as u64,
                all_neg_inf: g[GR_ALL_NEG_INF] != 0.0,
                mean_reward: g[GR_MEAN_REWARD],
            })
            .collect()
    }

    /// A skipped group keeps all of its n particles as their own parents (as the CPU reports).
    fn group_resample(gr: &[f64], n: usize) -> Vec<GroupResample> {
        gr.chunks(GR_SLOTS)
            .map(|g| {
                let resampled = g[GR_RESAMPLE] != 0.0;
                GroupResample { resampled, distinct_parents: if resampled { g[GR_DISTINCT] as u64 } else { n as u64 } }
            })
            .collect()
    }

    fn read_ancestors(&self, p: &CudaParticles) -> anyhow::Result<Vec<u32>> {
        let mut out = vec![0u32; p.total()];
        self.device.download(&p.anc, &mut out, "reading the ancestors")?;
        Ok(out)
    }

    /// The emit mode that gives the reward input at a weighing (propagate.cu `emit`).
    fn emit_for(spec: &RunSpec, is_final: bool) -> i32 {
        if is_final || spec.reward_on == RewardOn::Xt {
            2
        } else {
            1
        }
    }

    /// Makes `alt` hold the reward input at grid step `step` (no integration).
    fn ensure_rin(&self, k: &Kernels, spec: &RunSpec, p: &mut CudaParticles, step: usize, emit: i32) -> anyhow::Result<()> {
        if p.rin == Some((step, emit)) {
            return Ok(());
        }
        self.write_iv(spec, p, step, step, false, step)?;
        self.launch_propagate(k, spec, p, emit)?;
        p.rin = Some((step, emit));
        Ok(())
    }

    /// Enqueues one whole interval (no host synchronisation): propagate with the reward input
    /// emitted, weigh, and resample when asked.
    fn enqueue_interval(&self, k: &Kernels, spec: &RunSpec, p: &CudaParticles, emit: i32, resample: bool) -> anyhow::Result<()> {
        self.launch_propagate(k, spec, p, emit)?;
        self.launch_weigh(k, spec, p)?;
        if resample {
            self.launch_resample(k, spec, p)?;
        }
        Ok(())
    }

    fn upload_rows(&self, p: &mut CudaParticles, rows: &[f32]) -> anyhow::Result<()> {
        let (total, dim, cap) = (p.total(), p.dim, p.capacity);
        let mut soa = vec![0f32; dim * cap];
        crate::backend::rows_to_soa(&rows[..total * dim], dim, cap, &mut soa);
        self.device.upload(&soa, &mut p.x, "uploading the initial points")
    }

    /// One MPI rank's share of a population (docs/distributed.md): `rows` (`[len, D]`) whose
    /// particle 0 has global index `first`, so that the SDE noise is the whole population's.
    /// Only integrating and scoring run on a share; the ranks weigh and resample on the host.
    pub fn init_share(&mut self, spec: &RunSpec, rows: &[f32], first: u64) -> anyhow::Result<CudaParticles> {
        let len = rows.len() / spec.model.dim.max(1);
        let mut p = self.init(spec, Layout { n: len, groups: 1 }, Init::Given(rows))?;
        p.share_first = Some(first);
        Ok(p)
    }

    /// The global index of particle 0 of a share ([`Self::init_share`]); None for a whole population.
    pub fn share_first(p: &CudaParticles) -> Option<u64> {
        p.share_first
    }

    /// Overwrites the positions of the share `p` with `x`, coordinate-major with stride
    /// `p.total()` as the host holds a rank's share (`x[d·total + i]`; a share's buffers are
    /// exactly that size, so no transposition), e.g. after the host resampled.
    pub fn write_share(&mut self, p: &mut CudaParticles, x: &[f32]) -> anyhow::Result<()> {
        Self::check_share_layout(p, x.len())?;
        p.rin = None;
        self.device.upload(x, &mut p.x, "uploading the share's positions")
    }

    /// The positions of the share `p` into `x`, laid out as [`Self::write_share`] takes them.
    pub fn read_share(&mut self, p: &CudaParticles, x: &mut [f32]) -> anyhow::Result<()> {
        Self::check_share_layout(p, x.len())?;
        self.device.download(&p.x, x, "reading the share's positions")
    }

    fn check_share_layout(p: &CudaParticles, values: usize) -> anyhow::Result<()> {
        ensure!(p.share_first.is_some() && p.capacity == p.total(), "not an MPI rank's share (CudaBackend::init_share)");
        ensure!(values == p.total() * p.dim, "positions hold {values} values, expected {} × {}", p.total(), p.dim);
        Ok(())
    }

    /// One thread per item; callers pass the kernel's parameters in order.
    fn launch_flat(&self, module: &str, name: &str, count: usize, args: &[KernelArg]) -> anyhow::Result<()> {
        self.device.launch(&self.func(module, name)?, Self::flat(count), args, name)
    }

    /// Scores into `anc` (as f32 bits) for every particle.
    fn launch_score(&self, k: &Kernels, spec: &RunSpec, p: &mut CudaParticles, on: ScoreOn) -> anyhow::Result<()> {
        let (step, emit) = match on {
            ScoreOn::Sample => (spec.sampler.steps, 2),
            ScoreOn::Intermediate { step } => (step, Self::emit_for(spec, false)),
        };
        // A sample score reads x itself; force a fresh copy (x may have moved since).
        p.rin = None;
        self.ensure_rin(k, spec, p, step, emit)?;
        // The reward's time t is read from the interval parameters.
        self.write_iv(spec, p, step, step, false, step)?;
        self.rewards_from_host(spec, p, step)?;
        let (alt, anc, iv) = (self.ptr(&p.alt), self.ptr(&p.anc), self.ptr(&p.iv));
        let stride = p.capacity as u64;
        let total = p.total() as u64;
        self.launch_flat(&k.potential, "fs_score", p.total(), args![alt, stride, total, anc, iv])
    }
}

impl Backend for CudaBackend {
    type Particles = CudaParticles;

    fn info(&self) -> BackendInfo {
        let backend = if self.is_emulated() { "cuda-emulated" } else { "cuda" };
        BackendInfo { backend: backend.into(), device: format!("{} ({})", self.device_name, self.arch) }
    }

    fn init(&mut self, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<CudaParticles> {
        let total = layout.total();
        ensure!(total > 0, "a population needs at least one particle (got n = {}, groups = {})", layout.n, layout.groups);
        ensure!(layout.n <= u32::MAX as usize, "n = {} particles per group exceeds the 2^32 ancestor indices; use --groups", layout.n);
        let k = self.kernels(spec)?;
        let mut p = self.allocate(spec, layout, total)?;
        let (k0, k1) = Self::key(spec);
        let stride = p.capacity as u64;
        let total64 = total as u64;
        let n64 = layout.n as u64;
        let x = self.ptr(&p.x);
        match init {
            Init::Noise => {
                // fs_init_noise is bounded to the propagate block size (__launch_bounds__).
                let f = self.func(&k.propagate, "fs_init_noise")?;
                let cfg = LaunchConfig { grid_dim: (blocks(total, PROPAGATE_BLOCK), 1, 1), block_dim: (PROPAGATE_BLOCK, 1, 1), shared_mem_bytes: 0 };
                self.device.launch(&f, cfg, args![x, total64, stride, k0, k1], "fs_init_noise")?;
            }
            Init::Given(rows) => {
                ensure!(rows.len() == total * p.dim, "initial points hold {} values, expected {total} × {}", rows.len(), p.dim);
                self.upload_rows(&mut p, rows)?;
            }
            Init::AroundPivot { pivot, radius, cycle } => {
                let dim = p.dim;
                let pivots: Vec<f32> = if pivot.len() == dim {
                    pivot.iter().copied().cycle().take(dim * layout.groups).collect()
                } else {
                    ensure!(pivot.len() == dim * layout.groups, "the pivot holds {} values; expected {dim} or {} (one per group)", pivot.len(), dim * layout.groups);
                    pivot.to_vec()
                };
                let pbuf = self.device.upload_new(&pivots, "uploading the pivot")?;
                let pp = self.ptr(&pbuf);
                self.launch_flat(&k.search, "fs_candidates", total, args![x, pp, n64, total64, stride, radius, cycle, k0, k1])?;
                self.sync("computing the candidates")?;
            }
        }
        let init_state = spec.potential.initial_state();
        let (carried, acc, lw, root) = (self.ptr(&p.carried), self.ptr(&p.acc), self.ptr(&p.lw), self.ptr(&p.root));
        let (c_bits, a_bits) = (init_state.carried.to_bits(), init_state.accumulated_log_g.to_bits());
        self.launch_flat(&k.resample, "fs_fill_u64", total, args![carried, c_bits, total64])?;
        self.launch_flat(&k.resample, "fs_fill_u64", total, args![acc, a_bits, total64])?;
        let zero = 0u64;
        self.launch_flat(&k.resample, "fs_fill_u64", total, args![lw, zero, total64])?;
        self.launch_flat(&k.resample, "fs_root_init", total, args![root, n64, total64])?;
        self.sync("initialising the particles")?;
        Ok(p)
    }

    fn propagate(&mut self, spec: &RunSpec, p: &mut CudaParticles, steps: Range<usize>) -> anyhow::Result<()> {
        let k = self.kernels(spec)?;
        self.write_iv(spec, p, steps.start, steps.end, false, steps.end)?;
        self.launch_propagate(&k, spec, p, 0)?;
        p.rin = None;
        // The methods time each primitive on the host: finish the work inside the call.
        self.sync("integrating (fs_propagate)")
    }

    fn weigh(&mut self, spec: &RunSpec, p: &mut CudaParticles, at: WeighAt) -> anyhow::Result<Vec<GroupWeights>> {
        p.whole("weighing")?;
        let k = self.kernels(spec)?;
        let emit = Self::emit_for(spec, at.is_final);
        self.ensure_rin(&k, spec, p, at.step, emit)?;
        self.rewards_from_host(spec, p, at.step)?;
        self.write_iv(spec, p, at.step, at.step, at.is_final, at.step)?;
        self.launch_weigh(&k, spec, p)?;
        let gr = self.read_groups(p)?;
        Ok(Self::group_weights(&gr))
    }

    fn resample(&mut self, spec: &RunSpec, p: &mut CudaParticles, step: usize, keep_ancestors: bool) -> anyhow::Result<(Vec<GroupResample>, Option<Vec<u32>>)> {
        p.whole("resampling")?;
        let k = self.kernels(spec)?;
        self.write_iv(spec, p, step, step, false, step)?;
        self.launch_resample(&k, spec, p)?;
        p.rin = None;
        let gr = self.read_groups(p)?;
        let anc = if keep_ancestors { Some(self.read_ancestors(p)?) } else { None };
        Ok((Self::group_resample(&gr, p.layout.n), anc))
    }

    fn interval(&mut self, spec: &RunSpec, p: &mut CudaParticles, plan: &IntervalPlan) -> anyhow::Result<IntervalReport> {
        p.whole("a resampling interval")?;
        let k = self.kernels(spec)?;
        let emit = Self::emit_for(spec, plan.weigh.is_final);
        let step_end = plan.weigh.step;
        if plan.steps.end != step_end || spec.reward.command().is_some() {
            // Not the fused shape (propagate up to the weighing point), or a reward program that
            // the host calls between propagating and weighing: the plain primitives.
            self.propagate(spec, p, plan.steps.clone())?;
            let weights = self.weigh(spec, p, plan.weigh)?;
            let (resample, ancestors) =
                if plan.resample { self.resample(spec, p, plan.weigh.step, plan.keep_ancestors)? } else { (Vec::new(), None) };
            return Ok(IntervalReport { weights, resample, ancestors });
        }
        self.write_iv(spec, p, plan.steps.start, plan.steps.end, plan.weigh.is_final, step_end)?;
        if self.use_graph {
            let key = GraphKey {
                particles: p.id,
                n: p.layout.n,
                groups: p.layout.groups,
                emit,
                resample: plan.resample,
                scheme: spec.resample as u8,
                // Every scalar kernel argument baked into the graph.
                labels: format!(
                    "{}|{}|{}|seed {}|steps {}|k {:08x}|lambda {:08x}|tau {:?}",
                    k.propagate,
                    k.potential,
                    k.resample,
                    spec.seed,
                    spec.sampler.steps,
                    spec.sampler.k.to_bits(),
                    spec.potential.lambda.to_bits(),
                    spec.adaptive_ess.map(f32::to_bits)
                ),
            };
            if !self.graphs.contains_key(&key) {
                // Graphs of populations that no longer exist are never replayed again.
                self.graphs.retain(|k, _| k.particles == p.id);
                self.device.begin_capture()?;
                let enqueued = self.enqueue_interval(&k, spec, p, emit, plan.resample);
                let graph = self.device.end_capture();
                enqueued.context("capturing one interval as a CUDA graph (retry with --no-graph to see the plain launch)")?;
                self.graphs.insert(key.clone(), graph?);
            }
            self.device.replay(&self.graphs[&key])?;
        } else {
            self.enqueue_interval(&k, spec, p, emit, plan.resample)?;
        }
        p.rin = if plan.resample { None } else { Some((step_end, emit)) };
        let gr = self.read_groups(p)?;
        let weights = Self::group_weights(&gr);
        let (resample, ancestors) = if plan.resample {
            let anc = if plan.keep_ancestors { Some(self.read_ancestors(p)?) } else { None };
            (Self::group_resample(&gr, p.layout.n), anc)
        } else {
            (Vec::new(), None)
        };
        Ok(IntervalReport { weights, resample, ancestors })
    }

    fn read_positions(&mut self, p: &CudaParticles) -> anyhow::Result<Vec<f32>> {
        let (total, dim, cap) = (p.total(), p.dim, p.capacity);
        let mut soa = vec![0f32; dim * cap];
        self.device.download(&p.x, &mut soa, "reading the positions")?;
        Ok(crate::backend::soa_to_rows(&soa, dim, cap, total))
    }

    fn read_log_weights(&mut self, p: &CudaParticles) -> anyhow::Result<Vec<f64>> {
        let mut out = vec![0f64; p.total()];
        self.device.download(&p.lw, &mut out, "reading the log-weights")?;
        Ok(out)
    }

    fn read_root_ids(&mut self, p: &CudaParticles) -> anyhow::Result<Vec<u32>> {
        let mut out = vec![0u32; p.total()];
        self.device.download(&p.root, &mut out, "reading the root ids")?;
        Ok(out)
    }

    fn score(&mut self, spec: &RunSpec, p: &mut CudaParticles, on: ScoreOn) -> anyhow::Result<Vec<f32>> {
        let k = self.kernels(spec)?;
        let _r = nvtx::range(c"search");
        self.launch_score(&k, spec, p, on)?;
        let mut bits = vec![0u32; p.total()];
        self.device.download(&p.anc, &mut bits, "computing and reading the scores")?;
        Ok(bits.into_iter().map(f32::from_bits).collect())
    }

    fn select_top(&mut self, spec: &RunSpec, p: &mut CudaParticles, on: ScoreOn, keep: usize) -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
        p.whole("selecting the best per group")?;
        let (n, groups) = (p.layout.n, p.layout.groups);
        ensure!(keep >= 1 && keep <= n, "cannot keep {keep} of {n} particles per group; keep must be in 1..={n}");
        let k = self.kernels(spec)?;
        let _r = nvtx::range(c"search");
        self.launch_score(&k, spec, p, on)?;
        let (scores, sel): (Vec<f32>, Vec<u32>) = if keep == 1 {
            // Arg-max on the device: tiles, then one block per group.
            let tiles = Self::tiles(n) as u32;
            let (anc, ts, tc) = (self.ptr(&p.anc), self.ptr(&p.tile_sum), self.ptr(&p.tile_count));
            let n64 = n as u64;
            let g64 = groups as u64;
            let f = self.func(&k.search, "fs_argmax_tiles")?;
            self.device.launch(&f, self.tiled(n, groups), args![anc, n64, ts, tc, tiles, g64], "fs_argmax_tiles")?;
            let best = self.ptr(&p.group_a);
            let f = self.func(&k.search, "fs_argmax_groups")?;
            self.device.launch(&f, self.per_group(groups), args![ts, tc, tiles, anc, best, g64], "fs_argmax_groups")?;
            let mut sel = vec![0u32; groups];
            self.device.download(&p.anc, &mut sel, "selecting the best particle of each group")?;
            let mut best_bits = vec![0f64; groups.div_ceil(2)];
            self.device.download(&p.group_a, &mut best_bits, "reading the best scores")?;
            let best: Vec<f32> = bytemuck::cast_slice::<f64, f32>(&best_bits)[..groups].to_vec();
            (best, sel)
        } else {
            // Top-k sorts on the host (the scores come back for the report anyway).
            let mut bits = vec![0u32; p.total()];
            self.device.download(&p.anc, &mut bits, "computing and reading the scores")?;
            let s: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
            let mut scores = Vec::with_capacity(groups * keep);
            let mut sel = Vec::with_capacity(groups * keep);
            for g in 0..groups {
                let mut idx: Vec<u32> = (0..n as u32).collect();
                let gs = &s[g * n..(g + 1) * n];
                idx.sort_by(|&a, &b| {
                    let (x, y) = (gs[a as usize], gs[b as usize]);
                    match (x.is_nan(), y.is_nan()) {
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        (true, true) => a.cmp(&b),
                        _ => y.partial_cmp(&x).unwrap().then(a.cmp(&b)),
                    }
                });
                idx.truncate(keep);
                scores.extend(idx.iter().map(|&i| gs[i as usize]));
                sel.extend(idx);
            }
            self.device.upload(&sel, &mut p.anc, "uploading the selection")?;
            (scores, sel)
        };
        // Gather the kept particles into their new places.
        let total_new = (groups * keep) as u64;
        let (x, carried, acc, lw, root, anc, alt) =
            (self.ptr(&p.x), self.ptr(&p.carried), self.ptr(&p.acc), self.ptr(&p.lw), self.ptr(&p.root), self.ptr(&p.anc), self.ptr(&p.alt));
        let (n_old, keep64, stride) = (n as u64, keep as u64, p.capacity as u64);
        let count = groups * keep;
        self.launch_flat(&k.search, "fs_select_gather", count, args![x, carried, root, anc, alt, n_old, keep64, total_new, stride])?;
        self.launch_flat(&k.search, "fs_select_commit", count, args![x, carried, root, alt, total_new, stride])?;
        self.launch_flat(&k.search, "fs_select_gather_lw", count, args![lw, acc, anc, alt, n_old, keep64, total_new, stride])?;
        self.launch_flat(&k.search, "fs_select_commit_lw", count, args![lw, acc, alt, total_new, stride])?;
        self.sync("gathering the selected particles")?;
        p.layout = Layout { n: keep, groups };
        p.rin = None;
        Ok((scores, sel))
    }

    fn replicate(&mut self, p: &mut CudaParticles, copies: usize) -> anyhow::Result<()> {
        p.whole("replicating")?;
        ensure!(copies >= 1, "replicate needs at least one copy");
        if copies == 1 {
            return Ok(());
        }
        let search = self
            .loaded
            .iter()
            .find(|(_, l)| l.config.kind == ModuleKind::Search && l.config.label == ModuleConfig::search(p.dim).label)
            .map(|(key, _)| key.clone())
            .ok_or_else(|| anyhow!("replicate called before init loaded the kernels"))?;
        let _r = nvtx::range(c"search");
        let layout = Layout { n: p.layout.n * copies, groups: p.layout.groups };
        let total_new = layout.total();
        let dim = p.dim;
        if total_new <= p.capacity {
            // Fits the buffers (search over paths after its first round): gather in place
            // through the scratch rows, nothing allocated.
            let (x, carried, acc, lw, root, anc, alt) =
                (self.ptr(&p.x), self.ptr(&p.carried), self.ptr(&p.acc), self.ptr(&p.lw), self.ptr(&p.root), self.ptr(&p.anc), self.ptr(&p.alt));
            let (n_old, n_new, t_new, stride, cp) = (p.layout.n as u64, layout.n as u64, total_new as u64, p.capacity as u64, copies as u32);
            self.launch_flat(&search, "fs_replicate_index", total_new, args![anc, n_new, cp, t_new])?;
            self.launch_flat(&search, "fs_select_gather", total_new, args![x, carried, root, anc, alt, n_old, n_new, t_new, stride])?;
            self.launch_flat(&search, "fs_select_commit", total_new, args![x, carried, root, alt, t_new, stride])?;
            self.launch_flat(&search, "fs_select_gather_lw", total_new, args![lw, acc, anc, alt, n_old, n_new, t_new, stride])?;
            self.launch_flat(&search, "fs_select_commit_lw", total_new, args![lw, acc, alt, t_new, stride])?;
            self.sync("replicating the particles in place")?;
            p.layout = layout;
            p.rin = None;
            return Ok(());
        }
        let (free, _) = self.memory()?;
        check_fits(dim, total_new, layout.groups, free, &self.device_name)
            .map_err(|e| anyhow!("replicating to {total_new} particles: {e}; lower the number of copies"))?;
        let mk = |len: usize, what: &str| self.alloc::<f64>(len, what);
        let nx = self.alloc::<f32>(dim * total_new, "positions")?;
        let nc = mk(total_new, "potential state")?;
        let na = mk(total_new, "accumulated log-potentials")?;
        let nl = mk(total_new, "log-weights")?;
        let nr = self.alloc::<u32>(total_new, "root ids")?;
        let (x, c, a, l, r) = (self.ptr(&p.x), self.ptr(&p.carried), self.ptr(&p.acc), self.ptr(&p.lw), self.ptr(&p.root));
        let (nxp, ncp, nap, nlp, nrp) = (self.ptr(&nx), self.ptr(&nc), self.ptr(&na), self.ptr(&nl), self.ptr(&nr));
        let (total_old, so, sn, cp) = (p.total() as u64, p.capacity as u64, total_new as u64, copies as u32);
        self.launch_flat(&search, "fs_replicate", total_new, args![x, c, a, l, r, nxp, ncp, nap, nlp, nrp, total_old, so, sn, cp])?;
        self.sync("replicating the particles")?;
        let tiles = tile_capacity(total_new, layout.groups);
        p.x = nx;
        p.carried = nc;
        p.acc = na;
        p.lw = nl;
        p.root = nr;
        p.anc = self.alloc(total_new, "ancestors")?;
        p.alt = self.alloc((dim + 3).max(2) * total_new, "scratch rows")?;
        p.tile_part = self.alloc(tiles * TP_SLOTS, "tile partials")?;
        p.tile_sum = self.alloc(tiles, "tile sums")?;
        p.tile_count = self.alloc(tiles, "tile counts")?;
        p.tile_last = self.alloc(tiles, "tile last indices")?;
        p.capacity = total_new;
        p.layout = layout;
        p.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        p.rin = None;
        Ok(())
    }

    fn renoise(&mut self, spec: &RunSpec, p: &mut CudaParticles, from: usize, to: usize, form: RenoiseForm, round: u32) -> anyhow::Result<()> {
        p.whole("renoising")?;
        ensure!(to < from && from <= spec.sampler.steps, "renoising goes back in time: need to < from ≤ steps (got from {from}, to {to})");
        let k = self.kernels(spec)?;
        let _r = nvtx::range(c"search");
        let (a, b) = sampler::renoise_coefficients(form, spec.sampler.time(from), spec.sampler.time(to));
        let (k0, k1) = Self::key(spec);
        let x = self.ptr(&p.x);
        let (total, stride) = (p.total() as u64, p.capacity as u64);
        self.launch_flat(&k.search, "fs_renoise", p.total(), args![x, total, stride, a, b, round, k0, k1])?;
        p.rin = None;
        self.sync("renoising (fs_renoise)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_fits_the_60_byte_budget() {
        // 48 bytes with f32 log-weights and potential states; f64 ones add 12 (docs/steering.md).
        assert_eq!(bytes_per_particle(2), 60);
        // 10^9 particles of the default model in one group fit 80 GB with room for the rest.
        assert!(bytes_needed(2, 1_000_000_000, 1) < 62_000_000_000);
    }

    #[test]
    fn a_billion_particles_fit_an_80_gb_device_and_what_does_not_fit_is_refused_with_the_largest_n() {
        // An 80 GB H100 reports about 79 GiB free once the context is up.
        let free = 79 * (1usize << 30);
        assert!(check_fits(2, 1_000_000_000, 1, free, "H100").is_ok());
        assert!(check_fits(2, 1_000_000_000, 1000, free, "H100").is_ok());
        // 2·10^9 need ~120 GB: refused, with the bytes and the largest N.
        let e = check_fits(2, 2_000_000_000, 1, free, "H100").unwrap_err();
        assert!(e.contains(&bytes_needed(2, 2_000_000_000, 1).to_string()) && e.contains("H100"), "{e}");
        let fits: usize = e.split("fits is ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(bytes_needed(2, fits, 1) <= free && bytes_needed(2, fits + 1, 1) > free, "{fits}");
        assert!(fits > 1_400_000_000, "{fits}");
        // With groups, the largest N is a whole number of groups.
        let e = check_fits(2, 2_000_000_000, 1000, free, "H100").unwrap_err();
        assert!(e.contains("per group × 1000 groups"), "{e}");
        let fits: usize = e.split("fits is ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert_eq!(fits % 1000, 0);
        assert!(bytes_needed(2, fits, 1000) <= free && bytes_needed(2, fits + 1000, 1000) > free);
    }
}
