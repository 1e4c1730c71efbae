//! The residual stream as values, and the ops it passes through unchanged.
//!
//! Between units the stream may pass through ops that cannot mix its channels or tokens: ops that only
//! change its layout or element type ([`PASS_THROUGH`]: OPT flattens it around its MLP, OLMo casts it to
//! float32 for its norms), an elementwise multiply by something that does not depend on it (DeBERTa multiplies
//! the embedding norm's output by the attention mask) and a division by a constant. Those keep it the stream;
//! anything else ends it.

use petgraph::stable_graph::NodeIndex;

use super::flow::{depends_on, is_constant};
use super::types::{Analysis, NormInfo};
use crate::analysis::constants::scalar;
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, ValueId};

/// Ops that hand on their first operand's values unchanged but for shape or element type.
pub const PASS_THROUGH: &[&str] = &[
    "Identity",
    "Cast",
    "Dropout",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
];

/// The operand a pass-through op hands on, if `v` is made by one.
fn passed_through(ix: &GraphIndex, v: ValueId) -> Option<ValueId> {
    let (n, op) = ix.producer_op(v)?;
    if !PASS_THROUGH.contains(&op.op_type()) || !op.domain().is_empty() {
        return None;
    }
    ix.inputs(n).first().copied().flatten()
}

/// The value `v` carries, before any pass-through ops (OPT flattens the stream to 2-D between sublayers).
pub fn origin(ix: &GraphIndex, mut v: ValueId) -> ValueId {
    while let Some(input) = passed_through(ix, v) {
        v = input;
    }
    v
}

/// The pass-through ops that lead from [`origin`]`(v)` to `v`, nearest to `v` first.
pub fn shape_steps(ix: &GraphIndex, mut v: ValueId) -> Vec<NodeIndex> {
    let mut steps = Vec::new();
    while let Some(input) = passed_through(ix, v) {
        if let Some((n, _)) = ix.producer(v) {
            steps.push(n);
        }
        v = input;
    }
    steps
}

/// One step back from `v` along an op that keeps the stream the stream: the operands that may carry it (two
/// for a multiply of two activations: which one is the stream depends on where each leads).
fn carried_operands(ix: &GraphIndex, v: ValueId) -> Vec<ValueId> {
    if let Some(input) = passed_through(ix, v) {
        return vec![input];
    }
    let Some((n, op)) = ix.producer_op(v) else {
        return Vec::new();
    };
    let [Some(p), Some(q)] = ix.inputs(n)[..] else {
        return Vec::new();
    };
    if !op.domain().is_empty() {
        return Vec::new();
    }
    match op.op_type() {
        "Div" if is_constant(ix, q) => vec![p],
        "Mul" => match (is_constant(ix, p), is_constant(ix, q)) {
            (false, true) => vec![p],
            (true, false) => vec![q],
            (true, true) => Vec::new(),
            // Elementwise by an activation that does not depend on the candidate (a mask): no mixing.
            (false, false) => [(p, q), (q, p)]
                .into_iter()
                .filter(|&(s, other)| !depends_on(ix, s, other))
                .map(|(s, _)| s)
                .collect(),
        },
        _ => Vec::new(),
    }
}

/// The values the stream passes through on its way back from `v`: `v` first, then what each carrying op
/// read, up to the first value no carrier made. Where a multiply of two activations could carry either,
/// the operand whose chain ends at a value `leads_on` accepts is taken (a norm's output or a residual sum,
/// not the mask); when neither does, the chain stops at the multiply.
pub(super) fn carried_chain(
    ix: &GraphIndex,
    v: ValueId,
    leads_on: &dyn Fn(ValueId) -> bool,
) -> Vec<ValueId> {
    let mut chain = vec![v];
    let mut current = v;
    // Bounded: a stream passes through a handful of carriers between two units.
    for _ in 0..64 {
        let next = match carried_operands(ix, current)[..] {
            [] => break,
            [one] => one,
            ref several => {
                let Some(rest) = several.iter().find_map(|&s| {
                    let rest = carried_chain(ix, s, leads_on);
                    rest.last()
                        .is_some_and(|&end| leads_on(end))
                        .then_some(rest)
                }) else {
                    break;
                };
                chain.extend(rest);
                return chain;
            }
        };
        chain.push(next);
        current = next;
    }
    chain
}

/// The values that carry a residual stream from the first unit's input to the last unit's sum (and on through
/// pass-through ops after it), and the carrying ops among them.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub values: Vec<ValueId>,
    /// Ops between units that carry the stream (pass-through ops, multiplies by masks or constants).
    pub carriers: Vec<NodeIndex>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "unit {unit}'s residual sum is computed inside {node} together with its norm: run `unfuse-norms` first"
    )]
    FusedSum { unit: usize, node: String },
    #[error(
        "unit {unit}'s stream `{stream}` does not come from unit {previous}'s sum `{sum}` through ops that \
         keep it the stream"
    )]
    NotFromSum {
        unit: usize,
        stream: String,
        previous: usize,
        sum: String,
    },
}

