//! Raising the default-domain opset, as fusions need (`LayerNormalization` exists from opset 17,
//! `RMSNormalization` from 23): every other node must stay valid under the new version.
//!
//! Most version bumps of an op only add types or optional attributes and inputs whose defaults keep the old
//! behaviour; a node of such an op is left as it is. The changes that are not like that (found by comparing
//! every schema version with the one before it, opsets 11 to 23) have an adapter here, or a refusal:
//!
//! | op | at | change | adapter |
//! |---|---|---|---|
//! | `ReduceSum` | 13 | `axes` attribute → input | move it |
//! | `Squeeze`, `Unsqueeze` | 13 | `axes` attribute → input | move it |
//! | `Split` | 13 | `split` attribute → input | move it |
//! | `Softmax`, `LogSoftmax`, `Hardmax` | 13 | no more 2-D coercion; `axis` default 1 → −1 | when `axis` is the last axis, write it out; else refuse |
//! | `BatchNormalization` | 14 | training outputs dropped | when they are unused, nothing; else refuse |
//! | other `Reduce*` | 18 | `axes` attribute → input | move it |
//! | `Split` | 18 | `split` input or `num_outputs` required | add `num_outputs` |
//! | `GridSample` | 20 | modes `bilinear`/`bicubic` renamed `linear`/`cubic` | rename |
//! | `DFT` | 20 | `axis` attribute → input | refuse |
//! | `GroupNormalization` | 21 | scale and bias per channel, not per group | refuse |
//! | `Scatter`, `Upsample` | 11, 10 | deprecated | refuse |
//!
//! Models below opset 11 are refused whole. Nodes inside `If`/`Loop`/`Scan` bodies are adapted too (a moved
//! attribute becomes a `Constant` node in the body). The model's IR version is raised to what the new opset
//! requires, so that the official checker accepts the pairing.

use std::collections::HashSet;

use petgraph::stable_graph::NodeIndex;

use crate::ir::{Model, Patch, ValueRef};
use crate::onnx::build::{attr_int, attr_tensor, i64_tensor, node};
use crate::onnx::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};

/// The oldest default-domain opset an upgrade starts from.
pub const OLDEST_UPGRADABLE: i64 = 11;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpgradeError {
    #[error("opset {from} is older than {OLDEST_UPGRADABLE}, the oldest normshift upgrades from")]
    TooOld { from: i64 },
    #[error(
        "node `{node}` ({op}) has no adapter from opset {from} to {to}: {why}; nothing was changed"
    )]
    NoAdapter {
        node: String,
        op: String,
        from: i64,
        to: i64,
        why: &'static str,
    },
}

/// The IR version a default-domain opset needs (ONNX's release table).
pub fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        _ => 11,
    }
}

/// The `Reduce*` ops whose `axes` became an input at opset 18 (`ReduceSum` did at 13).
const REDUCE_18: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
];

/// The other default-domain ops the table above names, adapted or refused.
const OTHER_CHANGED_OPS: &[&str] = &[
    "ReduceSum",
    "Squeeze",
    "Unsqueeze",
    "Split",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "BatchNormalization",
    "GridSample",
    "DFT",
    "GroupNormalization",
    "Scatter",
    "Upsample",
];

fn changed_between_11_and_23(op_type: &str) -> bool {
    REDUCE_18.contains(&op_type) || OTHER_CHANGED_OPS.contains(&op_type)
}

/// An int64 constant to read at an input slot.
type NewInput = Option<(usize, Vec<i64>)>;

/// What one node needs to be valid at the new opset.
struct Adapted {
    proto: NodeProto,
    /// An int64 constant to read at this input slot (a moved `axes` or `split` attribute).
    new_input: NewInput,
}

