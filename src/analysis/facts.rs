//! Element types and ranks of values, where the file declares them or a common op determines them.
//!
//! One forward walk in export order: a declared type wins; otherwise an op on the list below derives its
//! result from its operands; any other op leaves its results unknown. Rewrites use these facts to decide
//! whether a `Cast` changes anything and whether a fused op's rank limits hold; "unknown" always means "do
//! not rely on it".

use petgraph::stable_graph::NodeIndex;

use super::constants::{constant, integers};
use crate::ir::index::GraphIndex;
use crate::ir::{Op, ValueId};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::tensor_type;

/// Ops whose result has the element type and the rank of their first operand.
const UNARY_LIKE: &[&str] = &[
    "Abs",
    "Attention",
    "AveragePool",
    "BatchNormalization",
    "BiasGelu",
    "Ceil",
    "Clip",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Cos",
    "CumSum",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "FastGelu",
    "Floor",
    "Gelu",
    "GroupQueryAttention",
    "HardSigmoid",
    "GroupNormalization",
    "Identity",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "MatMulNBits",
    "MaxPool",
    "MultiHeadAttention",
    "Neg",
    "Pad",
    "RMSNormalization",
    "QuickGelu",
    "Reciprocal",
    "Relu",
    "RotaryEmbedding",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization",
    "Slice",
    "Softmax",
    "Softplus",
    "Split",
    "Sqrt",
    "Tanh",
    "Tile",
    "Transpose",
    "Trilu",
];

/// Elementwise ops with broadcasting: the first operand's element type, the largest operand rank.
const BROADCAST: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where",
];

/// Ops with their first operand's element type whose rank is derived case by case (or not at all).
const SAME_TYPE_OTHER_RANK: &[&str] = &[
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "Gemm",
    "MatMul",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
];

fn keeps_type(op_type: &str) -> bool {
    [UNARY_LIKE, BROADCAST, SAME_TYPE_OTHER_RANK]
        .iter()
        .any(|list| list.contains(&op_type))
}

/// Ops whose result has the size of their first operand's last axis (elementwise ops, norms, softmax).
const KEEPS_LAST_AXIS: &[&str] = &[
    "Abs",
    "BiasGelu",
    "Cast",
    "CastLike",
    "Ceil",
    "Clip",
    "Cos",
    "DequantizeLinear",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "FastGelu",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "Neg",
    "QuantizeLinear",
    "QuickGelu",
    "Reciprocal",
    "Relu",
    "RMSNormalization",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "SimplifiedLayerNormalization",
    "Sin",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Softmax",
    "Softplus",
    "Sqrt",
    "Tanh",
];

pub struct Facts {
    elem: Vec<Option<i32>>,
    rank: Vec<Option<usize>>,
    /// The size of the last axis, where the file declares it or the weights that make or read the value fix it
    /// (the hidden size of a stream whose shapes no file declares).
    last: Vec<Option<i64>>,
}

impl Facts {
    pub fn infer(ix: &GraphIndex) -> Facts {
        let g = ix.graph;
        let mut facts = Facts {
            elem: vec![None; g.values.len()],
            rank: vec![None; g.values.len()],
            last: vec![None; g.values.len()],
        };
        for (i, value) in g.values.iter().enumerate() {
            if let Some((elem, shape)) = value.ty().and_then(tensor_type) {
                facts.elem[i] = (elem != 0).then_some(elem);
                facts.last[i] = shape.as_ref().and_then(|s| match s.last() {
                    Some(crate::onnx::Dim::Fixed(n)) if *n > 0 => Some(*n),
                    _ => None,
                });
                facts.rank[i] = shape.map(|s| s.len());
            }
        }
        for (&v, t) in &g.tensors {
            facts.elem[v.0 as usize] = Some(t.elem_type());
            facts.rank[v.0 as usize] = Some(t.dims().len());
            facts.last[v.0 as usize] = t.dims().last().copied();
        }
        for &n in ix.ops() {
            facts.derive(ix, n);
        }
        facts
    }

