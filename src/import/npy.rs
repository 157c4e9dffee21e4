//! NumPy `.npy` matrices (format versions 1 to 3), as VSE++ and SCAN ship
//! precomputed features: little-endian float32, float16 or float64, C order,
//! shape `(rows, dim)` or `(rows, regions, dim)` (SCAN's bottom-up regions,
//! averaged into one vector per image: lethe's branches take one feature per
//! item). Read in blocks of rows, converted once, never held twice.

use super::ImportError;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// A stored element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F16,
    F32,
    F64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

/// A matrix read into f32, row-major.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub dim: usize,
    pub values: Vec<f32>,
    /// The stored type (an f16 input is written back as f16).
    pub dtype: Dtype,
    /// Regions averaged per row (1 for a 2-D array).
    pub regions: usize,
}

/// The largest header accepted (numpy pads headers to 64 bytes; a few KB is plenty).
const MAX_HEADER: usize = 1 << 16;

/// The shape of a `.npy` file, from its header alone.
pub fn shape(path: &Path) -> Result<Vec<usize>, ImportError> {
    open(path).map(|(_, header)| header.shape)
}

struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
    rows: usize,
    regions: usize,
    dim: usize,
}

/// Reads a `.npy` file into f32 rows. With `repeat` above 1, every row is
/// stored `repeat` times in a row (VSE++'s layout with one image row per
/// caption): one copy is kept, and the others must equal it.
pub fn read(path: &Path, repeat: usize) -> Result<Matrix, ImportError> {
    let (mut reader, header) = open(path)?;
    let Header {
        dtype,
        rows,
        regions,
        dim,
        ..
    } = header;
    let bad = |m: String| ImportError::invalid(path, m);
    let repeat = repeat.max(1);
    if !rows.is_multiple_of(repeat) {
        return Err(bad(format!(
            "has {rows} rows, not a whole number of images repeated {repeat} times"
        )));
    }
    let row_values = regions * dim;
    let mut values = Vec::with_capacity(rows / repeat * dim);
    let mut bytes = vec![0u8; row_values * dtype.size()];
    let mut kept = vec![0u8; if repeat > 1 { bytes.len() } else { 0 }];
    let mut row = vec![0f32; row_values];
    for r in 0..rows {
        reader
            .read_exact(&mut bytes)
            .map_err(|e| bad(format!("row {r}: {}", crate::files::io_message(&e))))?;
        if repeat > 1 {
            if r % repeat == 0 {
                kept.copy_from_slice(&bytes);
            } else {
                if bytes != kept {
                    return Err(bad(format!(
                        "row {r} differs from row {}: with as many rows as captions, each image's row must repeat for its {repeat} captions",
                        r - r % repeat
                    )));
                }
                continue;
            }
        }
        decode(dtype, &bytes, &mut row);
        if let Some(i) = row.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!(
                "row {r} holds a NaN or infinite value at position {}",
                i % dim
            )));
        }
        if regions == 1 {
            values.extend_from_slice(&row);
        } else {
            let start = values.len();
            values.resize(start + dim, 0.0);
            for region in row.chunks_exact(dim) {
                for (out, x) in values[start..].iter_mut().zip(region) {
                    *out += x;
                }
            }
            for out in &mut values[start..] {
                *out /= regions as f32;
            }
        }
    }
    Ok(Matrix {
        rows: rows / repeat,
        dim,
        values,
        dtype,
        regions,
    })
}

