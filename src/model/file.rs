//! The model's safetensors file (docs/model.md, README "Model files"): the `nn.Sequential` layout
//! read and written, and every way a file can fail to fit, named with the tensor and the fix.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{Activation, Linear, Mlp};

/// Everything that can be wrong with a model or its file; each message names the tensor, what
/// was expected, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is not a valid safetensors file: {reason}; was it truncated or written by another tool? Re-save it with safetensors.torch.save_file(model.state_dict(), path)")]
    Corrupt { path: String, reason: String },
    #[error("{path} is truncated: tensor `{name}` ({dtype} {shape:?}) needs bytes {begin}..{end} of the data section, but the file holds only {available}; copy or save the file again")]
    Truncated { path: String, name: String, dtype: String, shape: Vec<usize>, begin: usize, end: usize, available: usize },
    #[error("{path} holds no Linear layers: expected tensors named `<prefix>.<i>.weight` [out, in] and `<prefix>.<i>.bias` [out] as nn.Sequential saves them (found: {found})")]
    NoLayers { path: String, found: String },
    #[error("tensor `{name}` {shape:?} has dtype {dtype}; flowsteer reads F32, F16 and BF16 only: convert it, e.g. `model.float()` before saving")]
    UnsupportedDtype { name: String, dtype: String, shape: Vec<usize> },
    #[error("tensor `{name}` has shape {found:?}, expected {expected}")]
    Shape { name: String, found: Vec<usize>, expected: String },
    #[error("tensor `{missing}` (expected shape {expected}) is missing, but `{present}` is there; every Linear layer needs a weight and a bias: build it with nn.Linear(..., bias=True)")]
    MissingTensor { index: usize, present: String, missing: String, expected: String },
    #[error("tensor `{name}` {shape:?} holds a non-finite value ({value}) at {at}; the model cannot be used: check the training run that produced it")]
    NonFinite { name: String, shape: Vec<usize>, value: f32, at: String },
    #[error("unknown activation `{0}` in the file's metadata key `activation`; expected one of elu, silu, gelu, tanh, relu")]
    UnknownActivation(String),
    #[error("tensors do not all share one prefix: found `{0}` and `{1}`; save a single nn.Sequential's state_dict")]
    MixedPrefixes(String, String),
    #[error("{path}: Linear layers `{before}` and `{after}` sit at nn.Sequential indices {i} and {j}; flowsteer computes Linear, activation, Linear, … (indices 0, 2, 4, …: one activation between consecutive Linear layers), so {between} would be computed as something else. Save the network as nn.Sequential(Linear, activation, Linear, …, Linear) (docs/model.md)")]
    LayerGap { path: String, before: String, after: String, i: usize, j: usize, between: String },
    #[error("cannot write model file {path}: {reason}")]
    Write { path: String, reason: String },
}

