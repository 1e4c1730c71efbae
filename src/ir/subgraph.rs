//! Subgraph bodies — the branches of `If`, the bodies of `Loop` and `Scan` — as graphs of their own.
//!
//! A body stays a `GraphProto` inside its node's attribute (so that a model round-trips whole), and becomes a
//! [`Graph`] when analysis or a pass needs one: [`Graph::import_body`] builds it with the [`Scope`] of the
//! graphs around it, [`Graph::replace_body`] puts a rewritten body back and re-derives which values of the
//! enclosing graph the node reads from inside it. Optimum's merged decoders keep every weight in the main graph
//! and none in the branches, so a body's view of the enclosing constants is what lets analysis read its norms.

use std::collections::{BTreeSet, HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::validate::ValidationError;
use super::{Edge, Graph, InputSlot, NodeKind, Tensor};
use crate::onnx::GraphProto;

/// What the graphs enclosing a body define: every name (reserved, so that a rewrite inside the body never
/// shadows one) and, for initializers, the tensor.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    entries: HashMap<String, Option<Tensor>>,
}

impl Scope {
    /// The scope the bodies of `graph` see: what `graph` itself sees (`self`) and `graph`'s own values.
    pub fn inner(&self, graph: &Graph) -> Scope {
        let mut entries = self.entries.clone();
        for value in &graph.values {
            entries.entry(value.name.clone()).or_insert(None);
        }
        for (id, tensor) in &graph.tensors {
            entries.insert(graph.value(*id).name.clone(), Some(tensor.clone()));
        }
        Scope { entries }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn constant(&self, name: &str) -> Option<&Tensor> {
        self.entries.get(name).and_then(Option::as_ref)
    }
}

/// Where a body is: its node, which attribute, which entry of a `GRAPHS` attribute, and its path from the
/// model's main graph (`/If_0/then_branch`, nested paths concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyAt {
    pub node: NodeIndex,
    pub attribute: usize,
    pub entry: Option<usize>,
    pub path: String,
}

impl Graph {
    /// Every body held by this graph's nodes, in export order, with paths below `prefix` (`""` for the main
    /// graph). A node is named by its name, or by its op type and position when it has none.
    pub fn bodies(&self, prefix: &str) -> Result<Vec<BodyAt>, ValidationError> {
        let mut found = Vec::new();
        for (position, node) in self.ops_in_order()?.into_iter().enumerate() {
            let Some(op) = self.graph[node].op() else {
                continue;
            };
            let label = match op.proto.name() {
                "" => format!("{}_{position}", op.op_type()),
                name => name.to_string(),
            };
            for (attribute, attr) in op.proto.attribute.iter().enumerate() {
                let path = format!("{prefix}/{label}/{}", attr.name());
                if attr.g.is_some() {
                    found.push(BodyAt {
                        node,
                        attribute,
                        entry: None,
                        path: path.clone(),
                    });
                }
                for entry in 0..attr.graphs.len() {
                    found.push(BodyAt {
                        node,
                        attribute,
                        entry: Some(entry),
                        path: format!("{path}[{entry}]"),
                    });
                }
            }
        }
        Ok(found)
    }

    /// Calls `visit` on every body below this graph (the main graph: `enclosing` empty, `prefix` `""`), each
    /// built as a graph with its scope, parents before the bodies nested in them.
    pub fn visit_bodies<E: From<ValidationError>>(
        &self,
        enclosing: &Scope,
        prefix: &str,
        visit: &mut dyn FnMut(&BodyAt, &Graph) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.has_bodies() {
            return Ok(());
        }
        let seen = enclosing.inner(self);
        for at in self.bodies(prefix)? {
            let body = self.import_body(&at, &seen)?;
            visit(&at, &body)?;
            body.visit_bodies(&seen, &at.path, visit)?;
        }
        Ok(())
    }

