//! Seeded, valid inputs for a model, derived from its graph.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tract_onnx::prelude::*;

use super::{Named, VerifyError};
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Model, ValueId};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::{Dim, tensor_type};

/// Sizes for symbolic dimensions: by name when given, otherwise `leading` for a leading (batch) axis and `other`
/// for any other (sequence-like) axis: by default 2 and 7, 7 being deliberately not a power of two and not a
/// size the exporter traced with.
#[derive(Debug, Clone)]
pub struct DimSizes {
    pub by_name: HashMap<String, usize>,
    pub leading: usize,
    pub other: usize,
}

impl Default for DimSizes {
    fn default() -> Self {
        DimSizes {
            by_name: HashMap::new(),
            leading: Self::LEADING,
            other: Self::OTHER,
        }
    }
}

impl DimSizes {
    pub const LEADING: usize = 2;
    pub const OTHER: usize = 7;

    fn size(&mut self, dim: &Dim, axis: usize) -> usize {
        let default = if axis == 0 { self.leading } else { self.other };
        match dim {
            Dim::Fixed(n) if *n >= 0 => *n as usize,
            // One size per symbol, so inputs that share `sequence` agree.
            Dim::Symbol(s) => *self.by_name.entry(s.clone()).or_insert(default),
            _ => default,
        }
    }
}

/// Ops that move or reshape integer indices without changing their values.
const INDEX_PRESERVING: &[&str] = &[
    "Cast",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Identity",
    "Expand",
];

/// The smallest row count among the constant tables that `input` indexes through `Gather` (following
/// value-preserving ops), if it indexes any.
pub fn gather_bound(ix: &GraphIndex, input: ValueId) -> Option<i64> {
    let g = ix.graph;
    let mut bound: Option<i64> = None;
    let mut queue = VecDeque::from([input]);
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = queue.pop_front() {
        if !seen.insert(v) {
            continue;
        }
        for &(node, slot) in ix.consumers(v) {
            let Some(op) = g.graph[node].op() else {
                continue;
            };
            match (op.op_type(), slot) {
                ("Gather", InputSlot::Operand(1)) => {
                    let table = ix.inputs(node).first().copied().flatten();
                    let Some(t) = table.and_then(|t| g.initializer(t)) else {
                        continue;
                    };
                    let rank = t.dims().len() as i64;
                    let axis = op.attribute("axis").map(|a| a.i()).unwrap_or(0);
                    let axis = if axis < 0 { axis + rank } else { axis };
                    if let Some(&rows) = usize::try_from(axis).ok().and_then(|a| t.dims().get(a)) {
                        bound = Some(bound.map_or(rows, |b| b.min(rows)));
                    }
                }
                (ty, InputSlot::Operand(0)) if INDEX_PRESERVING.contains(&ty) => {
                    queue.extend(g.graph[node].outputs.iter().flatten().copied());
                }
                _ => {}
            }
        }
    }
    bound
}

/// One input set for `model`, reproducible from `seed`.
pub fn generate_inputs(
    model: &Model,
    seed: u64,
    dims: &mut DimSizes,
) -> Result<Vec<Named>, VerifyError> {
    let g = &model.graph;
    let ix = GraphIndex::new(g);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for id in g.runtime_inputs() {
        let value = g.value(id);
        let no_type =
            || VerifyError::Inputs(format!("input `{}` declares no tensor type", value.name));
        let (elem, shape) = value.ty().and_then(tensor_type).ok_or_else(no_type)?;
        let shape = shape.ok_or_else(|| {
            VerifyError::Inputs(format!(
                "input `{}` has no declared rank; give --inputs",
                value.name
            ))
        })?;
        let shape: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(axis, d)| dims.size(d, axis))
            .collect();
        let len: usize = shape.iter().product();
        let tensor = match DataType::try_from(elem) {
            Ok(DataType::Float) => {
                let v: Vec<f32> = (0..len).map(|_| rng.sample::<f32, _>(StandardNormal)).collect();
                Tensor::from_shape(&shape, &v)
            }
            Ok(DataType::Float16) => {
                let v: Vec<f16> =
                    (0..len).map(|_| f16::from_f32(rng.sample::<f32, _>(StandardNormal))).collect();
                Tensor::from_shape(&shape, &v)
            }
            Ok(DataType::Double) => {
                let v: Vec<f64> = (0..len).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
                Tensor::from_shape(&shape, &v)
            }
            Ok(DataType::Int64) => {
                let v = integer_values(&ix, id, len, &mut rng);
                Tensor::from_shape(&shape, &v)
            }
            Ok(DataType::Int32) => {
                let v: Vec<i32> = integer_values(&ix, id, len, &mut rng).into_iter().map(|x| x as i32).collect();
                Tensor::from_shape(&shape, &v)
            }
            Ok(DataType::Bool) => Tensor::from_shape(&shape, &vec![true; len]),
            _ => {
                return Err(VerifyError::Inputs(format!(
                    "input `{}` has element type {}, for which no inputs can be generated; give --inputs",
                    value.name,
                    crate::onnx::elem_type_name(elem)
                )));
            }
        }
        .map_err(|e| VerifyError::Inputs(format!("input `{}`: {e}", value.name)))?;
        out.push(Named {
            name: value.name.clone(),
            tensor,
        });
    }
    Ok(out)
}

/// Token ids below the indexed table's row count; ones for an integer input that indexes nothing (a mask).
fn integer_values(ix: &GraphIndex, id: ValueId, len: usize, rng: &mut StdRng) -> Vec<i64> {
    match gather_bound(ix, id) {
        Some(rows) if rows > 0 => (0..len).map(|_| rng.random_range(0..rows)).collect(),
        _ => vec![1; len],
    }
}
