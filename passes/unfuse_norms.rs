//! `unfuse-norms` — fused norms back to primitive ops, for runtimes that lack the fused ones.
//!
//! * Pattern: the fused norms of analysis's slot table (`analysis::FusedSlots`): `LayerNormalization`,
//!   `RMSNormalization`, onnxruntime's `SimplifiedLayerNormalization` (any domain), `SkipLayerNormalization`,
//!   `SkipSimplifiedLayerNormalization`; and `EmbedLayerNormalization`, which becomes
//!   `Gather(word, ids) + Gather(position, 0..S or position ids) [+ Gather(segment, segment ids)]`, then the
//!   LayerNorm below (ε 1e-12 unless written), with its mask index as `ReduceSum(Cast(mask == 1))` when read.
//! * Replacement, with ops valid at the model's opset (`ReduceMean` axes as an attribute below 18, as an input
//!   from 18):
//!
//!   ```text
//!   [s = Add(Add(x, bias), skip)]                                 Skip* ops; s takes the op's sum output
//!   LayerNorm  m = ReduceMean(x)  d = Sub(x, m)  v = ReduceMean(Mul(d, d))  y = Div(d, Sqrt(Add(v, ε)))·γ + β
//!   RMSNorm                                       v = ReduceMean(Mul(x, x))  y = Div(x, Sqrt(Add(v, ε)))·γ
//!   ```
//!
//!   computed in float32 when the input is another float type (the fused ops' default `stash_type = 1`): the
//!   input, scale and shift are Cast to float32 and the result Cast back once, after the shift, as onnxruntime
//!   computes float16 and bfloat16 norms. This is the form `fuse-layernorm` / `fuse-rmsnorm` recognise, so
//!   unfusing then fusing gives the fused model back.
//! * Preconditions: the mean / inverse-deviation outputs are unused; the first normalized axis names a
//!   dimension of the input — `-1`, or any axis within the input's rank when that is known. Other norms are left
//!   alone with a note.
//! * Exact: yes, up to float rounding.

use petgraph::stable_graph::NodeIndex;

use super::{Pass, PassClass, PassContext, PassError};
use crate::analysis::facts::Facts;
use crate::analysis::{FusedSlots, NormKind, embed_slots};
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueId, ValueRef};
use crate::onnx::build::{attr_int, attr_ints, float_tensor, i64_tensor, node};
use crate::onnx::tensor_proto::DataType;

pub struct UnfuseNorms;

