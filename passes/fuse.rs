//! What `fuse-layernorm` and `fuse-rmsnorm` share: turning one decomposed norm that analysis found into a
//! fused op, and the opset that op needs. Not a pass itself.
//!
//! The replacement of a norm covering nodes `nodes` (from the first statistic to the last scale, shift or
//! Cast) is
//!
//! ```text
//! [Cast(x → S)]  →  Norm(x, γ, β; axis, ε)  →  [Cast(→ T)]
//! ```
//!
//! where `S` is the type the statistics were computed in (the norm's leading Cast, e.g. fp16 models computing
//! them in float32) and `T` the type after its trailing Casts; a Cast that would not change the type is left
//! out. `γ` and `β` are the pattern's constants, rewritten as a new initializer when they must change type
//! (to `S`), shape (exactly the normalized shape, which ONNX runtimes require) or value (Gemma's `1 + w`).
//! With `--target ort`, a norm reading a residual `Add` takes the `Add` in: `Skip(Simplified)LayerNormalization`,
//! whose fourth output is the sum when something else reads it (the stream of a Pre-LN model).
//!
//! A norm that cannot be fused without guessing (unknown types around a Cast, a missing scale whose size is not
//! declared, a parameter that would have to be broadcast to an unknown shape) is left alone with a note.

use std::collections::{HashMap, HashSet};

use petgraph::stable_graph::NodeIndex;

use super::{PassContext, PassError, Target};
use crate::analysis::constants::{constant, widening_cast_source};
use crate::analysis::facts::Facts;
use crate::analysis::{
    FusedSlots, Norm, NormForm, NormKind, Param, analyze, analyze_graph, origin,
};
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueId, ValueRef};
use crate::onnx::build::{attr_float, attr_int, float_tensor, is_float, node};
use crate::onnx::tensor_proto::DataType;
use crate::onnx::{Dim, tensor_type};
use crate::tensor::to_f64;

/// Plans fusing every decomposed norm of `kind`, requiring the opset the fused ops need.
pub(super) fn plan(model: &Model, kind: NormKind, cx: &PassContext) -> Result<Patch, PassError> {
    let ix = GraphIndex::new(&model.graph);
    let analysis = analyze(&ix);
    let facts = Facts::infer(&ix);
    // Residual sums, for the Skip* ops: the sum's value → the Add node (sums already inside a Skip op aside).
    let sums: HashMap<ValueId, NodeIndex> = match cx.target {
        Target::Ort => analysis
            .residual_units
            .iter()
            .filter(|u| u.fused_norm.is_none())
            .filter_map(|u| Some((u.sum?, u.add)))
            .collect(),
        Target::Onnx => HashMap::new(),
    };
    let mut taken_adds = HashSet::new();
    let mut patch = Patch::new();
    let mut opset = 0;
    for info in &analysis.norms {
        let norm = &info.norm;
        if norm.kind != kind || norm.takes_sum() || norm.embedding {
            continue;
        }
        let label = &model.graph.value(norm.output).name;
        let site = Site {
            ix: &ix,
            facts: &facts,
            norm,
            k: norm.axis.unsigned_abs() as usize,
        };
        // With `--target ort`, a norm of a residual sum takes the sum's Add in, or says why it does not.
        let skip_add = match sums.get(&norm.input).copied() {
            None => {
                // The sum reached through a Cast or a Reshape: said, as the Skip ops take the sum itself.
                let before = origin(&ix, norm.input);
                if before != norm.input && sums.contains_key(&before) {
                    let step = ix
                        .producer(norm.input)
                        .map(|(n, _)| model.graph.node_label(n))
                        .unwrap_or_default();
                    patch.note(format!(
                        "`{label}` reads a residual sum through {step}, and the Skip ops take the sum \
                         itself: no Skip op for it"
                    ));
                }
                None
            }
            Some(add) if taken_adds.contains(&add) => {
                patch.note(format!(
                    "`{label}` reads a residual sum that another norm's Skip op takes in: no Skip op for it"
                ));
                None
            }
            Some(add) => match site.skip_unfit() {
                None => Some(add),
                Some(reason) => {
                    patch.note(format!(
                        "`{label}` reads a residual sum but stays without its Add: {reason}"
                    ));
                    None
                }
            },
        };
        // A norm already fused is only rewritten to take in its residual Add (onnxruntime's Skip* ops).
        if norm.form == NormForm::Fused {
            match (skip_add, site.extra_outputs_read()) {
                (None, _) => continue,
                (Some(_), true) => {
                    patch.note(format!(
                        "`{label}` reads a residual sum but stays without its Add: its mean or inverse \
                         deviation output is read, which the Skip ops do not write"
                    ));
                    continue;
                }
                (Some(_), false) => {}
            }
        }
        match site.plan(FusedSlots::for_fusion(kind, skip_add.is_some()), skip_add) {
            Ok((site_patch, needs)) => {
                if let Some(add) = skip_add {
                    taken_adds.insert(add);
                }
                opset = opset.max(needs);
                patch.merge(site_patch);
            }
            Err(Unfit::Reason(reason)) => patch.note(format!("left `{label}` alone: {reason}")),
            // A size no machine can hold is the model's problem, not this norm's: the pass refuses it.
            Err(Unfit::TooLarge(e)) => {
                return Err(PassError::Refused {
                    pass: pass_name(kind),
                    reason: format!("`{label}`: {e}"),
                });
            }
        }
    }
    note_quantized_norms(model, kind, &mut patch);
    // The manager upgrades the rest of the model to the opset the fused ops need (`run_one`).
    if patch.sites > 0 && opset > 0 {
        patch.require_opset("", opset);
    }
    Ok(patch)
}

