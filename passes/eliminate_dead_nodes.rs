//! `eliminate-dead-nodes` — removes op nodes whose results nothing uses.
//!
//! * Pattern: an op node from which no graph output can be reached (through operands or values read inside
//!   subgraphs). Found in one backward walk from the graph outputs, so chains of dead nodes go in one patch.
//! * Preconditions: none. Nodes of every domain are treated alike; ONNX ops have no side effects that a graph
//!   output does not show.
//! * Exact: yes. The outputs are computed by the same nodes as before.

use petgraph::Direction;
use petgraph::visit::NodeIndexable;

use super::{Pass, PassClass, PassContext, PassError};
use crate::ir::{Model, Patch};

pub struct EliminateDeadNodes;

impl Pass for EliminateDeadNodes {
    fn name(&self) -> &'static str {
        "eliminate-dead-nodes"
    }
    fn description(&self) -> &'static str {
        "remove op nodes whose outputs nothing reads"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn wants_cleanup(&self) -> bool {
        false
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        let g = &model.graph;
        let mut live = vec![false; g.graph.node_bound()];
        let mut stack: Vec<_> = g
            .graph
            .node_indices()
            .filter(|&n| {
                g.graph[n]
                    .outputs
                    .iter()
                    .flatten()
                    .any(|v| g.outputs.contains(v))
            })
            .collect();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut live[n.index()], true) {
                continue;
            }
            stack.extend(g.graph.neighbors_directed(n, Direction::Incoming));
        }
        let mut patch = Patch::new();
        for n in g.graph.node_indices() {
            if g.graph[n].op().is_some() && !live[n.index()] {
                patch.remove(n);
                patch.sites += 1;
            }
        }
        Ok(patch)
    }
}
