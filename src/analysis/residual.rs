//! Residual units and where their norms sit.
//!
//! A residual unit is an `Add` whose one operand, the stream `x`, is an ancestor of the other, the branch
//! `F(x)`, through at least one linear layer (`MatMul`/`Gemm`/`Conv`): that rules out the `x + c·x³` inside a
//! tanh-GELU and every Add of a bias, a mask or a position table. A skip scaled by a constant (`α·x`, DeepNorm)
//! still counts. When the branch side is itself a sum of terms that each read `x` (GPT-J, GPT-NeoX), each term
//! is a branch of one *parallel* unit. A branch with a `Softmax` is attention; one with an elementwise
//! activation is an MLP.
//!
//! Dependencies through `Shape`/`Size` are not data flow and are ignored. Searches are limited to the nodes
//! between the two operands in topological order, so the whole analysis is linear in the model's depth.
//!
//! Norm roles, per unit: **pre** (reads `x`, feeds only the branch), **branch-output** (its output is the
//! branch's), **post** (reads the sum, and its output is the next unit's stream). A norm on the last unit's sum
//! is that unit's post norm when the other units are post, else the model's **final** norm; a norm whose output
//! is the first unit's stream is the **embedding** norm; every other norm is **internal** (QK-norm and the like).

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use serde::Serialize;

use super::constants::scalar;
use super::norms::{FusedSlots, Norm, NormKind, find_norms};
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, ValueId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Post,
    Pre,
    Peri,
    BranchOutput,
    None,
    Mixed,
}
spelled!(Placement { Post => "post", Pre => "pre", Peri => "peri", BranchOutput => "branch-output", None => "none", Mixed => "mixed" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchKind {
    Attention,
    Mlp,
    Other,
}
spelled!(BranchKind { Attention => "attention", Mlp => "mlp", Other => "other" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pre,
    Post,
    Peri,
    BranchOutput,
    Embedding,
    Final,
    Internal,
}
spelled!(Role {
    Pre => "pre",
    Post => "post",
    Peri => "peri",
    BranchOutput => "branch-output",
    Embedding => "embedding",
    Final => "final",
    Internal => "internal",
});

#[derive(Debug, Clone)]
pub struct Branch {
    pub kind: BranchKind,
    pub output: ValueId,
    /// Indices into [`Analysis::norms`].
    pub pre_norms: Vec<usize>,
    pub output_norm: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ResidualUnit {
    pub placement: Placement,
    pub branches: Vec<Branch>,
    pub post_norm: Option<usize>,
    /// `α` of a scaled skip `α·x + F(x)`.
    pub skip_scale: Option<f64>,
    /// The `Mul(x, α)` of a scaled skip.
    pub scaled_skip: Option<NodeIndex>,
    /// The stream entering the unit.
    pub stream_in: ValueId,
    /// The summand carrying the stream: `stream_in`, or `α·x` of a scaled skip.
    pub skip: ValueId,
    /// The other summand: what the branches write into the stream.
    pub branch_sum: ValueId,
    /// The residual sum; `None` when it exists only inside a fused Skip op (a Post-LN model's
    /// `SkipLayerNormalization` that does not write its sum out).
    pub sum: Option<ValueId>,
    /// The node computing the sum: an `Add`, or a Skip op that also normalizes it.
    pub add: NodeIndex,
    /// The norm computed by the same fused op as the sum (index into [`Analysis::norms`]).
    pub fused_norm: Option<usize>,
}

impl ResidualUnit {
    /// The node that reads the stream for the skip connection, and which of its inputs does: the unit's sum
    /// node, or the `Mul(x, α)` of a scaled skip.
    pub fn skip_site(&self, ix: &GraphIndex) -> Option<(NodeIndex, usize)> {
        let (node, operand) = match self.scaled_skip {
            Some(mul) => (mul, self.stream_in),
            None => (self.add, self.skip),
        };
        let slot = ix.inputs(node).iter().position(|v| *v == Some(operand))?;
        Some((node, slot))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NormInfo {
    #[serde(flatten)]
    pub norm: Norm,
    pub role: Role,
    /// The unit the norm belongs to (index into `residual_units`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<usize>,
    /// Gemma's `(1 + w)` scale, when the graph computes it.
    pub scale_plus_one: bool,
}

/// The kind of the model's norms taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSummary {
    LayerNorm,
    RmsNorm,
    Mixed,
    None,
}
spelled!(NormSummary { LayerNorm => "layernorm", RmsNorm => "rmsnorm", Mixed => "mixed", None => "none" });

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub placement: Placement,
    pub norm: NormSummary,
    pub parallel: bool,
    pub embedding_norm: bool,
    pub final_norm: bool,
    pub unit_count: usize,
    pub norm_count: usize,
    #[serde(serialize_with = "units_json")]
    pub residual_units: Vec<ResidualUnit>,
    pub norms: Vec<NormInfo>,
}

/// The values that carry a residual stream from the first unit's input to the last unit's sum (and on through
/// Reshapes after it), and the Reshapes among them.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub values: Vec<ValueId>,
    pub reshapes: Vec<NodeIndex>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "unit {unit}'s residual sum is computed inside {node} together with its norm: run `unfuse-norms` first"
    )]
    FusedSum { unit: usize, node: String },
    #[error(
        "unit {unit}'s stream `{stream}` does not come from unit {previous}'s sum `{sum}` through Reshapes"
    )]
    NotFromSum {
        unit: usize,
        stream: String,
        previous: usize,
        sum: String,
    },
}