    /// Whether any node of this graph holds a body.
    pub fn has_bodies(&self) -> bool {
        self.graph.node_weights().filter_map(|n| n.op()).any(|op| {
            op.proto
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty())
        })
    }

    fn body_proto(&self, at: &BodyAt) -> Option<&GraphProto> {
        let attr = self.graph[at.node]
            .op()?
            .proto
            .attribute
            .get(at.attribute)?;
        match at.entry {
            None => attr.g.as_ref(),
            Some(i) => attr.graphs.get(i),
        }
    }

    /// The body at `at` as a graph. `seen` is what this graph's bodies see: `Scope::inner` of this graph (built
    /// once for all of its bodies).
    pub fn import_body(&self, at: &BodyAt, seen: &Scope) -> Result<Graph, ValidationError> {
        let proto = self
            .body_proto(at)
            .ok_or_else(|| ValidationError::NoBody(at.path.clone()))?
            .clone();
        let mut warnings = Vec::new();
        Graph::from_proto(proto, &mut HashMap::new(), &mut warnings, Some(seen))
    }

    /// Puts a body back into its attribute, and rewires the node's captured edges to what the new body reads.
    pub fn replace_body(&mut self, at: &BodyAt, body: GraphProto) -> Result<(), ValidationError> {
        let missing = || ValidationError::NoBody(at.path.clone());
        let NodeKind::Op(op) = &mut self.graph[at.node].kind else {
            return Err(missing());
        };
        let attr = op
            .proto
            .attribute
            .get_mut(at.attribute)
            .ok_or_else(missing)?;
        match at.entry {
            None => attr.g = Some(body),
            Some(i) => *attr.graphs.get_mut(i).ok_or_else(missing)? = body,
        }
        let reads = captured_names(&op.proto.attribute, 1)?;
        let stale: Vec<_> = self
            .graph
            .edges_directed(at.node, Direction::Incoming)
            .filter(|e| e.weight().to_slot == InputSlot::Captured)
            .map(|e| e.id())
            .collect();
        for edge in stale {
            self.graph.remove_edge(edge);
        }
        let producers = self.producer_index();
        for name in &reads {
            let found = self
                .value_id(name)
                .and_then(|v| producers.get(&v).map(|p| (v, *p)));
            let Some((value, (from, from_slot))) = found else {
                return Err(ValidationError::Unproduced {
                    value: name.clone(),
                    reader: format!("body {}", at.path),
                });
            };
            self.graph.add_edge(
                from,
                at.node,
                Edge {
                    from_slot,
                    to_slot: InputSlot::Captured,
                    value,
                },
            );
        }
        Ok(())
    }
}

/// Subgraphs nested deeper than this are refused rather than risking the stack.
pub const MAX_SUBGRAPH_DEPTH: usize = 64;

/// Names that a node's subgraph attributes read from the enclosing scope.
pub(super) fn captured_names(
    attributes: &[crate::onnx::AttributeProto],
    depth: usize,
) -> Result<BTreeSet<String>, ValidationError> {
    let mut free = BTreeSet::new();
    for attr in attributes {
        for sub in attr.g.iter().chain(attr.graphs.iter()) {
            free.extend(subgraph_free_names(sub, depth)?);
        }
    }
    Ok(free)
}

pub(super) fn subgraph_free_names(
    g: &GraphProto,
    depth: usize,
) -> Result<BTreeSet<String>, ValidationError> {
    if depth > MAX_SUBGRAPH_DEPTH {
        return Err(ValidationError::TooDeep(MAX_SUBGRAPH_DEPTH));
    }
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.input.iter().map(|i| i.name()));
    defined.extend(g.initializer.iter().map(|t| t.name()));
    defined.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref())
            .map(|t| t.name()),
    );
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut free = BTreeSet::new();
    for n in &g.node {
        for name in &n.input {
            if !name.is_empty() && !defined.contains(name.as_str()) {
                free.insert(name.clone());
            }
        }
        for name in captured_names(&n.attribute, depth + 1)? {
            if !defined.contains(name.as_str()) {
                free.insert(name);
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            free.insert(o.name().to_string());
        }
    }
    Ok(free)
}
