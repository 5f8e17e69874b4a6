//! NumPy `.npy` files (format version 1.0): float32/float64/int arrays, little-endian, C order.

use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: not a .npy file ({reason})")]
    Format { path: String, reason: String },
    #[error("{path}: dtype {dtype} is not supported; save float32 or float64 (np.save(path, x.astype(np.float32)))")]
    Dtype { path: String, dtype: String },
    #[error("{path}: Fortran-ordered arrays are not supported; save np.ascontiguousarray(x)")]
    FortranOrder { path: String },
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// An array read from a `.npy` file, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Element types flowsteer writes.
pub trait NpyElement: bytemuck::Pod {
    const DESCR: &'static str;
}
impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
}
impl NpyElement for f64 {
    const DESCR: &'static str = "<f8";
}
impl NpyElement for u32 {
    const DESCR: &'static str = "<u4";
}
impl NpyElement for i64 {
    const DESCR: &'static str = "<i8";
}

/// Serialises a C-order array of `shape` to `.npy` bytes.
pub fn to_bytes<T: NpyElement>(shape: &[usize], data: &[T]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "npy shape does not match data length");
    let mut shape_str = String::from("(");
    for s in shape {
        write!(shape_str, "{s},").unwrap();
    }
    if shape.len() > 1 {
        shape_str.pop();
    }
    shape_str.push(')');
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", T::DESCR, shape_str);
    // Magic (6) + version (2) + length (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + std::mem::size_of_val(data));
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytemuck::cast_slice(data));
    out
}

/// Reads a float32 or float64 `.npy` file as f32.
pub fn read_f32(path: &std::path::Path) -> Result<NpyArray, NpyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| NpyError::Io { path: shown.clone(), error })?;
    parse_f32(&bytes, &shown)
}

/// Parses `.npy` bytes (float32 or float64) as f32; `origin` names the source in errors.
pub fn parse_f32(bytes: &[u8], origin: &str) -> Result<NpyArray, NpyError> {
    let bad = |reason: &str| NpyError::Format { path: origin.to_string(), reason: reason.to_string() };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unknown format version")),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad("header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(NpyError::FortranOrder { path: origin.to_string() });
    }
    let shape_str = dict_value(header, "shape").ok_or_else(|| bad("header has no 'shape'"))?;
    let inner = shape_str.trim().trim_start_matches('(');
    let inner = &inner[..inner.find(')').ok_or_else(|| bad("malformed shape"))?];
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("malformed shape")))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let body = &bytes[start + header_len..];
    let data: Vec<f32> = match descr {
        "<f4" | "=f4" => {
            let body = body.get(..count * 4).ok_or_else(|| bad("data shorter than the shape says"))?;
            body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        "<f8" | "=f8" => {
            let body = body.get(..count * 8).ok_or_else(|| bad("data shorter than the shape says"))?;
            body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        }
        other => return Err(NpyError::Dtype { path: origin.to_string(), dtype: other.to_string() }),
    };
    Ok(NpyArray { shape, data })
}

/// The text after `'key':` up to the next top-level comma (the shape keeps its parentheses).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[pos + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        return Some(&rest[..=rest.find(')')?]);
    }
    let end = rest.find(',').unwrap_or(rest.len());
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OS's text is in the message once: the io::Error is shown, not chained as a source too
    /// (anyhow's `{:#}` printed "No such file or directory (os error 2)" twice).
    #[test]
    fn an_unreadable_file_names_the_os_error_once() {
        let e = format!("{:#}", anyhow::Error::new(crate::npy::read_f32(std::path::Path::new("/no/such/file")).unwrap_err()));
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
        assert!(e.contains("/no/such/file"), "{e}");
    }

    #[test]
    fn round_trip_f32_2d_and_1d() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let b = to_bytes(&[3, 2], &data);
        assert_eq!((b.len() - data.len() * 4) % 64, 0, "header padded to 64 bytes");
        let a = parse_f32(&b, "mem").unwrap();
        assert_eq!(a.shape, vec![3, 2]);
        assert_eq!(a.data, data);
        let one = parse_f32(&to_bytes(&[6], &data), "mem").unwrap();
        assert_eq!(one.shape, vec![6]);
    }

    #[test]
    fn reads_f64_and_rejects_ints_and_truncation() {
        let d64 = [1.5f64, -2.0];
        let a = parse_f32(&to_bytes(&[1, 2], &d64), "mem").unwrap();
        assert_eq!(a.data, vec![1.5, -2.0]);
        assert!(matches!(parse_f32(&to_bytes(&[2], &[1i64, 2]), "mem"), Err(NpyError::Dtype { .. })));
        let b = to_bytes(&[4], &[1f32, 2.0, 3.0, 4.0]);
        assert!(parse_f32(&b[..b.len() - 2], "mem").is_err());
    }
}
