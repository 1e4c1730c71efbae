//! Reading the numbers inside a `TensorProto`, whichever of its storage fields holds them.
//!
//! ONNX stores tensor data either as little-endian `raw_data` (or an external file, same layout) or in a typed
//! field: `float_data`, `int32_data` (which also carries f16/bf16 bits, bools and small integers), `int64_data`,
//! `double_data`, `uint64_data`. A declared shape that disagrees with the data length is an error, never a
//! silent truncation.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::onnx::tensor_proto::DataType;
use crate::onnx::{TensorProto, elem_size, elem_type_name};

/// An initializer: the `TensorProto` as read, and its data when it lives in an external file (already
/// mapped into memory; the proto keeps its `external_data` entries).
#[derive(Debug, Clone)]
pub struct Tensor {
    pub proto: TensorProto,
    pub external: Option<Bytes>,
}

impl Tensor {
    /// The raw little-endian bytes of the tensor, where the data is stored that way (inline `raw_data` or an
    /// external file). Typed fields (`float_data`, ...) have no raw form: `None`.
    pub fn raw_bytes(&self) -> Option<&Bytes> {
        self.external.as_ref().or(self.proto.raw_data.as_ref())
    }

    pub fn dims(&self) -> &[i64] {
        &self.proto.dims
    }

    pub fn elem_type(&self) -> i32 {
        self.proto.data_type()
    }

    /// Number of elements, saturating: a malformed file may declare dims whose product overflows.
    pub fn elem_count(&self) -> u64 {
        self.proto
            .dims
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d.max(0) as u64))
    }

    /// Bytes of payload: raw or external data, or the typed fields' size.
    pub fn byte_len(&self) -> u64 {
        if let Some(raw) = self.raw_bytes() {
            return raw.len() as u64;
        }
        let p = &self.proto;
        (p.float_data.len() * 4
            + p.int32_data.len() * 4
            + p.int64_data.len() * 8
            + p.double_data.len() * 8
            + p.uint64_data.len() * 8
            + p.string_data.iter().map(|s| s.len()).sum::<usize>()) as u64
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("tensor `{name}`: shape {dims:?} needs {expected} elements but the data holds {found}")]
    LengthMismatch {
        name: String,
        dims: Vec<i64>,
        expected: u64,
        found: u64,
    },
    #[error(
        "tensor `{name}`: shape {dims:?} needs {expected} bytes of raw data but {found} are stored"
    )]
    RawLengthMismatch {
        name: String,
        dims: Vec<i64>,
        expected: u64,
        found: u64,
    },
    #[error("tensor `{name}`: dimension {dim} is negative or the element count overflows")]
    BadDims { name: String, dim: i64 },
    #[error("tensor `{name}`: element type {ty} cannot be read as numbers here")]
    UnsupportedType { name: String, ty: &'static str },
}

/// The element count a tensor's dims declare, refusing negative dims and overflow.
pub fn declared_count(proto: &TensorProto) -> Result<u64, TensorError> {
    proto.dims.iter().try_fold(1u64, |acc, &d| {
        if d < 0 {
            return Err(TensorError::BadDims {
                name: proto.name().into(),
                dim: d,
            });
        }
        acc.checked_mul(d as u64).ok_or(TensorError::BadDims {
            name: proto.name().into(),
            dim: d,
        })
    })
}

/// Elements stored in the typed fields (not raw data), by the field the element type uses.
fn typed_count(t: &Tensor) -> Option<u64> {
    let p = &t.proto;
    let count = match DataType::try_from(p.data_type()).ok()? {
        DataType::Float => p.float_data.len(),
        DataType::Double => p.double_data.len(),
        DataType::Int64 => p.int64_data.len(),
        DataType::Uint64 | DataType::Uint32 => p.uint64_data.len(),
        DataType::String => p.string_data.len(),
        DataType::Complex64 => p.float_data.len() / 2,
        DataType::Complex128 => p.double_data.len() / 2,
        _ => p.int32_data.len(),
    };
    Some(count as u64)
}

/// Elements per byte of the sub-byte types whose raw form packs them whole into bytes (4 and 2 bits).
fn packed_per_byte(elem_type: i32) -> Option<u64> {
    match DataType::try_from(elem_type).ok()? {
        DataType::Int4 | DataType::Uint4 | DataType::Float4e2m1 => Some(2),
        DataType::Int2 | DataType::Uint2 => Some(4),
        _ => None,
    }
}

/// Checks that the data a tensor holds matches its declared shape (a tensor of 4- or 2-bit elements too: a file
/// may claim 2^62 of them and hold one byte). Tensors whose data cannot be counted here (6-bit types in raw form)
/// pass.
pub fn check_length(t: &Tensor) -> Result<(), TensorError> {
    let expected = declared_count(&t.proto)?;
    if let Some(raw) = t.raw_bytes() {
        let expected_bytes = match (elem_size(t.elem_type()), packed_per_byte(t.elem_type())) {
            (Some(size), _) => expected.saturating_mul(size as u64),
            (None, Some(per_byte)) => expected.div_ceil(per_byte),
            (None, None) => return Ok(()),
        };
        if raw.len() as u64 != expected_bytes {
            return Err(TensorError::RawLengthMismatch {
                name: t.proto.name().into(),
                dims: t.proto.dims.clone(),
                expected: expected_bytes,
                found: raw.len() as u64,
            });
        }
        return Ok(());
    }
    match typed_count(t) {
        Some(found) if found != expected => Err(TensorError::LengthMismatch {
            name: t.proto.name().into(),
            dims: t.proto.dims.clone(),
            expected,
            found,
        }),
        _ => Ok(()),
    }
}