/// Norms that analysis finds only through their quantization (static QDQ puts `QuantizeLinear →
/// DequantizeLinear` between the mean, the variance, ε and the division) are left as they are, and said: one op
/// in their place would compute without the quantization steps, which is not the model's function.
fn note_quantized_norms(model: &Model, kind: NormKind, patch: &mut Patch) {
    let quantized = analyze_graph(&model.graph)
        .norms
        .iter()
        .filter(|n| n.norm.kind == kind && n.norm.form == NormForm::QuantizedInside)
        .count();
    if quantized > 0 {
        patch.note(format!(
            "left {quantized} decomposed {kind}s alone: QuantizeLinear/DequantizeLinear pairs sit \
             between their ops, and a fused op would compute without those quantization steps"
        ));
    }
}

/// Why a norm is not fused: a reason to leave it alone (with a note), or a constant the fusion would build that
/// is larger than the memory budget ([`crate::limits`]), which refuses the pass.
enum Unfit {
    Reason(String),
    TooLarge(crate::limits::LimitError),
}

impl From<String> for Unfit {
    fn from(reason: String) -> Self {
        Unfit::Reason(reason)
    }
}

impl From<&str> for Unfit {
    fn from(reason: &str) -> Self {
        Unfit::Reason(reason.into())
    }
}

/// The pass that fuses norms of `kind`, for its refusals.
fn pass_name(kind: NormKind) -> &'static str {
    match kind {
        NormKind::LayerNorm => "fuse-layernorm",
        NormKind::RmsNorm => "fuse-rmsnorm",
    }
}

/// One decomposed norm being fused.
struct Site<'a, 'g> {
    ix: &'a GraphIndex<'g>,
    facts: &'a Facts,
    norm: &'a Norm,
    /// Number of normalized (trailing) axes.
    k: usize,
}

/// A pattern that is a fused op's float32 computation on a narrower input (`Site::stash_fold`): the
/// constants of the input's type its scale and shift widen.
#[derive(Clone, Copy)]
struct Folded {
    scale: Option<ValueId>,
    shift: Option<ValueId>,
}

/// The Casts of a pattern: the one before the statistics and the type the ones after it convert to.
struct Casts {
    leading: Option<i32>,
    trailing: Option<i32>,
    /// A trailing Cast feeds the scale or shift (the affine part runs in the output type).
    affine_after_cast: bool,
}

impl Site<'_, '_> {
    fn op_of(&self, n: NodeIndex) -> Option<&crate::ir::Op> {
        self.ix.graph.graph[n].op()
    }

