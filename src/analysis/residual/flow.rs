//! Data flow between values: which values carry the model's inputs' contents, and which nodes lie on the
//! paths from one value to another. Dependencies through `Shape`/`Size` carry no data and are ignored.

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, ValueId};

/// Whether node `n` reads the data of what it takes at `slot` (not only its shape or type).
pub(super) fn reads_data(ix: &GraphIndex, n: NodeIndex, slot: InputSlot) -> bool {
    ix.graph.graph[n]
        .op()
        .is_some_and(|op| op.reads_data_at(slot))
}

/// Which values carry data from the graph's inputs (not merely their shapes, and not constants).
pub struct Flow {
    data: Vec<bool>,
}

impl Flow {
    /// One walk in export order.
    pub fn new(ix: &GraphIndex) -> Flow {
        let g = ix.graph;
        let mut data = vec![false; g.values.len()];
        // Inside a subgraph body, the activations it reads from the graphs around it are inputs too.
        for &v in g.inputs.iter().chain(&g.captured) {
            // A pre-IR4 weight is listed as an input with a default: it is a weight all the same.
            if g.initializer(v).is_none() {
                data[v.0 as usize] = true;
            }
        }
        for &n in ix.ops() {
            let carries = g.graph.edges_directed(n, Direction::Incoming).any(|e| {
                data[e.weight().value.0 as usize] && reads_data(ix, n, e.weight().to_slot)
            });
            if carries {
                for v in g.graph[n].outputs.iter().flatten() {
                    data[v.0 as usize] = true;
                }
            }
        }
        Flow { data }
    }

    /// Whether `v`'s contents depend on what the model is given (an activation), rather than on its weights
    /// and the shapes of its inputs alone.
    pub fn carries_data(&self, v: ValueId) -> bool {
        self.data.get(v.0 as usize).copied().unwrap_or(false)
    }
}

/// Position of a value's producer in export order (0 for inputs and initializers).
pub(super) fn value_position(ix: &GraphIndex, v: ValueId) -> usize {
    ix.producer(v).map(|(n, _)| ix.position(n)).unwrap_or(0)
}

/// Whether `v` is a constant, without reading it: an initializer that is not a graph input, or a `Constant`.
pub(super) fn is_constant(ix: &GraphIndex, v: ValueId) -> bool {
    match ix.producer_op(v) {
        Some((_, op)) => op.op_type() == "Constant" && op.domain().is_empty(),
        None => ix.graph.initializer(v).is_some() && !ix.graph.inputs.contains(&v),
    }
}

pub(super) fn has_op(ix: &GraphIndex, nodes: &[NodeIndex], types: &[&str]) -> bool {
    nodes.iter().any(|&n| {
        ix.graph.graph[n]
            .op()
            .is_some_and(|op| types.contains(&op.op_type()))
    })
}

/// Nodes on data paths from value `a` to value `b` (excluding `a`'s producer, including `b`'s), or `None` if
/// `b` does not depend on `a`. Only nodes between the two in topological order are visited, so a search
/// confined to one sublayer costs that sublayer. `also_from` are further starting values that stand for `a`
/// (the normalized output of the Skip op whose sum `a` is).
pub(super) fn between(
    ix: &GraphIndex,
    a: ValueId,
    b: ValueId,
    also_from: Option<ValueId>,
) -> Option<Vec<NodeIndex>> {
    let (lo, hi) = (value_position(ix, a), value_position(ix, b));
    if lo >= hi {
        return None;
    }
    let (b_node, _) = ix.producer(b)?;
    let g = &ix.graph.graph;
    // Marks by position inside the window (lo, hi]: the window is one sublayer, so this stays small.
    let slot = |n: NodeIndex| ix.position(n).checked_sub(lo + 1).filter(|&s| s < hi - lo);
    let mut forward = vec![false; hi - lo];
    // Readers of the start values that read their data, then of everything they compute.
    let mut stack: Vec<NodeIndex> = std::iter::once(a)
        .chain(also_from)
        .flat_map(|v| ix.consumers(v).iter())
        .filter(|&&(n, s)| reads_data(ix, n, s))
        .map(|&(n, _)| n)
        .collect();
    while let Some(n) = stack.pop() {
        let Some(s) = slot(n) else { continue };
        if std::mem::replace(&mut forward[s], true) {
            continue;
        }
        stack.extend(
            g.edges_directed(n, Direction::Outgoing)
                .filter(|e| reads_data(ix, e.target(), e.weight().to_slot))
                .map(|e| e.target()),
        );
    }
    if !slot(b_node).is_some_and(|s| forward[s]) {
        return None;
    }
    // Second walk, backwards from `b` over the forward set; `visited` keeps each node once.
    let mut visited = vec![false; hi - lo];
    let mut on_path = Vec::new();
    let mut stack = vec![b_node];
    while let Some(n) = stack.pop() {
        let Some(s) = slot(n).filter(|&s| forward[s]) else {
            continue;
        };
        if std::mem::replace(&mut visited[s], true) {
            continue;
        }
        on_path.push(n);
        stack.extend(g.edges_directed(n, Direction::Incoming).map(|e| e.source()));
    }
    Some(on_path)
}

/// Whether `b` depends on `a` through data (not through shapes).
pub(super) fn depends_on(ix: &GraphIndex, a: ValueId, b: ValueId) -> bool {
    between(ix, a, b, None).is_some()
}
