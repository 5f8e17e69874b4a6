//! The flow model `v(t, x)`: an MLP, and its safetensors file (SPEC §1).
//!
//! Input `[t, x_1..x_D]`, `L` hidden layers of width `H` each followed by the activation, then a
//! linear output layer of width `D`. Weights are stored row-major `[out, in]`, as PyTorch's
//! `nn.Linear` holds them, in f32 whatever the file's dtype.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// The activation after every hidden layer (SPEC §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// ELU with alpha 1: `x` for x > 0, `exp(x) − 1` otherwise.
    #[default]
    Elu,
    /// SiLU: `x · sigmoid(x)`.
    Silu,
    /// GELU, tanh form: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    Gelu,
    Tanh,
    Relu,
}

impl Activation {
    pub const ALL: [Activation; 5] =
        [Activation::Elu, Activation::Silu, Activation::Gelu, Activation::Tanh, Activation::Relu];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Elu => "elu",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        }
    }

    /// The activation in f32, as every backend computes it.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    x.exp_m1()
                }
            }
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::Gelu => {
                const C: f32 = 0.797_884_6; // sqrt(2/pi)
                0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.max(0.0),
        }
    }

    /// The derivative with respect to the pre-activation, for training.
    #[inline(always)]
    pub fn derivative(self, x: f32) -> f32 {
        match self {
            Activation::Elu => {
                if x > 0.0 {
                    1.0
                } else {
                    x.exp()
                }
            }
            Activation::Silu => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 + x * (1.0 - s))
            }
            Activation::Gelu => {
                const C: f32 = 0.797_884_6;
                let u = C * (x + 0.044715 * x * x * x);
                let th = u.tanh();
                0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * C * (1.0 + 3.0 * 0.044715 * x * x)
            }
            Activation::Tanh => {
                let th = x.tanh();
                1.0 - th * th
            }
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Activation {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ModelError::UnknownActivation(s.to_string()))
    }
}

/// Everything that can be wrong with a model or its file; each message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a valid safetensors file ({reason}); was it truncated or written by another tool?")]
    Corrupt { path: String, reason: String },
    #[error("{path} holds no Linear layers: expected tensors named `<prefix>.<i>.weight` and `<prefix>.<i>.bias` as nn.Sequential saves them")]
    NoLayers { path: String },
    #[error("tensor `{name}` has dtype {dtype}; flowsteer reads F32, F16 and BF16 only: convert it, e.g. `model.float()` before saving")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected}")]
    Shape { name: String, found: Vec<usize>, expected: String },
    #[error("layer {index} has `{present}` but no `{missing}`; every Linear layer needs a weight and a bias (nn.Linear(..., bias=True))")]
    MissingTensor { index: usize, present: String, missing: String },
    #[error("tensor `{name}` holds a non-finite value ({value}) at flat index {at}; the model cannot be used")]
    NonFinite { name: String, value: f32, at: usize },
    #[error("unknown activation `{0}`; expected one of elu, silu, gelu, tanh, relu")]
    UnknownActivation(String),
    #[error("tensors do not all share one prefix: found `{0}` and `{1}`; save a single nn.Sequential's state_dict")]
    MixedPrefixes(String, String),
    #[error("cannot write model file {path}: {reason}")]
    Write { path: String, reason: String },
}

/// One Linear layer: `y = W x + b`, `W` row-major `[out, in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Linear {
    pub fn zeros(inputs: usize, outputs: usize) -> Self {
        Self { inputs, outputs, weight: vec![0.0; inputs * outputs], bias: vec![0.0; outputs] }
    }
}

/// The velocity model (SPEC §1).
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Data dimension D (input is D + 1 with time first, output is D).
    pub dim: usize,
    pub activation: Activation,
    /// `L + 1` Linear layers: L hidden, then the output layer.
    pub layers: Vec<Linear>,
}

/// The model's shape, as printed and as compiled into kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MlpShape {
    pub dim: usize,
    pub hidden: usize,
    pub hidden_layers: usize,
    pub activation: Activation,
}

impl fmt::Display for MlpShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "D = {}, H = {}, L = {} hidden layers ({} Linear), activation {}",
            self.dim,
            self.hidden,
            self.hidden_layers,
            self.hidden_layers + 1,
            self.activation
        )
    }
}

impl Mlp {
    /// A model with the given shape and every weight zero.
    pub fn zeros(dim: usize, hidden: usize, hidden_layers: usize, activation: Activation) -> Self {
        assert!(dim >= 1 && hidden >= 1 && hidden_layers >= 1, "an MLP needs D, H, L >= 1");
        let mut layers = vec![Linear::zeros(dim + 1, hidden)];
        for _ in 1..hidden_layers {
            layers.push(Linear::zeros(hidden, hidden));
        }
        layers.push(Linear::zeros(hidden, dim));
        Self { dim, activation, layers }
    }