impl Analysis {
    /// The residual stream as values: what enters each unit and each unit's sum. Between units the stream may
    /// pass through Reshapes (OPT flattens it around its MLP): the values in between are stream too. A sum that
    /// exists only inside a fused Skip op has no value, and is an error.
    pub fn stream(&self, ix: &GraphIndex) -> Result<Stream, StreamError> {
        let units = &self.residual_units;
        let name = |v: ValueId| ix.graph.value(v).name.clone();
        let mut sums = Vec::with_capacity(units.len());
        for (unit, u) in units.iter().enumerate() {
            match (u.fused_norm, u.sum) {
                (None, Some(sum)) => sums.push(sum),
                _ => {
                    return Err(StreamError::FusedSum {
                        unit,
                        node: ix.graph.node_label(u.add),
                    });
                }
            }
        }
        let mut stream = Stream::default();
        for (i, u) in units.iter().enumerate() {
            let mut v = u.stream_in;
            if i > 0 {
                let previous = sums[i - 1];
                while v != previous {
                    let not_from_sum = || StreamError::NotFromSum {
                        unit: i,
                        stream: name(u.stream_in),
                        previous: i - 1,
                        sum: name(previous),
                    };
                    let Some((r, _)) = ix.produced_by(v, "Reshape").filter(|_| ix.use_count(v) > 0)
                    else {
                        return Err(not_from_sum());
                    };
                    stream.values.push(v);
                    stream.reshapes.push(r);
                    v = ix
                        .inputs(r)
                        .first()
                        .copied()
                        .flatten()
                        .ok_or_else(not_from_sum)?;
                }
            }
            stream.values.push(v);
        }
        stream.values.extend(sums.last());
        // Reshapes of the stream (e.g. before the final norm) carry it on.
        let mut i = 0;
        while i < stream.values.len() {
            for &(n, slot) in ix.consumers(stream.values[i]) {
                if slot == InputSlot::Operand(0)
                    && let Some(op) = ix.graph.graph[n].op()
                    && op.op_type() == "Reshape"
                    && let Some(out) = ix.output(n)
                    && !stream.values.contains(&out)
                {
                    stream.values.push(out);
                    stream.reshapes.push(n);
                }
            }
            i += 1;
        }
        stream.values.dedup();
        Ok(stream)
    }
}

/// A unit as the JSON report shows it: its placement, its branch kinds, and its norms by index and role.
#[derive(Serialize)]
struct UnitJson {
    placement: Placement,
    branches: Vec<BranchKind>,
    norms: Vec<UnitNormJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_scale: Option<f64>,
}

#[derive(Serialize)]
struct UnitNormJson {
    index: usize,
    role: &'static str,
}

