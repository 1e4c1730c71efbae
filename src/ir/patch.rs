//! Patches: the one way passes edit a graph.
//!
//! A pass reads the graph (usually through a [`GraphIndex`](super::index::GraphIndex)) and describes what it
//! wants changed as a [`Patch`]: nodes to remove, nodes to add (which may take over values the removed nodes
//! produced, so that their readers and their names stay as they were), new initializers, and values whose
//! readers should read another value instead. Nothing changes until [`Model::apply`], which checks the patch
//! against the graph first and then applies it in one go, with one producer look-up table for the whole patch.
//!
//! Node indices in a patch name nodes of the graph *as the pass saw it*. Application resolves every one of
//! them (anchors, edges to re-establish) before the first removal, because a `StableGraph` hands freed
//! indices to the next node added.

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{Edge, Graph, InputSlot, Model, Node, NodeKind, Op, OrderKey, Tensor, ValueId};
use crate::onnx::{NodeProto, OperatorSetIdProto, TensorProto};

/// A value a patch refers to: one the graph has, or one the patch creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRef {
    Old(ValueId),
    New(usize),
}

impl From<ValueId> for ValueRef {
    fn from(v: ValueId) -> Self {
        ValueRef::Old(v)
    }
}

#[derive(Debug, Clone)]
struct NewValue {
    hint: String,
    initializer: Option<TensorProto>,
}

#[derive(Debug, Clone)]
struct NewNode {
    proto: NodeProto,
    inputs: Vec<Option<ValueRef>>,
    outputs: Vec<Option<ValueRef>>,
    /// Values read from inside the node's subgraphs.
    captured: Vec<ValueId>,
    /// The node it is exported next to (after it, in insertion order).
    anchor: NodeIndex,
}

/// A set of edits, applied all together or not at all.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    values: Vec<NewValue>,
    nodes: Vec<NewNode>,
    removed: Vec<NodeIndex>,
    rewired: Vec<(ValueId, ValueRef)>,
    dropped_initializers: Vec<ValueId>,
    dropped_value_info: Vec<ValueId>,
    opsets: Vec<(String, i64)>,
    ir_version: Option<i64>,
    /// How many places of the model the patch changes (what a pass reports).
    pub sites: usize,
    /// What the pass noticed and left alone, one line each, for the user.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("the patch removes node {0:?}, which is not an op of the graph")]
    NotAnOp(NodeIndex),
    #[error("the patch anchors a node at {0:?}, which is not in the graph")]
    BadAnchor(NodeIndex),
    #[error("the patch re-produces `{0}`, whose producer it does not remove")]
    StillProduced(String),
    #[error(
        "the patch redirects the readers of graph output `{0}`; the output would lose its name"
    )]
    RewiresGraphOutput(String),
    #[error(
        "the patch removes the producer of `{0}`, which a subgraph reads by name, and makes no other"
    )]
    OrphansCapture(String),
    #[error("the patch redirects the readers of `{0}`, which a subgraph reads by name")]
    RewiresCaptured(String),
    #[error("the patch drops `{0}`, which is not an initializer private to the graph")]
    NotDroppable(String),
    #[error("the patch refers to new value #{0}, which it never created")]
    UnknownValue(usize),
}