impl Mlp {
    /// Loads a safetensors file in the `nn.Sequential` layout of docs/model.md.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| ModelError::Io { path: shown.clone(), error })?;
        Self::from_safetensors_bytes(&bytes, &shown)
    }

    /// Parses safetensors bytes; `origin` names the source in error messages.
    pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<Self, ModelError> {
        let corrupt = |reason: String| ModelError::Corrupt { path: origin.to_string(), reason };
        // Our own pass over the header first: it names the tensor that is cut off or has a
        // dtype we cannot read, where the safetensors crate only says "invalid".
        precheck_header(bytes, origin)?;
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(format!("{e:?}")))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("{e:?}")))?;

        let activation = match metadata.metadata().as_ref().and_then(|m| m.get("activation")) {
            Some(name) => name.parse()?,
            None => Activation::Elu,
        };

        // Group tensors by Sequential index: `<prefix>.<i>.weight` / `<prefix>.<i>.bias`.
        let mut prefix_seen: Option<String> = None;
        let mut by_index: BTreeMap<usize, (Option<String>, Option<String>)> = BTreeMap::new();
        let mut names: Vec<&str> = st.names().into_iter().map(String::as_str).collect();
        names.sort_unstable();
        for &name in &names {
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
            let found = if names.is_empty() { "no tensors".to_string() } else { names.join(", ") };
            return Err(ModelError::NoLayers { path: origin.to_string(), found });
        }

        // Exactly one module (the activation, which holds no tensors) between consecutive Linear
        // layers: a wider gap hides modules without tensors (a second activation, a dropout), a
        // gap of 1 means no activation at all; either way the file is not the network computed.
        let indices: Vec<usize> = by_index.keys().copied().collect();
        for pair in indices.windows(2) {
            let (i, j) = (pair[0], pair[1]);
            if j - i != 2 {
                let name = |k: usize| by_index[&k].0.clone().or_else(|| by_index[&k].1.clone()).unwrap_or_default();
                let between = if j - i == 1 {
                    "two Linear layers with no activation between them".to_string()
                } else {
                    format!("the {} modules without tensors at indices {}..{} between them", j - i - 1, i + 1, j - 1)
                };
                return Err(ModelError::LayerGap { path: origin.to_string(), before: name(i), after: name(j), i, j, between });
            }
        }

        let mut layers = Vec::with_capacity(by_index.len());
        for (&index, (weight_name, bias_name)) in &by_index {
            let (w_name, b_name) = match (weight_name, bias_name) {
                (Some(w), Some(b)) => (w, b),
                (Some(w), None) => {
                    let outputs = st.tensor(w).ok().and_then(|t| t.shape().first().copied());
                    return Err(ModelError::MissingTensor {
                        index,
                        present: w.clone(),
                        missing: format!("{}.bias", w.strip_suffix(".weight").unwrap_or(w)),
                        expected: outputs.map_or("[out]".into(), |o| format!("[{o}]")),
                    });
                }
                (None, Some(b)) => {
                    return Err(ModelError::MissingTensor {
                        index,
                        present: b.clone(),
                        missing: format!("{}.weight", b.strip_suffix(".bias").unwrap_or(b)),
                        expected: "[out, in]".into(),
                    })
                }
                (None, None) => unreachable!(),
            };
            let w = st.tensor(w_name).map_err(|e| corrupt(format!("{e:?}")))?;
            let b = st.tensor(b_name).map_err(|e| corrupt(format!("{e:?}")))?;
            if w.shape().len() != 2 {
                return Err(ModelError::Shape { name: w_name.clone(), found: w.shape().to_vec(), expected: "[out, in] (a Linear weight)".into() });
            }
            let (outputs, inputs) = (w.shape()[0], w.shape()[1]);
            if b.shape() != [outputs] {
                return Err(ModelError::Shape {
                    name: b_name.clone(),
                    found: b.shape().to_vec(),
                    expected: format!("[{outputs}] (the out size of `{w_name}` {:?})", w.shape()),
                });
            }
            let weight = to_f32(w_name, &w)?;
            let bias = to_f32(b_name, &b)?;
            check_finite_tensor(w_name, w.shape(), &weight)?;
            check_finite_tensor(b_name, b.shape(), &bias)?;
            layers.push(Linear { inputs, outputs, weight, bias });
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
        if dim == 0 || hidden == 0 {
            let i = if dim == 0 { layers.len() - 1 } else { 0 };
            return Err(ModelError::Shape {
                name: names[i].clone(),
                found: vec![layers[i].outputs, layers[i].inputs],
                expected: "non-zero sizes".into(),
            });
        }
        for (i, layer) in layers.iter().enumerate() {
            let want_in = if i == 0 { dim + 1 } else { hidden };
            let want_out = if i + 1 == layers.len() { dim } else { hidden };
            if layer.inputs != want_in || layer.outputs != want_out {
                return Err(ModelError::Shape {
                    name: names[i].clone(),
                    found: vec![layer.outputs, layer.inputs],
                    expected: format!(
                        "[{want_out}, {want_in}] (layers must chain: first in = D + 1 = {} with time first, inner width H = {hidden}, last out = D = {dim})",
                        dim + 1
                    ),
                });
            }
        }
        Ok(Mlp { dim, activation, layers })
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

/// Rejects a tensor with a NaN or infinite value, naming the element (`[row, col]` for weights).
pub(super) fn check_finite_tensor(name: &str, shape: &[usize], values: &[f32]) -> Result<(), ModelError> {
    if let Some((at, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let at = match shape {
            [_, cols] if *cols > 0 => format!("[{}, {}]", at / cols, at % cols),
            _ => format!("[{at}]"),
        };
        return Err(ModelError::NonFinite { name: name.to_string(), shape: shape.to_vec(), value, at });
    }
    Ok(())
}

/// Bytes per element of the dtypes flowsteer reads (`None`: not readable).
fn readable_dtype_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" => Some(4),
        "F16" | "BF16" => Some(2),
        _ => None,
    }
}