    pub fn elem_type(&self, v: ValueId) -> Option<i32> {
        self.elem.get(v.0 as usize).copied().flatten()
    }

    pub fn rank(&self, v: ValueId) -> Option<usize> {
        self.rank.get(v.0 as usize).copied().flatten()
    }

    /// The size of `v`'s last axis, when it is known.
    pub fn last_dim(&self, v: ValueId) -> Option<i64> {
        self.last.get(v.0 as usize).copied().flatten()
    }

    fn derive_last(&self, ix: &GraphIndex, op: &Op, inputs: &[Option<ValueId>]) -> Option<i64> {
        let input = |i: usize| inputs.get(i).copied().flatten();
        let last_of = |i: usize| input(i).and_then(|v| self.last_dim(v));
        let ty = op.op_type();
        match ty {
            _ if KEEPS_LAST_AXIS.contains(&ty) => last_of(0),
            // Broadcasting: an operand whose last axis is more than 1 fixes the result's; else all must be known.
            _ if BROADCAST.contains(&ty) => {
                let known: Vec<Option<i64>> = (0..inputs.len()).map(last_of).collect();
                known
                    .iter()
                    .flatten()
                    .copied()
                    .find(|&n| n > 1)
                    .or_else(|| {
                        known
                            .iter()
                            .copied()
                            .collect::<Option<Vec<i64>>>()?
                            .into_iter()
                            .max()
                    })
            }
            "MatMul" if self.rank(input(1)?).is_some_and(|r| r >= 2) => last_of(1),
            "Gemm" => {
                let b = constant(ix, input(1)?)?;
                let trans_b = op.attribute("transB").is_some_and(|a| a.i() != 0);
                let dims = b.dims();
                (dims.len() == 2).then(|| dims[usize::from(!trans_b)])
            }
            "Gather" if op.attribute("axis").is_none_or(|a| a.i() == 0) => {
                self.rank(input(0)?).filter(|&r| r >= 2).and(last_of(0))
            }
            "Reshape" => integers(ix, input(1)?)?.last().copied().filter(|&n| n > 0),
            _ => None,
        }
    }

    fn derive(&mut self, ix: &GraphIndex, n: NodeIndex) {
        let Some(op) = ix.graph.graph[n].op() else {
            return;
        };
        let Some(out) = ix.output(n) else { return };
        let slot = out.0 as usize;
        if !op.domain().is_empty() && op.domain() != "com.microsoft" {
            return;
        }
        let inputs = ix.inputs(n);
        let input = |i: usize| inputs.get(i).copied().flatten();
        let elem_of = |i: usize| input(i).and_then(|v| self.elem_type(v));
        let ty = op.op_type();
        if self.elem[slot].is_none() {
            let elem = match ty {
                "Cast" => op.attribute("to").and_then(|a| i32::try_from(a.i()).ok()),
                "CastLike" => elem_of(1),
                // The scale's type (`output_dtype` from opset 21 when it says otherwise).
                "DequantizeLinear" => op
                    .attribute("output_dtype")
                    .and_then(|a| i32::try_from(a.i()).ok())
                    .filter(|&t| t != 0)
                    .or_else(|| elem_of(1)),
                // The zero point's type, uint8 without one.
                "QuantizeLinear" => elem_of(2).or_else(|| {
                    op.attribute("output_dtype")
                        .and_then(|a| i32::try_from(a.i()).ok())
                        .filter(|&t| t != 0)
                        .or(Some(DataType::Uint8 as i32))
                }),
                "Where" => elem_of(1),
                "Shape" | "Size" | "ArgMax" | "ArgMin" | "NonZero" => Some(DataType::Int64 as i32),
                "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And"
                | "Or" | "Xor" | "IsNaN" | "IsInf" => Some(DataType::Bool as i32),
                "Constant" => op
                    .attribute("value")
                    .and_then(|a| a.t.as_ref())
                    .map(|t| t.data_type()),
                _ if keeps_type(ty) => elem_of(0),
                _ => None,
            };
            self.elem[slot] = elem;
        }
        if self.rank[slot].is_none() {
            let rank_of = |i: usize| input(i).and_then(|v| self.rank(v));
            let rank = self.derive_rank(ix, op, inputs, rank_of(0), rank_of(1));
            self.rank[slot] = rank;
        }
        if self.last[slot].is_none() {
            self.last[slot] = self.derive_last(ix, op, inputs);
        }
        // Every piece of a Split has the input's rank and type.
        if ty == "Split" {
            let (elem, rank) = (self.elem[slot], self.rank[slot]);
            for v in ix.graph.graph[n].outputs.iter().skip(1).flatten() {
                let i = v.0 as usize;
                self.elem[i] = self.elem[i].or(elem);
                self.rank[i] = self.rank[i].or(rank);
            }
        }
    }

