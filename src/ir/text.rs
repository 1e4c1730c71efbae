//! The stable text form of a model: what `normshift dump` prints and what snapshot tests compare.
//!
//! ```text
//! model ir_version=8 producer="pytorch 2.15.0" opsets=[ai.onnx:14]
//! input  input_ids: i64[batch, sequence]
//! const  emb.weight: f32[256, 64] #1a2b3c4d5e6f
//! %/emb/Gather_output_0 = Gather[axis=0](emb.weight, input_ids)
//! output last_hidden_state: f32[batch, sequence, 64]
//! ```
//!
//! One line per node, in export order: `outputs = op[attrs](inputs)` (attributes sorted by name; those of the
//! norm ops that restate the spec's default left out), with a
//! value's declared type after its name where the file declares one. Constants are summarized by type, shape
//! and a content hash (small ones are printed in full, so an ε or an axis is readable). Node names are left out
//! unless asked for: they are labels, not semantics, and rewrites may rename them.

use std::fmt::Write;

use petgraph::stable_graph::NodeIndex;

use super::{Graph, Model, NodeKind, ValueId};
use crate::onnx::{AttributeProto, attribute_proto::AttributeType, describe_type};
use crate::tensor::{self, format_number};

/// Constants with at most this many elements are printed in full.
const INLINE_ELEMENTS: usize = 8;

#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Append `# name` to each node line.
    pub node_names: bool,
}

impl Model {
    pub fn to_text(&self, options: TextOptions) -> String {
        let mut out = String::new();
        let h = &self.header;
        let opsets: Vec<String> = h
            .opset_import
            .iter()
            .map(|o| {
                let d = o
                    .domain
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .unwrap_or("ai.onnx");
                format!("{d}:{}", o.version.unwrap_or(0))
            })
            .collect();
        let producer = format!("{} {}", h.producer_name(), h.producer_version());
        let _ = writeln!(
            out,
            "model ir_version={} producer={:?} opsets=[{}]",
            h.ir_version(),
            producer.trim(),
            opsets.join(", ")
        );
        if !h.functions.is_empty() {
            let names: Vec<String> = h
                .functions
                .iter()
                .map(|f| format!("{}.{}", f.domain(), f.name()))
                .collect();
            let _ = writeln!(out, "functions [{}]", names.join(", "));
        }
        self.graph.write_text(&mut out, options);
        out
    }
}

impl Graph {
    fn write_text(&self, out: &mut String, options: TextOptions) {
        for &v in &self.inputs {
            let default = if self.tensors.contains_key(&v) {
                " (has initializer)"
            } else {
                ""
            };
            let _ = writeln!(out, "input  {}{default}", self.typed_name(v));
        }
        for &v in &self.initializers {
            if self.inputs.contains(&v) {
                continue;
            }
            let _ = writeln!(
                out,
                "const  {}: {}",
                self.value(v).name,
                tensor::summary(&self.tensors[&v], INLINE_ELEMENTS)
            );
        }
        let order = match self.ops_in_order() {
            Ok(order) => order,
            Err(e) => {
                let _ = writeln!(out, "# cannot order the nodes: {e}");
                return;
            }
        };
        for n in order {
            if let Some(line) = self.node_text(n, options) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        for &v in &self.outputs {
            let _ = writeln!(out, "output {}", self.typed_name(v));
        }
    }

    /// One op node's line of the text form (`None` for a source): `outputs = op[attrs](inputs)`.
    pub fn node_text(&self, n: NodeIndex, options: TextOptions) -> Option<String> {
        let node = &self.graph[n];
        let NodeKind::Op(op) = &node.kind else {
            return None;
        };
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .map(|o| o.map(|v| self.typed_name(v)).unwrap_or_else(|| "_".into()))
            .collect();
        let inputs: Vec<String> = self
            .node_inputs(n)
            .into_iter()
            .map(|i| {
                i.map(|v| self.value(v).name.clone())
                    .unwrap_or_else(|| "_".into())
            })
            .collect();
        let mut line = format!(
            "{} = {}({})",
            outputs.join(", "),
            op_text(op),
            inputs.join(", ")
        );
        let captured = self.captured_values(n);
        if !captured.is_empty() {
            let names: Vec<&str> = captured
                .iter()
                .map(|&v| self.value(v).name.as_str())
                .collect();
            let _ = write!(line, " captures({})", names.join(", "));
        }
        if options.node_names && !op.proto.name().is_empty() {
            let _ = write!(line, "  # {}", op.proto.name());
        }
        Some(line)
    }

    /// A constant's summary in the text form: type, shape and content hash (small ones in full).
    pub fn constant_text(&self, v: ValueId) -> Option<String> {
        self.tensors
            .get(&v)
            .map(|t| tensor::summary(t, INLINE_ELEMENTS))
    }

    fn typed_name(&self, v: ValueId) -> String {
        let value = self.value(v);
        match value.ty() {
            Some(ty) => format!("{}: {}", value.name, describe_type(Some(ty))),
            None => value.name.clone(),
        }
    }
}

/// An op without its values: `domain.Op[attrs]`, attributes sorted by name (their order carries no meaning in
/// ONNX, and exporters differ in it).
pub fn op_text(op: &super::Op) -> String {
    let op_name = match op.domain() {
        "" => op.op_type().to_string(),
        d => format!("{d}.{}", op.op_type()),
    };
    let mut attrs: Vec<String> = op
        .proto
        .attribute
        .iter()
        .filter(|a| !spells_a_default(op, a))
        .map(attribute_text)
        .collect();
    attrs.sort();
    if attrs.is_empty() {
        op_name
    } else {
        format!("{op_name}[{}]", attrs.join(", "))
    }
}

/// Whether an attribute restates the spec's default for one of the norm ops normshift rewrites (`axis = -1`,
/// `stash_type = 1`): exporters differ in writing these out, and the text form should not.
fn spells_a_default(op: &super::Op, a: &AttributeProto) -> bool {
    let norm_op =
        op.domain().is_empty() && matches!(op.op_type(), "LayerNormalization" | "RMSNormalization");
    norm_op
        && a.r#type() == AttributeType::Int
        && matches!((a.name(), a.i()), ("axis", -1) | ("stash_type", 1))
}

fn attribute_text(a: &AttributeProto) -> String {
    let value = match a.r#type() {
        AttributeType::Float => format_number(a.f() as f64),
        AttributeType::Int => a.i().to_string(),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Floats => list(a.floats.iter().map(|v| format_number(*v as f64))),
        AttributeType::Ints => list(a.ints.iter().map(ToString::to_string)),
        AttributeType::Strings => list(
            a.strings
                .iter()
                .map(|s| format!("{:?}", String::from_utf8_lossy(s))),
        ),
        AttributeType::Tensor => match &a.t {
            Some(t) => {
                let t = crate::ir::Tensor {
                    proto: t.clone(),
                    external: None,
                };
                tensor::summary(&t, INLINE_ELEMENTS)
            }
            None => "<tensor>".into(),
        },
        AttributeType::Graph => match &a.g {
            Some(g) => format!("<graph {:?}: {} nodes>", g.name(), g.node.len()),
            None => "<graph>".into(),
        },
        AttributeType::Graphs => format!("<{} graphs>", a.graphs.len()),
        other => format!("<{}>", other.as_str_name().to_lowercase()),
    };
    if a.ref_attr_name.is_some() {
        return format!("{}=@{}", a.name(), a.ref_attr_name());
    }
    format!("{}={value}", a.name())
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(", "))
}