fn unsupported(t: &Tensor) -> TensorError {
    TensorError::UnsupportedType {
        name: t.proto.name().into(),
        ty: elem_type_name(t.elem_type()),
    }
}

/// The tensor's values as f64 (exact for every float type up to f64 and integers up to 2^53).
/// The row-major transpose of `values` laid out as `rows` rows: `[rows, cols]` becomes `[cols, rows]`.
pub fn transpose(values: &[f64], rows: usize) -> Vec<f64> {
    let cols = values.len() / rows.max(1);
    (0..cols * rows)
        .map(|i| values[(i % rows) * cols + i / rows])
        .collect()
}

pub fn to_f64(t: &Tensor) -> Result<Vec<f64>, TensorError> {
    check_length(t)?;
    let p = &t.proto;
    let ty = DataType::try_from(p.data_type()).map_err(|_| unsupported(t))?;
    if let Some(raw) = t.raw_bytes() {
        let raw: &[u8] = raw;
        return Ok(match ty {
            DataType::Float => chunks::<4>(raw)
                .map(|b| f32::from_le_bytes(b) as f64)
                .collect(),
            DataType::Double => chunks::<8>(raw).map(f64::from_le_bytes).collect(),
            DataType::Float16 => chunks::<2>(raw)
                .map(|b| half::f16::from_le_bytes(b).to_f64())
                .collect(),
            DataType::Bfloat16 => chunks::<2>(raw)
                .map(|b| half::bf16::from_le_bytes(b).to_f64())
                .collect(),
            DataType::Int64 => chunks::<8>(raw)
                .map(|b| i64::from_le_bytes(b) as f64)
                .collect(),
            DataType::Uint64 => chunks::<8>(raw)
                .map(|b| u64::from_le_bytes(b) as f64)
                .collect(),
            DataType::Int32 => chunks::<4>(raw)
                .map(|b| i32::from_le_bytes(b) as f64)
                .collect(),
            DataType::Uint32 => chunks::<4>(raw)
                .map(|b| u32::from_le_bytes(b) as f64)
                .collect(),
            DataType::Int16 => chunks::<2>(raw)
                .map(|b| i16::from_le_bytes(b) as f64)
                .collect(),
            DataType::Uint16 => chunks::<2>(raw)
                .map(|b| u16::from_le_bytes(b) as f64)
                .collect(),
            DataType::Int8 => raw.iter().map(|&b| b as i8 as f64).collect(),
            DataType::Uint8 | DataType::Bool => raw.iter().map(|&b| b as f64).collect(),
            _ => return Err(unsupported(t)),
        });
    }
    Ok(match ty {
        DataType::Float => p.float_data.iter().map(|&v| v as f64).collect(),
        DataType::Double => p.double_data.clone(),
        DataType::Int64 => p.int64_data.iter().map(|&v| v as f64).collect(),
        DataType::Uint64 | DataType::Uint32 => p.uint64_data.iter().map(|&v| v as f64).collect(),
        DataType::Float16 => p
            .int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16).to_f64())
            .collect(),
        DataType::Bfloat16 => p
            .int32_data
            .iter()
            .map(|&v| half::bf16::from_bits(v as u16).to_f64())
            .collect(),
        DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::Uint16
        | DataType::Uint8
        | DataType::Bool => p.int32_data.iter().map(|&v| v as f64).collect(),
        _ => return Err(unsupported(t)),
    })
}

fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// A short content hash of the tensor's payload (type, shape and data), for summaries and snapshot tests.
pub fn content_hash(t: &Tensor) -> String {
    let mut h = Sha256::new();
    h.update(t.elem_type().to_le_bytes());
    for d in &t.proto.dims {
        h.update(d.to_le_bytes());
    }
    match t.raw_bytes() {
        Some(raw) => h.update(raw),
        None => {
            let p = &t.proto;
            p.float_data.iter().for_each(|v| h.update(v.to_le_bytes()));
            p.int32_data.iter().for_each(|v| h.update(v.to_le_bytes()));
            p.int64_data.iter().for_each(|v| h.update(v.to_le_bytes()));
            p.double_data.iter().for_each(|v| h.update(v.to_le_bytes()));
            p.uint64_data.iter().for_each(|v| h.update(v.to_le_bytes()));
            p.string_data.iter().for_each(|v| h.update(v));
        }
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `f32[64, 64] #1a2b3c4d5e6f`, or for at most `inline` elements the values themselves: `f32[] 1e-5`.
pub fn summary(t: &Tensor, inline: usize) -> String {
    let dims: Vec<String> = t.dims().iter().map(ToString::to_string).collect();
    let head = format!("{}[{}]", elem_type_name(t.elem_type()), dims.join(", "));
    if t.elem_count() as usize <= inline
        && let Ok(values) = to_f64(t)
    {
        let shown: Vec<String> = values.iter().map(|v| format_number(*v)).collect();
        return if t.dims().is_empty() {
            format!("{head} {}", shown.join(""))
        } else {
            format!("{head} [{}]", shown.join(", "))
        };
    }
    format!("{head} #{}", content_hash(t))
}

/// Numbers in their shortest round-trip form, via f32 when exact in f32 (so `1e-5` stays `1e-5`).
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let as_f32 = v as f32;
    if as_f32 as f64 == v {
        format!("{as_f32:?}")
    } else {
        format!("{v:?}")
    }
}
