//! `unfuse-norms` — fused norms back to primitive ops, for runtimes that lack the fused ones.
//!
//! * Pattern: `LayerNormalization`, `RMSNormalization`, and onnxruntime's `com.microsoft`
//!   `SimplifiedLayerNormalization`, `SkipLayerNormalization`, `SkipSimplifiedLayerNormalization`.
//! * Replacement, with ops valid at the model's opset (`ReduceMean` axes as an attribute below 18, as an input
//!   from 18):
//!
//!   ```text
//!   [s = Add(x, skip) (+ bias)]                                   Skip* ops; s takes the op's sum output
//!   LayerNorm  m = ReduceMean(x)  d = Sub(x, m)  v = ReduceMean(Mul(d, d))  y = Div(d, Sqrt(Add(v, ε)))·γ + β
//!   RMSNorm                                       v = ReduceMean(Mul(x, x))  y = Div(x, Sqrt(Add(v, ε)))·γ
//!   ```
//!
//!   computed in float32 with Casts around it when the input is another float type (the fused ops' default
//!   `stash_type = 1`). This is the form `fuse-layernorm` / `fuse-rmsnorm` recognise, so unfusing then fusing
//!   gives the fused model back.
//! * Preconditions: the mean / inverse-deviation outputs are unused; the first normalized axis names a
//!   dimension of the input — `-1`, or any axis within the input's rank when that is known. Other norms are left
//!   alone with a note.
//! * Exact: yes, up to float rounding.

use petgraph::stable_graph::NodeIndex;

use super::{Pass, PassClass, PassContext, PassError};
use crate::analysis::facts::Facts;
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueRef};
use crate::onnx::build::{attr_int, attr_ints, float_tensor, i64_tensor, node};
use crate::onnx::tensor_proto::DataType;

pub struct UnfuseNorms;

impl Pass for UnfuseNorms {
    fn name(&self) -> &'static str {
        "unfuse-norms"
    }
    fn description(&self) -> &'static str {
        "fused norms (LayerNormalization, RMSNormalization, com.microsoft *LayerNormalization) -> primitive ops"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        let ix = GraphIndex::new(&model.graph);
        let facts = Facts::infer(&ix);
        let opset = model.opset_version("").unwrap_or(1);
        let mut patch = Patch::new();
        for &n in ix.ops() {
            let Some(shape) = FusedShape::of(&ix, n) else {
                continue;
            };
            let mut site = Patch::new();
            let unfuse = Unfuse {
                ix: &ix,
                facts: &facts,
                opset,
                node: n,
                shape,
            };
            match unfuse.plan(&mut site) {
                Ok(()) => patch.merge(site),
                Err(reason) => patch.note(format!(
                    "left `{}` alone: {reason}",
                    model.graph.node_label(n)
                )),
            }
        }
        Ok(patch)
    }
}

/// Where a fused op keeps its operands.
#[derive(Clone, Copy)]
struct FusedShape {
    rms: bool,
    skip: Option<usize>,
    scale: usize,
    shift: Option<usize>,
    /// Input slot of a Skip op's bias.
    bias: Option<usize>,
    /// Output slot of a Skip op's sum.
    sum: Option<usize>,
}

impl FusedShape {
    fn of(ix: &GraphIndex, n: NodeIndex) -> Option<FusedShape> {
        let op = ix.graph.graph[n].op()?;
        let plain = |rms| FusedShape {
            rms,
            skip: None,
            scale: 1,
            shift: (!rms).then_some(2),
            bias: None,
            sum: None,
        };
        Some(match (op.domain(), op.op_type()) {
            ("", "LayerNormalization") => plain(false),
            ("", "RMSNormalization") | ("com.microsoft", "SimplifiedLayerNormalization") => {
                plain(true)
            }
            ("com.microsoft", "SkipLayerNormalization") => FusedShape {
                rms: false,
                skip: Some(1),
                scale: 2,
                shift: Some(3),
                bias: Some(4),
                sum: Some(3),
            },
            ("com.microsoft", "SkipSimplifiedLayerNormalization") => FusedShape {
                rms: true,
                skip: Some(1),
                scale: 2,
                shift: None,
                bias: Some(3),
                sum: Some(3),
            },
            _ => return None,
        })
    }
}

