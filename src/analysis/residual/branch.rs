//! What a branch computes, from its ops and their data flow: attention mixes tokens by a softmax over the
//! product of two activations (queries and keys); anything else with an elementwise activation is an MLP —
//! including a mixture of experts, whose router's softmax is over a product with a weight.

use std::collections::HashSet;

use petgraph::stable_graph::NodeIndex;

use super::flow::{Flow, has_op};
use super::types::BranchKind;
use crate::ir::index::GraphIndex;

/// Ops that apply a learned linear map: what makes an `Add` a residual unit rather than a bias or a mask.
/// Quantized and onnxruntime-fused forms count, and so do fused attention ops (their projections are inside).
pub(super) const LINEAR: &[&str] = &[
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "MatMulInteger",
    "QLinearMatMul",
    "QLinearConv",
    "MatMulNBits",
    "MatMulBnb4",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QGemm",
    "FusedMatMul",
    "FusedGemm",
    "GemmFastGelu",
    "Attention",
    "QAttention",
];

/// Fused attention ops, of ONNX (opset 23) or onnxruntime: attention whatever is around them.
const FUSED_ATTENTION: &[&str] = &[
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "PackedAttention",
    "PackedMultiHeadAttention",
    "DecoderMaskedMultiHeadAttention",
    "DecoderMaskedSelfAttention",
    "SparseAttention",
    "QAttention",
    "LongformerAttention",
    "PagedAttention",
];

const ACTIVATIONS: &[&str] = &[
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Gelu",
    "Elu",
    "Selu",
    "LeakyRelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Mish",
    "FastGelu",
    "BiasGelu",
    "QuickGelu",
    "GemmFastGelu",
    "BiasSplitGelu",
    "BiasFastGelu",
    "Swish",
];

/// Products that can compute attention scores.
const PRODUCTS: &[&str] = &["MatMul", "Einsum", "FusedMatMul"];

pub(super) fn branch_kind(ix: &GraphIndex, flow: &Flow, window: &[NodeIndex]) -> BranchKind {
    if has_op(ix, window, FUSED_ATTENTION) || mixes_tokens(ix, flow, window) {
        BranchKind::Attention
    } else if has_op(ix, window, ACTIVATIONS) {
        BranchKind::Mlp
    } else {
        BranchKind::Other
    }
}

/// Whether some `Softmax` of the branch normalizes scores that a product of two activations computed: the
/// walk goes back from the softmax's input through the ops between (scaling, masks, position biases, casts),
/// and stops at each product it meets.
fn mixes_tokens(ix: &GraphIndex, flow: &Flow, window: &[NodeIndex]) -> bool {
    let inside: HashSet<NodeIndex> = window.iter().copied().collect();
    window.iter().any(|&n| {
        let is_softmax = ix.graph.graph[n]
            .op()
            .is_some_and(|op| matches!(op.op_type(), "Softmax" | "LogSoftmax"));
        is_softmax && scores_of_activations(ix, flow, &inside, n)
    })
}

fn scores_of_activations(
    ix: &GraphIndex,
    flow: &Flow,
    inside: &HashSet<NodeIndex>,
    softmax: NodeIndex,
) -> bool {
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeIndex> = ix
        .inputs(softmax)
        .iter()
        .flatten()
        .filter_map(|&v| ix.producer(v).map(|(n, _)| n))
        .collect();
    while let Some(n) = stack.pop() {
        if !inside.contains(&n) || !seen.insert(n) {
            continue;
        }
        let Some(op) = ix.graph.graph[n].op() else {
            continue;
        };
        if PRODUCTS.contains(&op.op_type()) {
            let operands: Vec<_> = ix.inputs(n).iter().flatten().collect();
            if operands.len() >= 2 && operands.iter().all(|&&v| flow.carries_data(v)) {
                return true;
            }
            continue;
        }
        stack.extend(
            ix.inputs(n)
                .iter()
                .flatten()
                .filter_map(|&v| ix.producer(v).map(|(p, _)| p)),
        );
    }
    false
}