    fn casts(&self) -> Result<Casts, String> {
        let mut leading = None;
        let mut trailing = HashSet::new();
        let mut affine_after_cast = false;
        let inside: HashSet<NodeIndex> = self.norm.nodes.iter().copied().collect();
        for &n in &self.norm.nodes {
            let Some(op) = self.op_of(n) else { continue };
            if op.op_type() != "Cast" {
                continue;
            }
            let to = op
                .attribute("to")
                .and_then(|a| i32::try_from(a.i()).ok())
                .unwrap_or(0);
            if self.ix.inputs(n).first().copied().flatten() == Some(self.norm.input) {
                leading = Some(to);
            } else {
                trailing.insert(to);
                affine_after_cast |= self.ix.output(n).is_some_and(|out| {
                    self.ix.consumers(out).iter().any(|(reader, _)| {
                        inside.contains(reader)
                            && self
                                .op_of(*reader)
                                .is_some_and(|op| matches!(op.op_type(), "Mul" | "Add"))
                    })
                });
            }
        }
        if trailing.len() > 1 {
            return Err("its Casts convert to different types".into());
        }
        Ok(Casts {
            leading,
            trailing: trailing.into_iter().next(),
            affine_after_cast,
        })
    }

    /// The normalized shape, when the file declares the trailing dims of the norm's input or output, or (over
    /// the last axis) the weights around the norm fix its size: a non-parametric norm whose shapes no file
    /// declares normalizes the hidden size of the layers that write its input.
    fn normalized_shape(&self) -> Option<Vec<i64>> {
        let declared = [self.norm.input, self.norm.output]
            .iter()
            .find_map(|&v| self.declared_shape(v));
        declared.or_else(|| {
            let last = [self.norm.input, self.norm.output]
                .iter()
                .find_map(|&v| self.facts.last_dim(v))?;
            (self.k == 1).then(|| vec![last])
        })
    }

    /// The normalized shape `v`'s declared type gives, when it gives every normalized dim as a number.
    fn declared_shape(&self, v: ValueId) -> Option<Vec<i64>> {
        let (_, dims) = tensor_type(self.ix.graph.value(v).ty()?)?;
        let dims = dims?;
        let tail = dims.get(dims.len().checked_sub(self.k)?..)?;
        tail.iter()
            .map(|d| match d {
                Dim::Fixed(n) if *n > 0 => Some(*n),
                _ => None,
            })
            .collect()
    }

    /// Whether a fused norm's mean or inverse-deviation outputs are read (a Skip op cannot take it over then).
    fn extra_outputs_read(&self) -> bool {
        self.norm.nodes.iter().any(|&n| {
            self.ix.graph.graph[n]
                .outputs
                .iter()
                .skip(1)
                .flatten()
                .any(|&v| self.ix.use_count(v) > 0 || self.ix.is_graph_output(v))
        })
    }

    /// Why onnxruntime's Skip* ops cannot take this norm, if they cannot: they normalize the last axis only,
    /// have no stash type (so no Casts around the statistics), and take inputs of rank 2 or 3.
    fn skip_unfit(&self) -> Option<String> {
        // Casts that keep the type (float32 statistics of a float32 model) change nothing; others do.
        let casts = match self.casts() {
            Ok(c) => {
                let input = self.facts.elem_type(self.norm.input);
                let stat = c.leading.or(input);
                input.is_none() && (c.leading.is_some() || c.trailing.is_some())
                    || c.leading.is_some_and(|t| Some(t) != input)
                    || c.trailing.is_some_and(|t| Some(t) != stat)
            }
            Err(_) => true,
        };
        if self.k != 1 {
            return Some(format!(
                "it normalizes the last {} axes, the Skip ops only the last",
                self.k
            ));
        }
        if casts {
            return Some(
                "it computes its statistics in another type (Casts around them), and the Skip ops have no \
                 stash type"
                    .into(),
            );
        }
        match self.facts.rank(self.norm.input) {
            Some(2 | 3) => None,
            Some(r) => Some(format!(
                "its input has rank {r}, the Skip ops take rank 2 or 3"
            )),
            None => Some(
                "the rank of its input is neither declared nor derivable, and the Skip ops take rank 2 or 3 \
                 only"
                    .into(),
            ),
        }
    }

