//! The ONNX protobuf types, generated at build time from the vendored proto2 schema `onnx.proto` beside this
//! file (provenance in `README.md` here), plus the few helpers every other module needs to read them.
//!
//! Byte fields are `bytes::Bytes`: when a model is decoded from a memory map, tensor data is a slice of that
//! map rather than a copy.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

pub mod build;

use tensor_proto::DataType;

/// Short, stable name of an ONNX element type, as used in the text form (`f32`, `i64`, ...).
pub fn elem_type_name(elem_type: i32) -> &'static str {
    match DataType::try_from(elem_type) {
        Ok(DataType::Float) => "f32",
        Ok(DataType::Uint8) => "u8",
        Ok(DataType::Int8) => "i8",
        Ok(DataType::Uint16) => "u16",
        Ok(DataType::Int16) => "i16",
        Ok(DataType::Int32) => "i32",
        Ok(DataType::Int64) => "i64",
        Ok(DataType::String) => "str",
        Ok(DataType::Bool) => "bool",
        Ok(DataType::Float16) => "f16",
        Ok(DataType::Double) => "f64",
        Ok(DataType::Uint32) => "u32",
        Ok(DataType::Uint64) => "u64",
        Ok(DataType::Complex64) => "c64",
        Ok(DataType::Complex128) => "c128",
        Ok(DataType::Bfloat16) => "bf16",
        Ok(DataType::Float8e4m3fn) => "f8e4m3fn",
        Ok(DataType::Float8e4m3fnuz) => "f8e4m3fnuz",
        Ok(DataType::Float8e5m2) => "f8e5m2",
        Ok(DataType::Float8e5m2fnuz) => "f8e5m2fnuz",
        Ok(DataType::Uint4) => "u4",
        Ok(DataType::Int4) => "i4",
        Ok(DataType::Float4e2m1) => "f4e2m1",
        Ok(DataType::Undefined) => "undefined",
        _ => "unknown",
    }
}

/// Size in bytes of one element, for the fixed-size types whose data can be read as raw little-endian bytes.
/// Sub-byte types (int4, float4) and strings have none.
pub fn elem_size(elem_type: i32) -> Option<usize> {
    match DataType::try_from(elem_type).ok()? {
        DataType::Float | DataType::Int32 | DataType::Uint32 => Some(4),
        DataType::Uint8 | DataType::Int8 | DataType::Bool => Some(1),
        DataType::Float8e4m3fn | DataType::Float8e4m3fnuz => Some(1),
        DataType::Float8e5m2 | DataType::Float8e5m2fnuz | DataType::Float8e8m0 => Some(1),
        DataType::Uint16 | DataType::Int16 | DataType::Float16 | DataType::Bfloat16 => Some(2),
        DataType::Int64 | DataType::Uint64 | DataType::Double | DataType::Complex64 => Some(8),
        DataType::Complex128 => Some(16),
        _ => None,
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbol(String),
    Unknown,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The element type and shape a `TypeProto` declares for a dense tensor, if it declares one.
/// `None` for the shape means the rank itself is unknown.
pub fn tensor_type(ty: &TypeProto) -> Option<(i32, Option<Vec<Dim>>)> {
    let Some(type_proto::Value::TensorType(t)) = &ty.value else {
        return None;
    };
    let shape = t.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(tensor_shape_proto::dimension::Value::DimValue(n)) => Dim::Fixed(*n),
                Some(tensor_shape_proto::dimension::Value::DimParam(p)) => Dim::Symbol(p.clone()),
                None => Dim::Unknown,
            })
            .collect()
    });
    Some((t.elem_type.unwrap_or(0), shape))
}

/// `f32[batch, 8, 64]`, `f32[*]` for an unknown rank, `?` for a value with no declared type.
pub fn describe_type(ty: Option<&TypeProto>) -> String {
    let Some(ty) = ty else { return "?".into() };
    match tensor_type(ty) {
        Some((elem, Some(dims))) => {
            let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
            format!("{}[{}]", elem_type_name(elem), dims.join(", "))
        }
        Some((elem, None)) => format!("{}[*]", elem_type_name(elem)),
        None => match &ty.value {
            Some(type_proto::Value::SequenceType(_)) => "sequence".into(),
            Some(type_proto::Value::MapType(_)) => "map".into(),
            Some(type_proto::Value::OptionalType(_)) => "optional".into(),
            Some(type_proto::Value::SparseTensorType(_)) => "sparse".into(),
            Some(type_proto::Value::OpaqueType(_)) => "opaque".into(),
            _ => "?".into(),
        },
    }
}

/// The version of `domain` a model imports; the default domain answers to both `""` and `"ai.onnx"`.
pub fn opset_version(opsets: &[OperatorSetIdProto], domain: &str) -> Option<i64> {
    let is_default = |d: &str| d.is_empty() || d == "ai.onnx";
    opsets
        .iter()
        .find(|o| {
            let d = o.domain.as_deref().unwrap_or("");
            d == domain || (is_default(d) && is_default(domain))
        })
        .and_then(|o| o.version)
}
