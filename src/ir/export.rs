//! [`Model`] → `ModelProto`. With no rewrite in between, the result encodes to the bytes that were read
//! (for files whose fields this schema knows, which is every file the ordinary exporters write).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

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
    let mut pending: HashMap<NodeIndex, usize> = HashMap::new();
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
            pending.insert(n, deps);
        }
    }
    let mut order = Vec::with_capacity(ready.len() + pending.len());
    while let Some(Reverse((_, n))) = ready.pop() {
        order.push(n);
        for e in g.graph.edges_directed(n, Direction::Outgoing) {
            let t = e.target();
            if let Some(count) = pending.get_mut(&t) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(&t);
                    if let Some(op) = g.graph[t].op() {
                        ready.push(Reverse((op.order, t)));
                    }
                }
            }
        }
    }
    match pending
        .keys()
        .min_by_key(|n| g.graph[**n].op().map(|op| op.order))
    {
        Some(&stuck) => Err(ValidationError::Cycle(
            g.graph[stuck]
                .op()
                .map(|op| op.proto.name().to_string())
                .unwrap_or_default(),
        )),
        None => Ok(order),
    }
}
