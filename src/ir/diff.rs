//! A structural diff of two graphs: which nodes one has that the other lacks, and which it kept but rewired.
//!
//! Nodes are matched by what they compute, never by node or value names nor by file order, so the diff works
//! on what any tool wrote. A node's *signature* is its op with attributes (the text form's `op[attrs]`); a
//! constant's is its type, shape and content hash; a graph input's is its position. Matching starts from the
//! anchors a rewrite rarely touches — signatures that occur once on each side (weights, mostly), graph inputs,
//! the producers of graph outputs — and spreads along edges: from a matched pair to the producers at the same
//! input slots, and to consumers reading the same output slot, wherever the signatures agree and the choice is
//! unique. What stays unmatched is removed (first graph) or added (second); a matched op whose input now comes
//! from a node that was there before (or no longer from one that still is) is *rewired* — one fed by the node
//! that replaced its producer is not: the replacement is the removed and added lines.

use std::collections::{BTreeMap, HashMap, VecDeque};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use serde::Serialize;

use super::text::{TextOptions, op_text};
use super::{Graph, InputSlot, NodeKind, ValueId};

/// Which nodes of `a` correspond to which of `b`.
#[derive(Debug, Clone, Default)]
pub struct Matching {
    a_to_b: HashMap<NodeIndex, NodeIndex>,
    b_to_a: HashMap<NodeIndex, NodeIndex>,
}

impl Matching {
    pub fn of_a(&self, a: NodeIndex) -> Option<NodeIndex> {
        self.a_to_b.get(&a).copied()
    }

    pub fn of_b(&self, b: NodeIndex) -> Option<NodeIndex> {
        self.b_to_a.get(&b).copied()
    }

    fn pair(&mut self, a: NodeIndex, b: NodeIndex) -> bool {
        if self.a_to_b.contains_key(&a) || self.b_to_a.contains_key(&b) {
            return false;
        }
        self.a_to_b.insert(a, b);
        self.b_to_a.insert(b, a);
        true
    }

    /// Values of `a` paired with the values of `b` that matched nodes compute at the same output slot.
    pub fn value_pairs(&self, a: &Graph, b: &Graph) -> Vec<(ValueId, ValueId)> {
        let mut pairs = Vec::new();
        for (&na, &nb) in &self.a_to_b {
            for (va, vb) in a.graph[na].outputs.iter().zip(&b.graph[nb].outputs) {
                if let (Some(va), Some(vb)) = (va, vb) {
                    pairs.push((*va, *vb));
                }
            }
        }
        pairs.sort();
        pairs
    }
}

/// What a node computes, without names: the key nodes are matched by.
fn signature(g: &Graph, n: NodeIndex) -> String {
    let node = &g.graph[n];
    match &node.kind {
        NodeKind::Op(op) => format!("{}/{}/{}", op_text(op), op.wired.len(), node.outputs.len()),
        NodeKind::Source => {
            let Some(v) = node.outputs.first().copied().flatten() else {
                return "source".into();
            };
            match g.constant_text(v) {
                Some(c) => format!("const {c}"),
                None => {
                    let position = g.runtime_inputs().position(|i| i == v);
                    format!("input #{}", position.map_or(-1, |p| p as i64))
                }
            }
        }
    }
}

/// The producer (node and output slot) of each operand of `n`, by slot.
fn operand_producers(
    g: &Graph,
    n: NodeIndex,
    producers: &HashMap<ValueId, (NodeIndex, usize)>,
) -> Vec<Option<(NodeIndex, usize)>> {
    g.node_inputs(n)
        .into_iter()
        .map(|v| v.and_then(|v| producers.get(&v).copied()))
        .collect()
}

/// Consumers of `n`'s outputs that `matching` has not placed, keyed by (output slot, input slot, signature).
fn open_consumers(
    g: &Graph,
    n: NodeIndex,
    sigs: &HashMap<NodeIndex, String>,
    placed: impl Fn(NodeIndex) -> bool,
) -> BTreeMap<(usize, usize, String), Vec<NodeIndex>> {
    let mut groups: BTreeMap<(usize, usize, String), Vec<NodeIndex>> = BTreeMap::new();
    for e in g.graph.edges_directed(n, Direction::Outgoing) {
        let InputSlot::Operand(slot) = e.weight().to_slot else {
            continue;
        };
        let t = e.target();
        if placed(t) {
            continue;
        }
        // One edge per input slot: a consumer appears once under its key.
        groups
            .entry((e.weight().from_slot, slot, sigs[&t].clone()))
            .or_default()
            .push(t);
    }
    groups
}