struct Unfuse<'a, 'g> {
    ix: &'a GraphIndex<'g>,
    facts: &'a Facts,
    opset: i64,
    node: NodeIndex,
    shape: FusedShape,
}

impl Unfuse<'_, '_> {
    fn plan(&self, patch: &mut Patch) -> Result<(), String> {
        let ix = self.ix;
        let n = self.node;
        let op = ix.graph.graph[n].op().ok_or("not an op")?;
        let inputs = ix.inputs(n);
        let input = |slot: Option<usize>| slot.and_then(|s| inputs.get(s).copied().flatten());
        let outputs = &ix.graph.graph[n].outputs;
        let y = outputs
            .first()
            .copied()
            .flatten()
            .ok_or("its result is unnamed")?;
        let sum_out = self
            .shape
            .sum
            .and_then(|s| outputs.get(s).copied().flatten());
        let statistics_used = outputs
            .iter()
            .enumerate()
            .filter(|(slot, _)| *slot != 0 && Some(*slot) != self.shape.sum)
            .any(|(_, v)| v.is_some_and(|v| ix.use_count(v) > 0));
        if statistics_used {
            return Err("its mean or inverse standard deviation output is used".into());
        }
        let x0 = input(Some(0)).ok_or("its input is empty")?;
        let scale = input(Some(self.shape.scale));
        let shift = input(self.shape.shift);
        let attr_i = |name: &str, default: i64| op.attribute(name).map_or(default, |a| a.i());
        let epsilon = op.attribute("epsilon").map_or(1e-5, |a| a.f()) as f64;
        let axis = attr_i("axis", -1);
        let rank = self.facts.rank(x0);
        // The axis must name a dimension of the input: from the back, -1 needs no rank; anything else does.
        let first_axis = match (axis, rank) {
            (-1, _) => -1,
            (a, Some(r)) if -(r as i64) <= a && a < 0 => a,
            (a, Some(r)) if a >= 0 && (a as usize) < r => a - r as i64,
            (a, Some(r)) => return Err(format!("its axis {a} is outside the input's rank {r}")),
            (a, None) => {
                return Err(format!(
                    "its axis is {a} and the input's rank is unknown, so the axes to reduce are not known"
                ));
            }
        };
        let axes: Vec<i64> = (first_axis..0).collect();
        let x_type = self.facts.elem_type(x0);
        // The fused ops compute statistics in float32 by default (`stash_type = 1`).
        let stash_f32 = attr_i("stash_type", 1) == 1;
        let float = DataType::Float as i32;
        let stat_type = if stash_f32 {
            float
        } else {
            x_type.unwrap_or(float)
        };
        let cast_needed = x_type.is_some_and(|t| t != stat_type);
        if x_type.is_none() {
            // ε must have the statistics' type; guessing float32 for an fp16 input would make an invalid graph.
            return Err("its input's element type is neither declared nor derivable".into());
        }

        let out_name = ix.graph.value(y).name.clone();
        let name = |what: &str| format!("{out_name}/{what}");
        let mut b = Builder {
            patch,
            anchor: n,
            opset: self.opset,
        };
        let mut x: ValueRef = x0.into();
        if let Some(skip) = input(self.shape.skip) {
            let sum: ValueRef = match (sum_out, input(self.shape.bias)) {
                (Some(s), None) => s.into(),
                _ => b.patch.value(name("sum")),
            };
            b.op("Add", name("Add"), vec![], vec![x, skip.into()], sum);
            x = sum;
            if let Some(bias) = input(self.shape.bias) {
                let biased: ValueRef = match sum_out {
                    Some(s) => s.into(),
                    None => b.patch.value(name("biased")),
                };
                b.op("Add", name("AddBias"), vec![], vec![x, bias.into()], biased);
                x = biased;
            }
        }
        if cast_needed {
            x = b.value_op(
                "Cast",
                name("Cast"),
                vec![attr_int("to", stat_type as i64)],
                vec![x],
            );
        }
        let centred = if self.shape.rms {
            x
        } else {
            let mean = b.reduce_mean(name("ReduceMean"), x, &axes);
            b.value_op("Sub", name("Sub"), vec![], vec![x, mean])
        };
        let square = b.value_op("Mul", name("Square"), vec![], vec![centred, centred]);
        let variance = b.reduce_mean(name("ReduceMeanSquare"), square, &axes);
        let eps =
            float_tensor(stat_type, vec![], &[epsilon]).ok_or("its type is not a float type")?;
        let eps = b.patch.initializer(name("epsilon"), eps);
        let shifted = b.value_op("Add", name("AddEpsilon"), vec![], vec![variance, eps]);
        let root = b.value_op("Sqrt", name("Sqrt"), vec![], vec![shifted]);
        let mut result = b.value_op("Div", name("Div"), vec![], vec![centred, root]);
        if cast_needed && let Some(t) = x_type {
            result = b.value_op(
                "Cast",
                name("CastBack"),
                vec![attr_int("to", t as i64)],
                vec![result],
            );
        }
        let last = match (scale.is_some(), shift.is_some()) {
            (true, true) => 2,
            (true, false) | (false, true) => 1,
            (false, false) => 0,
        };
        let mut steps = 0;
        let mut finish = |b: &mut Builder, op_type: &str, operand: crate::ir::ValueId| {
            steps += 1;
            let out: ValueRef = if steps == last {
                y.into()
            } else {
                b.patch.value(name(op_type))
            };
            b.op(
                op_type,
                name(op_type),
                vec![],
                vec![result, operand.into()],
                out,
            );
            result = out;
        };
        if let Some(s) = scale {
            finish(&mut b, "Mul", s);
        }
        if let Some(s) = shift {
            finish(&mut b, "Add", s);
        }
        if last == 0 {
            b.op("Identity", name("Identity"), vec![], vec![result], y.into());
        }
        b.patch.remove(n);
        b.patch.sites = 1;
        Ok(())
    }
}

