//! `remove-unused` — removes initializers nothing reads and `value_info` entries of values that no longer exist.
//!
//! * Pattern: an initializer with no reader that is neither a graph input nor a graph output; a `value_info`
//!   entry for a value no node produces.
//! * Preconditions: none. Initializers listed as graph inputs are part of the model's interface and stay.
//! * Exact: yes. Nothing removed was read.

use std::collections::HashSet;

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{Pass, PassClass, PassContext, PassError};
use crate::ir::{Model, Patch};

pub struct RemoveUnused;

impl Pass for RemoveUnused {
    fn name(&self) -> &'static str {
        "remove-unused"
    }
    fn description(&self) -> &'static str {
        "remove initializers nothing reads and value_info of values that are gone"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn wants_cleanup(&self) -> bool {
        false
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        Ok(unused_after_removing(model, &HashSet::new()))
    }
}

/// What would be unused once the nodes in `removed` are gone.
pub fn unused_after_removing(model: &Model, removed: &HashSet<NodeIndex>) -> Patch {
    let g = &model.graph;
    let producers = g.producer_index();
    let mut patch = Patch::new();
    for &v in &g.initializers {
        if g.inputs.contains(&v) || g.outputs.contains(&v) {
            continue;
        }
        let read = producers.get(&v).is_some_and(|&(n, _)| {
            g.graph
                .edges_directed(n, Direction::Outgoing)
                .any(|e| !removed.contains(&e.target()))
        });
        if !read {
            patch.drop_initializer(v);
            patch.sites += 1;
        }
    }
    for &v in &g.value_info {
        if producers.get(&v).is_none_or(|(n, _)| removed.contains(n)) {
            patch.drop_value_info(v);
            patch.sites += 1;
        }
    }
    patch
}
