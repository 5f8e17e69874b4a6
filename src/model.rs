//! The flow model `v(t, x)`: an MLP, and its safetensors file (docs/model.md).
//!
//! Input `[t, x_1..x_D]`, `L` hidden layers of width `H` each followed by the activation, then a
//! linear output layer of width `D`. Weights are stored row-major `[out, in]`, as PyTorch's
//! `nn.Linear` holds them, in f32 whatever the file's dtype. Reading and writing the file, and
//! everything that can be wrong with one, is in `model/file.rs`.

use std::fmt;
use std::str::FromStr;

mod file;

use file::check_finite_tensor;
pub use file::ModelError;

/// The activation after every hidden layer (docs/model.md).
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

/// The velocity model (docs/model.md).
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

    /// Rejects NaN or infinite weights (bad input gets a clear error). Tensors are named
    /// as [`Mlp::save`] writes them under the prefix `net`.
    pub fn check_finite(&self) -> Result<(), ModelError> {
        for (i, l) in self.layers.iter().enumerate() {
            check_finite_tensor(&format!("net.{}.weight", 2 * i), &[l.outputs, l.inputs], &l.weight)?;
            check_finite_tensor(&format!("net.{}.bias", 2 * i), &[l.outputs], &l.bias)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_has_8512_macs() {
        assert_eq!(Mlp::zeros(2, 64, 3, Activation::Elu).macs_per_eval(), 8512);
    }
}