struct Sides<'g> {
    a: &'g Graph,
    b: &'g Graph,
    sig_a: HashMap<NodeIndex, String>,
    sig_b: HashMap<NodeIndex, String>,
    prod_a: HashMap<ValueId, (NodeIndex, usize)>,
    prod_b: HashMap<ValueId, (NodeIndex, usize)>,
}

impl Sides<'_> {
    /// Pairs nodes whose signature occurs once among the nodes not yet matched on each side.
    fn unique_pairs(&self, m: &Matching) -> Vec<(NodeIndex, NodeIndex)> {
        let mut by_sig: BTreeMap<&str, (Vec<NodeIndex>, Vec<NodeIndex>)> = BTreeMap::new();
        for (n, s) in &self.sig_a {
            if m.of_a(*n).is_none() {
                by_sig.entry(s).or_default().0.push(*n);
            }
        }
        for (n, s) in &self.sig_b {
            if m.of_b(*n).is_none() {
                by_sig.entry(s).or_default().1.push(*n);
            }
        }
        by_sig
            .into_values()
            .filter_map(|(a, b)| match (a.as_slice(), b.as_slice()) {
                ([a], [b]) => Some((*a, *b)),
                _ => None,
            })
            .collect()
    }

    /// Spreads the matching from the pairs in `queue` until nothing more can be paired.
    fn propagate(&self, m: &mut Matching, mut queue: VecDeque<(NodeIndex, NodeIndex)>) {
        while let Some((a, b)) = queue.pop_front() {
            let ins_a = operand_producers(self.a, a, &self.prod_a);
            let ins_b = operand_producers(self.b, b, &self.prod_b);
            for (pa, pb) in ins_a.iter().zip(&ins_b) {
                if let (Some((pa, sa)), Some((pb, sb))) = (pa, pb)
                    && sa == sb
                    && self.sig_a[pa] == self.sig_b[pb]
                    && m.pair(*pa, *pb)
                {
                    queue.push_back((*pa, *pb));
                }
            }
            let ca = open_consumers(self.a, a, &self.sig_a, |n| m.of_a(n).is_some());
            let cb = open_consumers(self.b, b, &self.sig_b, |n| m.of_b(n).is_some());
            for (key, group_a) in &ca {
                if let ([na], Some([nb])) = (group_a.as_slice(), cb.get(key).map(Vec::as_slice))
                    && m.pair(*na, *nb)
                {
                    queue.push_back((*na, *nb));
                }
            }
        }
    }
}

/// Matches the nodes of `a` and `b` by structure (see the module documentation).
pub fn match_nodes(a: &Graph, b: &Graph) -> Matching {
    let sides = Sides {
        a,
        b,
        sig_a: a
            .graph
            .node_indices()
            .map(|n| (n, signature(a, n)))
            .collect(),
        sig_b: b
            .graph
            .node_indices()
            .map(|n| (n, signature(b, n)))
            .collect(),
        prod_a: a.producer_index(),
        prod_b: b.producer_index(),
    };
    let mut m = Matching::default();
    let mut queue = VecDeque::new();
    for (va, vb) in a.outputs.iter().zip(&b.outputs) {
        if let (Some(&(pa, sa)), Some(&(pb, sb))) = (sides.prod_a.get(va), sides.prod_b.get(vb))
            && sa == sb
            && sides.sig_a[&pa] == sides.sig_b[&pb]
            && m.pair(pa, pb)
        {
            queue.push_back((pa, pb));
        }
    }
    loop {
        queue.extend(
            sides
                .unique_pairs(&m)
                .into_iter()
                .filter(|(x, y)| m.pair(*x, *y)),
        );
        if queue.is_empty() {
            return m;
        }
        sides.propagate(&mut m, std::mem::take(&mut queue));
    }
}

/// A node kept but fed from elsewhere: its line in each graph, and the input slots whose producer changed.
#[derive(Debug, Clone, Serialize)]
pub struct Rewired {
    pub before: String,
    pub after: String,
    pub slots: Vec<usize>,
}

