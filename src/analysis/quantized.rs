//! Quantized graphs as analysis reads them. onnxruntime's static QDQ quantization puts a
//! `QuantizeLinear → DequantizeLinear` pair after almost every activation — inside decomposed norms (after the
//! mean, the variance, ε, the division) and on the residual stream — and stores weights, scales and even ε as
//! integers behind a `DequantizeLinear`. The structure is the float model's: analysis reads it through a view
//! with every activation pair removed (each reader of the pair reads what was quantized), in which node and value
//! ids are those of the graph itself. Constants behind a `DequantizeLinear` are read by `constants::constant`.

use crate::ir::index::GraphIndex;
use crate::ir::{Graph, Patch};

/// The graph with every activation `QuantizeLinear → DequantizeLinear` pair taken out, or `None` when it has
/// none. Ids of every other node and value are unchanged.
pub fn without_activation_qdq(graph: &Graph) -> Option<Graph> {
    // Most graphs have none: say so without indexing them.
    let dequantizes = graph
        .graph
        .node_weights()
        .filter_map(|n| n.op())
        .any(|op| op.op_type() == "DequantizeLinear" && op.domain().is_empty());
    if !dequantizes {
        return None;
    }
    let ix = GraphIndex::new(graph);
    let mut patch = Patch::new();
    let mut pairs = 0;
    for &dq in ix.ops() {
        let Some(op) = graph.graph[dq].op() else {
            continue;
        };
        if op.op_type() != "DequantizeLinear" || !op.domain().is_empty() {
            continue;
        }
        let (Some(q_out), Some(out)) = (ix.inputs(dq).first().copied().flatten(), ix.output(dq))
        else {
            continue;
        };
        let Some((q, _)) = ix.produced_by(q_out, "QuantizeLinear") else {
            continue;
        };
        let Some(x) = ix.inputs(q).first().copied().flatten() else {
            continue;
        };
        // Only pairs that nothing else observes: the quantized value read by the DequantizeLinear alone, and
        // neither value a graph output or read from inside a subgraph.
        let alone = ix.consumers(q_out).len() == 1
            && !ix.is_graph_output(q_out)
            && !ix.is_graph_output(out)
            && ix
                .consumers(out)
                .iter()
                .all(|(_, slot)| *slot != crate::ir::InputSlot::Captured);
        if !alone {
            continue;
        }
        patch.rewire(out, x.into());
        patch.remove(dq);
        patch.remove(q);
        pairs += 1;
    }
    if pairs == 0 {
        return None;
    }
    let mut view = graph.clone();
    view.apply(&patch).ok()?;
    Some(view)
}

/// How a graph quantizes computed values (activations), which is where runtimes depart from the ONNX
/// specification (`runtime::conformance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivationQuantization {
    /// `QuantizeLinear` nodes whose input is computed, not a constant.
    pub quantize: usize,
    /// `DequantizeLinear → Softmax → QuantizeLinear` chains, each value read by the next node only (element-wise
    /// unary steps may sit between): what tract 0.23.9 wrongly turns into a 256-entry lookup table.
    pub softmax_chains: usize,
}

impl ActivationQuantization {
    /// Whether the graph quantizes any activation.
    pub fn any(&self) -> bool {
        self.quantize > 0
    }

    /// Both graphs' counts, for models run side by side.
    pub fn and(self, other: ActivationQuantization) -> ActivationQuantization {
        ActivationQuantization {
            quantize: self.quantize + other.quantize,
            softmax_chains: self.softmax_chains + other.softmax_chains,
        }
    }
}

/// Ops that tract treats as element-wise on a lookup table's way: unary, one output, every axis kept. Softmax
/// and LogSoftmax are among them in tract (their axes mapping is "natural") though they are not element-wise.
const TABLE_STEPS: &[&str] = &[
    "Identity",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Softmax",
    "LogSoftmax",
];

/// The activation quantization of `graph` and of the subgraph bodies inside it.
pub fn activation_quantization(graph: &Graph) -> ActivationQuantization {
    let mut found = in_one_graph(graph);
    // Bodies are imported (which costs) only when one of them quantizes at all.
    let quantizing_body = graph
        .graph
        .node_weights()
        .filter_map(|n| n.op())
        .flat_map(|op| &op.proto.attribute)
        .flat_map(|a| a.g.iter().chain(&a.graphs))
        .any(quantizes_anywhere);
    if !quantizing_body {
        return found;
    }
    // A body that cannot be imported is a runtime's to report; here it counts for nothing.
    let _ = graph.visit_bodies(
        &crate::ir::subgraph::Scope::default(),
        "",
        &mut |_, body| -> Result<(), crate::ir::ValidationError> {
            found = found.and(in_one_graph(body));
            Ok(())
        },
    );
    found
}

/// Whether a body, or a body inside it, has a `QuantizeLinear`.
fn quantizes_anywhere(body: &crate::onnx::GraphProto) -> bool {
    body.node.iter().any(|n| {
        (n.op_type() == "QuantizeLinear" && n.domain().is_empty())
            || n.attribute
                .iter()
                .flat_map(|a| a.g.iter().chain(&a.graphs))
                .any(quantizes_anywhere)
    })
}

fn in_one_graph(graph: &Graph) -> ActivationQuantization {
    let quantizes = graph
        .graph
        .node_weights()
        .filter_map(|n| n.op())
        .any(|op| op.op_type() == "QuantizeLinear" && op.domain().is_empty());
    if !quantizes {
        return ActivationQuantization::default();
    }
    let ix = GraphIndex::new(graph);
    let mut found = ActivationQuantization::default();
    for &n in ix.ops() {
        let Some(op) = graph.graph[n].op().filter(|op| op.domain().is_empty()) else {
            continue;
        };
        let input = ix.inputs(n).first().copied().flatten();
        let computed =
            input.is_some_and(|x| crate::analysis::constants::constant(&ix, x).is_none());
        match op.op_type() {
            "QuantizeLinear" if computed => found.quantize += 1,
            "DequantizeLinear" if computed && reaches_quantize_through_softmax(&ix, n) => {
                found.softmax_chains += 1
            }
            _ => {}
        }
    }
    found
}

/// Whether the single-reader chain from DequantizeLinear `dq` passes a Softmax and ends at a QuantizeLinear.
fn reaches_quantize_through_softmax(
    ix: &GraphIndex,
    dq: petgraph::stable_graph::NodeIndex,
) -> bool {
    let mut softmax = false;
    let mut at = dq;
    // Each step moves to a node later in the graph, so the chain ends; the bound only guards a malformed one.
    for _ in 0..ix.ops().len() {
        let Some(out) = ix.output(at) else {
            return false;
        };
        let [(next, _)] = ix.consumers(out) else {
            return false;
        };
        let Some(op) = ix.graph.graph[*next]
            .op()
            .filter(|op| op.domain().is_empty())
        else {
            return false;
        };
        match op.op_type() {
            "QuantizeLinear" => return softmax,
            t if TABLE_STEPS.contains(&t) => softmax |= t.ends_with("Softmax"),
            _ => return false,
        }
        at = *next;
    }
    false
}
