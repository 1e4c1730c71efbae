//! What `post-to-pre` and `pre-to-post` share: moving the skip connection of each residual unit across the norm
//! that feeds the unit's branch. Not a pass itself.
//!
//! With `P_l` the norm whose output a unit's branch reads (the previous unit's post-norm, or the embedding
//! norm for the first unit), a Post-LN unit is `x_{l+1} = N_l(x_l + F_l(x_l))` with `x_l = P_l(h_l)`. Moving its
//! skip from `P_l`'s output to `P_l`'s input gives `h_{l+1} = h_l + F_l(P_l(h_l))`: every sublayer keeps reading
//! through the norm it read through before, the trunk carries the raw sums, and the last post-norm is left as
//! the final norm. That is the whole rewrite — one operand per unit — and moving the skip back is its exact
//! inverse. The branches, the norms and their parameters are untouched.

use std::collections::BTreeMap;

use petgraph::stable_graph::NodeIndex;

use super::{PassContext, PassError};
use crate::analysis::quantized::without_activation_qdq;
use crate::analysis::{Analysis, FusedSlots, Norm, ResidualUnit, analyze};
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueId, ValueRef};

/// Where a unit's skip should read from after the rewrite: a value, or nothing to do (with a note).
pub(super) enum Move {
    To(ValueRef),
    Leave(String),
}

/// The edits of one rewrite, gathered per node so that a node changed for two reasons (a Skip op that is one
/// unit's sum and the norm the next unit reads through) is replaced once.
///
/// A quantized model (static QDQ) is planned on its quantization view (`quantized::without_activation_qdq`),
/// where each activation is read as it is before its `QuantizeLinear → DequantizeLinear` pair; in the model
/// itself a moved skip then reads the dequantized value, as every other reader of that activation does. No pair
/// changes what it quantizes, and moving a skip back reads the value it read before.
pub(super) struct Rewrites<'a, 'g> {
    /// The graph the rewrite is planned on: the model's, or its quantization view (same node and value ids).
    ix: &'a GraphIndex<'g>,
    /// The model's own graph, which the patch edits.
    real: &'a GraphIndex<'g>,
    patch: Patch,
    edits: BTreeMap<NodeIndex, NodeEdit>,
}

/// What a rewrite changes on one node: input slots to read other values, and an output slot to name.
type NodeEdit = (Vec<(usize, ValueRef)>, Option<(usize, ValueRef)>);

impl Rewrites<'_, '_> {
    /// The value `norm` normalizes: its input, or the sum of a fused Skip op — which the op is made to write
    /// out when the file left that output unnamed.
    pub(super) fn normalized(&mut self, norm: &Norm, plain: ValueId) -> ValueRef {
        if !norm.takes_sum() && !norm.embedding {
            return plain.into();
        }
        if let Some(sum) = norm.sum {
            return sum.into();
        }
        let node = norm.nodes[0];
        let Some(slot) = self.ix.graph.graph[node]
            .op()
            .and_then(FusedSlots::of)
            .and_then(|f| f.sum)
        else {
            return plain.into();
        };
        let name = format!("{}/sum", self.ix.graph.value(norm.output).name);
        let value = self.patch.value(name);
        self.edits.entry(node).or_default().1 = Some((slot, value));
        value
    }

    /// `to` carried through the same shape-only ops (`Reshape`, `Flatten`, ...) that lead from `origin` to
    /// `stream`, so that it has the stream's shape. An existing node that already applies the step to `to` is
    /// reused (so that a rewrite and its inverse give the original graph back); otherwise a copy is added.
    pub(super) fn with_shape_of(
        &mut self,
        a: &Analysis,
        stream: ValueId,
        to: ValueRef,
    ) -> ValueRef {
        let ix = self.ix;
        let chain = a.steps_after_norm(ix, stream);
        let mut current = to;
        for &n in chain.iter().rev() {
            let Some(op) = ix.graph.graph[n].op() else {
                continue;
            };
            let rest: Vec<Option<ValueId>> = ix.inputs(n).iter().skip(1).copied().collect();
            let existing = match current {
                ValueRef::Old(c) => ix.consumers(c).iter().find_map(|&(m, _)| {
                    let other = ix.graph.graph[m].op()?;
                    let same = other.op_type() == op.op_type()
                        && other.domain() == op.domain()
                        && other.proto.attribute == op.proto.attribute
                        && ix.inputs(m).first().copied().flatten() == Some(c)
                        && ix
                            .inputs(m)
                            .iter()
                            .skip(1)
                            .copied()
                            .eq(rest.iter().copied());
                    same.then(|| ix.output(m)).flatten()
                }),
                ValueRef::New(_) => None,
            };
            current = match existing {
                Some(out) => out.into(),
                None => {
                    let name = ix.output(n).map(|o| ix.graph.value(o).name.clone());
                    let out = self
                        .patch
                        .value(format!("{}/skip", name.unwrap_or_default()));
                    let mut inputs = vec![Some(self.as_read(current))];
                    inputs.extend(
                        rest.iter()
                            .map(|r| r.map(|v| self.as_read(ValueRef::Old(v)))),
                    );
                    self.patch
                        .add_node(op.proto.clone(), inputs, vec![Some(out)], n);
                    out
                }
            };
        }
        current
    }