    /// PyTorch's default `nn.Linear` initialisation, U(−1/√in, 1/√in), from a seeded generator.
    pub fn init_uniform(dim: usize, hidden: usize, hidden_layers: usize, activation: Activation, seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut m = Self::zeros(dim, hidden, hidden_layers, activation);
        for layer in &mut m.layers {
            let bound = 1.0 / (layer.inputs as f32).sqrt();
            for w in layer.weight.iter_mut().chain(layer.bias.iter_mut()) {
                *w = rng.random_range(-bound..bound);
            }
        }
        m
    }

    pub fn hidden(&self) -> usize {
        self.layers[0].outputs
    }

    pub fn hidden_layers(&self) -> usize {
        self.layers.len() - 1
    }

    pub fn shape(&self) -> MlpShape {
        MlpShape { dim: self.dim, hidden: self.hidden(), hidden_layers: self.hidden_layers(), activation: self.activation }
    }

    /// Multiply-adds of one evaluation `v(t, x)` (8,512 for the default model).
    pub fn macs_per_eval(&self) -> usize {
        self.layers.iter().map(|l| l.inputs * l.outputs).sum()
    }

    /// One evaluation for one particle, the plain reference every fast path is tested against.
    /// Accumulates in f64 so that it can serve as the precise side of a tolerance check.
    pub fn velocity_f64(&self, t: f64, x: &[f64], out: &mut [f64]) {
        assert_eq!(x.len(), self.dim);
        let mut act: Vec<f64> = std::iter::once(t).chain(x.iter().copied()).collect();
        for (li, layer) in self.layers.iter().enumerate() {
            let last = li + 1 == self.layers.len();
            let mut next = vec![0f64; layer.outputs];
            for (o, y) in next.iter_mut().enumerate() {
                let row = &layer.weight[o * layer.inputs..(o + 1) * layer.inputs];
                let z = layer.bias[o] as f64 + row.iter().zip(&act).map(|(&w, &a)| w as f64 * a).sum::<f64>();
                *y = if last { z } else { apply_f64(self.activation, z) };
            }
            act = next;
        }
        out.copy_from_slice(&act);
    }

    /// Every weight and bias, in layer order, for checks that look at all of them.
    fn tensors(&self) -> impl Iterator<Item = (String, &[f32])> {
        self.layers.iter().enumerate().flat_map(|(i, l)| {
            [(format!("layer {i} weight"), l.weight.as_slice()), (format!("layer {i} bias"), l.bias.as_slice())]
        })
    }

    /// Rejects NaN or infinite weights (SPEC: bad input gets a clear error).
    pub fn check_finite(&self) -> Result<(), ModelError> {
        for (name, values) in self.tensors() {
            if let Some((at, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ModelError::NonFinite { name, value, at });
            }
        }
        Ok(())
    }

