//! `ModelProto` → [`Model`]: builds the graph, resolves every value reference, and refuses what cannot be a
//! valid graph (a value produced twice, a reference nobody produces, a cycle) with a typed error.

use std::collections::{BTreeSet, HashMap, HashSet};

use petgraph::stable_graph::{NodeIndex, StableGraph};

use super::subgraph::{MAX_SUBGRAPH_DEPTH, Scope, captured_names, subgraph_free_names};
use super::validate::ValidationError;
use super::{Edge, Graph, InputSlot, Model, Node, NodeKind, Op, OrderKey, Tensor, ValueId};
use crate::onnx::{GraphProto, ModelProto, ValueInfoProto};

impl Model {
    /// Builds the IR from a decoded model. `external` holds the data of tensors stored outside the file,
    /// keyed by initializer name (see `io::load`).
    pub fn from_proto(
        mut proto: ModelProto,
        mut external: HashMap<String, bytes::Bytes>,
    ) -> Result<Model, ValidationError> {
        let graph_proto = proto.graph.take().ok_or(ValidationError::NoGraph)?;
        let imported: HashSet<&str> = proto.opset_import.iter().map(|o| o.domain()).collect();
        check_opset_imports(&graph_proto, &imported, 0)?;
        let mut warnings = Vec::new();
        let graph = Graph::from_proto(graph_proto, &mut external, &mut warnings, None)?;
        Ok(Model {
            graph,
            header: proto,
            warnings,
            external_files: Vec::new(),
            source_file: None,
        })
    }
}