    /// The length of a 1-D integer tensor computed in the graph (a shape being assembled), where the graph
    /// fixes it: a constant's size, a `Shape`'s input rank, an `Unsqueeze`d scalar, a `Concat` of such.
    fn vector_len(&self, ix: &GraphIndex, v: ValueId, depth: usize) -> Option<usize> {
        if let Some(values) = integers(ix, v) {
            return Some(values.len());
        }
        let (n, op) = ix.producer_op(v)?;
        let inputs = ix.inputs(n);
        let input = |i: usize| inputs.get(i).copied().flatten();
        match op.op_type() {
            "Shape" if op.attribute("start").is_none() && op.attribute("end").is_none() => {
                self.rank(input(0)?)
            }
            "Unsqueeze" if self.rank(input(0)?) == Some(0) => Some(1),
            "Cast" | "Identity" if depth > 0 => self.vector_len(ix, input(0)?, depth - 1),
            // Elementwise on shapes (exporters compute `Where(shape == -1, 1, shape)` and the like): the
            // operands broadcast, so the longest one's length, when every non-scalar operand's is known.
            "Where" | "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Equal" if depth > 0 => {
                inputs
                    .iter()
                    .map(|v| {
                        let v = (*v)?;
                        match self.rank(v) {
                            Some(0) => Some(1),
                            _ => self.vector_len(ix, v, depth - 1),
                        }
                    })
                    .try_fold(0, |acc, len| len.map(|len| acc.max(len)))
            }
            "Concat" if depth > 0 => inputs
                .iter()
                .map(|v| v.and_then(|v| self.vector_len(ix, v, depth - 1)))
                .try_fold(0, |acc, len| len.map(|len| acc + len)),
            // Flattening a vector to one axis keeps its length.
            "Reshape" if depth > 0 && self.vector_len(ix, input(1)?, 0) == Some(1) => {
                self.vector_len(ix, input(0)?, depth - 1)
            }
            // A vector filled to the shape `Shape(y)` of a vector `y` is as long as `y`.
            "ConstantOfShape" if depth > 0 => {
                let (shape, shape_op) = ix.producer_op(input(0)?)?;
                let y = ix.inputs(shape).first().copied().flatten()?;
                let whole =
                    shape_op.attribute("start").is_none() && shape_op.attribute("end").is_none();
                (shape_op.op_type() == "Shape" && whole && self.rank(y) == Some(1))
                    .then(|| self.vector_len(ix, y, depth - 1))
                    .flatten()
            }
            _ => None,
        }
    }

