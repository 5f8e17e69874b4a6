//! Prints NVRTC's full log (ptxas -v) for one propagate configuration (dev aid):
//! `cargo run --release --example ptxas_log -- sm_80 D H L act sampler form`
use flowsteer::backend::cuda::{modules::ModuleConfig, nvrtc};
use flowsteer::model::{Activation, MlpShape};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let shape = MlpShape { dim: a[1].parse().unwrap(), hidden: a[2].parse().unwrap(), hidden_layers: a[3].parse().unwrap(), activation: a[4].parse().unwrap() };
    let kind: SamplerKind = a[5].parse().unwrap();
    let form = if a.get(6).map(|s| s == "legacy").unwrap_or(false) { SdeForm::Legacy } else { SdeForm::Marginal };
    let c = ModuleConfig::propagate(&shape, &Sampler { kind, form, ..Sampler::default() });
    let r = nvrtc::compile(&c.label, &c.source(), &c.defines, &a[0], false).unwrap();
    println!("{}", r.log);
    let _ = Activation::Elu;
}
