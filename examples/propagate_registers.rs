//! Prints fs_propagate's registers for every activation × sampler at a shape (default D = 2,
//! H = 64, L = 3) and architecture: the data behind the register budget in tests/kernels_compile.rs.
//! `cargo run --release --example propagate_registers -- sm_90 2 64 3`
use flowsteer::backend::cuda::{modules::ModuleConfig, nvrtc};
use flowsteer::model::{Activation, MlpShape};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arch = a.first().cloned().unwrap_or_else(|| "sm_90".into());
    let num = |i: usize, d: usize| a.get(i).map(|v| v.parse().unwrap()).unwrap_or(d);
    let (dim, hidden, layers) = (num(1, 2), num(2, 64), num(3, 3));
    let mut jobs = Vec::new();
    for act in Activation::ALL {
        for (kind, form) in [(SamplerKind::Euler, SdeForm::Marginal), (SamplerKind::Midpoint, SdeForm::Marginal), (SamplerKind::Sde, SdeForm::Marginal), (SamplerKind::Sde, SdeForm::Legacy)] {
            let shape = MlpShape { dim, hidden, hidden_layers: layers, activation: act };
            jobs.push(ModuleConfig::propagate(&shape, &Sampler { kind, form, ..Sampler::default() }));
        }
    }
    let arch = &arch;
    std::thread::scope(|s| {
        for half in jobs.chunks(jobs.len().div_ceil(2)) {
            s.spawn(move || {
                for c in half {
                    let r = nvrtc::compile(&c.label, &c.source(), &c.defines, arch, true).unwrap();
                    let p = r.kernels.iter().find(|k| k.name == "fs_propagate").unwrap();
                    println!("{arch} {:<44} {:>3} regs {:>4} B spill", c.label, p.registers, p.spill_bytes);
                }
            });
        }
    });
}
