//! Residual units and where their norms sit.
//!
//! * [`search`] finds the units by data flow along the stream, however the exporter grouped their sums;
//! * [`branch`] says what each branch computes (attention, MLP, other);
//! * [`roles`] gives every norm its role around the units;
//! * [`stream`] is the stream as values, and the ops that carry it;
//! * [`types`] and [`json`] are the report.

mod branch;
mod flow;
mod json;
mod roles;
mod search;
pub mod stream;
mod types;

pub use flow::Flow;
pub use stream::{PASS_THROUGH, Stream, StreamError, keeps_zero_mean, origin, shape_steps};
pub use types::{
    Analysis, Branch, BranchKind, NormInfo, NormSummary, Placement, ResidualUnit, Role,
};

use super::norms::find_norms;
use crate::ir::index::GraphIndex;

/// Finds the norms, the residual units and the role of every norm.
pub fn analyze(ix: &GraphIndex) -> Analysis {
    let norms = find_norms(ix);
    let flow = Flow::new(ix);
    let candidates = search::spine(ix, &norms);
    let (units, roles) = roles::assign(ix, &flow, &norms, &candidates);
    roles::summarize(norms, roles, units)
}
