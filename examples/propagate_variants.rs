//! Compiles fs_propagate in every variant (kernels/propagate.cu FS_PPT × FS_BLOCK) for one shape,
//! sampler and architecture, prints ptxas's report and writes each cubin to a directory for
//! disassembly (bench/propagate_variants.md counts LDS and FFMA in them with nvdisasm).
//! `cargo run --release --example propagate_variants -- sm_90 2 64 3 midpoint /tmp/cubins`
use flowsteer::backend::cuda::{modules::{ModuleConfig, PropagateVariant}, nvrtc};
use flowsteer::model::{Activation, MlpShape};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arch = a.first().cloned().unwrap_or_else(|| "sm_90".into());
    let num = |i: usize, d: usize| a.get(i).map(|v| v.parse().unwrap()).unwrap_or(d);
    let (dim, hidden, layers) = (num(1, 2), num(2, 64), num(3, 3));
    // `sde-legacy` also switches to SiLU: tests/kernels_compile.rs's D = 3, H = 30 configuration.
    let name = a.get(4).map(String::as_str).unwrap_or("midpoint");
    let (kind, form, activation) = match name {
        "euler" => (SamplerKind::Euler, SdeForm::Marginal, Activation::Elu),
        "sde" => (SamplerKind::Sde, SdeForm::Marginal, Activation::Elu),
        "sde-legacy" => (SamplerKind::Sde, SdeForm::Legacy, Activation::Silu),
        _ => (SamplerKind::Midpoint, SdeForm::Marginal, Activation::Elu),
    };
    let out = a.get(5).cloned();
    let shape = MlpShape { dim, hidden, hidden_layers: layers, activation };
    let sampler = Sampler { kind, form, ..Sampler::default() };
    let variants: Vec<PropagateVariant> = PropagateVariant::ALL.into_iter().filter(|v| v.supports(&shape)).collect();
    std::thread::scope(|s| {
        for v in variants {
            let (arch, out) = (&arch, &out);
            s.spawn(move || {
                let c = ModuleConfig::propagate_variant(&shape, &sampler, v);
                let r = nvrtc::compile(&c.label, &c.source(), &c.defines, arch, true).unwrap();
                for k in c.with_launch_shared(r.kernels.clone()) {
                    println!("{arch} {:<50} {:<40} {:>3} regs {:>6} B smem {:>4} B spill {:>4} B stack", c.label, k.name, k.registers, k.shared_bytes, k.spill_bytes, k.stack_bytes);
                }
                if let Some(dir) = out {
                    std::fs::create_dir_all(dir).unwrap();
                    std::fs::write(format!("{dir}/{arch}_{}.cubin", v.name()), &r.cubin).unwrap();
                }
            });
        }
    });
}