impl Pass for UnfuseNorms {
    fn name(&self) -> &'static str {
        "unfuse-norms"
    }
    fn description(&self) -> &'static str {
        "fused norms (LayerNormalization, RMSNormalization, onnxruntime's Skip/Simplified/Embed norms) -> primitive ops"
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
            let Some(slots) = ix.graph.graph[n].op().and_then(FusedSlots::of) else {
                continue;
            };
            let mut site = Patch::new();
            let unfuse = Unfuse {
                ix: &ix,
                facts: &facts,
                opset,
                node: n,
                slots,
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

struct Unfuse<'a, 'g> {
    ix: &'a GraphIndex<'g>,
    facts: &'a Facts,
    opset: i64,
    node: NodeIndex,
    slots: &'static FusedSlots,
}

impl Unfuse<'_, '_> {
    fn plan(&self, patch: &mut Patch) -> Result<(), String> {
        let ix = self.ix;
        let n = self.node;
        let op = ix.graph.graph[n].op().ok_or("not an op")?;
        let inputs = ix.inputs(n);
        let input = |slot: Option<usize>| slot.and_then(|s| inputs.get(s).copied().flatten());
        let outputs = &ix.graph.graph[n].outputs;
        let output = |slot: usize| outputs.get(slot).copied().flatten();
        let y = output(0).ok_or("its result is unnamed")?;
        let f = self.slots;
        let statistics_used = f
            .statistics
            .iter()
            .filter_map(|&s| output(s))
            .any(|v| ix.use_count(v) > 0 || ix.is_graph_output(v));
        if statistics_used {
            return Err("its mean or inverse standard deviation output is used".into());
        }
        let sum_out = f.sum.and_then(output);
        let (scale_slot, shift_slot) = (Some(f.scale), f.shift);
        let scale = input(scale_slot);
        let shift = input(shift_slot);
        let attr_i = |name: &str, default: i64| op.attribute(name).map_or(default, |a| a.i());
        let epsilon = op.attribute("epsilon").map_or(f.default_epsilon, |a| a.f()) as f64;
        let out_name = ix.graph.value(y).name.clone();
        let name = |what: &str| format!("{out_name}/{what}");
        let mut b = Builder {
            patch,
            anchor: n,
            opset: self.opset,
        };
        // The tensor to normalize: the op's input, its sum with the skip (and bias), or the embedding sum.
        let (mut x, x0) = if f.embedding {
            let sum = self.embedding_sum(&mut b, sum_out, &name)?;
            let word =
                input(Some(embed_slots::WORD_EMBEDDING)).ok_or("it has no word embedding")?;
            (sum, word)
        } else {
            let x0 = input(Some(0)).ok_or("its input is empty")?;
            let mut x: ValueRef = x0.into();
            if let Some(skip) = input(f.skip) {
                // `input + bias` first, then the skip: the branch's biased output plus the stream, as
                // exporters write a residual unit (and as analysis reads one).
                if let Some(bias) = input(f.bias) {
                    let biased = b.patch.value(name("biased"));
                    b.op("Add", name("BiasAdd"), vec![], vec![x, bias.into()], biased);
                    x = biased;
                }
                let sum: ValueRef = match sum_out {
                    Some(s) => s.into(),
                    None => b.patch.value(name("sum")),
                };
                b.op("Add", name("SkipAdd"), vec![], vec![x, skip.into()], sum);
                x = sum;
            }
            (x, x0)
        };
        let axis = if f.has_axis { attr_i("axis", -1) } else { -1 };
        // The embedding sum is [batch, sequence, hidden].
        let rank = if f.embedding {
            Some(3)
        } else {
            self.facts.rank(x0)
        };
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
        // The Skip ops and LayerNormalization type their summands and parameters alike: any of them says it.
        let same_typed: &[Option<usize>] = if f.skip.is_some() || f.op_type == "LayerNormalization"
        {
            &[f.skip, Some(f.scale), f.shift, f.bias]
        } else {
            &[]
        };
        let x_type = self.facts.elem_type(x0).or_else(|| {
            same_typed
                .iter()
                .filter_map(|&slot| input(slot))
                .find_map(|v| self.facts.elem_type(v))
        });
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

        if cast_needed {
            x = b.value_op(
                "Cast",
                name("Cast"),
                vec![attr_int("to", stat_type as i64)],
                vec![x],
            );
        }
        let centred = if f.kind == NormKind::RmsNorm {
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
        // The scale and shift apply in the statistics' type too, and the result is rounded to the input type
        // once, at the end: what onnxruntime's kernels compute for float16 and bfloat16 inputs (rounding after
        // the division and after each affine step, as the ONNX function body spells it, differs from them by
        // up to two units in the last place).
        let in_stat_type = |b: &mut Builder, what: &str, v: crate::ir::ValueId| -> ValueRef {
            match cast_needed {
                true => b.value_op(
                    "Cast",
                    name(&format!("Cast{what}")),
                    vec![attr_int("to", stat_type as i64)],
                    vec![v.into()],
                ),
                false => v.into(),
            }
        };
        let steps: Vec<(&str, ValueRef)> = [("Mul", "Scale", scale), ("Add", "Shift", shift)]
            .into_iter()
            .filter_map(|(op, what, v)| Some((op, in_stat_type(&mut b, what, v?))))
            .collect();
        let count = steps.len();
        for (i, (op_type, operand)) in steps.into_iter().enumerate() {
            let out: ValueRef = match i + 1 == count && !cast_needed {
                true => y.into(),
                false => b.patch.value(name(op_type)),
            };
            b.op(op_type, name(op_type), vec![], vec![result, operand], out);
            result = out;
        }
        match x_type.filter(|_| cast_needed) {
            Some(t) => b.op(
                "Cast",
                name("CastBack"),
                vec![attr_int("to", t as i64)],
                vec![result],
                y.into(),
            ),
            None if count == 0 => {
                b.op("Identity", name("Identity"), vec![], vec![result], y.into())
            }
            None => {}
        }
        if f.embedding {
            self.mask_index(&mut b, &name)?;
        }
        b.patch.remove(n);
        b.patch.sites = 1;
        Ok(())
    }

    /// `word[ids] + position[0..S or position_ids] (+ segment[segment_ids])`, as `EmbedLayerNormalization`
    /// sums them; the last Add writes the op's embedding-sum output when the file names it.
    fn embedding_sum(
        &self,
        b: &mut Builder,
        sum_out: Option<ValueId>,
        name: &dyn Fn(&str) -> String,
    ) -> Result<ValueRef, String> {
        use embed_slots as e;
        if self.opset < 10 {
            return Err(format!(
                "its expansion slices the position table (opset 10), and the model is at opset {}",
                self.opset
            ));
        }
        let inputs = self.ix.inputs(self.node);
        let input = |s: usize| inputs.get(s).copied().flatten();
        let ids = input(e::INPUT_IDS).ok_or("it has no input ids")?;
        let word = input(e::WORD_EMBEDDING).ok_or("it has no word embedding")?;
        let table = input(e::POSITION_EMBEDDING).ok_or("it has no position embedding")?;
        let mut terms = vec![b.value_op(
            "Gather",
            name("WordGather"),
            vec![],
            vec![word.into(), ids.into()],
        )];
        terms.push(match input(e::POSITION_IDS) {
            Some(p) => b.value_op(
                "Gather",
                name("PositionGather"),
                vec![],
                vec![table.into(), p.into()],
            ),
            None => {
                // Positions 0..S: the first S rows of the table, S the ids' second dimension.
                let shape = b.value_op("Shape", name("IdsShape"), vec![], vec![ids.into()]);
                let one = b.patch.initializer(name("one"), i64_tensor(vec![1], &[1]));
                let zero = b.patch.initializer(name("zero"), i64_tensor(vec![1], &[0]));
                let length = b.value_op("Gather", name("SequenceLength"), vec![], vec![shape, one]);
                b.value_op(
                    "Slice",
                    name("PositionSlice"),
                    vec![],
                    vec![table.into(), zero, length, zero],
                )
            }
        });
        if let (Some(segments), Some(segment_table)) =
            (input(e::SEGMENT_IDS), input(e::SEGMENT_EMBEDDING))
        {
            terms.push(b.value_op(
                "Gather",
                name("SegmentGather"),
                vec![],
                vec![segment_table.into(), segments.into()],
            ));
        }
        let mut sum = terms[0];
        for (i, &term) in terms.iter().enumerate().skip(1) {
            let out = match sum_out {
                Some(v) if i + 1 == terms.len() => v.into(),
                _ => b.patch.value(name("EmbeddingAdd")),
            };
            b.op("Add", name("EmbeddingAdd"), vec![], vec![sum, term], out);
            sum = out;
        }
        Ok(sum)
    }

    /// The mask index `EmbedLayerNormalization` writes when something reads it: per row, how many mask
    /// entries are 1, as int32.
    fn mask_index(&self, b: &mut Builder, name: &dyn Fn(&str) -> String) -> Result<(), String> {
        use embed_slots as e;
        let Some(index) = self.ix.graph.graph[self.node]
            .outputs
            .get(e::MASK_INDEX)
            .copied()
            .flatten()
            .filter(|&v| self.ix.use_count(v) > 0 || self.ix.is_graph_output(v))
        else {
            return Ok(());
        };
        let mask = self
            .ix
            .inputs(self.node)
            .get(e::MASK)
            .copied()
            .flatten()
            .ok_or("its mask index is read, and it has no mask to count")?;
        let wide = b.value_op(
            "Cast",
            name("MaskCast"),
            vec![attr_int("to", DataType::Int64 as i64)],
            vec![mask.into()],
        );
        let one = b
            .patch
            .initializer(name("mask_one"), i64_tensor(vec![], &[1]));
        let ones = b.value_op("Equal", name("MaskEqual"), vec![], vec![wide, one]);
        let counted = b.value_op(
            "Cast",
            name("MaskCount"),
            vec![attr_int("to", DataType::Int32 as i64)],
            vec![ones],
        );
        let row = [1];
        if self.opset >= 13 {
            let axes = b
                .patch
                .initializer(name("mask_axes"), i64_tensor(vec![1], &row));
            b.op(
                "ReduceSum",
                name("MaskIndex"),
                vec![attr_int("keepdims", 0)],
                vec![counted, axes],
                index.into(),
            );
        } else {
            b.op(
                "ReduceSum",
                name("MaskIndex"),
                vec![attr_int("keepdims", 0), attr_ints("axes", row.to_vec())],
                vec![counted],
                index.into(),
            );
        }
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
