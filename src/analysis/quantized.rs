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