    /// Whether the pattern is a fused op's `stash_type = 1` computation spelled out: a float16 or bfloat16
    /// input Cast to float32, statistics, scale and shift in float32 (the scale and shift widened from
    /// constants of the input's type), one Cast back to the input's type at the end. The op with that
    /// stash type computes exactly this on the input directly (onnxruntime's kernels do; `unfuse-norms`
    /// writes this form), so fusing gives the op on the input, not an op between two Casts.
    fn stash_fold(
        &self,
        casts: &Casts,
        input_type: Option<i32>,
        op: &FusedSlots,
    ) -> Option<Folded> {
        let t = input_type
            .filter(|&t| t == DataType::Float16 as i32 || t == DataType::Bfloat16 as i32)?;
        let takes_stash_type = op.skip.is_none() && !op.embedding;
        let spelled_out = casts.leading == Some(DataType::Float as i32)
            && casts.trailing == Some(t)
            && !casts.affine_after_cast;
        if !takes_stash_type || !spelled_out {
            return None;
        }
        let source = |p: Option<Param>| -> Option<Option<ValueId>> {
            let Some(p) = p else { return Some(None) };
            let src = widening_cast_source(self.ix, p.value)?;
            let typed = constant(self.ix, src).is_some_and(|c| c.elem_type() == t);
            (typed && !p.plus_one).then_some(Some(src))
        };
        Some(Folded {
            scale: source(self.norm.scale)?,
            shift: source(self.norm.shift)?,
        })
    }

    /// The patch for this norm and the default-domain opset it needs.
    fn plan(&self, op: &FusedSlots, skip_add: Option<NodeIndex>) -> Result<(Patch, i64), Unfit> {
        let g = self.ix.graph;
        let mut casts = self.casts()?;
        let input_type = self.facts.elem_type(self.norm.input);
        let folded = self.stash_fold(&casts, input_type, op);
        if folded.is_some() {
            // The fused op computes in float32 itself (`stash_type` 1): no Casts around it.
            casts = Casts {
                leading: None,
                trailing: None,
                affine_after_cast: false,
            };
        }
        let stat_type = casts.leading.or(input_type);
        let out_type = casts.trailing.or(stat_type);
        if casts.trailing.is_some() && stat_type.is_none() {
            return Err("the type its statistics are computed in is unknown".into());
        }
        let cast_back = out_type.filter(|&t| Some(t) != stat_type);
        // When the pattern casts back before its scale and shift (fp16 models do), those stay outside the
        // fused op, in the output type, as they were: folding them in would round differently.
        let affine_outside = cast_back.is_some()
            && casts.affine_after_cast
            && (self.norm.scale.is_some() || self.norm.shift.is_some());
        let shape = self
            .normalized_shape()
            .or_else(|| self.norm.scale.and_then(|p| self.param_shape(p)));
        let mut patch = Patch::new();
        let out_name = g.value(self.norm.output).name.clone();

        // Folded, the scale and shift are the constants the pattern widened, in the input's type.
        let unwidened = |p: Param, source: Option<ValueId>| Param {
            value: source.unwrap_or(p.value),
            ..p
        };
        let scale_param = self
            .norm
            .scale
            .map(|p| unwidened(p, folded.and_then(|f| f.scale)));
        let shift_param = self
            .norm
            .shift
            .map(|p| unwidened(p, folded.and_then(|f| f.shift)));
        let scale = match scale_param.filter(|_| !affine_outside) {
            Some(p) => self.param(&mut patch, p, stat_type, shape.as_deref(), "scale")?,
            None => {
                let (Some(shape), Some(ty)) = (&shape, stat_type) else {
                    return Err(
                        "it has no scale, and neither the file nor the weights around it give its normalized \
                         shape or type"
                            .into(),
                    );
                };
                let count = self.built_count(shape, ty, "scale of ones")?;
                let ones = vec![1.0; count];
                let t =
                    float_tensor(ty, shape.clone(), &ones).ok_or("its type is not a float type")?;
                patch.initializer(format!("{out_name}_scale"), t)
            }
        };
        let shift = match (self.norm.kind, shift_param) {
            (NormKind::LayerNorm, Some(p)) if !affine_outside => {
                Some(self.param(&mut patch, p, stat_type, shape.as_deref(), "shift")?)
            }
            _ => None,
        };

        let anchor = self
            .ix
            .producer(self.norm.output)
            .map(|(n, _)| n)
            .ok_or("its output has no producer")?;
        let name = |what: &str| format!("{out_name}/{what}");
        let mut inputs: Vec<Option<ValueRef>> = Vec::new();
        let mut outputs: Vec<Option<ValueRef>> = Vec::new();
        if let Some(add) = skip_add {
            let [Some(a), Some(b)] = self.ix.inputs(add)[..] else {
                return Err("its residual Add has an empty operand".into());
            };
            inputs.extend([Some(a.into()), Some(b.into())]);
            patch.remove(add);
        } else {
            let mut x: ValueRef = self.norm.input.into();
            if let Some(to) = casts.leading
                && input_type != Some(to)
            {
                let cast_out = patch.value(name("cast_in"));
                patch.add_node(
                    node("Cast", "", name("Cast"), vec![attr_int("to", to as i64)]),
                    vec![Some(x)],
                    vec![Some(cast_out)],
                    anchor,
                );
                x = cast_out;
            }
            inputs.push(Some(x));
        }
        inputs.push(Some(scale));
        if let Some(shift) = shift {
            inputs.push(Some(shift));
        }

        let result: ValueRef = match cast_back {
            Some(_) => patch.value(name("normalized")),
            None => self.norm.output.into(),
        };
        outputs.push(Some(result));
        if let Some(sum_slot) = op.sum {
            // The sum stays readable when something besides the norm reads it.
            let sum = self.norm.input;
            let inside: HashSet<NodeIndex> = self.norm.nodes.iter().copied().collect();
            let read_elsewhere = self.ix.is_graph_output(sum)
                || self
                    .ix
                    .consumers(sum)
                    .iter()
                    .any(|(n, _)| !inside.contains(n));
            if read_elsewhere {
                outputs.resize(sum_slot, None);
                outputs.push(Some(sum.into()));
            }
        }
        let mut attrs = vec![attr_float("epsilon", self.norm.epsilon as f32)];
        if op.has_axis {
            attrs.insert(0, attr_int("axis", self.norm.axis));
        }
        patch.add_node(
            node(op.op_type, op.domain, name(op.op_type), attrs),
            inputs,
            outputs,
            anchor,
        );
        if let Some(to) = cast_back {
            let cast_out = if affine_outside {
                patch.value(name("cast_out"))
            } else {
                self.norm.output.into()
            };
            patch.add_node(
                node(
                    "Cast",
                    "",
                    name("Cast_out"),
                    vec![attr_int("to", to as i64)],
                ),
                vec![Some(result)],
                vec![Some(cast_out)],
                anchor,
            );
            if affine_outside {
                self.affine_after(&mut patch, cast_out, anchor)?;
            }
        }
        for &n in &self.norm.nodes {
            patch.remove(n);
        }
        if !op.domain.is_empty() {
            patch.require_opset(op.domain, 1);
        }
        patch.sites = 1;
        Ok((patch, op.opset))
    }