impl Patch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
            && self.removed.is_empty()
            && self.rewired.is_empty()
            && self.dropped_initializers.is_empty()
            && self.dropped_value_info.is_empty()
            && self.opsets.is_empty()
            && self.ir_version.is_none()
    }

    /// A new value, to be produced by a node of this patch; its name is `hint`, made unique.
    pub fn value(&mut self, hint: impl Into<String>) -> ValueRef {
        self.values.push(NewValue {
            hint: hint.into(),
            initializer: None,
        });
        ValueRef::New(self.values.len() - 1)
    }

    /// A new initializer holding `tensor` (whose name is replaced by `hint`, made unique).
    pub fn initializer(&mut self, hint: impl Into<String>, tensor: TensorProto) -> ValueRef {
        self.values.push(NewValue {
            hint: hint.into(),
            initializer: Some(tensor),
        });
        ValueRef::New(self.values.len() - 1)
    }

    /// Adds an op exported right after `anchor` (an existing node, which may be one this patch removes).
    /// An output may be an existing value whose producer the patch removes: the new node takes it over.
    pub fn add_node(
        &mut self,
        proto: NodeProto,
        inputs: Vec<Option<ValueRef>>,
        outputs: Vec<Option<ValueRef>>,
        anchor: NodeIndex,
    ) {
        self.add_node_capturing(proto, inputs, outputs, Vec::new(), anchor);
    }

    /// [`Patch::add_node`] for a node whose subgraphs read `captured` from this graph.
    pub fn add_node_capturing(
        &mut self,
        mut proto: NodeProto,
        inputs: Vec<Option<ValueRef>>,
        outputs: Vec<Option<ValueRef>>,
        captured: Vec<ValueId>,
        anchor: NodeIndex,
    ) {
        proto.input.clear();
        proto.output.clear();
        self.nodes.push(NewNode {
            proto,
            inputs,
            outputs,
            captured,
            anchor,
        });
    }

    /// Records something the pass left alone and why.
    pub fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    /// Replaces `node` by a copy that reads `changes` (input slot, value) instead, producing the same values and
    /// reading the same subgraph captures. `ix` describes the graph the patch is made for.
    pub fn replace_inputs(
        &mut self,
        ix: &super::index::GraphIndex,
        node: NodeIndex,
        changes: &[(usize, ValueRef)],
    ) {
        self.replace_slots(ix, node, changes, &[]);
    }

    /// [`Patch::replace_inputs`] that also names outputs: `outputs` (output slot, value) are written by the copy
    /// (an optional output the file left unnamed, say).
    pub fn replace_slots(
        &mut self,
        ix: &super::index::GraphIndex,
        node: NodeIndex,
        inputs: &[(usize, ValueRef)],
        outputs: &[(usize, ValueRef)],
    ) {
        let Some(op) = ix.graph.graph[node].op() else {
            return;
        };
        let with = |mut current: Vec<Option<ValueRef>>, changes: &[(usize, ValueRef)]| {
            for &(slot, v) in changes {
                if current.len() <= slot {
                    current.resize(slot + 1, None);
                }
                current[slot] = Some(v);
            }
            current
        };
        let old_inputs = ix
            .inputs(node)
            .iter()
            .map(|v| v.map(ValueRef::Old))
            .collect();
        let old_outputs = ix.graph.graph[node]
            .outputs
            .iter()
            .map(|v| v.map(ValueRef::Old))
            .collect();
        self.add_node_capturing(
            op.proto.clone(),
            with(old_inputs, inputs),
            with(old_outputs, outputs),
            ix.graph.captured_values(node),
            node,
        );
        self.remove(node);
    }

    pub fn remove(&mut self, node: NodeIndex) {
        self.removed.push(node);
    }

    /// Every reader of `old` (op inputs and subgraph captures) reads `new` instead.
    pub fn rewire(&mut self, old: ValueId, new: ValueRef) {
        self.rewired.push((old, new));
    }

    /// Removes an initializer (which must not be a graph input or output).
    pub fn drop_initializer(&mut self, v: ValueId) {
        self.dropped_initializers.push(v);
    }

    /// Removes a value's `value_info` entry.
    pub fn drop_value_info(&mut self, v: ValueId) {
        self.dropped_value_info.push(v);
    }

    /// Sets the model's import of `domain` to at least `version` (`""` is the default domain).
    pub fn require_opset(&mut self, domain: &str, version: i64) {
        match self.opsets.iter_mut().find(|(d, _)| d == domain) {
            Some((_, v)) => *v = (*v).max(version),
            None => self.opsets.push((domain.to_string(), version)),
        }
    }

    /// Raises the model's IR version to at least `version`.
    pub fn require_ir_version(&mut self, version: i64) {
        self.ir_version = Some(self.ir_version.unwrap_or(0).max(version));
    }

    /// The nodes this patch removes.
    pub fn removed(&self) -> &[NodeIndex] {
        &self.removed
    }

    /// The default-domain opset this patch asks for, if it asks for one.
    pub fn required_opset(&self, domain: &str) -> Option<i64> {
        self.opsets
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, v)| *v)
    }

    /// Adds `other`'s edits to this patch. Both must have been made from the same graph.
    pub fn merge(&mut self, other: Patch) {
        let offset = self.values.len();
        let shift = |r: ValueRef| match r {
            ValueRef::New(i) => ValueRef::New(i + offset),
            old => old,
        };
        self.values.extend(other.values);
        for mut n in other.nodes {
            n.inputs.iter_mut().flatten().for_each(|r| *r = shift(*r));
            n.outputs.iter_mut().flatten().for_each(|r| *r = shift(*r));
            self.nodes.push(n);
        }
        self.removed.extend(other.removed);
        self.dropped_initializers.extend(other.dropped_initializers);
        self.dropped_value_info.extend(other.dropped_value_info);
        self.rewired
            .extend(other.rewired.into_iter().map(|(o, n)| (o, shift(n))));
        for (d, v) in other.opsets {
            self.require_opset(&d, v);
        }
        if let Some(v) = other.ir_version {
            self.require_ir_version(v);
        }
        self.sites += other.sites;
        self.notes.extend(other.notes);
    }
}

