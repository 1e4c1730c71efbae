//! What `normshift inspect` reports about a model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ir::{Model, ValueId};
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
    pub nodes: usize,
    /// Op type (with its domain unless it is the default one) → count.
    pub ops: BTreeMap<String, usize>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    pub initializers: usize,
    pub parameters: u64,
    pub parameter_bytes: u64,
    pub external_data_bytes: u64,
    pub functions: usize,
    /// Normalization layers found, by `kind form` (e.g. `layernorm decomposed`).
    pub norms: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

impl Model {
    pub fn summary(&self) -> Summary {
        let g = &self.graph;
        let mut ops = BTreeMap::new();
        for node in g.graph.node_weights() {
            if let Some(op) = node.op() {
                let key = match op.domain() {
                    "" => op.op_type().to_string(),
                    d => format!("{d}.{}", op.op_type()),
                };
                *ops.entry(key).or_insert(0) += 1;
            }
        }
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
        Summary {
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
            ops,
            inputs: g.runtime_inputs().map(describe).collect(),
            outputs: g.outputs.iter().map(|&v| describe(v)).collect(),
            initializers: g.initializers.len(),
            parameters: tensors.clone().map(|t| t.elem_count()).sum(),
            parameter_bytes: tensors.clone().map(|t| t.byte_len()).sum(),
            external_data_bytes: tensors
                .filter_map(|t| t.external.as_ref())
                .map(|b| b.len() as u64)
                .sum(),
            functions: self.header.functions.len(),
            norms: norm_counts(g),
            warnings: self.warnings.clone(),
        }
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
