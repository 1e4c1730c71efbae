//! Finding the residual units by data flow.
//!
//! A unit is a sum of the stream `x` and of branches computed from that same `x` (directly or through its
//! norm), each through at least one linear layer: that rules out the `x + c·x³` inside a tanh-GELU and every
//! sum with a bias, a mask or a position table. However the exporter grouped the terms — `x + a + m`,
//! `(x + a) + m`, `x + (a + m)` — they are one sum: the `Add`s whose result only the next `Add` reads are
//! taken together ([`SumTree`]), and the branches are its terms other than `x`. A skip scaled by a constant
//! (`α·x`, DeepNorm) counts, and so does a skip that reaches `x` through pass-through ops the branches do not
//! share (a Pre-LN OPT reshapes the raw sum for its skip).
//!
//! Units are found along the stream only: walked back from the last sum of the graph through the norms and
//! the ops that keep the stream the stream ([`super::stream`]). Sums off the stream (an attention mask that
//! every layer adds depends on earlier layers through linear layers, and would otherwise look like a unit)
//! are never examined, and each unit's search stays inside its own sublayer, so the work is linear in depth.

use std::collections::HashMap;

use petgraph::stable_graph::NodeIndex;

use super::branch::LINEAR;
use super::flow::{between, has_op, is_constant, value_position};
use super::stream::{carried_chain, origin};
use crate::analysis::constants::scalar;
use crate::analysis::norms::{FusedSlots, Norm};
use crate::ir::ValueId;
use crate::ir::index::GraphIndex;

/// A residual unit as found, before norms are given roles.
pub(super) struct Candidate {
    pub add: NodeIndex,
    pub adds: Vec<NodeIndex>,
    pub x: ValueId,
    pub skip: ValueId,
    pub skip_reader: NodeIndex,
    pub scaled_skip: Option<(f64, NodeIndex)>,
    pub sum: Option<ValueId>,
    /// Each branch's output and the nodes on its paths from `x`.
    pub branches: Vec<(ValueId, Vec<NodeIndex>)>,
}

/// The normalized output of the fused op whose sum output is `v` (a Skip op's fourth output,
/// `EmbedLayerNormalization`'s third), if `v` is one.
fn skip_norm_of_sum(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let (n, slot) = ix.producer(v)?;
    let slots = FusedSlots::of(ix.graph.graph[n].op()?)?;
    (slots.sum == Some(slot)).then(|| ix.output(n)).flatten()
}

/// Nodes on data paths from the stream `x` to `v`; a Skip op's normalized output stands for its sum.
fn from_stream(ix: &GraphIndex, x: ValueId, v: ValueId) -> Option<Vec<NodeIndex>> {
    between(ix, x, v, skip_norm_of_sum(ix, x))
}

/// Whether `v` reads `x` through a linear layer: then it can be a branch of the unit whose stream is `x`.
fn branch_window(ix: &GraphIndex, x: ValueId, v: ValueId) -> Option<Vec<NodeIndex>> {
    if is_constant(ix, x) {
        return None;
    }
    from_stream(ix, x, v).filter(|w| has_op(ix, w, LINEAR))
}