/// What a rewrite changed, node by node, in each graph's text form.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GraphDiff {
    /// Ops of the first graph with no match in the second, in its export order.
    pub removed: Vec<String>,
    /// Ops of the second graph with no match in the first, in its export order.
    pub added: Vec<String>,
    pub rewired: Vec<Rewired>,
    pub removed_constants: Vec<String>,
    pub added_constants: Vec<String>,
    /// Graph inputs or outputs whose count differs, as a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Ops matched and fed alike.
    pub unchanged: usize,
    /// The removed ops as nodes of the first graph, and the added ones of the second (same order as the lines).
    #[serde(skip)]
    pub removed_ops: Vec<NodeIndex>,
    #[serde(skip)]
    pub added_ops: Vec<NodeIndex>,
}

impl GraphDiff {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
            && self.added.is_empty()
            && self.rewired.is_empty()
            && self.removed_constants.is_empty()
            && self.added_constants.is_empty()
            && self.interface.is_none()
    }

    /// The diff as lines: `-` removed, `+` added, `~` rewired (with the line it had before), constants last.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(note) = &self.interface {
            out.push_str(&format!("! {note}\n"));
        }
        for l in &self.removed {
            out.push_str(&format!("- {l}\n"));
        }
        for l in &self.added {
            out.push_str(&format!("+ {l}\n"));
        }
        for r in &self.rewired {
            out.push_str(&format!("~ {}\n  (was {})\n", r.after, r.before));
        }
        for l in &self.removed_constants {
            out.push_str(&format!("- const {l}\n"));
        }
        for l in &self.added_constants {
            out.push_str(&format!("+ const {l}\n"));
        }
        out.push_str(&format!("{} ops unchanged\n", self.unchanged));
        out
    }
}

fn constant_line(g: &Graph, n: NodeIndex) -> Option<String> {
    let v = g.graph[n].outputs.first().copied().flatten()?;
    let summary = g.constant_text(v)?;
    Some(format!("{}: {summary}", g.value(v).name))
}

/// The structural diff of `a` against `b`.
pub fn diff(a: &Graph, b: &Graph) -> GraphDiff {
    let m = match_nodes(a, b);
    let order = |g: &Graph| g.ops_in_order().unwrap_or_default();
    let text = |g: &Graph, n| g.node_text(n, TextOptions::default()).unwrap_or_default();
    let prod_a = a.producer_index();
    let prod_b = b.producer_index();
    let mut d = GraphDiff::default();
    for n in order(a) {
        if m.of_a(n).is_none() {
            d.removed.push(text(a, n));
            d.removed_ops.push(n);
        }
    }
    for n in order(b) {
        let Some(na) = m.of_b(n) else {
            d.added.push(text(b, n));
            d.added_ops.push(n);
            continue;
        };
        let ins_a = operand_producers(a, na, &prod_a);
        let ins_b = operand_producers(b, n, &prod_b);
        let slots: Vec<usize> = (0..ins_a.len().max(ins_b.len()))
            .filter(|&i| {
                let pa = ins_a.get(i).copied().flatten();
                let pb = ins_b.get(i).copied().flatten();
                match (pa, pb) {
                    (None, None) => false,
                    // Fed by the node that replaced its producer (one removed, one added): a replacement,
                    // which the removed and added lines show, not a rewiring.
                    (Some((pa, _)), Some((pb, _)))
                        if m.of_a(pa).is_none() && m.of_b(pb).is_none() =>
                    {
                        false
                    }
                    (Some((pa, sa)), Some((pb, sb))) => sa != sb || m.of_a(pa) != Some(pb),
                    _ => true,
                }
            })
            .collect();
        if slots.is_empty() {
            d.unchanged += 1;
        } else {
            d.rewired.push(Rewired {
                before: text(a, na),
                after: text(b, n),
                slots,
            });
        }
    }
    let sources = |g: &Graph, producers: &HashMap<ValueId, (NodeIndex, usize)>| -> Vec<NodeIndex> {
        g.initializers
            .iter()
            .filter_map(|v| producers.get(v).map(|(n, _)| *n))
            .collect()
    };
    for n in sources(a, &prod_a) {
        if m.of_a(n).is_none() {
            d.removed_constants.extend(constant_line(a, n));
        }
    }
    for n in sources(b, &prod_b) {
        if m.of_b(n).is_none() {
            d.added_constants.extend(constant_line(b, n));
        }
    }
    let (ia, ib) = (a.runtime_inputs().count(), b.runtime_inputs().count());
    if ia != ib || a.outputs.len() != b.outputs.len() {
        d.interface = Some(format!(
            "{ia} inputs and {} outputs against {ib} inputs and {} outputs",
            a.outputs.len(),
            b.outputs.len()
        ));
    }
    d
}
