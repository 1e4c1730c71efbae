//! Structural checks on the IR: what must hold after import and after every rewrite.

use std::collections::HashSet;

use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use super::{Graph, NodeKind};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("the name `{0}` is declared twice")]
    DuplicateName(String),
    #[error("value `{0}` is produced by more than one node")]
    ProducedTwice(String),
    #[error("{reader} reads `{value}`, which no node, input or initializer produces")]
    Unproduced { value: String, reader: String },
    #[error("the graph has a cycle through node `{0}`")]
    Cycle(String),
    #[error("subgraphs are nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("model-local functions: {0}")]
    Function(String),
    #[error("there is no subgraph body at {0}")]
    NoBody(String),
    #[error("node `{node}` ({op}) is in domain `{domain}`, which the model imports no opset for")]
    NoOpsetImport {
        node: String,
        op: String,
        domain: String,
    },
    #[error(
        "input {slot} of node `{node}` lost its value (its producer was removed without rewiring)"
    )]
    Unwired { node: String, slot: usize },
    #[error(
        "edge into slot {slot} of node `{node}` carries `{value}`, but its producer's slot holds another value"
    )]
    EdgeMismatch {
        node: String,
        slot: String,
        value: String,
    },
}

impl Graph {
    /// Checks the invariants passes rely on: every edge carries the value its producer's slot holds, each value
    /// has at most one producer, every graph output is produced, and the graph is acyclic.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut produced = HashSet::new();
        for n in self.graph.node_indices() {
            for v in self.graph[n].outputs.iter().flatten() {
                if !produced.insert(*v) {
                    return Err(ValidationError::ProducedTwice(self.value(*v).name.clone()));
                }
            }
        }
        for e in self.graph.edge_references() {
            let held = self.graph[e.source()]
                .outputs
                .get(e.weight().from_slot)
                .copied()
                .flatten();
            if held != Some(e.weight().value) {
                return Err(ValidationError::EdgeMismatch {
                    node: self.node_label(e.target()),
                    slot: format!("{:?}", e.weight().to_slot),
                    value: self.value(e.weight().value).name.clone(),
                });
            }
        }
        for &out in &self.outputs {
            if !produced.contains(&out) {
                return Err(ValidationError::Unproduced {
                    value: self.value(out).name.clone(),
                    reader: "graph output".into(),
                });
            }
        }
        for n in self.graph.node_indices() {
            let Some(op) = self.graph[n].op() else {
                continue;
            };
            let inputs = self.node_inputs(n);
            if let Some(slot) = op
                .wired
                .iter()
                .zip(&inputs)
                .position(|(&w, i)| w && i.is_none())
            {
                return Err(ValidationError::Unwired {
                    node: self.node_label(n),
                    slot,
                });
            }
        }
        // Ordering the ops is the cycle check.
        self.ops_in_order()?;
        Ok(())
    }

    /// `name (OpType)` of a node, for messages.
    pub fn node_label(&self, n: petgraph::stable_graph::NodeIndex) -> String {
        match &self.graph[n].kind {
            NodeKind::Op(op) => format!("{} ({})", op.proto.name(), op.op_type()),
            NodeKind::Source => self.graph[n]
                .outputs
                .first()
                .copied()
                .flatten()
                .map(|v| self.value(v).name.clone())
                .unwrap_or_default(),
        }
    }
}