impl Analysis {
    /// The residual stream as values: what enters each unit and each unit's sum, and what carries it between
    /// them. A sum that exists only inside a fused Skip op has no value, and is an error.
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
            if i == 0 {
                stream.values.push(u.stream_in);
                continue;
            }
            let previous = sums[i - 1];
            let chain = carried_chain(ix, u.stream_in, &|v| v == previous);
            if chain.last() != Some(&previous) {
                return Err(StreamError::NotFromSum {
                    unit: i,
                    stream: name(u.stream_in),
                    previous: i - 1,
                    sum: name(previous),
                });
            }
            // The previous sum, then each value the carriers made from it.
            stream.values.push(previous);
            for &v in chain.iter().rev().skip(1) {
                stream.values.push(v);
                stream.carriers.extend(ix.producer(v).map(|(n, _)| n));
            }
        }
        stream.values.extend(sums.last());
        // Pass-through ops of the stream (e.g. before the final norm) carry it on, unless they are a norm's own.
        let norm_nodes: Vec<NodeIndex> = self
            .norms
            .iter()
            .flat_map(|n| n.norm.nodes.iter().copied())
            .collect();
        let mut i = 0;
        while i < stream.values.len() {
            for &(n, slot) in ix.consumers(stream.values[i]) {
                if slot == InputSlot::Operand(0)
                    && !norm_nodes.contains(&n)
                    && let Some(op) = ix.graph.graph[n].op()
                    && PASS_THROUGH.contains(&op.op_type())
                    && op.domain().is_empty()
                    && let Some(out) = ix.output(n)
                    && !stream.values.contains(&out)
                {
                    stream.values.push(out);
                    stream.carriers.push(n);
                }
            }
            i += 1;
        }
        stream.values.dedup();
        Ok(stream)
    }

    /// The norm a unit whose stream is `stream` reads through: the one whose output reaches `stream`, possibly
    /// through the pass-through ops that follow a norm. `post-to-pre` moves the unit's skip to that norm's
    /// input; calibration refits it as the unit's pre-norm.
    pub fn norm_read_through(&self, ix: &GraphIndex, stream: ValueId) -> Option<&NormInfo> {
        let before_steps = self
            .steps_after_norm(ix, stream)
            .last()
            .and_then(|&n| ix.inputs(n).first().copied().flatten())
            .unwrap_or(stream);
        self.norms.iter().find(|n| n.norm.output == before_steps)
    }

    /// The pass-through ops between `stream` and the norm output (or other value) it comes from, nearest
    /// `stream` first: the walk stops at a value a norm writes or reads. A norm's own Casts are part of the
    /// norm, not steps.
    pub fn steps_after_norm(&self, ix: &GraphIndex, stream: ValueId) -> Vec<NodeIndex> {
        let mut steps = Vec::new();
        let mut v = stream;
        for n in shape_steps(ix, stream) {
            let norm_edge = self.norms.iter().any(|m| {
                m.norm.output == v || m.norm.normalized() == Some(v) || m.norm.nodes.contains(&n)
            });
            if norm_edge {
                break;
            }
            steps.push(n);
            match ix.inputs(n).first().copied().flatten() {
                Some(input) => v = input,
                None => break,
            }
        }
        steps
    }

    /// The value that shows the stream after unit `l` as the next sublayer reads it: the first norm reading the
    /// unit's sum (its post-norm, the next unit's pre-norm, or the final norm), or, when none reads it directly,
    /// the unit's post-norm (which may read it through pass-through ops: OPT adds in 2-D). The placement
    /// rewrites keep every norm's output name, so the value exists in both models of such a rewrite.
    pub fn probe_after(&self, l: usize) -> Option<ValueId> {
        let u = self.residual_units.get(l)?;
        let norm = u
            .fused_norm
            .map(|i| &self.norms[i])
            .or_else(|| {
                let sum = u.sum?;
                self.norms.iter().find(|n| n.norm.normalized() == Some(sum))
            })
            .or_else(|| u.post_norm.map(|i| &self.norms[i]))?;
        Some(norm.norm.output)
    }

    /// What leaves the last unit: its post-norm's output, or its sum.
    pub fn last_output(&self) -> Option<ValueId> {
        let last = self.residual_units.last()?;
        let post = last
            .post_norm
            .or(last.fused_norm)
            .filter(|_| last.post_norm.is_some() || last.sum.is_none())
            .map(|i| self.norms[i].norm.output);
        post.or(last.sum)
    }
}

/// Whether a carrier of the stream scales it by the same factor across the hidden axis, so that a zero mean
/// stays zero: pass-through ops, and a multiply or division by a one-element constant.
pub fn keeps_zero_mean(ix: &GraphIndex, n: NodeIndex) -> bool {
    let Some(op) = ix.graph.graph[n].op() else {
        return false;
    };
    if PASS_THROUGH.contains(&op.op_type()) {
        return true;
    }
    matches!(op.op_type(), "Mul" | "Div")
        && ix
            .inputs(n)
            .iter()
            .flatten()
            .any(|&v| scalar(ix, v).is_some())
}