    /// What a new reader of `v` reads in the model itself: the dequantized value when a `QuantizeLinear →
    /// DequantizeLinear` pair quantizes `v` (the view reads `v` where the model reads that).
    fn as_read(&self, v: ValueRef) -> ValueRef {
        let ValueRef::Old(v) = v else { return v };
        let real = self.real;
        real.consumers(v)
            .iter()
            .find_map(|&(q, slot)| {
                let op = real.graph.graph[q].op()?;
                let quantizes = op.op_type() == "QuantizeLinear"
                    && op.domain().is_empty()
                    && slot == crate::ir::InputSlot::Operand(0);
                let (dq, dq_op) = real.sole_consumer(real.output(q).filter(|_| quantizes)?)?;
                (dq_op.op_type() == "DequantizeLinear" && dq_op.domain().is_empty())
                    .then(|| real.output(dq))
                    .flatten()
            })
            .map_or(ValueRef::Old(v), ValueRef::Old)
    }

    fn finish(mut self) -> Patch {
        for (node, (inputs, output)) in std::mem::take(&mut self.edits) {
            let outputs: Vec<(usize, ValueRef)> = output.into_iter().collect();
            let inputs: Vec<(usize, ValueRef)> = inputs
                .into_iter()
                .map(|(s, v)| (s, self.as_read(v)))
                .collect();
            self.patch.replace_slots(self.real, node, &inputs, &outputs);
        }
        self.patch
    }
}

/// Runs `decide` on every residual unit in stream order and moves each unit's skip where it says. An error
/// names the unit and refuses the whole pass, or with `--allow-partial` leaves that unit as it is, in a note.
pub(super) fn plan_units(
    model: &Model,
    cx: &PassContext,
    pass: &'static str,
    mut decide: impl FnMut(
        &GraphIndex,
        &Analysis,
        usize,
        &ResidualUnit,
        &mut Rewrites,
    ) -> Result<Move, String>,
) -> Result<Patch, PassError> {
    let real = GraphIndex::new(&model.graph);
    let view = without_activation_qdq(&model.graph);
    let ix = view
        .as_ref()
        .map_or_else(|| GraphIndex::new(&model.graph), GraphIndex::new);
    let a = analyze(&ix);
    let refuse = |reason: String| PassError::Refused { pass, reason };
    let mut rewrites = Rewrites {
        ix: &ix,
        real: &real,
        patch: Patch::new(),
        edits: BTreeMap::new(),
    };
    if view.is_some() {
        rewrites.patch.note(
            "its residual stream passes through QuantizeLinear/DequantizeLinear pairs: each moved skip reads \
             the dequantized value, and the pairs quantize what they quantized before (their scales were \
             calibrated for the old placement's sums)"
                .into(),
        );
    }
    for (l, unit) in a.residual_units.iter().enumerate() {
        let decision = match decide(&ix, &a, l, unit, &mut rewrites) {
            Err(reason) if cx.allow_partial => {
                Move::Leave(format!("left unit {l} as it is: {reason}"))
            }
            other => other.map_err(refuse)?,
        };
        match decision {
            Move::Leave(note) => rewrites.patch.note(note),
            Move::To(value) => {
                let (node, slot) = unit
                    .skip_site(&ix)
                    .ok_or_else(|| refuse(format!("unit {l}'s skip connection is not found")))?;
                rewrites
                    .edits
                    .entry(node)
                    .or_default()
                    .0
                    .push((slot, value));
                rewrites.patch.sites += 1;
            }
        }
    }
    Ok(rewrites.finish())
}
