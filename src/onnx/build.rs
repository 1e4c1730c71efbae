//! Building the protos that rewrites add: nodes, attributes and small constant tensors.

use bytes::Bytes;

use super::tensor_proto::DataType;
use super::{AttributeProto, NodeProto, TensorProto, attribute_proto::AttributeType};

/// A node with no inputs or outputs listed (the IR wires those) in `domain` (`""`: the default domain).
pub fn node(
    op_type: &str,
    domain: &str,
    name: String,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.into()),
        domain: (!domain.is_empty()).then(|| domain.into()),
        name: Some(name),
        attribute,
        ..Default::default()
    }
}

pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, values: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values,
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// An int64 tensor of the given shape, stored as raw little-endian bytes.
pub fn i64_tensor(dims: Vec<i64>, values: &[i64]) -> TensorProto {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    TensorProto {
        dims,
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// A float tensor of element type `elem_type` (f32, f64, f16 or bf16) holding `values`, rounded to nearest.
/// `None` for any other element type.
pub fn float_tensor(elem_type: i32, dims: Vec<i64>, values: &[f64]) -> Option<TensorProto> {
    let raw: Vec<u8> = match DataType::try_from(elem_type).ok()? {
        DataType::Float => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        DataType::Double => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Float16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f64(v).to_le_bytes())
            .collect(),
        DataType::Bfloat16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f64(v).to_le_bytes())
            .collect(),
        _ => return None,
    };
    Some(TensorProto {
        dims,
        data_type: Some(elem_type),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    })
}

/// Whether an element type is one [`float_tensor`] can write.
pub fn is_float(elem_type: i32) -> bool {
    matches!(
        DataType::try_from(elem_type),
        Ok(DataType::Float | DataType::Double | DataType::Float16 | DataType::Bfloat16)
    )
}
