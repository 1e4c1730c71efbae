//! What `normshift inspect` reports about a model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::subgraph::Scope;
use crate::ir::{Model, ValidationError, ValueId};
use crate::onnx::{Dim, describe_type, elem_type_name, tensor_type};

#[derive(Debug, Clone, Serialize)]
pub struct ValueSummary {
    pub name: String,
    /// `f32[batch, 8, 64]`
    pub r#type: String,
    pub elem_type: Option<&'static str>,
    pub shape: Option<Vec<Dim>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub opsets: Vec<Opset>,
    /// Op nodes of the main graph.
    pub nodes: usize,
    /// Subgraph bodies (`If` branches, `Loop`/`Scan` bodies, nested ones too) and the op nodes inside them.
    pub subgraphs: usize,
    pub nodes_in_subgraphs: usize,
    /// Op type (with its domain unless it is the default one) → count, in the main graph and every body.
    pub ops: BTreeMap<String, usize>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    pub initializers: usize,
    pub parameters: u64,
    pub parameter_bytes: u64,
    pub external_data_bytes: u64,
    /// Model-local functions the model defines.
    pub functions: usize,
    /// Calls of them the main graph makes, nested calls included, and the op nodes they run: `ops` and `norms`
    /// count what runs, each call replaced by its function's body.
    pub function_calls: usize,
    pub nodes_in_functions: usize,
    /// Normalization layers found, by `kind form` (e.g. `layernorm decomposed`), in the main graph and every
    /// body.
    pub norms: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

impl Model {
    pub fn summary(&self) -> Result<Summary, ValidationError> {
        let g = &self.graph;
        // What runs: every call of a model-local function replaced by its body.
        let inlined = self.inline_functions()?;
        let (function_calls, nodes_in_functions) = match &inlined {
            Some((m, outline)) => (
                outline.call_count(),
                (m.graph.op_count() + outline.top_level_calls).saturating_sub(g.op_count()),
            ),
            None => (0, 0),
        };
        let runs = inlined.as_ref().map_or(g, |(m, _)| &m.graph);
        let mut ops = BTreeMap::new();
        count_ops(runs, &mut ops);
        let mut norms = norm_counts(runs);
        let (mut subgraphs, mut nodes_in_subgraphs) = (0, 0);
        g.visit_bodies(&Scope::default(), "", &mut |_, body| {
            subgraphs += 1;
            nodes_in_subgraphs += body.op_count();
            count_ops(body, &mut ops);
            for (kind, n) in norm_counts(body) {
                *norms.entry(kind).or_insert(0) += n;
            }
            Ok::<_, ValidationError>(())
        })?;
        let describe = |v: ValueId| {
            let value = g.value(v);
            let tt = value.ty().and_then(tensor_type);
            ValueSummary {
                name: value.name.clone(),
                r#type: describe_type(value.ty()),
                elem_type: tt.as_ref().map(|(e, _)| elem_type_name(*e)),
                shape: tt.and_then(|(_, s)| s),
            }
        };
        let tensors = g.initializers.iter().map(|id| &g.tensors[id]);
        Ok(Summary {
            ir_version: self.header.ir_version(),
            producer_name: self.header.producer_name().into(),
            producer_version: self.header.producer_version().into(),
            opsets: self
                .header
                .opset_import
                .iter()
                .map(|o| Opset {
                    domain: o
                        .domain
                        .clone()
                        .filter(|d| !d.is_empty())
                        .unwrap_or_else(|| "ai.onnx".into()),
                    version: o.version.unwrap_or(0),
                })
                .collect(),
            nodes: g.op_count(),
            subgraphs,
            nodes_in_subgraphs,
            ops,
            inputs: g.runtime_inputs().map(describe).collect(),
            outputs: g.outputs.iter().map(|&v| describe(v)).collect(),
            initializers: g.initializers.len(),
            // Saturating: counts come from dims, which a malformed file may make as large as it likes.
            parameters: tensors
                .clone()
                .map(|t| t.elem_count())
                .fold(0, u64::saturating_add),
            parameter_bytes: tensors
                .clone()
                .map(|t| t.byte_len())
                .fold(0, u64::saturating_add),
            external_data_bytes: tensors
                .filter_map(|t| t.external.as_ref())
                .map(|b| b.len() as u64)
                .sum(),
            functions: self.header.functions.len(),
            function_calls,
            nodes_in_functions,
            norms,
            warnings: self.warnings.clone(),
        })
    }
}

fn count_ops(g: &crate::ir::Graph, ops: &mut BTreeMap<String, usize>) {
    for op in g.graph.node_weights().filter_map(|n| n.op()) {
        let key = match op.domain() {
            "" => op.op_type().to_string(),
            d => format!("{d}.{}", op.op_type()),
        };
        *ops.entry(key).or_insert(0) += 1;
    }
}

fn norm_counts(g: &crate::ir::Graph) -> BTreeMap<String, usize> {
    let index = crate::ir::index::GraphIndex::new(g);
    let mut counts = BTreeMap::new();
    for norm in crate::analysis::find_norms(&index) {
        let key = format!("{} {}", norm.kind, norm.form);
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
