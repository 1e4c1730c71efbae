//! Reading constant values out of the graph: initializers and `Constant` nodes alike.

use std::borrow::Cow;

use crate::ir::index::GraphIndex;
use crate::ir::{Tensor, ValueId};
use crate::onnx::{TensorProto, attribute_proto::AttributeType};
use crate::tensor::to_f64;

/// The tensor behind `v` if it is constant: an initializer (that is not also a graph input, whose value the
/// caller may override), the output of a `Constant` node, or an `Identity` of either (torch's exporter shares
/// equal parameters that way: every LayerNorm of a freshly initialized model reads one all-ones tensor
/// through its own `Identity`).
/// Initializers are borrowed; only a `Constant` node's attribute is turned into an owned tensor.
pub fn constant<'g>(ix: &GraphIndex<'g>, v: ValueId) -> Option<Cow<'g, Tensor>> {
    let g = ix.graph;
    if let Some(t) = g.initializer(v) {
        return (!g.inputs.contains(&v)).then_some(Cow::Borrowed(t));
    }
    let (node, op) = ix.producer_op(v)?;
    if !op.domain().is_empty() {
        return None;
    }
    if op.op_type() == "Identity" {
        return constant(ix, ix.inputs(node).first().copied().flatten()?);
    }
    if op.op_type() == "Cast" {
        return widened_float(ix, node, op);
    }
    if op.op_type() == "DequantizeLinear" {
        return dequantized(ix, node, op).map(Cow::Owned);
    }
    if op.op_type() != "Constant" {
        return None;
    }
    let attr = op.proto.attribute.first()?;
    let proto = match (attr.name(), attr.r#type()) {
        ("value", AttributeType::Tensor) => attr.t.clone()?,
        ("value_float", _) => f32_proto(&[attr.f()], vec![]),
        ("value_floats", _) => f32_proto(&attr.floats, vec![attr.floats.len() as i64]),
        ("value_int", _) => i64_proto(&[attr.i()], vec![]),
        ("value_ints", _) => i64_proto(&attr.ints, vec![attr.ints.len() as i64]),
        _ => return None,
    };
    Some(Cow::Owned(Tensor {
        proto,
        external: None,
    }))
}

/// `DequantizeLinear` of constants: `(x − zero_point) · scale`, per tensor or per axis, as float32 (QDQ models
/// store weights, norm scales and even ε this way). Blocked quantization (`block_size`) is not read.
fn dequantized(
    ix: &GraphIndex,
    node: petgraph::stable_graph::NodeIndex,
    op: &crate::ir::Op,
) -> Option<Tensor> {
    if op.attribute("block_size").is_some_and(|a| a.i() != 0) {
        return None;
    }
    let inputs = ix.inputs(node);
    let input = |slot: usize| inputs.get(slot).copied().flatten();
    let x = constant(ix, input(0)?)?;
    let values = to_f64(&x).ok()?;
    let scale = to_f64(&*constant(ix, input(1)?)?).ok()?;
    let zero = match input(2) {
        Some(z) => to_f64(&*constant(ix, z)?).ok()?,
        None => vec![0.0],
    };
    let dims = x.dims().to_vec();
    // Per tensor: one scale. Per axis: one per index along `axis` (default 1).
    let per = |i: usize, table: &[f64]| -> Option<f64> {
        if table.len() == 1 {
            return table.first().copied();
        }
        let rank = dims.len() as i64;
        let axis = op.attribute("axis").map_or(1, |a| a.i());
        let axis = if axis < 0 { axis + rank } else { axis };
        let axis = usize::try_from(axis).ok().filter(|&a| a < dims.len())?;
        let inner = dims[axis + 1..]
            .iter()
            .try_fold(1i64, |a, &d| a.checked_mul(d))?;
        let index = (i as i64 / inner.max(1)) % dims[axis].max(1);
        table.get(index as usize).copied()
    };
    let out: Option<Vec<f64>> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| Some((v - per(i, &zero)?) * per(i, &scale)?))
        .collect();
    let proto = crate::onnx::build::float_tensor(1, dims, &out?)?;
    Some(Tensor {
        proto,
        external: None,
    })
}

/// A `Cast` of a float constant to a float type at least as wide keeps every value: for analysis it is that
/// constant (fp16 models cast their norms' scale and shift to float32 for the statistics' type). The tensor
/// keeps its own type; [`widening_cast_source`] says which constant it is.
fn widened_float<'g>(
    ix: &GraphIndex<'g>,
    node: petgraph::stable_graph::NodeIndex,
    op: &crate::ir::Op,
) -> Option<Cow<'g, Tensor>> {
    // A type number past i32 names no type (and must not wrap into one).
    let to = i32::try_from(op.attribute("to")?.i()).ok()?;
    let t = constant(ix, ix.inputs(node).first().copied().flatten()?)?;
    let (from, to) = (float_width(t.elem_type())?, float_width(to)?);
    (from.0 <= to.0 && from.1 <= to.1).then_some(t)
}

/// The constant a widening float `Cast` reads, when `v` is one's output.
pub fn widening_cast_source(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let (node, op) = ix.producer_op(v)?;
    if op.op_type() != "Cast" || !op.domain().is_empty() {
        return None;
    }
    widened_float(ix, node, op)?;
    ix.inputs(node).first().copied().flatten()
}

/// Bits of mantissa and exponent a float type holds, ordered so that a conversion to a type that is at least
/// as wide in both keeps every value (float16 and bfloat16 are not ordered: each holds values the other
/// cannot).
fn float_width(elem_type: i32) -> Option<(u8, u8)> {
    use crate::onnx::tensor_proto::DataType;
    match DataType::try_from(elem_type).ok()? {
        DataType::Float16 => Some((10, 5)),
        DataType::Bfloat16 => Some((7, 8)),
        DataType::Float => Some((23, 8)),
        DataType::Double => Some((52, 11)),
        _ => None,
    }
}

fn f32_proto(values: &[f32], dims: Vec<i64>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(1),
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn i64_proto(values: &[i64], dims: Vec<i64>) -> TensorProto {
    TensorProto {
        dims,
        data_type: Some(7),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// The single number a constant holds (any rank, one element), e.g. an ε or the exponent of `Pow(x, 2)`. A
/// float number given the type of another value (`CastLike(ε, x)`, as onnxscript writes a norm's ε) is that
/// number: as a real number it does not change, whatever float type it takes.
pub fn scalar(ix: &GraphIndex, v: ValueId) -> Option<f64> {
    let (v, cast_like) = match ix.produced_by(v, "CastLike") {
        Some((n, _)) => (ix.inputs(n).first().copied().flatten()?, true),
        None => (v, false),
    };
    let t = constant(ix, v)?;
    if t.elem_count() != 1 || cast_like && float_width(t.elem_type()).is_none() {
        return None;
    }
    to_f64(&t).ok()?.first().copied()
}

/// The integers of a constant (e.g. the `axes` input of `ReduceMean` at opset 18).
pub fn integers(ix: &GraphIndex, v: ValueId) -> Option<Vec<i64>> {
    let t = constant(ix, v)?;
    Some(to_f64(&t).ok()?.into_iter().map(|x| x as i64).collect())
}