/// Adds ops one after another at the fused node's place.
struct Builder<'p> {
    patch: &'p mut Patch,
    anchor: NodeIndex,
    opset: i64,
}

impl Builder<'_> {
    fn op(
        &mut self,
        op_type: &str,
        name: String,
        attrs: Vec<crate::onnx::AttributeProto>,
        inputs: Vec<ValueRef>,
        out: ValueRef,
    ) {
        self.patch.add_node(
            node(op_type, "", name, attrs),
            inputs.into_iter().map(Some).collect(),
            vec![Some(out)],
            self.anchor,
        );
    }

    fn value_op(
        &mut self,
        op_type: &str,
        name: String,
        attrs: Vec<crate::onnx::AttributeProto>,
        inputs: Vec<ValueRef>,
    ) -> ValueRef {
        let out = self.patch.value(name.clone());
        self.op(op_type, name, attrs, inputs, out);
        out
    }

    /// `ReduceMean(x)` over `axes` with keepdims, in the spelling of the model's opset.
    fn reduce_mean(&mut self, name: String, x: ValueRef, axes: &[i64]) -> ValueRef {
        if self.opset >= 18 {
            let axes = self.patch.initializer(
                format!("{name}_axes"),
                i64_tensor(vec![axes.len() as i64], axes),
            );
            self.value_op("ReduceMean", name, vec![], vec![x, axes])
        } else {
            self.value_op(
                "ReduceMean",
                name,
                vec![attr_ints("axes", axes.to_vec())],
                vec![x],
            )
        }
    }
}
