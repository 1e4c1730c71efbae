//! `pre-to-post` — a Pre-LN model becomes Post-LN: the exact inverse of `post-to-pre`. **Function-changing.**
//!
//! * Pattern: every residual unit `h + F(P(h))`, with one pre-norm `P` reading the stream.
//! * Replacement: each unit's skip moves from `h` to `P(h)`, so that the unit computes `x + F(x)` with
//!   `x = P(h)`: `P` becomes the previous unit's post-norm (the embedding norm for the first unit), and the
//!   final norm the last unit's post-norm. `post-to-pre` then `pre-to-post` (and the reverse) give the original
//!   graph back.
//! * A unit without a pre-norm (the first unit of a `post-to-pre` result for a model without embedding norm) is
//!   left as it is, with a note.
//! * Preconditions, refused naming the unit: every unit is pre; a parallel unit whose branches read the stream
//!   through two different norms (GPT-NeoX) has no single norm to move the skip across.
//! * Exact: no. `convert` reports the divergence and writes the model.

use super::placement::{Move, plan_units};
use super::{Pass, PassClass, PassContext, PassError};
use crate::analysis::Placement;
use crate::ir::{Model, Patch};

pub struct PreToPost;

impl Pass for PreToPost {
    fn name(&self) -> &'static str {
        "pre-to-post"
    }
    fn description(&self) -> &'static str {
        "Pre-LN -> Post-LN: the inverse of post-to-pre (function-changing)"
    }
    fn class(&self) -> PassClass {
        PassClass::FunctionChanging
    }
    fn plan(&self, model: &Model, cx: &PassContext) -> Result<Patch, PassError> {
        plan_units(model, cx, self.name(), |_, a, l, unit, rewrites| {
            let mut pre: Vec<usize> = unit
                .branches
                .iter()
                .flat_map(|b| b.pre_norms.iter().copied())
                .collect();
            pre.sort_unstable();
            pre.dedup();
            match (unit.placement, pre.as_slice()) {
                (Placement::None, []) => Ok(Move::Leave(format!(
                    "unit {l} reads the stream through no norm: left as it is"
                ))),
                (Placement::Pre, [p]) => Ok(Move::To(rewrites.with_shape_of(
                    a,
                    unit.stream_in,
                    a.norms[*p].norm.output.into(),
                ))),
                (Placement::Pre, _) => Err(format!(
                    "unit {l} reads the stream through {} different norms (a parallel unit): there is no \
                     single norm to move its skip across",
                    pre.len()
                )),
                (other, _) => Err(format!("unit {l} is {other}, not pre")),
            }
        })
    }
}