/// Plans raising the model's default-domain opset to `to`, leaving alone the nodes in `skip` (which the caller's
/// own patch removes). Empty when the model is already at `to` or above.
pub fn plan(model: &Model, to: i64, skip: &HashSet<NodeIndex>) -> Result<Patch, UpgradeError> {
    let from = model.opset_version("").unwrap_or(1);
    let mut patch = Patch::new();
    if from >= to {
        return Ok(patch);
    }
    if from < OLDEST_UPGRADABLE {
        return Err(UpgradeError::TooOld { from });
    }
    let g = &model.graph;
    for n in g.graph.node_indices() {
        if skip.contains(&n) {
            continue;
        }
        let Some(op) = g.graph[n].op() else { continue };
        let inputs = g.node_inputs(n);
        let outputs = &g.graph[n].outputs;
        let named: Vec<bool> = outputs.iter().map(Option::is_some).collect();
        let Some(adapted) = adapt(&op.proto, inputs.len(), &named, from, to)? else {
            continue;
        };
        let mut new_inputs: Vec<Option<ValueRef>> =
            inputs.iter().map(|v| v.map(ValueRef::Old)).collect();
        if let Some((slot, values)) = adapted.new_input {
            let hint = format!("{}_{}", value_hint(model, outputs), "axes");
            let constant = patch.initializer(hint, i64_tensor(vec![values.len() as i64], &values));
            if new_inputs.len() <= slot {
                new_inputs.resize(slot + 1, None);
            }
            new_inputs[slot] = Some(constant);
        }
        let outs = outputs.iter().map(|v| v.map(ValueRef::Old)).collect();
        patch.add_node_capturing(adapted.proto, new_inputs, outs, g.captured_values(n), n);
        patch.remove(n);
    }
    patch.require_opset("", to);
    patch.require_ir_version(ir_version_for(to));
    Ok(patch)
}

fn value_hint(model: &Model, outputs: &[Option<crate::ir::ValueId>]) -> String {
    outputs
        .iter()
        .flatten()
        .next()
        .map(|v| model.graph.value(*v).name.clone())
        .unwrap_or_else(|| "upgrade".into())
}

fn attr<'a>(p: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    p.attribute.iter().find(|a| a.name() == name)
}

fn without(p: &NodeProto, name: &str) -> NodeProto {
    let mut q = p.clone();
    q.attribute.retain(|a| a.name() != name);
    q
}