    /// Loads a safetensors file in the `nn.Sequential` layout of SPEC §1.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: shown.clone(), source })?;
        Self::from_safetensors_bytes(&bytes, &shown)
    }

    /// Parses safetensors bytes; `origin` names the source in error messages.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<Self, ModelError> {
        let corrupt = |reason: String| ModelError::Corrupt { path: origin.to_string(), reason };
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;

        let activation = match metadata.metadata().as_ref().and_then(|m| m.get("activation")) {
            Some(name) => name.parse()?,
            None => Activation::Elu,
        };

        // Group tensors by Sequential index: `<prefix>.<i>.weight` / `<prefix>.<i>.bias`.
        let mut prefix_seen: Option<String> = None;
        let mut by_index: BTreeMap<usize, (Option<String>, Option<String>)> = BTreeMap::new();
        for name in st.names() {
            let Some((prefix, index, kind)) = split_sequential_name(name) else { continue };
            match &prefix_seen {
                None => prefix_seen = Some(prefix.to_string()),
                Some(p) if p != prefix => return Err(ModelError::MixedPrefixes(p.clone(), name.to_string())),
                _ => {}
            }
            let slot = by_index.entry(index).or_default();
            match kind {
                "weight" => slot.0 = Some(name.to_string()),
                _ => slot.1 = Some(name.to_string()),
            }
        }
        if by_index.is_empty() {
            return Err(ModelError::NoLayers { path: origin.to_string() });
        }

        let mut layers = Vec::with_capacity(by_index.len());
        for (&index, (weight_name, bias_name)) in &by_index {
            let (w_name, b_name) = match (weight_name, bias_name) {
                (Some(w), Some(b)) => (w, b),
                (Some(w), None) => {
                    return Err(ModelError::MissingTensor { index, present: w.clone(), missing: w.replace(".weight", ".bias") })
                }
                (None, Some(b)) => {
                    return Err(ModelError::MissingTensor { index, present: b.clone(), missing: b.replace(".bias", ".weight") })
                }
                (None, None) => unreachable!(),
            };
            let w = st.tensor(w_name).map_err(|e| corrupt(e.to_string()))?;
            let b = st.tensor(b_name).map_err(|e| corrupt(e.to_string()))?;
            if w.shape().len() != 2 {
                return Err(ModelError::Shape { name: w_name.clone(), found: w.shape().to_vec(), expected: "[out, in]".into() });
            }
            let (outputs, inputs) = (w.shape()[0], w.shape()[1]);
            if b.shape() != [outputs] {
                return Err(ModelError::Shape { name: b_name.clone(), found: b.shape().to_vec(), expected: format!("[{outputs}]") });
            }
            layers.push(Linear { inputs, outputs, weight: to_f32(w_name, &w)?, bias: to_f32(b_name, &b)? });
        }

        // The shapes must chain: [D+1 -> H] [H -> H]... [H -> D].
        let names: Vec<&String> = by_index.values().map(|(w, _)| w.as_ref().unwrap()).collect();
        if layers.len() < 2 {
            return Err(ModelError::Shape {
                name: names[0].clone(),
                found: vec![layers[0].outputs, layers[0].inputs],
                expected: "at least two Linear layers (one hidden layer and the output layer)".into(),
            });
        }
        let dim = layers.last().unwrap().outputs;
        let hidden = layers[0].outputs;
        for (i, layer) in layers.iter().enumerate() {
            let want_in = if i == 0 { dim + 1 } else { hidden };
            let want_out = if i + 1 == layers.len() { dim } else { hidden };
            if layer.inputs != want_in || layer.outputs != want_out {
                return Err(ModelError::Shape {
                    name: names[i].clone(),
                    found: vec![layer.outputs, layer.inputs],
                    expected: format!(
                        "[{want_out}, {want_in}] (layers must chain: first in = D + 1 = {}, inner width H = {hidden}, last out = D = {dim})",
                        dim + 1
                    ),
                });
            }
        }
        let model = Mlp { dim, activation, layers };
        model.check_finite()?;
        Ok(model)
    }

    /// Serialises in the layout PyTorch's `nn.Sequential` uses, under `prefix` (e.g. `net`),
    /// f32 tensors, the activation in the metadata.
    pub fn to_safetensors_bytes(&self, prefix: &str) -> Result<Vec<u8>, ModelError> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let index = 2 * i; // activations take the odd indices
            owned.push((format!("{prefix}.{index}.weight"), vec![l.outputs, l.inputs], bytemuck::cast_slice(&l.weight).to_vec()));
            owned.push((format!("{prefix}.{index}.bias"), vec![l.outputs], bytemuck::cast_slice(&l.bias).to_vec()));
        }
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).expect("shape matches data")))
            .collect();
        let metadata: std::collections::HashMap<String, String> =
            [("activation".to_string(), self.activation.name().to_string())].into();
        safetensors::serialize(views, &Some(metadata)).map_err(|e| ModelError::Write { path: String::new(), reason: e.to_string() })
    }

    /// Writes the model atomically (temporary name, then rename).
    pub fn save(&self, path: &Path, prefix: &str) -> Result<(), ModelError> {
        let bytes = self.to_safetensors_bytes(prefix)?;
        crate::output::write_atomic(path, &bytes)
            .map_err(|e| ModelError::Write { path: path.display().to_string(), reason: e.to_string() })
    }
}

/// The activation in f64, for the reference forward pass.
pub fn apply_f64(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Gelu => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Tanh => x.tanh(),
        Activation::Relu => x.max(0.0),
    }
}

/// `net.0.weight` -> ("net", 0, "weight"); names that are not Sequential Linear tensors -> None.
fn split_sequential_name(name: &str) -> Option<(&str, usize, &str)> {
    let (rest, kind) = name.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let (prefix, index) = match rest.rsplit_once('.') {
        Some((p, i)) => (p, i),
        None => ("", rest),
    };
    Some((prefix, index.parse().ok()?, kind))
}

fn to_f32(name: &str, t: &TensorView) -> Result<Vec<f32>, ModelError> {
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(ModelError::UnsupportedDtype { name: name.to_string(), dtype: format!("{other:?}") }),
    };
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_weight_and_the_activation() {
        let m = Mlp::init_uniform(2, 16, 3, Activation::Silu, 1);
        let bytes = m.to_safetensors_bytes("net").unwrap();
        let back = Mlp::from_safetensors_bytes(&bytes, "mem").unwrap();
        assert_eq!(m, back);
        assert_eq!(back.macs_per_eval(), 3 * 16 + 16 * 16 * 2 + 16 * 2);
    }

    #[test]
    fn default_model_has_8512_macs() {
        assert_eq!(Mlp::zeros(2, 64, 3, Activation::Elu).macs_per_eval(), 8512);
    }

    #[test]
    fn names_are_split_as_sequential_saves_them() {
        assert_eq!(split_sequential_name("net.6.bias"), Some(("net", 6, "bias")));
        assert_eq!(split_sequential_name("model.net.0.weight"), Some(("model.net", 0, "weight")));
        assert_eq!(split_sequential_name("0.weight"), Some(("", 0, "weight")));
        assert_eq!(split_sequential_name("net.running_mean"), None);
    }
}
