//! `post-to-pre` — a Post-LN model becomes Pre-LN. **Function-changing.**
//!
//! * Pattern: every residual unit `N_l(x_l + F_l(x_l))`.
//! * Replacement (`placement.rs` has the mapping): each unit's skip moves from the norm that feeds its branch
//!   to that norm's input, so `h_{l+1} = h_l + F_l(P_l(h_l))`. Each sublayer keeps reading through the norm it
//!   read through before (the embedding norm for the first unit, the previous unit's post-norm after that), with
//!   its scale, shift and ε; the trunk carries the raw sums; the last post-norm becomes the final norm. The
//!   first sublayer reads exactly what it read before; from the first residual sum on the trunk differs
//!   (Xiong et al. 2020; Wang et al. 2019): Post-LN carries `γ ⊙ n + β` on it, Pre-LN the unnormalized sum.
//!   `convert` reports the drift unit by unit (`src/verify/drift.rs`).
//! * A model without an embedding norm (OPT-350m style) has no norm for its first unit to read through: that
//!   unit is left as it is (its branch reads the raw embedding, as before), said in a note, so that
//!   `pre-to-post` gives the original back. No norm is invented.
//! * Preconditions, refused naming the unit: every unit is post; each unit's stream is the previous unit's
//!   post-norm output.
//! * Exact: no. `convert` reports the divergence and writes the model.

use super::placement::{Move, plan_units};
use super::{Pass, PassClass, PassContext, PassError};
use crate::analysis::Placement;
use crate::analysis::facts::Facts;
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch};

pub struct PostToPre;

/// What the skip should carry: the norm's input, or the output of a Cast the pattern starts with when that Cast
/// keeps the element type (exporters that write such a no-op Cast on the stream share it between the norm and
/// the skip, and the inverse must find it again). A Cast that changes the type (fp16 → float32 for the
/// statistics) never feeds the skip: the stream keeps its own type.
fn statistics_input(
    ix: &GraphIndex,
    facts: &Facts,
    norm: &crate::analysis::Norm,
) -> crate::ir::ValueId {
    let input_type = facts.elem_type(norm.input);
    norm.nodes
        .iter()
        .filter_map(|&n| {
            let op = ix.graph.graph[n].op()?;
            let reads_input = ix.inputs(n).first().copied().flatten() == Some(norm.input);
            let keeps_type = input_type.is_some()
                && op.attribute("to").and_then(|a| i32::try_from(a.i()).ok()) == input_type;
            (op.op_type() == "Cast" && reads_input && keeps_type)
                .then(|| ix.output(n))
                .flatten()
        })
        .next()
        .unwrap_or(norm.input)
}

impl Pass for PostToPre {
    fn name(&self) -> &'static str {
        "post-to-pre"
    }
    fn description(&self) -> &'static str {
        "Post-LN -> Pre-LN: each unit's skip moves across the norm feeding its branch (function-changing)"
    }
    fn class(&self) -> PassClass {
        PassClass::FunctionChanging
    }
    fn plan(&self, model: &Model, cx: &PassContext) -> Result<Patch, PassError> {
        let mut facts: Option<Facts> = None;
        plan_units(model, cx, self.name(), |ix, a, l, unit, rewrites| {
            let facts = facts.get_or_insert_with(|| Facts::infer(ix));
            if unit.placement != Placement::Post {
                return Err(format!("unit {l} is {}, not post", unit.placement));
            }
            // The stream may reach the unit through shape-only ops (OPT flattens it around its MLP): the norm
            // is found before them, and the new skip goes through the same ops.
            match a.norm_read_through(ix, unit.stream_in) {
                Some(feeding) => {
                    let plain = statistics_input(ix, facts, &feeding.norm);
                    let target = rewrites.normalized(&feeding.norm, plain);
                    Ok(Move::To(rewrites.with_shape_of(a, unit.stream_in, target)))
                }
                None if l == 0 && a.embedding_norm => Ok(Move::Leave(
                    "unit 0 reads the embedding norm through a projection (the embedding is narrower than \
                     the stream): the projection is part of the embedding, and unit 0 is left as it is"
                        .into(),
                )),
                None if l == 0 => Ok(Move::Leave(
                    "unit 0 has no embedding norm to read through: left as it is (its branch reads the raw \
                     embedding, as before)"
                        .into(),
                )),
                None => Err(format!(
                    "unit {l}'s stream `{}` is not the output of the previous unit's post-norm",
                    model.graph.value(unit.stream_in).name
                )),
            }
        })
    }
}
