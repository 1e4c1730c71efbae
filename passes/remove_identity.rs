//! `remove-identity` — removes `Identity` nodes; their readers read the input directly.
//!
//! * Pattern: a default-domain `Identity` node.
//! * Preconditions: its output is not a graph output (the output's name is part of the interface) and is not
//!   read from inside a subgraph (a subgraph refers to it by name). Such nodes stay.
//! * Exact: yes. `Identity` copies its input.

use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Model, Patch};

use super::{Pass, PassClass, PassContext, PassError};

pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove-identity"
    }
    fn description(&self) -> &'static str {
        "remove Identity nodes (except those producing graph outputs)"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        let ix = GraphIndex::new(&model.graph);
        let mut patch = Patch::new();
        for &n in ix.ops() {
            let Some(op) = model.graph.graph[n].op() else {
                continue;
            };
            if op.op_type() != "Identity" || !op.domain().is_empty() {
                continue;
            }
            let (Some(out), [Some(input)]) = (ix.output(n), ix.inputs(n)) else {
                continue;
            };
            let captured = ix
                .consumers(out)
                .iter()
                .any(|(_, slot)| *slot == InputSlot::Captured);
            if ix.is_graph_output(out) || captured {
                continue;
            }
            patch.rewire(out, (*input).into());
            patch.remove(n);
            patch.sites += 1;
        }
        Ok(patch)
    }
}
