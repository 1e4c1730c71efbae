//! `eliminate-dead-nodes` — removes op nodes whose results nothing uses.
//!
//! * Pattern: an op node none of whose outputs is read by another node (as an operand or from inside a
//!   subgraph) or is a graph output. Removing it can make its producers dead in turn, so this repeats until
//!   nothing changes.
//! * Preconditions: none. Nodes of every domain are treated alike; ONNX ops have no side effects that a graph
//!   output does not show.
//! * Exact: yes. The outputs are computed by the same nodes as before.

use std::collections::HashSet;

use petgraph::Direction;

use super::{Pass, PassClass, PassError};
use crate::ir::Model;

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
    fn run(&self, model: &mut Model) -> Result<usize, PassError> {
        let g = &mut model.graph;
        let mut removed = 0;
        loop {
            let outputs: HashSet<_> = g.outputs.iter().copied().collect();
            let dead: Vec<_> = g
                .graph
                .node_indices()
                .filter(|&n| g.graph[n].op().is_some())
                .filter(|&n| {
                    g.graph
                        .edges_directed(n, Direction::Outgoing)
                        .next()
                        .is_none()
                })
                .filter(|&n| {
                    !g.graph[n]
                        .outputs
                        .iter()
                        .flatten()
                        .any(|v| outputs.contains(v))
                })
                .collect();
            if dead.is_empty() {
                return Ok(removed);
            }
            // Indices are collected before any removal and each is removed once, so none is reused meanwhile.
            for n in dead {
                g.remove_node(n);
                removed += 1;
            }
        }
    }
}
