//! What `post-to-pre` and `pre-to-post` share: moving the skip connection of each residual unit across the norm
//! that feeds the unit's branch. Not a pass itself.
//!
//! With `P_l` the norm whose output a unit's branch reads (the previous unit's post-norm, or the embedding
//! norm for the first unit), a Post-LN unit is `x_{l+1} = N_l(x_l + F_l(x_l))` with `x_l = P_l(h_l)`. Moving its
//! skip from `P_l`'s output to `P_l`'s input gives `h_{l+1} = h_l + F_l(P_l(h_l))`: every sublayer keeps reading
//! through the norm it read through before, the trunk carries the raw sums, and the last post-norm is left as
//! the final norm. That is the whole rewrite — one operand per unit — and moving the skip back is its exact
//! inverse. The branches, the norms and their parameters are untouched.

use petgraph::stable_graph::NodeIndex;

use super::{PassContext, PassError};
use crate::analysis::{Analysis, NormInfo, ResidualUnit, analyze};
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueId};

/// Where a unit's skip should read from after the rewrite: a value, or nothing to do (with a note).
pub(super) enum Move {
    To(ValueId),
    Leave(String),
}

/// Runs `decide` on every residual unit in stream order and moves each unit's skip where it says. An error
/// names the unit and refuses the whole pass, or with `--allow-partial` leaves that unit as it is, in a note.
pub(super) fn plan_units(
    model: &Model,
    cx: &PassContext,
    pass: &'static str,
    mut decide: impl FnMut(&GraphIndex, &Analysis, usize, &ResidualUnit) -> Result<Move, String>,
) -> Result<Patch, PassError> {
    let ix = GraphIndex::new(&model.graph);
    let a = analyze(&ix);
    let refuse = |reason: String| PassError::Refused { pass, reason };
    let mut patch = Patch::new();
    for (l, unit) in a.residual_units.iter().enumerate() {
        let decision = match decide(&ix, &a, l, unit) {
            Err(reason) if cx.allow_partial => {
                Move::Leave(format!("left unit {l} as it is: {reason}"))
            }
            other => other.map_err(refuse)?,
        };
        match decision {
            Move::Leave(note) => patch.note(note),
            Move::To(value) => {
                let (node, slot) = skip_site(&ix, unit)
                    .ok_or_else(|| refuse(format!("unit {l}'s skip connection is not found")))?;
                patch.replace_inputs(&ix, node, &[(slot, value.into())]);
                patch.sites += 1;
            }
        }
    }
    Ok(patch)
}

/// The node feeding the stream into `unit`'s residual Add, and which of its operands carries the stream: the
/// Add itself, or the `Mul(x, α)` of a scaled skip.
pub(super) fn skip_site(ix: &GraphIndex, unit: &ResidualUnit) -> Option<(NodeIndex, usize)> {
    let x = unit.stream_in;
    let inputs = ix.inputs(unit.add);
    if let Some(slot) = inputs.iter().position(|v| *v == Some(x)) {
        return Some((unit.add, slot));
    }
    inputs.iter().flatten().find_map(|&v| {
        let (m, _) = ix.produced_by(v, "Mul")?;
        let slot = ix.inputs(m).iter().position(|i| *i == Some(x))?;
        Some((m, slot))
    })
}

/// The norm whose output is `v`.
pub(super) fn norm_producing(a: &Analysis, v: ValueId) -> Option<&NormInfo> {
    a.norms.iter().find(|n| n.norm.output == v)
}