fn units_json<S: serde::Serializer>(units: &[ResidualUnit], s: S) -> Result<S::Ok, S::Error> {
    let peri = |u: &ResidualUnit, role| {
        if u.placement == Placement::Peri {
            "peri"
        } else {
            role
        }
    };
    let list: Vec<UnitJson> = units
        .iter()
        .map(|u| {
            let mut norms = Vec::new();
            for b in &u.branches {
                norms.extend(b.pre_norms.iter().map(|&index| UnitNormJson {
                    index,
                    role: peri(u, "pre"),
                }));
                norms.extend(b.output_norm.iter().map(|&index| UnitNormJson {
                    index,
                    role: peri(u, "branch-output"),
                }));
            }
            norms.extend(u.post_norm.iter().map(|&index| UnitNormJson {
                index,
                role: "post",
            }));
            norms.sort_by_key(|n| n.index);
            norms.dedup_by_key(|n| n.index);
            UnitJson {
                placement: u.placement,
                branches: u.branches.iter().map(|b| b.kind).collect(),
                norms,
                skip_scale: u.skip_scale,
            }
        })
        .collect();
    serde::Serialize::serialize(&list, s)
}

/// Ops that apply a learned linear map: what makes an `Add` a residual unit rather than a bias or a mask.
/// Quantized and onnxruntime-fused forms count, and so do fused attention ops (their projections are inside).
const LINEAR: &[&str] = &[
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
/// Ops that are (or contain) attention: a softmax over scores, or a fused attention op of ONNX (opset 23) or
/// onnxruntime.
const ATTENTION: &[&str] = &[
    "Softmax",
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

/// Position of a value's producer in export order (0 for inputs and initializers).
fn value_position(ix: &GraphIndex, v: ValueId) -> usize {
    ix.producer(v).map(|(n, _)| ix.position(n)).unwrap_or(0)
}

/// Nodes on data paths from value `a` to value `b` (excluding `a`'s producer, including `b`'s), or `None` if
/// `b` does not depend on `a`. Only nodes between the two in topological order are visited.
fn between(ix: &GraphIndex, a: ValueId, b: ValueId) -> Option<Vec<NodeIndex>> {
    let (lo, hi) = (value_position(ix, a), value_position(ix, b));
    if lo >= hi {
        return None;
    }
    let (b_node, _) = ix.producer(b)?;
    let g = &ix.graph.graph;
    // Marks by position inside the window (lo, hi]: the window is one sublayer, so this stays small.
    let slot = |n: NodeIndex| ix.position(n).checked_sub(lo + 1).filter(|&s| s < hi - lo);
    let mut forward = vec![false; hi - lo];
    let mut stack: Vec<NodeIndex> = ix.consumers(a).iter().map(|(n, _)| *n).collect();
    // A Skip op's sum and its normalized output are one computation: what reads the norm reads the sum.
    if let Some(normalized) = skip_norm_of_sum(ix, a) {
        stack.extend(ix.consumers(normalized).iter().map(|(n, _)| *n));
    }
    while let Some(n) = stack.pop() {
        let Some(s) = slot(n) else { continue };
        if std::mem::replace(&mut forward[s], true) {
            continue;
        }
        if g[n]
            .op()
            .is_some_and(|op| matches!(op.op_type(), "Shape" | "Size"))
        {
            continue;
        }
        stack.extend(g.edges_directed(n, Direction::Outgoing).map(|e| e.target()));
    }
    if !slot(b_node).is_some_and(|s| forward[s]) {
        return None;
    }
    // Second walk, backwards from `b` over the forward set; `visited` keeps each node once.
    let mut visited = vec![false; hi - lo];
    let mut on_path = Vec::new();
    let mut stack = vec![b_node];
    while let Some(n) = stack.pop() {
        let Some(s) = slot(n).filter(|&s| forward[s]) else {
            continue;
        };
        if std::mem::replace(&mut visited[s], true) {
            continue;
        }
        on_path.push(n);
        stack.extend(g.edges_directed(n, Direction::Incoming).map(|e| e.source()));
    }
    Some(on_path)
}

/// The normalized output of the fused op whose sum output is `v` (a Skip op's fourth output,
/// `EmbedLayerNormalization`'s third), if `v` is one.
fn skip_norm_of_sum(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let (n, slot) = ix.producer(v)?;
    let slots = FusedSlots::of(ix.graph.graph[n].op()?)?;
    (slots.sum == Some(slot)).then(|| ix.output(n)).flatten()
}

/// Whether `v` is a constant, without reading it: an initializer that is not a graph input, or a `Constant`.
fn is_constant(ix: &GraphIndex, v: ValueId) -> bool {
    match ix.producer_op(v) {
        Some((_, op)) => op.op_type() == "Constant" && op.domain().is_empty(),
        None => ix.graph.initializer(v).is_some() && !ix.graph.inputs.contains(&v),
    }
}

fn has_op(ix: &GraphIndex, nodes: &[NodeIndex], types: &[&str]) -> bool {
    nodes.iter().any(|&n| {
        ix.graph.graph[n]
            .op()
            .is_some_and(|op| types.contains(&op.op_type()))
    })
}

/// The stream behind a scaled skip operand: `x` of a constant-scaled `Mul(x, α)`, with `α` and the `Mul`.
fn unscaled(ix: &GraphIndex, v: ValueId) -> Option<(ValueId, f64, NodeIndex)> {
    let (mul, _) = ix.produced_by(v, "Mul")?;
    let [Some(a), Some(b)] = ix.inputs(mul)[..] else {
        return None;
    };
    match (scalar(ix, b), scalar(ix, a)) {
        (Some(alpha), _) => Some((a, alpha, mul)),
        (None, Some(alpha)) => Some((b, alpha, mul)),
        (None, None) => None,
    }
}

/// The terms of a branch operand: split `Add(p, q)` while both terms read the stream through a linear layer.
/// `window` is `between(x, v)`, already computed by the caller.
fn terms(
    ix: &GraphIndex,
    x: ValueId,
    v: ValueId,
    window: Vec<NodeIndex>,
    out: &mut Vec<(ValueId, Vec<NodeIndex>)>,
) {
    if let Some((add, _)) = ix.produced_by(v, "Add")
        && let [Some(p), Some(q)] = ix.inputs(add)[..]
        && !is_constant(ix, p)
        && !is_constant(ix, q)
        && let Some(wp) = between(ix, x, p).filter(|w| has_op(ix, w, LINEAR))
        && let Some(wq) = between(ix, x, q).filter(|w| has_op(ix, w, LINEAR))
    {
        terms(ix, x, p, wp, out);
        terms(ix, x, q, wq, out);
        return;
    }
    out.push((v, window));
}

struct Candidate {
    add: NodeIndex,
    x: ValueId,
    skip: ValueId,
    branch_sum: ValueId,
    scaled_skip: Option<(f64, NodeIndex)>,
    sum: Option<ValueId>,
    branches: Vec<(ValueId, Vec<NodeIndex>)>,
}

/// The two summands of a node that computes a sum, and the sum when the graph holds it: an `Add`, or a Skip
/// norm op (`input + skip`, its bias aside; the sum is its optional fourth output).
fn summands(ix: &GraphIndex, n: NodeIndex) -> Option<(ValueId, ValueId, Option<ValueId>)> {
    let op = ix.graph.graph[n].op()?;
    let inputs = ix.inputs(n);
    if op.op_type() == "Add" && op.domain().is_empty() {
        let [Some(p), Some(q)] = inputs[..] else {
            return None;
        };
        return Some((p, q, ix.output(n)));
    }
    let slots = FusedSlots::of(op)?;
    let p = inputs.first().copied().flatten()?;
    let q = inputs.get(slots.skip?).copied().flatten()?;
    let sum = slots
        .sum
        .and_then(|s| ix.graph.graph[n].outputs.get(s).copied().flatten());
    Some((p, q, sum))
}

fn candidate(ix: &GraphIndex, add: NodeIndex) -> Option<Candidate> {
    let (p, q, sum) = summands(ix, add)?;
    let (early, late) = if value_position(ix, p) <= value_position(ix, q) {
        (p, q)
    } else {
        (q, p)
    };
    // The skip is `early` itself, or (DeepNorm) the `x` of a scaled `α·x` when the branch reads `x` instead.
    // A constant (an ε shared by every norm, say) reaches much of the graph, but it is no stream.
    let with_linear = |x: ValueId| {
        if is_constant(ix, x) {
            return None;
        }
        between(ix, x, late).filter(|w| has_op(ix, w, LINEAR))
    };
    // The skip may reach the stream through shape-only ops that the branch does not share (a Pre-LN OPT
    // reshapes the raw sum for its skip, and the norm's output for its MLP): the branch then depends on the
    // stream before them.
    let through_shape = || {
        let before = origin(ix, early);
        (before != early).then(|| with_linear(before)).flatten()
    };
    let (x, scaled_skip, window) = match with_linear(early).or_else(through_shape) {
        Some(window) => (early, None, window),
        None => {
            let (x, alpha, mul) = unscaled(ix, early)?;
            (x, Some((alpha, mul)), with_linear(x)?)
        }
    };
    let mut branches = Vec::new();
    terms(ix, x, late, window, &mut branches);
    Some(Candidate {
        add,
        x,
        skip: early,
        branch_sum: late,
        scaled_skip,
        sum,
        branches,
    })
}

/// The residual stream: the chain of units walked back from the last residual `Add` along the skip side
/// (through norms and shape-only ops between units). Only Adds on that walk are examined, so Adds off the
/// stream are never taken for units: an attention mask that every layer adds depends on earlier layers
/// through linear layers, and would otherwise look like a skip. It also keeps the work linear in depth: each
/// unit's search is confined to its own sublayer.
fn spine(ix: &GraphIndex, norms: &[Norm]) -> Vec<Candidate> {
    let norm_by_output: HashMap<ValueId, &Norm> = norms.iter().map(|n| (n.output, n)).collect();
    let mut chain: Vec<Candidate> = Vec::new();
    let mut current = ix.ops().iter().rev().find_map(|&n| candidate(ix, n));
    while let Some(unit) = current {
        let mut v = unit.x;
        chain.push(unit);
        current = loop {
            // A decomposed norm ends in the Add of its shift: look for norms before Adds. A Skip op is the
            // previous unit's sum and its norm at once.
            if let Some(norm) = norm_by_output.get(&v) {
                if norm.takes_sum() {
                    break candidate(ix, norm.nodes[0]);
                }
                v = norm.input;
                continue;
            }
            if let Some((n, _)) = ix.producer(v)
                && summands(ix, n).is_some()
            {
                break candidate(ix, n);
            }
            match shape_only_input(ix, v) {
                Some(input) => v = input,
                None => break None,
            }
        };
    }
    chain.reverse();
    chain
}

/// Ops that carry the stream's values unchanged (up to shape or type) from their first input.
const SHAPE_ONLY: &[&str] = &[
    "Identity",
    "Cast",
    "Dropout",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
];

fn shape_only_input(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let (n, op) = ix.producer_op(v)?;
    if !SHAPE_ONLY.contains(&op.op_type()) || !op.domain().is_empty() {
        return None;
    }
    ix.inputs(n).first().copied().flatten()
}

/// The value `v` carries, before any shape-only ops (OPT flattens the stream to 2-D between sublayers).
pub fn origin(ix: &GraphIndex, mut v: ValueId) -> ValueId {
    while let Some(input) = shape_only_input(ix, v) {
        v = input;
    }
    v
}

/// The shape-only ops that lead from [`origin`]`(v)` to `v`, nearest to `v` first.
pub fn shape_steps(ix: &GraphIndex, mut v: ValueId) -> Vec<NodeIndex> {
    let mut steps = Vec::new();
    while let Some(input) = shape_only_input(ix, v) {
        if let Some((n, _)) = ix.producer(v) {
            steps.push(n);
        }
        v = input;
    }
    steps
}

/// `e` of an explicit centring `e − ReduceMean(e)` over the last axis, if `v` is one (`layernorm-to-rmsnorm`
/// writes it after an embedding norm, which no linear map can centre).
fn centred_from(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let (sub, _) = ix.produced_by(v, "Sub")?;
    let [Some(e), Some(m)] = ix.inputs(sub)[..] else {
        return None;
    };
    let (mean, op) = ix.produced_by(m, "ReduceMean")?;
    let last_axis = match op.attribute("axes") {
        Some(a) => a.ints == [-1],
        None => ix
            .inputs(mean)
            .get(1)
            .copied()
            .flatten()
            .and_then(|a| super::constants::integers(ix, a))
            .is_some_and(|axes| axes == [-1]),
    };
    let keeps = op.attribute("keepdims").is_none_or(|a| a.i() == 1);
    (ix.inputs(mean).first().copied().flatten() == Some(e) && last_axis && keeps).then_some(e)
}

/// What an affine projection `x·W (+ b)` with constant `W` and `b` reads (before shape-only ops), if `v` is
/// the output of one.
fn projected_from(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let mut v = v;
    if let Some((add, _)) = ix.produced_by(v, "Add")
        && let [Some(p), Some(q)] = ix.inputs(add)[..]
    {
        v = match (is_constant(ix, p), is_constant(ix, q)) {
            (false, true) => p,
            (true, false) => q,
            _ => return None,
        };
    }
    let (n, op) = ix.producer_op(origin(ix, v))?;
    let inputs = ix.inputs(n);
    let weight = inputs.get(1).copied().flatten()?;
    let linear = op.domain().is_empty() && matches!(op.op_type(), "MatMul" | "Gemm");
    (linear && is_constant(ix, weight))
        .then(|| inputs.first().copied().flatten())
        .flatten()
        .map(|x| origin(ix, x))
}

fn branch_kind(ix: &GraphIndex, window: &[NodeIndex]) -> BranchKind {
    if has_op(ix, window, ATTENTION) {
        BranchKind::Attention
    } else if has_op(ix, window, ACTIVATIONS) {
        BranchKind::Mlp
    } else {
        BranchKind::Other
    }
}

fn placement_of(pre: bool, out: bool, post: bool) -> Placement {
    match (pre, out, post) {
        (false, false, true) => Placement::Post,
        (true, false, false) => Placement::Pre,
        (true, true, false) => Placement::Peri,
        (false, true, false) => Placement::BranchOutput,
        (false, false, false) => Placement::None,
        _ => Placement::Mixed,
    }
}

/// Finds the norms, the residual units and the role of every norm.
pub fn analyze(ix: &GraphIndex) -> Analysis {
    let norms = find_norms(ix);
    let candidates = spine(ix, &norms);

    let norm_by_output: HashMap<ValueId, usize> = norms
        .iter()
        .enumerate()
        .map(|(i, m)| (m.output, i))
        .collect();
    let norm_nodes: HashMap<NodeIndex, usize> = norms
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.nodes.iter().map(move |&n| (n, i)))
        .collect();
    // Norms by the value they normalize, in graph order: one lookup per unit instead of a scan of every norm.
    let mut norms_reading: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, m) in norms.iter().enumerate() {
        if let Some(v) = m.normalized() {
            norms_reading.entry(origin(ix, v)).or_default().push(i);
        }
    }
    let reading = |v: ValueId| norms_reading.get(&v).map(Vec::as_slice).unwrap_or(&[]);
    let normalizes = |i: usize, v: ValueId| {
        norms[i]
            .normalized()
            .is_some_and(|n| origin(ix, n) == origin(ix, v))
    };
    let mut roles: Vec<Option<(Role, Option<usize>)>> = vec![None; norms.len()];
    // Each stream as its units read it and before shape-only ops: a norm whose last node is a Cast back to
    // the model's type (float16 models) ends in the first, not the second.
    let streams: HashSet<ValueId> = candidates
        .iter()
        .flat_map(|c| [c.x, origin(ix, c.x)])
        .collect();

    let mut units = Vec::new();
    for (u, c) in candidates.iter().enumerate() {
        let mut branches = Vec::new();
        for (output, window) in &c.branches {
            let inside: HashSet<NodeIndex> = window.iter().copied().collect();
            // Pre norms: read the stream, feed this branch. A Skip op that wrote this stream as its sum is
            // outside the branch; its normalized output is read inside it.
            let mut pre: Vec<usize> = reading(origin(ix, c.x))
                .iter()
                .copied()
                .filter(|&i| {
                    norms[i].nodes.iter().any(|n| inside.contains(n))
                        || ix
                            .consumers(norms[i].output)
                            .iter()
                            .any(|(n, _)| inside.contains(n))
                })
                .collect();
            pre.sort_unstable();
            pre.dedup();
            let output_norm = norm_by_output
                .get(output)
                .copied()
                .filter(|&i| !normalizes(i, c.x) && !norms[i].takes_sum());
            for &i in &pre {
                roles[i] = Some((Role::Pre, Some(u)));
            }
            if let Some(i) = output_norm {
                roles[i] = Some((Role::BranchOutput, Some(u)));
            }
            branches.push(Branch {
                kind: branch_kind(ix, window),
                output: *output,
                pre_norms: pre,
                output_norm,
            });
        }
        units.push(ResidualUnit {
            placement: Placement::None,
            branches,
            post_norm: None,
            skip_scale: c.scaled_skip.map(|(alpha, _)| alpha),
            scaled_skip: c.scaled_skip.map(|(_, mul)| mul),
            stream_in: c.x,
            skip: c.skip,
            branch_sum: c.branch_sum,
            sum: c.sum,
            add: c.add,
            fused_norm: norm_nodes
                .get(&c.add)
                .copied()
                .filter(|&i| norms[i].takes_sum()),
        });
    }
    // Norms of a unit's sum: the one its Skip op computes, then those reading the sum's value.
    let sum_norms = |unit: &ResidualUnit| -> Vec<usize> {
        let mut found: Vec<usize> = unit.fused_norm.into_iter().collect();
        if let Some(sum) = unit.sum {
            found.extend(reading(origin(ix, sum)).iter().copied());
        }
        found
    };
    // Post norms: read a sum and become the next stream.
    for (u, unit) in units.iter_mut().enumerate() {
        let post = sum_norms(unit)
            .into_iter()
            .find(|&i| roles[i].is_none() && streams.contains(&norms[i].output));
        if let Some(i) = post {
            unit.post_norm = Some(i);
            roles[i] = Some((Role::Post, Some(u)));
        }
    }
    // The last unit's sum norm: post in a post model, final otherwise.
    if let Some(last) = units.len().checked_sub(1) {
        let others_post = units[..last]
            .iter()
            .filter(|u| u.post_norm.is_some())
            .count();
        let others_not = last - others_post;
        let own_other_norms = units[last]
            .branches
            .iter()
            .any(|b| !b.pre_norms.is_empty() || b.output_norm.is_some());
        if let Some(i) = sum_norms(&units[last])
            .into_iter()
            .find(|&i| roles[i].is_none())
        {
            if others_post > others_not || (last == 0 && !own_other_norms) {
                units[last].post_norm = Some(i);
                roles[i] = Some((Role::Post, Some(last)));
            } else {
                roles[i] = Some((Role::Final, None));
            }
        }
    }
    // Embedding norm: its output is the first unit's stream, or is projected into it (ALBERT, ELECTRA: the
    // embedding is narrower than the stream, and a linear layer widens it after the norm).
    if let Some(first) = units.first() {
        let entry = origin(ix, first.stream_in);
        let embedding = norm_by_output
            .get(&first.stream_in)
            .or_else(|| norm_by_output.get(&entry))
            .or_else(|| projected_from(ix, entry).and_then(|v| norm_by_output.get(&v)))
            .or_else(|| centred_from(ix, entry).and_then(|v| norm_by_output.get(&v)))
            .copied();
        if let Some(i) = embedding
            && roles[i].is_none()
        {
            roles[i] = Some((Role::Embedding, None));
        }
    }
    for unit in &mut units {
        let pre = unit.branches.iter().any(|b| !b.pre_norms.is_empty());
        let out = unit.branches.iter().any(|b| b.output_norm.is_some());
        unit.placement = placement_of(pre, out, unit.post_norm.is_some());
        if unit.placement == Placement::Peri {
            for b in &unit.branches {
                for &i in b.pre_norms.iter().chain(b.output_norm.iter()) {
                    if let Some((role, _)) = roles[i].as_mut() {
                        *role = Role::Peri;
                    }
                }
            }
        }
    }
    summarize(norms, roles, units)
}