/// Checks the safetensors header by hand so that errors can name the tensor: the 8-byte length,
/// the JSON, and for each Linear tensor its dtype, its byte span against its shape, and that the
/// span lies inside the file (a truncated download or copy).
fn precheck_header(bytes: &[u8], origin: &str) -> Result<(), ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt { path: origin.to_string(), reason };
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(corrupt(format!("the file is {} bytes long, shorter than the 8-byte header length", bytes.len())));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().unwrap());
    let available = bytes.len() as u64 - 8;
    if header_len > available {
        return Err(corrupt(format!("the header is said to be {header_len} bytes but only {available} follow (truncated?)")));
    }
    let header = &bytes[8..8 + header_len as usize];
    let header: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| corrupt(format!("the header is not valid JSON ({e})")))?;
    let Some(entries) = header.as_object() else { return Err(corrupt("the header is not a JSON object".into())) };
    let data_len = (available - header_len) as usize;
    for (name, info) in entries {
        if name == "__metadata__" || split_sequential_name(name).is_none() {
            continue;
        }
        let bad = |what: &str| corrupt(format!("tensor `{name}` has {what} in the header"));
        let dtype = info.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a malformed shape"))?;
        let offsets: Vec<usize> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad("no data_offsets"))?;
        let [begin, end] = offsets[..] else { return Err(bad("malformed data_offsets")) };
        let Some(size) = readable_dtype_size(dtype) else {
            return Err(ModelError::UnsupportedDtype { name: name.clone(), dtype: dtype.to_string(), shape });
        };
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("a shape that overflows"))?;
        if end < begin || end - begin != numel * size {
            return Err(corrupt(format!(
                "tensor `{name}` is {dtype} {shape:?} ({} bytes) but its data_offsets {begin}..{end} span {} bytes",
                numel * size,
                end.saturating_sub(begin)
            )));
        }
        if end > data_len {
            return Err(ModelError::Truncated {
                path: origin.to_string(),
                name: name.clone(),
                dtype: dtype.to_string(),
                shape,
                begin,
                end,
                available: data_len,
            });
        }
    }
    Ok(())
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
        other => return Err(ModelError::UnsupportedDtype { name: name.to_string(), dtype: format!("{other:?}"), shape: t.shape().to_vec() }),
    };
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OS's text is in the message once: the io::Error is shown, not chained as a source too
    /// (anyhow's `{:#}` printed "No such file or directory (os error 2)" twice).
    #[test]
    fn an_unreadable_file_names_the_os_error_once() {
        let e = format!("{:#}", anyhow::Error::new(crate::model::Mlp::load(std::path::Path::new("/no/such/file")).unwrap_err()));
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
        assert!(e.contains("/no/such/file"), "{e}");
    }

    #[test]
    fn round_trip_keeps_every_weight_and_the_activation() {
        let m = Mlp::init_uniform(2, 16, 3, Activation::Silu, 1);
        let bytes = m.to_safetensors_bytes("net").unwrap();
        let back = Mlp::from_safetensors_bytes(&bytes, "mem").unwrap();
        assert_eq!(m, back);
        assert_eq!(back.macs_per_eval(), 3 * 16 + 16 * 16 * 2 + 16 * 2);
    }

    /// Hand-made safetensors bytes: `(name, dtype, shape, data)` entries, optional metadata.
    fn raw_file(entries: &[(&str, &str, Vec<usize>, Vec<u8>)], metadata: Option<(&str, &str)>) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        if let Some((k, v)) = metadata {
            header.insert("__metadata__".into(), serde_json::json!({ k: v }));
        }
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in entries {
            let begin = data.len();
            data.extend_from_slice(bytes);
            header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}));
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        out
    }

    fn f32_bytes(n: usize, value: f32) -> Vec<u8> {
        std::iter::repeat_n(value.to_le_bytes(), n).flatten().collect()
    }

    /// A valid 2-layer model [3 -> 4 -> 2] as raw entries, to break one piece at a time.
    fn good_entries() -> Vec<(&'static str, &'static str, Vec<usize>, Vec<u8>)> {
        vec![
            ("net.0.weight", "F32", vec![4, 3], f32_bytes(12, 0.1)),
            ("net.0.bias", "F32", vec![4], f32_bytes(4, 0.0)),
            ("net.2.weight", "F32", vec![2, 4], f32_bytes(8, 0.2)),
            ("net.2.bias", "F32", vec![2], f32_bytes(2, 0.0)),
        ]
    }

    fn load_err(bytes: &[u8]) -> String {
        Mlp::from_safetensors_bytes(bytes, "m.safetensors").unwrap_err().to_string()
    }

    #[test]
    fn a_gap_in_the_layer_indices_is_refused() {
        // net.0, net.4: PyTorch would hold three modules between them, flowsteer would put one.
        let renamed = |to: &'static str| -> Vec<_> {
            good_entries().into_iter().map(|(n, d, s, b)| (n.replace("net.2.", to).leak() as &str, d, s, b)).collect()
        };
        let err = load_err(&raw_file(&renamed("net.4."), None));
        assert!(err.contains("`net.0.weight` and `net.4.weight` sit at nn.Sequential indices 0 and 4"), "{err}");
        assert!(err.contains("3 modules without tensors at indices 1..3"), "{err}");
        // Adjacent Linear layers: no activation between them.
        let err = load_err(&raw_file(&renamed("net.1."), None));
        assert!(err.contains("indices 0 and 1") && err.contains("no activation between them"), "{err}");
        // The gap may be anywhere, and any start index with steps of 2 still loads.
        assert!(Mlp::from_safetensors_bytes(&raw_file(&renamed("net.2."), None), "mem").is_ok());
    }

    #[test]
    fn hand_made_file_loads() {
        let m = Mlp::from_safetensors_bytes(&raw_file(&good_entries(), None), "mem").unwrap();
        assert_eq!((m.dim, m.hidden(), m.hidden_layers(), m.activation), (2, 4, 1, Activation::Elu));
        let m = Mlp::from_safetensors_bytes(&raw_file(&good_entries(), Some(("activation", "tanh"))), "mem").unwrap();
        assert_eq!(m.activation, Activation::Tanh);
    }

    #[test]
    fn shapes_that_do_not_chain_name_the_tensor_and_expected_shape() {
        // Hidden layer 0 says 4 outputs, the output layer takes 5 inputs.
        let mut e = good_entries();
        e[2] = ("net.2.weight", "F32", vec![2, 5], f32_bytes(10, 0.2));
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.2.weight`") && msg.contains("[2, 5]") && msg.contains("expected [2, 4]"), "{msg}");
        // First layer must take D + 1 inputs (time first).
        let mut e = good_entries();
        e[0] = ("net.0.weight", "F32", vec![4, 2], f32_bytes(8, 0.1));
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.0.weight`") && msg.contains("expected [4, 3]") && msg.contains("D + 1"), "{msg}");
        // Bias of the wrong length.
        let mut e = good_entries();
        e[1] = ("net.0.bias", "F32", vec![3], f32_bytes(3, 0.0));
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.0.bias`") && msg.contains("expected [4]"), "{msg}");
        // A weight that is not a matrix.
        let mut e = good_entries();
        e[0] = ("net.0.weight", "F32", vec![12], f32_bytes(12, 0.1));
        assert!(load_err(&raw_file(&e, None)).contains("[out, in]"));
        // A single Linear layer is not an MLP with a hidden layer.
        let msg = load_err(&raw_file(&good_entries()[..2], None));
        assert!(msg.contains("at least two Linear layers"), "{msg}");
    }

    #[test]
    fn missing_bias_or_weight_is_named_with_its_shape() {
        let mut e = good_entries();
        e.remove(3);
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.2.bias`") && msg.contains("[2]") && msg.contains("bias=True"), "{msg}");
        let mut e = good_entries();
        e.remove(0);
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.0.weight`") && msg.contains("[out, in]"), "{msg}");
    }

    #[test]
    fn unknown_or_unsupported_dtypes_are_named() {
        let mut e = good_entries();
        e[2] = ("net.2.weight", "F64", vec![2, 4], vec![0u8; 64]);
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.2.weight`") && msg.contains("F64") && msg.contains("model.float()"), "{msg}");
        let mut e = good_entries();
        e[1] = ("net.0.bias", "Q4_WHATEVER", vec![4], vec![0u8; 16]);
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.0.bias`") && msg.contains("Q4_WHATEVER"), "{msg}");
        // Other tensors (not Sequential Linear ones) may have any dtype: they are ignored.
        let mut e = good_entries();
        e.push(("step_count", "I64", vec![1], vec![0u8; 8]));
        assert!(Mlp::from_safetensors_bytes(&raw_file(&e, None), "mem").is_ok());
    }

    #[test]
    fn truncated_and_corrupt_files_are_reported() {
        let good = raw_file(&good_entries(), None);
        // Cut inside the last tensor: the message names it and its shape.
        let msg = load_err(&good[..good.len() - 3]);
        assert!(msg.contains("truncated") && msg.contains("`net.2.bias`") && msg.contains("[2]"), "{msg}");
        // Cut inside the header, or before the header length.
        assert!(load_err(&good[..20]).contains("truncated"), "{}", load_err(&good[..20]));
        assert!(load_err(&good[..5]).contains("8-byte header length"));
        // Garbage in the header.
        let mut bad = good.clone();
        bad[8] = b'#';
        assert!(load_err(&bad).contains("not valid JSON"));
        // Offsets that do not match the shape.
        let mut e = good_entries();
        e[3] = ("net.2.bias", "F32", vec![3], f32_bytes(2, 0.0));
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.2.bias`") && msg.contains("[3]"), "{msg}");
        assert!(load_err(b"").contains("0 bytes"));
        // A file with no Sequential tensors lists what it found.
        let msg = load_err(&raw_file(&[("encoder.weight", "F32", vec![1], f32_bytes(1, 0.0))], None));
        assert!(msg.contains("no Linear layers") && msg.contains("encoder.weight"), "{msg}");
    }

    #[test]
    fn non_finite_weights_and_unknown_activations_are_rejected() {
        let mut e = good_entries();
        let mut w = f32_bytes(8, 0.2);
        w[4 * 5..4 * 6].copy_from_slice(&f32::NAN.to_le_bytes()); // element 5 = [1, 1] of [2, 4]
        e[2] = ("net.2.weight", "F32", vec![2, 4], w);
        let msg = load_err(&raw_file(&e, None));
        assert!(msg.contains("`net.2.weight`") && msg.contains("[1, 1]") && msg.contains("NaN"), "{msg}");
        let mut e = good_entries();
        e[1] = ("net.0.bias", "F32", vec![4], f32_bytes(4, f32::INFINITY));
        assert!(load_err(&raw_file(&e, None)).contains("`net.0.bias`"));
        let msg = load_err(&raw_file(&good_entries(), Some(("activation", "swish"))));
        assert!(msg.contains("swish") && msg.contains("elu, silu"), "{msg}");
        let mut m = Mlp::init_uniform(2, 4, 1, Activation::Elu, 0);
        m.layers[1].bias[1] = f32::NEG_INFINITY;
        assert!(m.check_finite().unwrap_err().to_string().contains("`net.2.bias`"));
    }

    #[test]
    fn half_precision_tensors_are_widened_exactly() {
        let mut e = good_entries();
        let h: Vec<u8> = [0.5f32, -1.25, 3.0, 0.0, 1.0, 2.0, -2.0, 0.125]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        e[2] = ("net.2.weight", "F16", vec![2, 4], h);
        let b: Vec<u8> = [1.5f32, -0.75].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        e[3] = ("net.2.bias", "BF16", vec![2], b);
        let m = Mlp::from_safetensors_bytes(&raw_file(&e, None), "mem").unwrap();
        assert_eq!(m.layers[1].weight, vec![0.5, -1.25, 3.0, 0.0, 1.0, 2.0, -2.0, 0.125]);
        assert_eq!(m.layers[1].bias, vec![1.5, -0.75]);
    }

    #[test]
    fn names_are_split_as_sequential_saves_them() {
        assert_eq!(split_sequential_name("net.6.bias"), Some(("net", 6, "bias")));
        assert_eq!(split_sequential_name("model.net.0.weight"), Some(("model.net", 0, "weight")));
        assert_eq!(split_sequential_name("0.weight"), Some(("", 0, "weight")));
        assert_eq!(split_sequential_name("net.running_mean"), None);
    }
}
