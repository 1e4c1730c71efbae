//! A read-only index of a graph's connections, built once in linear time for analyses that ask many
//! "who produces / who reads this value" questions. Tables are vectors indexed by value id and node index
//! (both dense), so a question costs an array access. It describes the graph as it was when built: rebuild it
//! after any mutation.

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};

use super::{Graph, InputSlot, NodeKind, Op, ValidationError, ValueId};

pub struct GraphIndex<'g> {
    pub graph: &'g Graph,
    producers: Vec<Option<(NodeIndex, usize)>>,
    consumers: Vec<Vec<(NodeIndex, InputSlot)>>,
    inputs: Vec<Vec<Option<ValueId>>>,
    graph_output: Vec<bool>,
    /// Op nodes in export order, and each op's position in it.
    order: Result<Vec<NodeIndex>, ValidationError>,
    position: Vec<usize>,
}

impl<'g> GraphIndex<'g> {
    pub fn new(graph: &'g Graph) -> Self {
        let values = graph.values.len();
        let nodes = graph.graph.node_bound();
        let mut producers = vec![None; values];
        let mut inputs: Vec<Vec<Option<ValueId>>> = vec![Vec::new(); nodes];
        for n in graph.graph.node_indices() {
            let node = &graph.graph[n];
            for (slot, out) in node.outputs.iter().enumerate() {
                if let Some(v) = out {
                    producers[v.0 as usize] = Some((n, slot));
                }
            }
            if let NodeKind::Op(op) = &node.kind {
                inputs[n.index()] = vec![None; op.wired.len()];
            }
        }
        let mut consumers: Vec<Vec<(NodeIndex, InputSlot)>> = vec![Vec::new(); values];
        for e in graph.graph.edge_references() {
            let w = e.weight();
            consumers[w.value.0 as usize].push((e.target(), w.to_slot));
            if let InputSlot::Operand(slot) = w.to_slot
                && let Some(entry) = inputs[e.target().index()].get_mut(slot)
            {
                *entry = Some(w.value);
            }
        }
        for list in &mut consumers {
            list.sort_unstable();
        }
        let mut graph_output = vec![false; values];
        for v in &graph.outputs {
            graph_output[v.0 as usize] = true;
        }
        let order = graph.ops_in_order();
        let mut position = vec![0; nodes];
        if let Ok(order) = &order {
            for (i, n) in order.iter().enumerate() {
                position[n.index()] = i + 1;
            }
        }
        GraphIndex {
            graph,
            producers,
            consumers,
            inputs,
            graph_output,
            order,
            position,
        }
    }

    pub fn producer(&self, v: ValueId) -> Option<(NodeIndex, usize)> {
        self.producers.get(v.0 as usize).copied().flatten()
    }

    /// The op producing `v`, if an op (not an input or initializer) does.
    pub fn producer_op(&self, v: ValueId) -> Option<(NodeIndex, &'g Op)> {
        let (n, _) = self.producer(v)?;
        self.graph.graph[n].op().map(|op| (n, op))
    }

    /// The op producing `v` if it is a default-domain `op_type`.
    pub fn produced_by(&self, v: ValueId, op_type: &str) -> Option<(NodeIndex, &'g Op)> {
        self.producer_op(v)
            .filter(|(_, op)| op.op_type() == op_type && op.domain().is_empty())
    }

    pub fn consumers(&self, v: ValueId) -> &[(NodeIndex, InputSlot)] {
        self.consumers
            .get(v.0 as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.graph_output
            .get(v.0 as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Readers of `v`: consuming nodes, plus one for being a graph output.
    pub fn use_count(&self, v: ValueId) -> usize {
        self.consumers(v).len() + usize::from(self.is_graph_output(v))
    }

    /// The one op reading `v`, when exactly one node reads it, once, and it is not a graph output.
    pub fn sole_consumer(&self, v: ValueId) -> Option<(NodeIndex, &'g Op)> {
        match self.consumers(v) {
            [(n, InputSlot::Operand(_))] if !self.is_graph_output(v) => {
                self.graph.graph[*n].op().map(|op| (*n, op))
            }
            _ => None,
        }
    }

    /// Operand values of an op, by slot (`None`: an empty optional input).
    pub fn inputs(&self, n: NodeIndex) -> &[Option<ValueId>] {
        self.inputs.get(n.index()).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The first output of a node.
    pub fn output(&self, n: NodeIndex) -> Option<ValueId> {
        self.graph.graph[n].outputs.first().copied().flatten()
    }

    /// Op nodes in export order; empty when the graph has a cycle.
    pub fn ops(&self) -> &[NodeIndex] {
        self.order.as_deref().unwrap_or(&[])
    }

    /// 1-based position of an op in export order; 0 for sources.
    pub fn position(&self, n: NodeIndex) -> usize {
        self.position.get(n.index()).copied().unwrap_or(0)
    }
}