/// An edge to re-create once the patch's nodes are in place.
struct PendingEdge {
    value: ValueId,
    to: NodeIndex,
    to_slot: InputSlot,
}

impl Model {
    /// Applies a patch: checks it, then edits the graph and the opset imports. Validation of the result is the
    /// caller's (the pass manager validates after every pass).
    pub fn apply(&mut self, patch: Patch) -> Result<(), PatchError> {
        self.graph.apply(&patch)?;
        for (domain, version) in &patch.opsets {
            set_opset(&mut self.header.opset_import, domain, *version);
        }
        if let Some(v) = patch.ir_version
            && self.header.ir_version() < v
        {
            self.header.ir_version = Some(v);
        }
        Ok(())
    }
}

fn set_opset(opsets: &mut Vec<OperatorSetIdProto>, domain: &str, version: i64) {
    let is_default = |d: &str| d.is_empty() || d == "ai.onnx";
    let same = |o: &OperatorSetIdProto| {
        let d = o.domain.as_deref().unwrap_or("");
        d == domain || (is_default(d) && is_default(domain))
    };
    match opsets.iter_mut().find(|o| same(o)) {
        Some(o) if o.version.unwrap_or(0) >= version => {}
        Some(o) => o.version = Some(version),
        None => opsets.push(OperatorSetIdProto {
            domain: Some(domain.to_string()),
            version: Some(version),
        }),
    }
}