/// The adaptation a node needs between `from` and `to` (exclusive, inclusive), or `None` if it needs none.
/// `input_count` is the node's operand count and `outputs` says which output slots are named (a node's proto
/// in the IR has its lists taken out).
fn adapt(
    p: &NodeProto,
    input_count: usize,
    outputs: &[bool],
    from: i64,
    to: i64,
) -> Result<Option<Adapted>, UpgradeError> {
    let crosses = |v: i64| from < v && v <= to;
    let refuse = |why: &'static str| UpgradeError::NoAdapter {
        node: p.name().into(),
        op: p.op_type().into(),
        from,
        to,
        why,
    };
    let mut proto = adapt_subgraphs(p, from, to)?;
    let op = p.op_type();
    // Most nodes need nothing: decide that before copying anything.
    if !matches!(p.domain(), "" | "ai.onnx") || !changed_between_11_and_23(op) {
        return Ok(proto.map(|proto| Adapted {
            proto,
            new_input: None,
        }));
    }
    let mut changed = proto.is_some();
    let mut new_input = None;
    let current = proto.clone().unwrap_or_else(|| p.clone());
    let axes_to_input = |at: i64, name: &str| -> Option<(NodeProto, NewInput)> {
        if !crosses(at) {
            return None;
        }
        let a = attr(&current, name)?;
        Some((without(&current, name), Some((1, a.ints.clone()))))
    };
    let moved = match op {
        _ if REDUCE_18.contains(&op) => axes_to_input(18, "axes"),
        "ReduceSum" | "Squeeze" | "Unsqueeze" => axes_to_input(13, "axes"),
        "Split" => axes_to_input(13, "split"),
        _ => None,
    };
    if let Some((q, input)) = moved {
        proto = Some(q);
        new_input = input;
        changed = true;
    }
    let mut current = proto.clone().unwrap_or_else(|| p.clone());
    match op {
        "Split" if crosses(18) => {
            let has_split_input = input_count > 1 || new_input.is_some();
            if !has_split_input && attr(&current, "num_outputs").is_none() {
                current
                    .attribute
                    .push(attr_int("num_outputs", outputs.len() as i64));
                changed = true;
            }
        }
        "Softmax" | "LogSoftmax" | "Hardmax" if crosses(13) => {
            // Before 13 the op flattened to 2-D at `axis` (default 1); that equals the new per-axis op only when
            // `axis` is the last axis, which without shapes is knowable only when written as -1.
            match attr(&current, "axis").map(|a| a.i()) {
                Some(-1) => {}
                _ => {
                    return Err(refuse(
                        "before opset 13 it normalizes over all axes from `axis` on; only axis=-1 carries over",
                    ));
                }
            }
        }
        "BatchNormalization" if crosses(14) && outputs.iter().skip(1).any(|&named| named) => {
            return Err(refuse("its training-mode outputs were removed at opset 14"));
        }
        "GridSample" if crosses(20) => {
            for a in current.attribute.iter_mut().filter(|a| a.name() == "mode") {
                let renamed: &[u8] = match a.s.as_deref() {
                    Some(b"bilinear") => b"linear",
                    Some(b"bicubic") => b"cubic",
                    _ => continue,
                };
                a.s = Some(renamed.to_vec().into());
                changed = true;
            }
        }
        "DFT" if crosses(20) => {
            return Err(refuse(
                "its `axis` moved from attribute to input at opset 20",
            ));
        }
        "GroupNormalization" if crosses(21) => {
            return Err(refuse(
                "its scale and bias changed from per-group to per-channel at opset 21",
            ));
        }
        "Scatter" | "Upsample" => {
            return Err(refuse("it is deprecated; use ScatterElements or Resize"));
        }
        _ => {}
    }
    Ok(changed.then_some(Adapted {
        proto: current,
        new_input,
    }))
}

/// The node with its subgraph attributes adapted, if any of them needed it.
fn adapt_subgraphs(p: &NodeProto, from: i64, to: i64) -> Result<Option<NodeProto>, UpgradeError> {
    let has_subgraph = p
        .attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty());
    if !has_subgraph {
        return Ok(None);
    }
    let mut q = p.clone();
    let mut changed = false;
    for a in &mut q.attribute {
        if a.r#type() == AttributeType::Graph
            && let Some(g) = a.g.as_mut()
        {
            changed |= adapt_graph(g, from, to)?;
        }
        for g in &mut a.graphs {
            changed |= adapt_graph(g, from, to)?;
        }
    }
    Ok(changed.then_some(q))
}

/// Adapts the nodes of a subgraph body in place; a moved attribute becomes a `Constant` node before its reader.
fn adapt_graph(g: &mut GraphProto, from: i64, to: i64) -> Result<bool, UpgradeError> {
    let mut changed = false;
    let mut nodes = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        let outputs: Vec<bool> = n.output.iter().map(|o| !o.is_empty()).collect();
        let Some(mut adapted) = adapt(&n, n.input.len(), &outputs, from, to)? else {
            nodes.push(n);
            continue;
        };
        changed = true;
        adapted.proto.input = n.input.clone();
        adapted.proto.output = n.output.clone();
        if let Some((slot, values)) = adapted.new_input {
            let name = format!(
                "{}__normshift_axes",
                n.output.first().map_or("", |s| s.as_str())
            );
            let mut constant = node(
                "Constant",
                "",
                name.clone(),
                vec![attr_tensor(
                    "value",
                    i64_tensor(vec![values.len() as i64], &values),
                )],
            );
            constant.output = vec![name.clone()];
            nodes.push(constant);
            if adapted.proto.input.len() <= slot {
                adapted.proto.input.resize(slot + 1, String::new());
            }
            adapted.proto.input[slot] = name;
        }
        nodes.push(adapted.proto);
    }
    g.node = nodes;
    Ok(changed)
}
