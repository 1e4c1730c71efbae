//! The graph IR: an ONNX graph as a `petgraph::StableGraph`.
//!
//! * **Nodes** are either *sources* (a graph input, an initializer, or both: before IR version 4 weights were
//!   listed as inputs with a default) or *ops* (the original `NodeProto`, kept whole so that fields this crate
//!   does not interpret — attributes, subgraphs, doc strings, device configurations — survive untouched; only
//!   its `input`/`output` lists are taken over by the graph structure).
//! * **Edges** carry the producer's output slot, the consumer's input slot and the value. A slot is explicit
//!   because petgraph returns incoming edges newest-first: the order of edges means nothing, the slot does.
//!   A node with a subgraph attribute (If/Loop/Scan) that reads a value of this graph from inside the subgraph
//!   gets a [`InputSlot::Captured`] edge for it, so that ordering and dead-code elimination see the dependency.
//! * **Values** live in a table indexed by [`ValueId`], which (unlike a `NodeIndex`) stays valid across every
//!   mutation: a `StableGraph` reuses freed node indices, so code that edits the graph holds value ids, and
//!   looks producers up again after each change.
//!
//! The export order of nodes is the original file order wherever the graph did not change: each op node carries
//! an [`OrderKey`] and export is a topological sort that always emits the smallest ready key.

pub mod diff;
mod export;
pub mod extract;
mod import;
pub mod index;
pub mod inline;
pub mod patch;
pub mod subgraph;
pub mod text;
mod validate;

use std::collections::HashMap;

use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableGraph};

use crate::onnx::{self, GraphProto, ModelProto, NodeProto, TypeProto, ValueInfoProto};

pub use crate::tensor::Tensor;
pub use extract::{ExtractError, Extracted, Segment};
pub use patch::{Patch, PatchError, ValueRef};
pub use validate::ValidationError;

/// Index of a value in [`Graph::values`]. Stable for the life of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// A named tensor (or other ONNX value) flowing between nodes.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    /// The first `ValueInfoProto` that declared this value (graph input, output or value_info), kept whole.
    pub info: Option<ValueInfoProto>,
}

impl Value {
    pub fn ty(&self) -> Option<&TypeProto> {
        self.info.as_ref().and_then(|i| i.r#type.as_ref())
    }
}

/// Where export places a node among the others: the position it had in the file, then an insertion counter
/// for nodes that a rewrite added next to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    pub position: u64,
    pub inserted: u64,
}

/// What a graph node is.
// Sources are a minority of nodes (one per input and initializer), so the size gap costs little; boxing `Op`
// would add an indirection to every pattern match on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A graph input and/or an initializer; its single output is the value.
    Source,
    /// An operator. `proto.input` and `proto.output` are empty: the edges and [`Node::outputs`] hold them.
    Op(Op),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub proto: NodeProto,
    /// One entry per input slot: whether it reads a value (`false`: an empty optional input, `""` in the file,
    /// which has no edge). Validation checks that every slot marked `true` has its edge, so a rewrite that
    /// deletes a producer without rewiring its readers is caught rather than exported as an empty input.
    pub wired: Vec<bool>,
    pub order: OrderKey,
}

impl Op {
    pub fn op_type(&self) -> &str {
        self.proto.op_type()
    }
    /// The operator domain, with `ai.onnx` spelled as the empty string.
    pub fn domain(&self) -> &str {
        match self.proto.domain() {
            "ai.onnx" => "",
            d => d,
        }
    }
    pub fn attribute(&self, name: &str) -> Option<&onnx::AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }
    /// Whether the op reads only its operand's shape, none of its data (`Shape`, `Size`): what it computes does
    /// not depend on the values flowing in, only on their sizes.
    pub fn reads_shape_only(&self) -> bool {
        self.domain().is_empty() && matches!(self.op_type(), "Shape" | "Size")
    }
    /// Whether the op reads the data of what it takes at `slot`, rather than only its shape or element type
    /// (`Shape`, `Size`; the second operand of `CastLike`, whose type alone it takes). Subgraph captures read data.
    pub fn reads_data_at(&self, slot: InputSlot) -> bool {
        match slot {
            InputSlot::Captured => true,
            InputSlot::Operand(i) => {
                !(self.reads_shape_only()
                    || self.domain().is_empty() && self.op_type() == "CastLike" && i == 1)
            }
        }
    }
    /// For a default-domain `Gemm` that is a plain linear layer `A·B + C` (alpha = beta = 1, `A` not
    /// transposed): whether `B` is stored transposed (`transB`). `None` for a scaled Gemm or any other op.
    pub fn plain_gemm(&self) -> Option<bool> {
        let int = |name: &str| self.attribute(name).map_or(0, |a| a.i());
        let float = |name: &str| self.attribute(name).map_or(1.0, |a| a.f());
        let plain = self.op_type() == "Gemm"
            && self.domain().is_empty()
            && int("transA") == 0
            && float("alpha") == 1.0
            && float("beta") == 1.0;
        plain.then(|| int("transB") != 0)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Output values by slot; `None` for an optional output the file left unnamed (`""`).
    pub outputs: Vec<Option<ValueId>>,
}

impl Node {
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            NodeKind::Source => None,
        }
    }
}

/// Which input of the consumer an edge feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputSlot {
    /// The `n`th entry of the node's input list.
    Operand(usize),
    /// Read by name from inside one of the node's subgraph attributes.
    Captured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub from_slot: usize,
    pub to_slot: InputSlot,
    pub value: ValueId,
}

