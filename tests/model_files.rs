//! Model files written by PyTorch (docs/model.md): the committed fixtures of
//! `tests/fixtures/make_fixtures.py` load with no options and sample to PyTorch's own results.

use std::path::{Path, PathBuf};

use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::{Backend, Init, Layout};
use flowsteer::cli::sample::sampling_spec;
use flowsteer::model::{Activation, Mlp};
use flowsteer::npy;
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn sample_from_fixture_noise(model: &Mlp, kind: SamplerKind) -> Vec<f32> {
    let noise = npy::read_f32(&fixture("torch_noise.npy")).unwrap();
    assert_eq!(noise.shape, vec![256, 2]);
    let spec = sampling_spec(model.clone(), Sampler { kind, steps: 150, k: 0.0, form: SdeForm::Marginal }, 0);
    let mut be = CpuBackend::new();
    let mut p = be.init(&spec, Layout { n: 256, groups: 1 }, Init::Given(&noise.data)).unwrap();
    be.propagate(&spec, &mut p, 0..150).unwrap();
    be.read_positions(&p).unwrap()
}

/// The largest |Δ| between our samples and PyTorch's.
fn max_diff(ours: &[f32], theirs_file: &str) -> f32 {
    let theirs = npy::read_f32(&fixture(theirs_file)).unwrap();
    assert_eq!(theirs.shape, vec![256, 2]);
    ours.iter().zip(&theirs.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// `safetensors.torch.save_file(model.state_dict())` of a module holding
/// `net = nn.Sequential(Linear(3,64), ELU(), …, Linear(64,2))`: no metadata, so ELU by default.
#[test]
fn pytorch_state_dict_loads_with_no_options() {
    let m = Mlp::load(&fixture("torch_mlp.safetensors")).unwrap();
    assert_eq!((m.dim, m.hidden(), m.hidden_layers(), m.activation), (2, 64, 3, Activation::Elu));
    assert_eq!(m.macs_per_eval(), 8512);
}

/// 150 midpoint steps from PyTorch's noise give PyTorch's samples to float32 rounding. The two
/// sides differ only in the order of the dot products' additions (f32 relative error ~1e-7 per
/// evaluation), which 150 steps carry along; 1e-4 is the bound (measured: < 1e-6).
#[test]
fn midpoint_samples_match_pytorch() {
    let m = Mlp::load(&fixture("torch_mlp.safetensors")).unwrap();
    let d = max_diff(&sample_from_fixture_noise(&m, SamplerKind::Midpoint), "torch_midpoint150.npy");
    eprintln!("midpoint, f32 weights: max |Δ| = {d:e}");
    assert!(d <= 1e-4, "max |Δ| = {d}");
    let d = max_diff(&sample_from_fixture_noise(&m, SamplerKind::Euler), "torch_euler150.npy");
    eprintln!("euler, f32 weights: max |Δ| = {d:e}");
    assert!(d <= 1e-4, "max |Δ| = {d}");
}

/// The f16 and bf16 copies widen exactly to the values PyTorch computed with (`w.to(dtype).float()`).
#[test]
fn half_precision_copies_match_pytorch() {
    for (file, want) in [("torch_mlp_f16.safetensors", "torch_midpoint150_f16.npy"), ("torch_mlp_bf16.safetensors", "torch_midpoint150_bf16.npy")] {
        let m = Mlp::load(&fixture(file)).unwrap();
        let d = max_diff(&sample_from_fixture_noise(&m, SamplerKind::Midpoint), want);
        eprintln!("{file}: max |Δ| = {d:e}");
        assert!(d <= 1e-4, "{file}: max |Δ| = {d}");
    }
    // And they really are lower precision: their samples differ from the f32 model's.
    let m = Mlp::load(&fixture("torch_mlp_bf16.safetensors")).unwrap();
    assert!(max_diff(&sample_from_fixture_noise(&m, SamplerKind::Midpoint), "torch_midpoint150.npy") > 1e-4);
}

/// What flowsteer writes, it and PyTorch read back: the same names (`net.0.weight`, …, indices
/// 0, 2, 4, 6), shapes and values.
#[test]
fn saving_keeps_the_pytorch_layout() {
    let m = Mlp::load(&fixture("torch_mlp.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.safetensors");
    m.save(&path, "net").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut original: Vec<String> = {
        let b = std::fs::read(fixture("torch_mlp.safetensors")).unwrap();
        safetensors::SafeTensors::deserialize(&b).unwrap().names().into_iter().cloned().collect()
    };
    original.sort();
    assert_eq!(names, original);
    assert_eq!(st.tensor("net.6.weight").unwrap().shape(), &[2, 64]);
    assert_eq!(Mlp::load(&path).unwrap(), m);
}

/// A damaged copy of the real file fails with the tensor named.
#[test]
fn truncated_pytorch_file_names_the_tensor() {
    let bytes = std::fs::read(fixture("torch_mlp.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let msg = Mlp::load(&path).unwrap_err().to_string();
    assert!(msg.contains("truncated") && msg.contains("`net."), "{msg}");
}