/// Opens a `.npy` file and checks its header against its size.
fn open(path: &Path) -> Result<(BufReader<File>, Header), ImportError> {
    let size = crate::files::regular_file(path)?;
    let file =
        File::open(path).map_err(|e| ImportError::invalid(path, crate::files::io_message(&e)))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let bad = |m: String| ImportError::invalid(path, m);
    let mut preamble = [0u8; 8];
    reader
        .read_exact(&mut preamble)
        .map_err(|_| bad("is not a .npy file: it is shorter than the 8-byte preamble".into()))?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(bad(
            "is not a .npy file: the \\x93NUMPY magic is missing".into()
        ));
    }
    let header_len = match preamble[6] {
        1 => {
            let mut n = [0u8; 2];
            reader
                .read_exact(&mut n)
                .map_err(|_| bad("the .npy header is truncated".into()))?;
            u16::from_le_bytes(n) as usize
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            reader
                .read_exact(&mut n)
                .map_err(|_| bad("the .npy header is truncated".into()))?;
            u32::from_le_bytes(n) as usize
        }
        v => {
            return Err(bad(format!(
                "is .npy format version {v}; versions 1 to 3 are read"
            )))
        }
    };
    if header_len > MAX_HEADER {
        return Err(bad(format!(
            "the .npy header claims {header_len} bytes; at most {MAX_HEADER} are read"
        )));
    }
    let mut header = vec![0u8; header_len];
    reader
        .read_exact(&mut header)
        .map_err(|_| bad("the .npy header is truncated".into()))?;
    let header = String::from_utf8_lossy(&header);
    let (dtype, shape) = parse_header(&header).map_err(|m| bad(format!("header: {m}")))?;
    let (rows, regions, dim) = match shape.as_slice() {
        [r, d] => (*r, 1, *d),
        [r, k, d] => (*r, *k, *d),
        other => {
            return Err(bad(format!(
                "has shape {other:?}; expected (images, dim) or (images, regions, dim)"
            )))
        }
    };
    if rows == 0 || dim == 0 || regions == 0 {
        return Err(bad(format!("has shape {shape:?}: it holds no features")));
    }
    let data_offset = (if preamble[6] == 1 { 10 } else { 12 } + header_len) as u64;
    let expected = (rows as u128) * (regions as u128) * (dim as u128) * dtype.size() as u128;
    let actual = size.saturating_sub(data_offset) as u128;
    if actual != expected {
        return Err(bad(format!(
            "shape {shape:?} of {dtype:?} needs {expected} bytes of data, the file has {actual}{}",
            if actual < expected {
                " (truncated?)"
            } else {
                ""
            }
        )));
    }
    Ok((
        reader,
        Header {
            dtype,
            shape,
            rows,
            regions,
            dim,
        },
    ))
}

fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::F64 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *o = f64::from_le_bytes(a) as f32;
            }
        }
    }
}

/// The dtype and shape of a header such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (5000, 2048), }`.
fn parse_header(header: &str) -> Result<(Dtype, Vec<usize>), String> {
    let value_of = |key: &str| -> Result<&str, String> {
        let start = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("no `{key}`"))?;
        let rest = &header[start + key.len() + 2..];
        let rest = rest
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| format!("`{key}` has no value"))?;
        Ok(rest.trim_start())
    };
    let descr = value_of("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("`descr` is not a quoted type")?;
    let dtype = match descr {
        "<f4" | "=f4" => Dtype::F32,
        "<f2" | "=f2" => Dtype::F16,
        "<f8" | "=f8" => Dtype::F64,
        other => {
            return Err(format!(
                "the array holds `{other}`; expected little-endian float32, float16 or float64 (`<f4`, `<f2`, `<f8`): convert with `a.astype(np.float32)`"
            ))
        }
    };
    if value_of("fortran_order")?.starts_with("True") {
        return Err(
            "the array is in Fortran order; save it with `np.save(path, np.ascontiguousarray(a))`"
                .into(),
        );
    }
    let shape = value_of("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("`shape` is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| format!("`shape` holds `{s}`, not a size"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        let (d, s) =
            parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (5000, 2048), }")
                .unwrap();
        assert_eq!((d, s), (Dtype::F32, vec![5000, 2048]));
        let (d, s) =
            parse_header("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 36, 8), }")
                .unwrap();
        assert_eq!((d, s), (Dtype::F16, vec![3, 36, 8]));
        assert!(
            parse_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3, 4), }")
                .unwrap_err()
                .contains("`<i8`")
        );
        assert!(
            parse_header("{'descr': '>f4', 'fortran_order': False, 'shape': (3, 4), }").is_err()
        );
        assert!(
            parse_header("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }")
                .unwrap_err()
                .contains("Fortran")
        );
    }
}
