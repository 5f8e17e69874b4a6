//! `flowsteer info`: the backend `auto` would pick, the CPU, the model's shape, the GPU if any,
//! and with `--kernels` every kernel's registers, shared memory and spills (ptxas's report) for
//! every configuration; `--arch sm_90` compiles with NVRTC alone, no GPU needed.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::backend::cpu::cpu_description;
use crate::backend::cuda::{self, modules, nvrtc, nvtx};
use crate::model::Mlp;
use crate::sampler::{Sampler, SamplerKind, SdeForm};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A model file (safetensors) whose shape to print, and whose kernels `--kernels` adds.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compile every kernel configuration and print registers, shared memory and spill bytes.
    #[arg(long)]
    pub kernels: bool,
    /// Compile for this architecture (e.g. sm_90) with NVRTC alone; default: the GPU's own.
    #[arg(long)]
    pub arch: Option<String>,
    /// Print the kernel reports as a JSON list of {name, config, registers, shared_bytes,
    /// spill_bytes, stack_bytes, variant, warps_per_sm, lds_per_ffma, fp32_bound} (implies --kernels).
    #[arg(long)]
    pub json: bool,
    /// Recompile even when the disk cache holds a module.
    #[arg(long)]
    pub no_cache: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(p) => Some(Mlp::load(p).with_context(|| format!("reading the model for `info --model {}`", p.display()))?),
        None => None,
    };
    let gpu = cuda::availability();
    if !args.json {
        let auto = if cuda::AUTO_SELECTS_CUDA && gpu.is_ok() { "cuda" } else { "cpu" };
        println!("backend (auto): {auto}");
        if !cuda::AUTO_SELECTS_CUDA {
            println!("  the CUDA kernels have not yet been validated on a GPU, so auto never picks them; use --backend cuda");
        }
        println!("cpu:            {}", cpu_description());
        match &gpu {
            Ok(d) => println!("gpu:            {d}"),
            Err(why) => println!("gpu:            none ({why})"),
        }
        match nvrtc::nvrtc_version() {
            Ok((a, b)) => println!("nvrtc:          {a}.{b}"),
            Err(why) => println!("nvrtc:          not found ({why})"),
        }
        println!("nvtx:           {}", nvtx::status());
        match crate::backend::cuda::emulator::compiler_version() {
            Ok(cxx) => println!("emulator:       --backend cuda-emulated runs the kernels on the CPU ({cxx})"),
            Err(why) => println!("emulator:       unavailable ({why})"),
        }
        println!("kernel cache:   {}", nvrtc::cache_dir().display());
        if let Some(m) = &model {
            let shape = m.shape();
            println!("model:          {shape}, {} multiply-adds per evaluation", m.macs_per_eval());
            if let Err(why) = modules::check_shape(&shape) {
                println!("  cuda:         {why}");
            }
        }
    }
    if !(args.kernels || args.json) {
        return Ok(());
    }
    let arch = match (&args.arch, &gpu) {
        (Some(a), _) => {
            nvrtc::validate_arch(a).map_err(anyhow::Error::msg)?;
            a.clone()
        }
        (None, Ok(_)) => cuda::CudaBackend::new()?.arch,
        (None, Err(why)) => bail!("no GPU to compile for ({why}); give --arch sm_90 (or sm_80) to compile with NVRTC alone"),
    };
    let mut configs = modules::coverage();
    if let Some(m) = &model {
        let shape = m.shape();
        if modules::check_shape(&shape).is_ok() {
            for (kind, form) in [
                (SamplerKind::Euler, SdeForm::Marginal),
                (SamplerKind::Midpoint, SdeForm::Marginal),
                (SamplerKind::Sde, SdeForm::Marginal),
                (SamplerKind::Sde, SdeForm::Legacy),
            ] {
                let s = Sampler { kind, form, ..Sampler::default() };
                configs.push(modules::ModuleConfig::propagate(&shape, &s));
            }
        }
    }
    let mut reports = Vec::new();
    for c in &configs {
        let compiled = nvrtc::compile(&c.label, &c.source(), &c.defines, &arch, !args.no_cache)?;
        reports.extend(c.annotate(compiled.kernels, &arch));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!("kernels for {arch} (registers, shared bytes incl. dynamic, spill bytes, stack bytes):");
        for r in &reports {
            println!("  {:<56} {:<26} {:>4} regs {:>7} B smem {:>5} B spill {:>5} B stack", r.config, r.name, r.registers, r.shared_bytes, r.spill_bytes, r.stack_bytes);
            // fs_propagate's variant, occupancy and instruction mix (bench/propagate_variants.md).
            if let (Some(v), Some(ratio), Some(bound)) = (&r.variant, r.lds_per_ffma, r.fp32_bound) {
                let warps = r.warps_per_sm.map_or("?".to_string(), |w| w.to_string());
                println!("  {:<56} variant {v}: {warps} warps/SM, {ratio:.3} LDS per FFMA, FP32 ≤ {:.0}% by the mix", "", 100.0 * bound);
            }
        }
    }
    Ok(())
}