    fn derive_rank(
        &self,
        ix: &GraphIndex,
        op: &Op,
        inputs: &[Option<ValueId>],
        r0: Option<usize>,
        r1: Option<usize>,
    ) -> Option<usize> {
        let ty = op.op_type();
        match ty {
            _ if BROADCAST.contains(&ty) => inputs
                .iter()
                .map(|v| v.and_then(|v| self.rank(v)))
                .try_fold(0, |acc, r| r.map(|r| acc.max(r))),
            // Comparisons and logic broadcast like arithmetic (their element type is bool).
            "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or"
            | "Xor" => Some(r0?.max(r1?)),
            _ if UNARY_LIKE.contains(&ty)
                || matches!(
                    ty,
                    "Cast"
                        | "CastLike"
                        | "Not"
                        | "IsNaN"
                        | "IsInf"
                        | "QuantizeLinear"
                        | "DequantizeLinear"
                ) =>
            {
                r0
            }
            "ConstantOfShape" => self.vector_len(ix, inputs.first().copied().flatten()?, 4),
            "MatMul" => match (r0?, r1?) {
                (1, 1) => Some(0),
                (1, b) => Some(b - 1),
                (a, 1) => Some(a - 1),
                (a, b) => Some(a.max(b)),
            },
            "Gemm" => Some(2),
            "Shape" | "Range" | "NonZero" => Some(1),
            "Size" => Some(0),
            "Constant" => op
                .attribute("value")
                .and_then(|a| a.t.as_ref())
                .map(|t| t.dims.len()),
            "Gather" => Some(r0? + r1? - 1),
            "GatherElements" => r1,
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
                let keep = op.attribute("keepdims").map(|a| a.i()).unwrap_or(1);
                (keep == 1).then_some(r0).flatten()
            }
            "Reshape" => self.vector_len(ix, inputs.get(1).copied().flatten()?, 4),
            "Unsqueeze" | "Squeeze" => {
                let axes = match op.attribute("axes") {
                    Some(a) => a.ints.len(),
                    None => integers(ix, inputs.get(1).copied().flatten()?)?.len(),
                };
                if ty == "Unsqueeze" {
                    Some(r0? + axes)
                } else {
                    r0?.checked_sub(axes)
                }
            }
            "Expand" => Some(r0?.max(self.vector_len(ix, inputs.get(1).copied().flatten()?, 6)?)),
            _ => None,
        }
    }
}

/// A tensor value of element type `elem`, of rank `rank` with unnamed dimensions (rank unknown: `None`).
pub fn declared(name: &str, elem: i32, rank: Option<usize>) -> crate::onnx::ValueInfoProto {
    use crate::onnx::{
        TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    let shape = rank.map(|r| TensorShapeProto {
        dim: vec![tensor_shape_proto::Dimension::default(); r],
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Types the inputs and outputs of `part`, a graph extracted from the one `facts` describe (value ids are
/// shared): each keeps the type declared for it, or gets the element type and rank inferred. Returns the names whose
/// element type or rank is known neither way (the official checker refuses a graph input or output without a
/// shape; runtimes, fed concrete tensors, do not mind).
pub fn declare_interface(facts: &Facts, part: &mut crate::ir::Graph) -> Vec<String> {
    let interface: Vec<ValueId> = part.inputs.iter().chain(&part.outputs).copied().collect();
    let mut untyped = Vec::new();
    for v in interface {
        if part.value(v).ty().is_some() {
            continue;
        }
        let name = part.value(v).name.clone();
        match facts.elem_type(v) {
            Some(elem) => {
                part.value_mut(v).info = Some(declared(&name, elem, facts.rank(v)));
                if facts.rank(v).is_none() {
                    untyped.push(name);
                }
            }
            None => untyped.push(name),
        }
    }
    untyped.dedup();
    untyped
}

/// A typed extract: [`Model::extract`](crate::ir::Model::extract) of the values named, with every input and
/// output typed ([`declare_interface`]), and the names that could not be typed.
pub fn extract_typed(
    model: &crate::ir::Model,
    from: &[String],
    to: &[String],
) -> Result<(crate::ir::Extracted<crate::ir::Model>, Vec<String>), crate::ir::ExtractError> {
    let g = &model.graph;
    let mut part = model.extract(&g.values_named(from)?, &g.values_named(to)?)?;
    let untyped = declare_interface(&Facts::infer(&GraphIndex::new(g)), &mut part.graph.graph);
    Ok((part, untyped))
}