impl Graph {
    /// Builds one graph. A subgraph body is built with the `scope` of the graphs around it: the names it reads
    /// from there become [`Graph::captured`] sources (with their tensor when the enclosing graph holds one as an
    /// initializer), and every enclosing name is reserved so that values a rewrite adds never shadow one.
    pub(super) fn from_proto(
        mut proto: GraphProto,
        external: &mut HashMap<String, bytes::Bytes>,
        warnings: &mut Vec<String>,
        scope: Option<&Scope>,
    ) -> Result<Graph, ValidationError> {
        let free = match scope {
            Some(_) => subgraph_free_names(&proto, 0)?,
            None => BTreeSet::new(),
        };
        let nodes = std::mem::take(&mut proto.node);
        let initializers = std::mem::take(&mut proto.initializer);
        let inputs = std::mem::take(&mut proto.input);
        let outputs = std::mem::take(&mut proto.output);
        let value_info = std::mem::take(&mut proto.value_info);

        let mut g = Graph {
            graph: StableGraph::with_capacity(nodes.len() + initializers.len(), nodes.len() * 2),
            values: Vec::new(),
            names: HashMap::new(),
            inputs: Vec::with_capacity(inputs.len()),
            outputs: Vec::with_capacity(outputs.len()),
            value_info: Vec::with_capacity(value_info.len()),
            initializers: Vec::with_capacity(initializers.len()),
            tensors: HashMap::with_capacity(initializers.len()),
            captured: Vec::new(),
            rest: proto,
            next_inserted: 0,
        };
        let mut producers: HashMap<ValueId, (NodeIndex, usize)> = HashMap::new();
        if let Some(scope) = scope {
            g.capture(scope, &free, &mut producers);
        }

        for info in inputs {
            let id = g.declare(info, "graph input", warnings);
            if g.inputs.contains(&id) {
                return Err(ValidationError::DuplicateName(g.value(id).name.clone()));
            }
            g.inputs.push(id);
            let node = g.graph.add_node(Node {
                kind: NodeKind::Source,
                outputs: vec![Some(id)],
            });
            producers.insert(id, (node, 0));
        }
        for tensor in initializers {
            let name = tensor.name().to_string();
            let id = g
                .value_id(&name)
                .unwrap_or_else(|| g.insert_value(name.clone(), None));
            if g.tensors.contains_key(&id) {
                return Err(ValidationError::DuplicateName(name));
            }
            let ext = external.remove(&name);
            g.tensors.insert(
                id,
                Tensor {
                    proto: tensor,
                    external: ext,
                },
            );
            g.initializers.push(id);
            // An initializer that is also a graph input (IR < 4 style) already has its source node.
            if let std::collections::hash_map::Entry::Vacant(slot) = producers.entry(id) {
                let node = g.graph.add_node(Node {
                    kind: NodeKind::Source,
                    outputs: vec![Some(id)],
                });
                slot.insert((node, 0));
            }
        }
        for info in outputs {
            let id = g.declare(info, "graph output", warnings);
            g.outputs.push(id);
        }
        for info in value_info {
            let id = g.declare(info, "value_info", warnings);
            g.value_info.push(id);
        }

        // Op nodes: first their outputs (so that references resolve whatever the file order), then edges.
        let mut pending = Vec::with_capacity(nodes.len());
        for (position, mut node) in nodes.into_iter().enumerate() {
            let input_names = std::mem::take(&mut node.input);
            let output_names = std::mem::take(&mut node.output);
            let mut outs = Vec::with_capacity(output_names.len());
            for name in output_names {
                if name.is_empty() {
                    outs.push(None);
                    continue;
                }
                let id = g
                    .value_id(&name)
                    .unwrap_or_else(|| g.insert_value(name.clone(), None));
                if producers.contains_key(&id) {
                    return Err(ValidationError::ProducedTwice(name));
                }
                outs.push(Some(id));
            }
            let captured = captured_names(&node.attribute, 1)?;
            let order = OrderKey {
                position: position as u64,
                inserted: 0,
            };
            let op = Op {
                wired: input_names.iter().map(|n| !n.is_empty()).collect(),
                proto: node,
                order,
            };
            let index = g.graph.add_node(Node {
                kind: NodeKind::Op(op),
                outputs: outs.clone(),
            });
            for (slot, out) in outs.iter().enumerate() {
                if let Some(id) = out {
                    producers.insert(*id, (index, slot));
                }
            }
            pending.push((index, input_names, captured));
        }
        let sparse: HashSet<&str> = g
            .rest
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref())
            .map(|t| t.name())
            .collect();
        let sparse: HashSet<String> = sparse.into_iter().map(str::to_string).collect();
        for (index, input_names, captured) in pending {
            for (slot, name) in input_names.iter().enumerate() {
                if name.is_empty() {
                    continue;
                }
                g.connect(&producers, index, name, InputSlot::Operand(slot), &sparse)?;
            }
            for name in &captured {
                g.connect(&producers, index, name, InputSlot::Captured, &sparse)?;
            }
        }
        for &out in &g.outputs {
            if !producers.contains_key(&out) {
                return Err(ValidationError::Unproduced {
                    value: g.value(out).name.clone(),
                    reader: "graph output".into(),
                });
            }
        }
        g.ops_in_order()?;
        Ok(g)
    }

    /// Reserves every name of the enclosing scope, and gives each one the body reads a source node (and its
    /// tensor, when it is constant there). Formal inputs and initializers of the body shadow nothing: the
    /// checker refuses such a body, and import then treats the name as the body's own.
    fn capture(
        &mut self,
        scope: &Scope,
        free: &BTreeSet<String>,
        producers: &mut HashMap<ValueId, (NodeIndex, usize)>,
    ) {
        for name in scope.names() {
            self.insert_value(name.to_string(), None);
        }
        for name in free {
            let Some(id) = self.value_id(name) else {
                continue;
            };
            let node = self.graph.add_node(Node {
                kind: NodeKind::Source,
                outputs: vec![Some(id)],
            });
            producers.insert(id, (node, 0));
            if let Some(tensor) = scope.constant(name) {
                self.tensors.insert(id, tensor.clone());
            }
            self.captured.push(id);
        }
    }

    /// Records a declaration (graph input/output/value_info) of a value, keeping the first one whole.
    fn declare(&mut self, info: ValueInfoProto, list: &str, warnings: &mut Vec<String>) -> ValueId {
        let name = info.name().to_string();
        match self.value_id(&name) {
            Some(id) => {
                let value = self.value_mut(id);
                match &value.info {
                    Some(first) if *first != info => warnings.push(format!(
                        "value `{name}` is declared twice with different types; its {list} entry will be \
                         written like the first declaration"
                    )),
                    Some(_) => {}
                    None => value.info = Some(info),
                }
                id
            }
            None => self.insert_value(name, Some(info)),
        }
    }

    fn connect(
        &mut self,
        producers: &HashMap<ValueId, (NodeIndex, usize)>,
        consumer: NodeIndex,
        name: &str,
        to_slot: InputSlot,
        sparse: &HashSet<String>,
    ) -> Result<(), ValidationError> {
        let produced = self
            .value_id(name)
            .and_then(|id| producers.get(&id).map(|p| (id, *p)));
        match produced {
            Some((value, (from, from_slot))) => {
                self.graph.add_edge(
                    from,
                    consumer,
                    Edge {
                        from_slot,
                        to_slot,
                        value,
                    },
                );
                Ok(())
            }
            // Sparse initializers stay opaque in `rest`: a read of one needs no edge.
            None if sparse.contains(name) => Ok(()),
            None => {
                let reader = match &self.graph[consumer].kind {
                    NodeKind::Op(op) => format!("node `{}` ({})", op.proto.name(), op.op_type()),
                    NodeKind::Source => "source".into(),
                };
                Err(ValidationError::Unproduced {
                    value: name.into(),
                    reader,
                })
            }
        }
    }
}

/// Every node, in subgraphs too, must be in a domain the model imports an opset for: without one, its meaning
/// is undefined (the ONNX checker refuses such a model too). `""` and `ai.onnx` name the same domain.
fn check_opset_imports(
    g: &GraphProto,
    imported: &HashSet<&str>,
    depth: usize,
) -> Result<(), ValidationError> {
    if depth > MAX_SUBGRAPH_DEPTH {
        return Err(ValidationError::TooDeep(MAX_SUBGRAPH_DEPTH));
    }
    let default_domain = imported.contains("") || imported.contains("ai.onnx");
    for n in &g.node {
        let domain = n.domain();
        let known = match domain {
            "" | "ai.onnx" => default_domain,
            d => imported.contains(d),
        };
        if !known {
            return Err(ValidationError::NoOpsetImport {
                node: n.name().into(),
                op: n.op_type().into(),
                domain: domain.into(),
            });
        }
        for attr in &n.attribute {
            for sub in attr.g.iter().chain(attr.graphs.iter()) {
                check_opset_imports(sub, imported, depth + 1)?;
            }
        }
    }
    Ok(())
}