fn summarize(
    norms: Vec<Norm>,
    roles: Vec<Option<(Role, Option<usize>)>>,
    units: Vec<ResidualUnit>,
) -> Analysis {
    let placement = match units.first() {
        None => Placement::None,
        Some(first) if units.iter().all(|u| u.placement == first.placement) => first.placement,
        Some(_) => Placement::Mixed,
    };
    let kinds: HashSet<_> = norms.iter().map(|n| n.kind).collect();
    let norm = match (kinds.len(), norms.first().map(|n| n.kind)) {
        (1, Some(NormKind::LayerNorm)) => NormSummary::LayerNorm,
        (1, Some(NormKind::RmsNorm)) => NormSummary::RmsNorm,
        (0, _) => NormSummary::None,
        _ => NormSummary::Mixed,
    };
    let infos: Vec<NormInfo> = norms
        .into_iter()
        .zip(roles)
        .map(|(norm, role)| {
            let (role, unit) = role.unwrap_or((Role::Internal, None));
            let scale_plus_one = norm.scale.is_some_and(|s| s.plus_one);
            NormInfo {
                norm,
                role,
                unit,
                scale_plus_one,
            }
        })
        .collect();
    Analysis {
        placement,
        norm,
        parallel: units.iter().any(|u| u.branches.len() > 1),
        embedding_norm: infos.iter().any(|n| n.role == Role::Embedding),
        final_norm: infos.iter().any(|n| n.role == Role::Final),
        unit_count: units.len(),
        norm_count: infos.len(),
        residual_units: units,
        norms: infos,
    }
}