    /// `Mul(v, γ)` and `Add(·, β)` after the fused op, as the pattern had them (for `affine_outside`).
    fn affine_after(
        &self,
        patch: &mut Patch,
        v: ValueRef,
        anchor: NodeIndex,
    ) -> Result<(), String> {
        let out_name = &self.ix.graph.value(self.norm.output).name;
        let steps: Vec<(&str, Param)> = [("Mul", self.norm.scale), ("Add", self.norm.shift)]
            .into_iter()
            .filter_map(|(op, p)| p.map(|p| (op, p)))
            .collect();
        let mut current = v;
        for (i, (op, p)) in steps.iter().enumerate() {
            let operand: ValueRef = if p.plus_one {
                let t = constant(self.ix, p.value).ok_or("its scale is not a constant")?;
                let values: Vec<f64> = to_f64(&t)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|v| v + 1.0)
                    .collect();
                let folded = float_tensor(t.elem_type(), t.dims().to_vec(), &values)
                    .ok_or("its scale is not of a float type")?;
                let name = &self.ix.graph.value(p.value).name;
                patch.initializer(format!("{name}_plus_one"), folded)
            } else {
                p.value.into()
            };
            let out = if i + 1 == steps.len() {
                self.norm.output.into()
            } else {
                patch.value(format!("{out_name}/{op}"))
            };
            patch.add_node(
                node(op, "", format!("{out_name}/{op}"), vec![]),
                vec![Some(current), Some(operand)],
                vec![Some(out)],
                anchor,
            );
            current = out;
        }
        Ok(())
    }

    /// The element count of a constant of `shape` and type `ty` that fusing builds (a scale of ones, a
    /// parameter broadcast), refused when it and its float64 working copy are over the memory budget.
    fn built_count(&self, shape: &[i64], ty: i32, what: &str) -> Result<usize, Unfit> {
        let dims: Option<Vec<u64>> = shape.iter().map(|&d| u64::try_from(d).ok()).collect();
        let dims =
            dims.ok_or_else(|| format!("its normalized shape {shape:?} has a negative dim"))?;
        let count = crate::limits::product(dims.iter().copied());
        let per_element = crate::onnx::elem_size(ty).unwrap_or(8) as u64 + 8;
        crate::limits::check(crate::limits::bytes_of(count, per_element), None, 0, || {
            format!(
                "its {what} of shape {shape:?} ({}), as float64 values and their {} encoding",
                self.shape_origin(),
                crate::onnx::elem_type_name(ty)
            )
        })
        .map_err(Unfit::TooLarge)?;
        // Within the budget, so within usize.
        Ok(count.and_then(|n| usize::try_from(n).ok()).unwrap_or(0))
    }

    /// Where the normalized shape comes from, for messages.
    fn shape_origin(&self) -> String {
        let declared = [self.norm.input, self.norm.output]
            .into_iter()
            .find(|&v| self.declared_shape(v).is_some());
        match declared {
            Some(v) => format!("declared for `{}` in the file", self.ix.graph.value(v).name),
            None => "inferred from the graph around the norm".into(),
        }
    }

    /// The normalized shape a parameter implies, when none of its normalized dims is 1.
    fn param_shape(&self, p: Param) -> Option<Vec<i64>> {
        let t = constant(self.ix, p.value)?;
        let dims = t.dims();
        let own = &dims[dims.len().saturating_sub(self.k)..];
        (own.len() == self.k && !own.contains(&1)).then(|| own.to_vec())
    }

    /// A scale or shift as the fused op needs it: of type `ty`, of exactly the normalized shape. The constant
    /// itself when it already is; otherwise a new initializer.
    fn param(
        &self,
        patch: &mut Patch,
        p: Param,
        ty: Option<i32>,
        shape: Option<&[i64]>,
        what: &str,
    ) -> Result<ValueRef, Unfit> {
        let t =
            constant(self.ix, p.value).ok_or_else(|| format!("its {what} is not a constant"))?;
        let dims = t.dims();
        // Leading dims beyond the normalized ones are all 1 (analysis checked): drop them.
        let own: Vec<i64> = dims[dims.len().saturating_sub(self.k)..].to_vec();
        let mut padded = vec![1; self.k - own.len()];
        padded.extend(&own);
        let target: Vec<i64> = match shape {
            Some(s) => s.to_vec(),
            None if !padded.contains(&1) => padded.clone(),
            None => {
                return Err(
                    format!("its {what} broadcasts over axes whose size is not declared").into(),
                );
            }
        };
        let elem = t.elem_type();
        let ty = ty.unwrap_or(elem);
        let unchanged = !p.plus_one && elem == ty && dims == target.as_slice();
        if unchanged {
            return Ok(p.value.into());
        }
        if !is_float(ty) {
            return Err(
                format!("its {what} would need type {ty}, which is not a float type").into(),
            );
        }
        self.built_count(
            &target,
            ty,
            &format!("{what} broadcast to the normalized shape"),
        )?;
        let values = to_f64(&t).map_err(|e| e.to_string())?;
        let values = broadcast(&values, &padded, &target).ok_or_else(|| {
            format!("its {what} does not broadcast to the normalized shape {target:?}")
        })?;
        let values: Vec<f64> = values
            .into_iter()
            .map(|v| if p.plus_one { v + 1.0 } else { v })
            .collect();
        let tensor = float_tensor(ty, target, &values).ok_or("unsupported parameter type")?;
        let name = &self.ix.graph.value(p.value).name;
        Ok(patch.initializer(format!("{name}_fused"), tensor))
    }
}

/// `values` of shape `from` broadcast to shape `to` (same rank), row-major.
fn broadcast(values: &[f64], from: &[i64], to: &[i64]) -> Option<Vec<f64>> {
    let count =
        |dims: &[i64]| -> Option<i64> { dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d)) };
    if from.len() != to.len()
        || from.iter().zip(to).any(|(&f, &t)| f != t && f != 1)
        || i64::try_from(values.len()).ok() != count(from)
    {
        return None;
    }
    if from == to {
        return Some(values.to_vec());
    }
    let total = count(to)?;
    let mut out = Vec::with_capacity(usize::try_from(total).ok()?);
    for flat in 0..total {
        let (mut rest, mut src, mut stride) = (flat, 0i64, 1i64);
        for (&f, &t) in from.iter().zip(to).rev() {
            let i = rest % t;
            rest /= t;
            if f != 1 {
                src += i * stride;
            }
            stride *= f;
        }
        out.push(values[src as usize]);
    }
    Some(out)
}