/// The two summands of a node that computes a sum, and the sum when the graph holds it: an `Add`, or a Skip
/// norm op (`input + skip`, its bias aside; the sum is its optional fourth output).
pub(super) fn summands(
    ix: &GraphIndex,
    n: NodeIndex,
) -> Option<(ValueId, ValueId, Option<ValueId>)> {
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

/// A sum of several terms, as the `Add`s that compute it: `nodes` with the root last, and each term with the
/// node reading it.
struct SumTree {
    nodes: Vec<NodeIndex>,
    terms: Vec<(ValueId, NodeIndex)>,
}

/// The `Add` making `v`, when nothing but `reader` reads `v` (shape and type queries aside) and it adds two
/// activations: then `v` is only a partial sum, part of the sum `reader` computes.
fn partial_sum(ix: &GraphIndex, v: ValueId, reader: NodeIndex) -> Option<NodeIndex> {
    let (n, _) = ix.produced_by(v, "Add")?;
    let other_readers = ix
        .consumers(v)
        .iter()
        .any(|&(c, slot)| c != reader && super::flow::reads_data(ix, c, slot));
    if other_readers || ix.is_graph_output(v) {
        return None;
    }
    let [Some(p), Some(q)] = ix.inputs(n)[..] else {
        return None;
    };
    (!is_constant(ix, p) && !is_constant(ix, q)).then_some(n)
}

fn sum_tree(ix: &GraphIndex, root: NodeIndex, grouped: bool) -> Option<SumTree> {
    let (p, q, _) = summands(ix, root)?;
    let mut tree = SumTree {
        nodes: vec![root],
        terms: Vec::new(),
    };
    let mut stack = vec![(q, root), (p, root)];
    while let Some((v, reader)) = stack.pop() {
        match partial_sum(ix, v, reader).filter(|_| grouped && tree.nodes.len() < 64) {
            Some(n) => {
                let (a, b, _) = summands(ix, n)?;
                tree.nodes.push(n);
                stack.push((b, n));
                stack.push((a, n));
            }
            None => tree.terms.push((v, reader)),
        }
    }
    // Root last, the partial sums before it in the order they are computed.
    tree.nodes.sort_by_key(|&n| ix.position(n));
    Some(tree)
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

/// The terms of a branch: split `Add(p, q)` while both terms read the stream through a linear layer (a sum
/// of branches that something else also reads is still a sum of branches).
fn split_terms(
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
        && let Some(wp) = branch_window(ix, x, p)
        && let Some(wq) = branch_window(ix, x, q)
    {
        split_terms(ix, x, p, wp, out);
        split_terms(ix, x, q, wq, out);
        return;
    }
    out.push((v, window));
}

/// The stream a sum's branches read, how its skip is scaled (`α` and the `Mul`), and each branch's window.
type StreamOf = (ValueId, Option<(f64, NodeIndex)>, Vec<Vec<NodeIndex>>);

/// The stream of a sum whose skip term is `skip`, if every other term reads it through a linear layer: `skip`
/// itself, the value before pass-through ops that only the skip applies, or (DeepNorm) the `x` of `α·x`.
fn stream_of(ix: &GraphIndex, skip: ValueId, others: &[ValueId]) -> Option<StreamOf> {
    let windows = |x: ValueId| -> Option<Vec<Vec<NodeIndex>>> {
        others.iter().map(|&v| branch_window(ix, x, v)).collect()
    };
    if let Some(w) = windows(skip) {
        return Some((skip, None, w));
    }
    let before = origin(ix, skip);
    if before != skip
        && let Some(w) = windows(before)
    {
        return Some((skip, None, w));
    }
    let (x, alpha, mul) = unscaled(ix, skip)?;
    Some((x, Some((alpha, mul)), windows(x)?))
}

/// The unit whose sum `add` computes, if it is one: its terms grouped as the exporter wrote them, or failing
/// that its two operands alone (a sum that also adds something else than branches of one stream).
pub(super) fn candidate(ix: &GraphIndex, add: NodeIndex) -> Option<Candidate> {
    let (_, _, sum) = summands(ix, add)?;
    [true, false]
        .into_iter()
        .find_map(|grouped| candidate_of(ix, &sum_tree(ix, add, grouped)?, add, sum))
}

fn candidate_of(
    ix: &GraphIndex,
    tree: &SumTree,
    add: NodeIndex,
    sum: Option<ValueId>,
) -> Option<Candidate> {
    // The skip is the term computed first among those that all others read through a linear layer.
    let mut terms = tree.terms.clone();
    terms.sort_by_key(|&(v, _)| value_position(ix, v));
    for (i, &(skip, skip_reader)) in terms.iter().enumerate() {
        let others: Vec<ValueId> = terms
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &(v, _))| v)
            .collect();
        if others.is_empty() {
            return None;
        }
        let Some((x, scaled_skip, windows)) = stream_of(ix, skip, &others) else {
            continue;
        };
        let mut branches = Vec::new();
        for (v, window) in others.into_iter().zip(windows) {
            split_terms(ix, x, v, window, &mut branches);
        }
        return Some(Candidate {
            add,
            adds: tree.nodes.clone(),
            x,
            skip,
            skip_reader,
            scaled_skip,
            sum,
            branches,
        });
    }
    None
}

/// The residual stream's units in stream order: the chain walked back from the last sum of the graph along
/// each unit's stream, through norms and the ops that keep the stream the stream.
pub(super) fn spine(ix: &GraphIndex, norms: &[Norm]) -> Vec<Candidate> {
    let norm_by_output: HashMap<ValueId, &Norm> = norms.iter().map(|n| (n.output, n)).collect();
    let is_sum = |v: ValueId| {
        ix.producer(v)
            .is_some_and(|(n, _)| summands(ix, n).is_some())
    };
    let leads_on = |v: ValueId| norm_by_output.contains_key(&v) || is_sum(v);
    let mut chain: Vec<Candidate> = Vec::new();
    let mut current = ix.ops().iter().rev().find_map(|&n| candidate(ix, n));
    while let Some(unit) = current {
        let mut v = unit.x;
        chain.push(unit);
        current = 'walk: loop {
            // A norm's output: the stream continues at what it normalizes. A Skip op is the previous unit's
            // sum and its norm at once.
            if let Some(norm) = norm_by_output.get(&v) {
                if norm.takes_sum() {
                    break candidate(ix, norm.nodes[0]);
                }
                v = norm.input;
                continue;
            }
            // A decomposed norm ends in the `Add` of its shift: look for norms before sums.
            for &c in &carried_chain(ix, v, &leads_on) {
                if norm_by_output.contains_key(&c) {
                    v = c;
                    continue 'walk;
                }
                if let Some((n, _)) = ix.producer(c)
                    && summands(ix, n).is_some()
                {
                    break 'walk candidate(ix, n);
                }
            }
            break None;
        };
    }
    chain.reverse();
    chain
}