/// One ONNX graph. Everything of the `GraphProto` the IR does not model (name, doc string, sparse initializers,
/// quantization annotations, metadata) stays in `rest`.
#[derive(Debug, Clone)]
pub struct Graph {
    pub graph: StableGraph<Node, Edge>,
    pub values: Vec<Value>,
    names: HashMap<String, ValueId>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub value_info: Vec<ValueId>,
    /// Initializers in file order.
    pub initializers: Vec<ValueId>,
    /// Initializers, and in a subgraph body also the constants of the enclosing graphs it reads (those are in
    /// `captured`, not in `initializers`, and export leaves them where they are).
    pub tensors: HashMap<ValueId, Tensor>,
    /// In a subgraph body: the values it reads from the enclosing graphs (sources that export does not write).
    pub captured: Vec<ValueId>,
    pub rest: GraphProto,
    next_inserted: u64,
}

/// A whole model: the graph, and the `ModelProto` around it with its `graph` field taken out.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    pub header: ModelProto,
    /// Things noticed on import that keep the export from being byte-identical to the input.
    pub warnings: Vec<String>,
    /// External data files the initializers are mapped from (canonical paths), so that a write never replaces
    /// the data its own input still reads without being told to.
    pub external_files: Vec<std::path::PathBuf>,
    /// The model file this model was read from, mapped: its inline tensors are slices of it, so a runtime can
    /// be pointed at their bytes in the file instead of being handed a copy (`io::external::refer_to_source`).
    pub source_file: Option<SourceFile>,
}

/// A model file as it was mapped into memory.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Canonical path.
    pub path: std::path::PathBuf,
    pub bytes: bytes::Bytes,
}

impl Model {
    pub fn opset_version(&self, domain: &str) -> Option<i64> {
        onnx::opset_version(&self.header.opset_import, domain)
    }
}

impl Graph {
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0 as usize]
    }

    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.0 as usize]
    }

    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// Adds a value with a fresh name derived from `hint` (suffixed until unique).
    pub fn add_value(&mut self, hint: &str, info: Option<ValueInfoProto>) -> ValueId {
        let mut name = hint.to_string();
        let mut n = 0;
        while self.names.contains_key(&name) {
            n += 1;
            name = format!("{hint}_{n}");
        }
        self.insert_value(name, info)
    }

    fn insert_value(&mut self, name: String, info: Option<ValueInfoProto>) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.names.insert(name.clone(), id);
        self.values.push(Value { name, info });
        id
    }

    /// The initializer behind a value, if it is one.
    pub fn initializer(&self, id: ValueId) -> Option<&Tensor> {
        self.tensors.get(&id)
    }

    /// Whether a value is a real graph input, i.e. one the caller must feed (not an initializer default).
    pub fn is_runtime_input(&self, id: ValueId) -> bool {
        self.inputs.contains(&id) && !self.tensors.contains_key(&id)
    }

    /// Graph inputs a caller must feed, in order.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs
            .iter()
            .copied()
            .filter(|v| !self.tensors.contains_key(v))
    }

    /// The node and output slot producing `value`. Linear in the node count; callers that need many look-ups
    /// build a [`ProducerIndex`] instead.
    pub fn producer(&self, value: ValueId) -> Option<(NodeIndex, usize)> {
        self.graph.node_indices().find_map(|n| {
            self.graph[n]
                .outputs
                .iter()
                .position(|o| *o == Some(value))
                .map(|slot| (n, slot))
        })
    }

    /// A map from each value to its producer, valid until the next mutation.
    pub fn producer_index(&self) -> HashMap<ValueId, (NodeIndex, usize)> {
        let mut map = HashMap::with_capacity(self.values.len());
        for n in self.graph.node_indices() {
            for (slot, out) in self.graph[n].outputs.iter().enumerate() {
                if let Some(v) = out {
                    map.insert(*v, (n, slot));
                }
            }
        }
        map
    }

    /// The values feeding `node`'s input slots, in slot order; `None` for an empty optional input.
    pub fn node_inputs(&self, node: NodeIndex) -> Vec<Option<ValueId>> {
        let count = match &self.graph[node].kind {
            NodeKind::Op(op) => op.wired.len(),
            NodeKind::Source => 0,
        };
        let mut inputs = vec![None; count];
        for e in self.graph.edges_directed(node, Direction::Incoming) {
            if let InputSlot::Operand(slot) = e.weight().to_slot
                && let Some(entry) = inputs.get_mut(slot)
            {
                *entry = Some(e.weight().value);
            }
        }
        inputs
    }

    /// Values of this graph that `node` reads from inside its subgraph attributes, sorted by name.
    pub fn captured_values(&self, node: NodeIndex) -> Vec<ValueId> {
        let mut found: Vec<ValueId> = self
            .graph
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().to_slot == InputSlot::Captured)
            .map(|e| e.weight().value)
            .collect();
        found.sort_by(|a, b| self.value(*a).name.cmp(&self.value(*b).name));
        found.dedup();
        found
    }

    /// Op nodes in export order (topological, original order where unchanged).
    pub fn ops_in_order(&self) -> Result<Vec<NodeIndex>, ValidationError> {
        export::topological_order(self)
    }

    /// Number of op nodes.
    pub fn op_count(&self) -> usize {
        self.graph
            .node_weights()
            .filter(|n| n.op().is_some())
            .count()
    }
}
