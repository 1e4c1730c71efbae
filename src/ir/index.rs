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
    /// Readers of value `v`: `consumers[consumer_start[v]..consumer_start[v + 1]]` (one flat table, few
    /// allocations).
    consumers: Vec<(NodeIndex, InputSlot)>,
    consumer_start: Vec<usize>,
    /// Operands of node `n`: `inputs[input_start[n]..input_start[n + 1]]`.
    inputs: Vec<Option<ValueId>>,
    input_start: Vec<usize>,
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
        let mut input_start = vec![0usize; nodes + 1];
        for n in graph.graph.node_indices() {
            let node = &graph.graph[n];
            for (slot, out) in node.outputs.iter().enumerate() {
                if let Some(v) = out {
                    producers[v.0 as usize] = Some((n, slot));
                }
            }
            if let NodeKind::Op(op) = &node.kind {
                input_start[n.index() + 1] = op.wired.len();
            }
        }
        prefix_sum(&mut input_start);
        let mut consumer_start = vec![0usize; values + 1];
        for e in graph.graph.edge_references() {
            consumer_start[e.weight().value.0 as usize + 1] += 1;
        }
        prefix_sum(&mut consumer_start);
        let mut consumers = vec![(NodeIndex::end(), InputSlot::Captured); graph.graph.edge_count()];
        let mut filled = consumer_start.clone();
        let mut inputs = vec![None; input_start[nodes]];
        for e in graph.graph.edge_references() {
            let w = e.weight();
            let v = w.value.0 as usize;
            consumers[filled[v]] = (e.target(), w.to_slot);
            filled[v] += 1;
            if let InputSlot::Operand(slot) = w.to_slot {
                let (start, end) = (
                    input_start[e.target().index()],
                    input_start[e.target().index() + 1],
                );
                if start + slot < end {
                    inputs[start + slot] = Some(w.value);
                }
            }
        }
        for v in 0..values {
            consumers[consumer_start[v]..consumer_start[v + 1]].sort_unstable();
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
            consumer_start,
            inputs,
            input_start,
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
        let v = v.0 as usize;
        match (self.consumer_start.get(v), self.consumer_start.get(v + 1)) {
            (Some(&start), Some(&end)) => &self.consumers[start..end],
            _ => &[],
        }
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
        match (
            self.input_start.get(n.index()),
            self.input_start.get(n.index() + 1),
        ) {
            (Some(&start), Some(&end)) => &self.inputs[start..end],
            _ => &[],
        }
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

/// Turns per-entry counts stored at `[i + 1]` into start offsets.
fn prefix_sum(starts: &mut [usize]) {
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
}