impl Graph {
    fn check_patch(
        &self,
        patch: &Patch,
        producers: &HashMap<ValueId, (NodeIndex, usize)>,
    ) -> Result<(), PatchError> {
        for &n in &patch.removed {
            if self.graph.node_weight(n).and_then(Node::op).is_none() {
                return Err(PatchError::NotAnOp(n));
            }
        }
        let removed: HashSet<NodeIndex> = patch.removed.iter().copied().collect();
        // A value read by name inside a subgraph must keep its producer: a new node has to take it over.
        let taken_over: HashSet<ValueId> = patch
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().flatten())
            .filter_map(|r| match r {
                ValueRef::Old(v) => Some(*v),
                ValueRef::New(_) => None,
            })
            .collect();
        for &n in &patch.removed {
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let w = e.weight();
                if w.to_slot == InputSlot::Captured
                    && !removed.contains(&e.target())
                    && !taken_over.contains(&w.value)
                {
                    return Err(PatchError::OrphansCapture(self.value(w.value).name.clone()));
                }
            }
        }
        let new_ok = |r: &ValueRef| match r {
            ValueRef::New(i) if *i >= patch.values.len() => Err(PatchError::UnknownValue(*i)),
            _ => Ok(()),
        };
        for node in &patch.nodes {
            if self.graph.node_weight(node.anchor).is_none() {
                return Err(PatchError::BadAnchor(node.anchor));
            }
            for r in node.inputs.iter().chain(&node.outputs).flatten() {
                new_ok(r)?;
            }
            for out in node.outputs.iter().flatten() {
                if let ValueRef::Old(v) = out
                    && let Some((p, _)) = producers.get(v)
                    && !removed.contains(p)
                {
                    return Err(PatchError::StillProduced(self.value(*v).name.clone()));
                }
            }
        }
        for &v in &patch.dropped_initializers {
            if !self.tensors.contains_key(&v)
                || self.inputs.contains(&v)
                || self.outputs.contains(&v)
            {
                return Err(PatchError::NotDroppable(self.value(v).name.clone()));
            }
        }
        let captured: HashSet<ValueId> = if patch.rewired.is_empty() {
            HashSet::new()
        } else {
            self.graph
                .edge_weights()
                .filter(|e| e.to_slot == InputSlot::Captured)
                .map(|e| e.value)
                .collect()
        };
        for (old, new) in &patch.rewired {
            new_ok(new)?;
            if self.outputs.contains(old) {
                return Err(PatchError::RewiresGraphOutput(
                    self.value(*old).name.clone(),
                ));
            }
            if captured.contains(old) {
                return Err(PatchError::RewiresCaptured(self.value(*old).name.clone()));
            }
        }
        Ok(())
    }

    pub(crate) fn apply(&mut self, patch: &Patch) -> Result<(), PatchError> {
        if patch.is_empty() {
            return Ok(());
        }
        // One producer table for the whole patch: checked against, then kept up to date below.
        let mut producers = self.producer_index();
        self.check_patch(patch, &producers)?;
        let removed: HashSet<NodeIndex> = patch.removed.iter().copied().collect();
        let rewired: HashMap<ValueId, ValueRef> = patch.rewired.iter().copied().collect();

        // Everything that names a node by index is resolved before the first removal.
        let anchors: Vec<OrderKey> = patch
            .nodes
            .iter()
            .map(|n| self.order_key(n.anchor))
            .collect();
        let mut pending = Vec::new();
        for &n in &patch.removed {
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                if !removed.contains(&e.target()) {
                    pending.push(PendingEdge {
                        value: e.weight().value,
                        to: e.target(),
                        to_slot: e.weight().to_slot,
                    });
                }
            }
        }
        // Edges carrying a rewired value are taken out (and re-added below, from the new producer).
        let mut dropped_edges = HashSet::new();
        for e in self.graph.edge_indices() {
            let w = &self.graph[e];
            if !rewired.contains_key(&w.value) {
                continue;
            }
            let Some((from, to)) = self.graph.edge_endpoints(e) else {
                continue;
            };
            // Edges out of removed nodes are already pending; edges into them go with them.
            if removed.contains(&from) || removed.contains(&to) {
                continue;
            }
            dropped_edges.insert(e);
            pending.push(PendingEdge {
                value: w.value,
                to,
                to_slot: w.to_slot,
            });
        }
        let mut dropped_nodes = removed.clone();
        if !patch.dropped_initializers.is_empty() {
            let dropped: HashSet<ValueId> = patch.dropped_initializers.iter().copied().collect();
            dropped_nodes.extend(self.graph.node_indices().filter(|&n| {
                self.graph[n].op().is_none()
                    && self.graph[n]
                        .outputs
                        .iter()
                        .flatten()
                        .any(|v| dropped.contains(v))
            }));
            self.initializers.retain(|v| !dropped.contains(v));
            self.tensors.retain(|v, _| !dropped.contains(v));
        }
        // One rebuild, linear in the graph, keeping every other index: removing nodes one by one costs the
        // degree of each neighbour per edge (petgraph walks its edge list), quadratic when many removed nodes
        // read one shared constant.
        if !dropped_nodes.is_empty() || !dropped_edges.is_empty() {
            let graph = std::mem::take(&mut self.graph);
            self.graph = graph.filter_map_owned(
                |n, w| (!dropped_nodes.contains(&n)).then_some(w),
                |e, w| (!dropped_edges.contains(&e)).then_some(w),
            );
        }
        if !patch.dropped_value_info.is_empty() {
            let dropped: HashSet<ValueId> = patch.dropped_value_info.iter().copied().collect();
            self.value_info.retain(|v| !dropped.contains(v));
        }

        // Entries of the nodes just removed go, before their indices can be handed out again.
        producers.retain(|_, (n, _)| self.graph.contains_node(*n));
        let mut new_values = Vec::with_capacity(patch.values.len());
        for v in &patch.values {
            let (id, source) = self.create_value(v);
            if let Some(source) = source {
                producers.insert(id, (source, 0));
            }
            new_values.push(id);
        }
        let resolve = |r: ValueRef| match r {
            ValueRef::Old(v) => v,
            ValueRef::New(i) => new_values[i],
        };
        // Rewiring is transitive (a chain of removed Identity nodes): follow it to a value that stays.
        let chase = |v: ValueId| {
            let mut current = ValueRef::Old(v);
            for _ in 0..=rewired.len() {
                match current {
                    ValueRef::Old(old) if rewired.contains_key(&old) => current = rewired[&old],
                    _ => break,
                }
            }
            resolve(current)
        };
        // Node names stay unique: onnxruntime refuses a file with two nodes of one name, and two passes (or
        // one pass at two sites) may well derive the same name.
        let mut node_names: HashSet<String> = if patch.nodes.is_empty() {
            HashSet::new()
        } else {
            self.graph
                .node_weights()
                .filter_map(|n| n.op().map(|op| op.proto.name().to_string()))
                .collect()
        };
        let mut added = Vec::with_capacity(patch.nodes.len());
        for (node, anchor) in patch.nodes.iter().zip(anchors) {
            self.next_inserted += 1;
            let mut proto = node.proto.clone();
            if let Some(hint) = proto.name.clone().filter(|n| !n.is_empty()) {
                let mut name = hint.clone();
                let mut k = 0;
                while node_names.contains(&name) {
                    k += 1;
                    name = format!("{hint}_{k}");
                }
                node_names.insert(name.clone());
                proto.name = Some(name);
            }
            let outputs: Vec<Option<ValueId>> =
                node.outputs.iter().map(|o| o.map(resolve)).collect();
            let index = self.graph.add_node(Node {
                kind: NodeKind::Op(Op {
                    proto,
                    wired: node.inputs.iter().map(Option::is_some).collect(),
                    order: OrderKey {
                        position: anchor.position,
                        inserted: self.next_inserted,
                    },
                }),
                outputs: outputs.clone(),
            });
            for (slot, v) in outputs.iter().enumerate() {
                if let Some(v) = v {
                    producers.insert(*v, (index, slot));
                }
            }
            added.push(index);
        }
        let connect = |g: &mut Graph, value: ValueId, to: NodeIndex, to_slot: InputSlot| {
            if let Some(&(from, from_slot)) = producers.get(&value)
                && from != to
            {
                g.graph.add_edge(
                    from,
                    to,
                    Edge {
                        from_slot,
                        to_slot,
                        value,
                    },
                );
            }
        };
        for (node, &index) in patch.nodes.iter().zip(&added) {
            for (slot, input) in node.inputs.iter().enumerate() {
                if let Some(r) = input {
                    let value = match r {
                        // A new node reads what it names (the nodes computing a replacement of `v` read
                        // `v` itself); only a value whose producer the patch removed is followed along the
                        // rewiring.
                        ValueRef::Old(v) if producers.contains_key(v) => *v,
                        ValueRef::Old(v) => chase(*v),
                        new => resolve(*new),
                    };
                    connect(self, value, index, InputSlot::Operand(slot));
                }
            }
            for &v in &node.captured {
                connect(self, v, index, InputSlot::Captured);
            }
        }
        for e in pending {
            let mut value = chase(e.value);
            // The node computing the replacement from the old value keeps reading the old value.
            if producers.get(&value).is_some_and(|&(p, _)| p == e.to) {
                value = e.value;
            }
            connect(self, value, e.to, e.to_slot);
        }
        Ok(())
    }

    fn order_key(&self, n: NodeIndex) -> OrderKey {
        match self.graph.node_weight(n).map(|w| &w.kind) {
            Some(NodeKind::Op(op)) => op.order,
            _ => OrderKey {
                position: 0,
                inserted: 0,
            },
        }
    }

    /// Adds a new value; for an initializer, also its source node, returned.
    fn create_value(&mut self, v: &NewValue) -> (ValueId, Option<NodeIndex>) {
        let id = self.add_value(&v.hint, None);
        let mut source = None;
        if let Some(proto) = &v.initializer {
            let mut proto = proto.clone();
            proto.name = Some(self.value(id).name.clone());
            self.tensors.insert(
                id,
                Tensor {
                    proto,
                    external: None,
                },
            );
            self.initializers.push(id);
            source = Some(self.graph.add_node(Node {
                kind: NodeKind::Source,
                outputs: vec![Some(id)],
            }));
        }
        (id, source)
    }
}
