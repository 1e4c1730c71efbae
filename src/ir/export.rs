//! [`Model`] → `ModelProto`. With no rewrite in between, the result encodes to the bytes that were read
//! (for files whose fields this schema knows, which is every file the ordinary exporters write).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};

use super::validate::ValidationError;
use super::{Graph, Model, NodeKind, ValueId};
use crate::onnx::{GraphProto, ModelProto, NodeProto, ValueInfoProto};

impl Model {
    /// The whole model as a `ModelProto`. Initializers keep their `TensorProto` as read, including
    /// `external_data` entries; `io::save` decides where their data goes.
    pub fn to_proto(&self) -> Result<ModelProto, ValidationError> {
        let mut proto = self.header.clone();
        proto.graph = Some(self.graph.to_proto()?);
        Ok(proto)
    }
}

impl Graph {
    pub fn to_proto(&self) -> Result<GraphProto, ValidationError> {
        let mut proto = self.rest.clone();
        let order = self.ops_in_order()?;
        proto.node = order.into_iter().map(|n| self.node_proto(n)).collect();
        proto.initializer = self
            .initializers
            .iter()
            .map(|id| self.tensors[id].proto.clone())
            .collect();
        proto.input = self
            .inputs
            .iter()
            .map(|&v| self.value_info_proto(v))
            .collect();
        proto.output = self
            .outputs
            .iter()
            .map(|&v| self.value_info_proto(v))
            .collect();
        proto.value_info = self
            .value_info
            .iter()
            .map(|&v| self.value_info_proto(v))
            .collect();
        Ok(proto)
    }

    fn node_proto(&self, n: NodeIndex) -> NodeProto {
        let node = &self.graph[n];
        let NodeKind::Op(op) = &node.kind else {
            unreachable!("only op nodes are ordered")
        };
        let mut proto = op.proto.clone();
        proto.input = self
            .node_inputs(n)
            .into_iter()
            .map(|v| v.map(|v| self.value(v).name.clone()).unwrap_or_default())
            .collect();
        proto.output = node
            .outputs
            .iter()
            .map(|v| v.map(|v| self.value(v).name.clone()).unwrap_or_default())
            .collect();
        proto
    }

    fn value_info_proto(&self, v: ValueId) -> ValueInfoProto {
        let value = self.value(v);
        value.info.clone().unwrap_or_else(|| ValueInfoProto {
            name: Some(value.name.clone()),
            ..Default::default()
        })
    }
}

/// Kahn's algorithm over op nodes, always taking the ready node with the smallest order key, so a graph whose
/// file order was topological comes out in that order.
pub(super) fn topological_order(g: &Graph) -> Result<Vec<NodeIndex>, ValidationError> {
    // Fast path: a graph read from a valid file and not reordered since is already sorted by its keys.
    let mut by_key: Vec<(super::OrderKey, NodeIndex)> = g
        .graph
        .node_indices()
        .filter_map(|n| g.graph[n].op().map(|op| (op.order, n)))
        .collect();
    by_key.sort_unstable();
    let key = |n: NodeIndex| g.graph[n].op().map(|op| op.order);
    let sorted = g
        .graph
        .edge_references()
        .all(|e| match (key(e.source()), key(e.target())) {
            (Some(from), Some(to)) => from < to,
            _ => true,
        });
    if sorted {
        return Ok(by_key.into_iter().map(|(_, n)| n).collect());
    }
    kahn(g)
}

/// The general case: Kahn's algorithm taking the smallest ready key first.
fn kahn(g: &Graph) -> Result<Vec<NodeIndex>, ValidationError> {
    // Pending dependency counts by node index (dense), so the sort is a few array walks.
    let mut pending = vec![0usize; g.graph.node_bound()];
    let mut waiting = 0usize;
    let mut ready = BinaryHeap::new();
    for n in g.graph.node_indices() {
        let NodeKind::Op(op) = &g.graph[n].kind else {
            continue;
        };
        let deps = g
            .graph
            .edges_directed(n, Direction::Incoming)
            .filter(|e| g.graph[e.source()].op().is_some())
            .count();
        if deps == 0 {
            ready.push(Reverse((op.order, n)));
        } else {
            pending[n.index()] = deps;
            waiting += 1;
        }
    }
    let mut order = Vec::with_capacity(ready.len() + waiting);
    while let Some(Reverse((_, n))) = ready.pop() {
        order.push(n);
        for e in g.graph.edges_directed(n, Direction::Outgoing) {
            let t = e.target();
            let count = &mut pending[t.index()];
            if *count > 0 {
                *count -= 1;
                if *count == 0 {
                    waiting -= 1;
                    if let Some(op) = g.graph[t].op() {
                        ready.push(Reverse((op.order, t)));
                    }
                }
            }
        }
    }
    if waiting == 0 {
        return Ok(order);
    }
    // A cycle: name its earliest node in file order.
    let stuck = g
        .graph
        .node_indices()
        .filter(|n| pending[n.index()] > 0)
        .min_by_key(|n| g.graph[*n].op().map(|op| op.order));
    let name = stuck
        .and_then(|n| g.graph[n].op())
        .map(|op| op.proto.name().to_string())
        .unwrap_or_default();
    Err(ValidationError::Cycle(name))
}
