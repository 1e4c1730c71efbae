//! A read-only index of a graph's connections, built once in linear time for analyses that ask many
//! "who produces / who reads this value" questions. It describes the graph as it was when built: rebuild it
//! after any mutation.

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::{Graph, InputSlot, Op, ValueId};

pub struct GraphIndex<'g> {
    pub graph: &'g Graph,
    producers: HashMap<ValueId, (NodeIndex, usize)>,
    consumers: HashMap<ValueId, Vec<(NodeIndex, InputSlot)>>,
    graph_outputs: std::collections::HashSet<ValueId>,
}

impl<'g> GraphIndex<'g> {
    pub fn new(graph: &'g Graph) -> Self {
        let mut consumers: HashMap<ValueId, Vec<(NodeIndex, InputSlot)>> = HashMap::new();
        for e in graph.graph.edge_references() {
            consumers.entry(e.weight().value).or_default().push((e.target(), e.weight().to_slot));
        }
        for list in consumers.values_mut() {
            list.sort();
        }
        GraphIndex {
            graph,
            producers: graph.producer_index(),
            consumers,
            graph_outputs: graph.outputs.iter().copied().collect(),
        }
    }

    pub fn producer(&self, v: ValueId) -> Option<(NodeIndex, usize)> {
        self.producers.get(&v).copied()
    }

    /// The op producing `v`, if an op (not an input or initializer) does.
    pub fn producer_op(&self, v: ValueId) -> Option<(NodeIndex, &'g Op)> {
        let (n, _) = self.producer(v)?;
        self.graph.graph[n].op().map(|op| (n, op))
    }

    /// The op producing `v` if it is a default-domain `op_type`.
    pub fn produced_by(&self, v: ValueId, op_type: &str) -> Option<(NodeIndex, &'g Op)> {
        self.producer_op(v).filter(|(_, op)| op.op_type() == op_type && op.domain().is_empty())
    }

    pub fn consumers(&self, v: ValueId) -> &[(NodeIndex, InputSlot)] {
        self.consumers.get(&v).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.graph_outputs.contains(&v)
    }

    /// Readers of `v`: consuming nodes, plus one for being a graph output.
    pub fn use_count(&self, v: ValueId) -> usize {
        self.consumers(v).len() + usize::from(self.is_graph_output(v))
    }

    /// The one op reading `v`, when exactly one node reads it, once, and it is not a graph output.
    pub fn sole_consumer(&self, v: ValueId) -> Option<(NodeIndex, &'g Op)> {
        match self.consumers(v) {
            [(n, InputSlot::Operand(_))] if !self.is_graph_output(v) => self.graph.graph[*n].op().map(|op| (*n, op)),
            _ => None,
        }
    }

    /// Operand values of an op, by slot.
    pub fn inputs(&self, n: NodeIndex) -> Vec<Option<ValueId>> {
        self.graph.node_inputs(n)
    }

    /// The first output of a node.
    pub fn output(&self, n: NodeIndex) -> Option<ValueId> {
        self.graph.graph[n].outputs.first().copied().flatten()
    }
}
