//! Finding normalization layers, fused or decomposed.
//!
//! **Fused**: `LayerNormalization` (opset 17), `RMSNormalization` (opset 23), onnxruntime's
//! `SimplifiedLayerNormalization` (in any domain), and its `com.microsoft` `SkipLayerNormalization`,
//! `SkipSimplifiedLayerNormalization` (a residual sum and its norm) and `EmbedLayerNormalization` (the embedding
//! sum and its norm). [`FusedSlots`] is the one table of where these ops keep their operands.
//!
//! **Decomposed**, in the forms the ordinary exporters write:
//!
//! ```text
//! LayerNorm  m = ReduceMean(x)   d = Sub(x, m)   v = ReduceMean(d²)   n = d / Sqrt(v + ε)   y = n·γ + β
//! RMSNorm                                        v = ReduceMean(x²)   n = x / Sqrt(v + ε)   y = n·γ
//! ```
//!
//! where `d²` is `Pow(d, 2)` or `Mul(d, d)`; the division is `Div(d, s)`, `Mul(d, Reciprocal(s))` or
//! `Mul(d, Div(1, s))`; `Cast`s around the statistics (fp16 models compute them in float32) are part of the
//! norm; `γ` and `β` are optional, and Gemma's `γ = 1 + w` computed in the graph is recognised as a scale.
//!
//! Strict, because a wrong match is worse than none: the reduction must run over trailing contiguous axes with
//! `keepdims = 1`, both reductions of a LayerNorm over the same axes, ε a one-element constant, `γ`/`β`
//! constants that broadcast only over the normalized axes, and every value inside the pattern read only by
//! the pattern. Anything else is not a norm.

use std::collections::HashSet;

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::NodeIndexable;
use serde::Serialize;

use super::constants::{constant, integers, scalar};
use super::facts::Facts;
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Op, ValueId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormKind {
    LayerNorm,
    RmsNorm,
}
spelled!(NormKind { LayerNorm => "layernorm", RmsNorm => "rmsnorm" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormForm {
    Fused,
    Decomposed,
    /// Decomposed with `QuantizeLinear → DequantizeLinear` pairs between its steps (static QDQ quantizes the
    /// mean, the variance, the quotient): no fused op computes that, so no fusion takes it.
    QuantizedInside,
}
spelled!(NormForm { Fused => "fused", Decomposed => "decomposed", QuantizedInside => "quantized-inside" });

/// A scale or shift parameter: a constant value, plus one for Gemma's `(1 + w)` computed in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Param {
    #[serde(skip)]
    pub value: ValueId,
    pub plus_one: bool,
}

/// One normalization layer.
#[derive(Debug, Clone, Serialize)]
pub struct Norm {
    pub kind: NormKind,
    pub form: NormForm,
    /// The tensor normalized (before any Cast to float32). For the Skip* ops, the first summand.
    #[serde(skip)]
    pub input: ValueId,
    /// The second summand of a `Skip*Normalization`, which normalizes `input + skip (+ bias)`.
    #[serde(skip)]
    pub skip: Option<ValueId>,
    /// A Skip op's bias, added to the sum.
    #[serde(skip)]
    pub bias: Option<ValueId>,
    /// The sum a fused op normalizes, when the file names that output (a Skip op's fourth: the stream of a
    /// Pre-LN model; `EmbedLayerNormalization`'s third).
    #[serde(skip)]
    pub sum: Option<ValueId>,
    /// The op also computes the embedding it normalizes (`EmbedLayerNormalization`): `input` is its token ids.
    pub embedding: bool,
    /// The norm's result, after scale, shift and any Cast back.
    #[serde(skip)]
    pub output: ValueId,
    /// First normalized axis, counted from the end when the rank is known or the file wrote it so (-1: last).
    pub axis: i64,
    pub epsilon: f64,
    #[serde(skip)]
    pub scale: Option<Param>,
    #[serde(skip)]
    pub shift: Option<Param>,
    /// The nodes the norm covers (indices valid while the graph is unchanged).
    #[serde(skip)]
    pub nodes: Vec<NodeIndex>,
}

impl Norm {
    /// The value the norm normalizes, when the graph holds it: a plain norm's input, the sum a fused Skip or
    /// Embed op writes out. `None` when only the fused op sees that sum.
    pub fn normalized(&self) -> Option<ValueId> {
        if self.skip.is_some() || self.embedding {
            self.sum
        } else {
            Some(self.input)
        }
    }

    /// The norm's op also computes the residual sum it normalizes (onnxruntime's Skip ops).
    pub fn takes_sum(&self) -> bool {
        self.skip.is_some()
    }
}

/// Every norm in the graph, in the order of the node that produces its output.
pub fn find_norms(ix: &GraphIndex) -> Vec<Norm> {
    let order = ix.ops();
    // Ranks decide which axes a positive `axes` attribute names; most intermediate values declare none.
    let facts = Facts::infer(ix);
    // Nodes already part of a norm, by node index.
    let mut claimed = vec![false; ix.graph.graph.node_bound()];
    let mut norms = Vec::new();
    // LayerNorms first: the variance half of a LayerNorm is itself shaped like an RMSNorm of `x - mean`.
    for &n in order {
        if let Some(norm) = fused(ix, &facts, n).or_else(|| decomposed_layernorm(ix, &facts, n)) {
            norm.nodes.iter().for_each(|x| claimed[x.index()] = true);
            norms.push(norm);
        }
    }
    for &n in order {
        if claimed[n.index()] {
            continue;
        }
        if let Some(norm) = decomposed_rmsnorm(ix, &facts, n)
            .filter(|m| m.nodes.iter().all(|x| !claimed[x.index()]))
        {
            norm.nodes.iter().for_each(|x| claimed[x.index()] = true);
            norms.push(norm);
        }
    }
    norms.sort_by_key(|m| ix.producer(m.output).map(|(n, _)| ix.position(n)));
    norms
}

/// ε as the file meant it: an f32 `1e-6` reads back as 9.99999997e-7 in f64; report the shortest decimal that
/// rounds to the same f32.
fn tidy_epsilon(eps: f64) -> f64 {
    let single = eps as f32;
    if single as f64 == eps {
        single.to_string().parse().unwrap_or(eps)
    } else {
        eps
    }
}

fn op_is(op: &Op, ty: &str) -> bool {
    op.op_type() == ty && op.domain().is_empty()
}

fn attr_i(op: &Op, name: &str, default: i64) -> i64 {
    op.attribute(name).map(|a| a.i()).unwrap_or(default)
}

fn attr_f(op: &Op, name: &str, default: f32) -> f64 {
    op.attribute(name).map(|a| a.f()).unwrap_or(default) as f64
}

/// The rank of a value: declared, or derived forward through the graph (see [`Facts`]).
fn rank(facts: &Facts, v: ValueId) -> Option<usize> {
    facts.rank(v)
}

/// Where a fused norm op keeps its operands and results. The one table of these slots: analysis reads fused
/// norms with it, `unfuse-norms` expands them with it, and the fusions write them with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedSlots {
    pub op_type: &'static str,
    /// The domain the op is written in (`""`: the default domain).
    pub domain: &'static str,
    pub kind: NormKind,
    /// Input slot of the second summand (Skip ops normalize `input + skip + bias`).
    pub skip: Option<usize>,
    pub scale: usize,
    pub shift: Option<usize>,
    /// Input slot of a Skip op's bias, added to the sum.
    pub bias: Option<usize>,
    /// Output slot of the sum the op normalizes, when it can write it (Skip ops: `input + skip + bias`).
    pub sum: Option<usize>,
    /// Output slots of the statistics (mean, inverse standard deviation), which an expansion cannot provide.
    pub statistics: &'static [usize],
    /// The op computes the embedding it normalizes from token ids (`EmbedLayerNormalization`; its other
    /// slots are in [`embed_slots`]).
    pub embedding: bool,
    /// Whether the op takes an `axis` attribute (the Skip ops always normalize the last axis).
    pub has_axis: bool,
    /// ε when the op does not write one: onnxruntime's Skip ops default to 1e-12, the others to 1e-5.
    pub default_epsilon: f32,
    /// Default-domain opset the op needs (0: none).
    pub opset: i64,
}

pub const LAYER_NORMALIZATION: FusedSlots = FusedSlots {
    op_type: "LayerNormalization",
    domain: "",
    kind: NormKind::LayerNorm,
    skip: None,
    scale: 1,
    shift: Some(2),
    bias: None,
    sum: None,
    statistics: &[1, 2],
    embedding: false,
    has_axis: true,
    default_epsilon: 1e-5,
    opset: 17,
};

pub const RMS_NORMALIZATION: FusedSlots = FusedSlots {
    op_type: "RMSNormalization",
    domain: "",
    kind: NormKind::RmsNorm,
    shift: None,
    statistics: &[],
    opset: 23,
    ..LAYER_NORMALIZATION
};

/// onnxruntime's RMSNorm. onnxruntime registers it in the default domain (genai's builder writes it there);
/// older tools write `com.microsoft`: any domain is read as this op.
pub const SIMPLIFIED_LAYER_NORMALIZATION: FusedSlots = FusedSlots {
    op_type: "SimplifiedLayerNormalization",
    domain: "com.microsoft",
    statistics: &[1],
    opset: 0,
    ..RMS_NORMALIZATION
};

pub const SKIP_LAYER_NORMALIZATION: FusedSlots = FusedSlots {
    op_type: "SkipLayerNormalization",
    domain: "com.microsoft",
    kind: NormKind::LayerNorm,
    skip: Some(1),
    scale: 2,
    shift: Some(3),
    bias: Some(4),
    sum: Some(3),
    statistics: &[1, 2],
    embedding: false,
    has_axis: false,
    default_epsilon: 1e-12,
    opset: 0,
};

pub const SKIP_SIMPLIFIED_LAYER_NORMALIZATION: FusedSlots = FusedSlots {
    op_type: "SkipSimplifiedLayerNormalization",
    kind: NormKind::RmsNorm,
    shift: None,
    bias: Some(3),
    ..SKIP_LAYER_NORMALIZATION
};

/// The slots of onnxruntime's embedding layer beyond those of [`EMBED_LAYER_NORMALIZATION`]:
/// `LayerNorm(word[ids] + position[pos] + segment[seg])`, with a mask index.
pub mod embed_slots {
    pub const INPUT_IDS: usize = 0;
    pub const SEGMENT_IDS: usize = 1;
    pub const WORD_EMBEDDING: usize = 2;
    pub const POSITION_EMBEDDING: usize = 3;
    pub const SEGMENT_EMBEDDING: usize = 4;
    pub const MASK: usize = 7;
    pub const POSITION_IDS: usize = 8;
    /// Output: the per-row count of ones in the mask.
    pub const MASK_INDEX: usize = 1;
}

/// `EmbedLayerNormalization`: the embedding sum (its third output) and the embedding norm in one op.
pub const EMBED_LAYER_NORMALIZATION: FusedSlots = FusedSlots {
    op_type: "EmbedLayerNormalization",
    skip: None,
    scale: 5,
    shift: Some(6),
    bias: None,
    sum: Some(2),
    statistics: &[],
    embedding: true,
    ..SKIP_LAYER_NORMALIZATION
};

const FUSED_NORMS: [FusedSlots; 6] = [
    LAYER_NORMALIZATION,
    RMS_NORMALIZATION,
    SIMPLIFIED_LAYER_NORMALIZATION,
    SKIP_LAYER_NORMALIZATION,
    SKIP_SIMPLIFIED_LAYER_NORMALIZATION,
    EMBED_LAYER_NORMALIZATION,
];

impl FusedSlots {
    /// The slots of `op`, if it is one of the fused norms.
    pub fn of(op: &Op) -> Option<&'static FusedSlots> {
        FUSED_NORMS.iter().find(|f| {
            f.op_type == op.op_type()
                && (f.domain == op.domain() || f.op_type == "SimplifiedLayerNormalization")
        })
    }

    /// The op a norm of `kind` becomes when fused, with or without its residual sum taken in: the standard
    /// ops for a plain norm, onnxruntime's Skip ops for a sum and its norm.
    pub fn for_fusion(kind: NormKind, skip: bool) -> &'static FusedSlots {
        match (kind, skip) {
            (NormKind::LayerNorm, false) => &LAYER_NORMALIZATION,
            (NormKind::RmsNorm, false) => &RMS_NORMALIZATION,
            (NormKind::LayerNorm, true) => &SKIP_LAYER_NORMALIZATION,
            (NormKind::RmsNorm, true) => &SKIP_SIMPLIFIED_LAYER_NORMALIZATION,
        }
    }
}

fn fused(ix: &GraphIndex, facts: &Facts, n: NodeIndex) -> Option<Norm> {
    let op = ix.graph.graph[n].op()?;
    let slots = FusedSlots::of(op)?;
    let inputs = ix.inputs(n);
    let at = |i: usize| inputs.get(i).copied().flatten();
    let outputs = &ix.graph.graph[n].outputs;
    let input = at(0)?;
    let axis = if slots.has_axis {
        attr_i(op, "axis", -1)
    } else {
        -1
    };
    let axis = match rank(facts, input) {
        Some(r) if axis >= 0 => axis - r as i64,
        _ => axis,
    };
    let param = |slot: usize| {
        at(slot).map(|value| Param {
            value,
            plus_one: false,
        })
    };
    Some(Norm {
        kind: slots.kind,
        form: NormForm::Fused,
        input,
        skip: slots.skip.and_then(at),
        bias: slots.bias.and_then(at),
        sum: slots.sum.and_then(|s| outputs.get(s).copied().flatten()),
        embedding: slots.embedding,
        output: ix.output(n)?,
        axis,
        epsilon: tidy_epsilon(attr_f(op, "epsilon", slots.default_epsilon)),
        scale: param(slots.scale),
        shift: slots.shift.and_then(param),
        nodes: vec![n],
    })
}

/// A pattern being matched: the nodes so far, and the values whose every reader must be inside it.
struct Match<'a, 'g> {
    ix: &'a GraphIndex<'g>,
    facts: &'a Facts,
    nodes: Vec<NodeIndex>,
    internal: Vec<ValueId>,
}

impl<'a, 'g> Match<'a, 'g> {
    fn new(ix: &'a GraphIndex<'g>, facts: &'a Facts) -> Self {
        Match {
            ix,
            facts,
            nodes: Vec::new(),
            internal: Vec::new(),
        }
    }

    fn take(&mut self, n: NodeIndex) -> Option<ValueId> {
        self.nodes.push(n);
        let out = self.ix.output(n)?;
        Some(out)
    }

    /// The other operand of a binary op, given one of them.
    fn other(&self, n: NodeIndex, known: ValueId) -> Option<ValueId> {
        match self.ix.inputs(n) {
            [Some(a), Some(b)] if *a == known => Some(*b),
            [Some(a), Some(b)] if *b == known => Some(*a),
            _ => None,
        }
    }

    /// The one op of type `ty` reading `v`, with `v` then counted as internal to the pattern.
    fn next(&mut self, v: ValueId, ty: &str) -> Option<NodeIndex> {
        let (n, op) = self.ix.sole_consumer(v)?;
        if !op_is(op, ty) {
            return None;
        }
        self.internal.push(v);
        Some(n)
    }

    /// Reducing axes of a `ReduceMean` as the first normalized axis (negative), if they are trailing and
    /// contiguous with `keepdims = 1`.
    fn mean_axis(&self, n: NodeIndex, x: ValueId) -> Option<i64> {
        let op = self.ix.graph.graph[n].op()?;
        if attr_i(op, "keepdims", 1) != 1 {
            return None;
        }
        let mut axes = match op.attribute("axes") {
            Some(a) => a.ints.clone(),
            None => integers(self.ix, self.ix.inputs(n).get(1).copied().flatten()?)?,
        };
        if axes.is_empty() {
            return None;
        }
        if axes.iter().any(|&a| a >= 0) {
            let r = rank(self.facts, x)? as i64;
            axes.iter_mut().filter(|a| **a >= 0).for_each(|a| *a -= r);
        }
        axes.sort_unstable();
        axes.dedup();
        let k = axes.len() as i64;
        (axes == (-k..0).collect::<Vec<_>>()).then_some(-k)
    }

    /// `ε` added to the variance: `Add(v, ε)` with a one-element constant ε.
    fn epsilon(&mut self, v: ValueId) -> Option<(f64, ValueId)> {
        let add = self.next(v, "Add")?;
        let eps = tidy_epsilon(scalar(self.ix, self.other(add, v)?)?);
        Some((eps, self.take(add)?))
    }

    /// `Sqrt(v + ε)` then the division of `num` by it, in any of its three forms. Returns the quotient.
    fn divide_by_root(&mut self, ve: ValueId, num: ValueId) -> Option<ValueId> {
        let sqrt = self.next(ve, "Sqrt")?;
        let s = self.take(sqrt)?;
        let (n, op) = self.ix.sole_consumer(s)?;
        self.internal.push(s);
        match op.op_type() {
            "Div" if self.ix.inputs(n) == [Some(num), Some(s)] => self.take(n),
            "Reciprocal" => {
                let inv = self.take(n)?;
                self.times(inv, num)
            }
            "Div"
                if self
                    .ix
                    .inputs(n)
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|c| scalar(self.ix, c))
                    == Some(1.0) =>
            {
                let inv = self.take(n)?;
                self.times(inv, num)
            }
            _ => None,
        }
    }

    /// `Mul(num, inv)` in either order.
    fn times(&mut self, inv: ValueId, num: ValueId) -> Option<ValueId> {
        let mul = self.next(inv, "Mul")?;
        (self.other(mul, inv)? == num).then_some(())?;
        self.take(mul)
    }

    /// An optional `Cast` right after `v`, read by nothing else.
    fn cast_after(&mut self, v: ValueId) -> ValueId {
        match self.ix.sole_consumer(v) {
            Some((n, op)) if op_is(op, "Cast") => {
                self.internal.push(v);
                self.take(n).unwrap_or(v)
            }
            _ => v,
        }
    }

    /// A constant parameter that broadcasts only over the `k` trailing axes, or Gemma's `Add(w, 1)` of one.
    fn param(&mut self, v: ValueId, k: usize) -> Option<Param> {
        let fits = |ix: &GraphIndex, v: ValueId| {
            constant(ix, v).is_some_and(|t| {
                let dims = t.dims();
                dims.iter()
                    .take(dims.len().saturating_sub(k))
                    .all(|&d| d == 1)
            })
        };
        if fits(self.ix, v) {
            return Some(Param {
                value: v,
                plus_one: false,
            });
        }
        let (add, _) = self.ix.produced_by(v, "Add")?;
        let [Some(a), Some(b)] = self.ix.inputs(add)[..] else {
            return None;
        };
        let (w, one) = if scalar(self.ix, b) == Some(1.0) {
            (a, b)
        } else {
            (b, a)
        };
        if scalar(self.ix, one) != Some(1.0) || !fits(self.ix, w) || self.ix.use_count(v) != 1 {
            return None;
        }
        self.nodes.push(add);
        Some(Param {
            value: w,
            plus_one: true,
        })
    }

    /// Optional `Mul` by a scale, then (LayerNorm) optional `Add` of a shift, each possibly followed by a Cast.
    fn affine(
        &mut self,
        n: ValueId,
        k: usize,
        with_shift: bool,
    ) -> (ValueId, Option<Param>, Option<Param>) {
        let mut out = self.cast_after(n);
        let mut scale = None;
        let mut shift = None;
        if let Some((mul, op)) = self.ix.sole_consumer(out)
            && op_is(op, "Mul")
            && let Some(p) = self.other(mul, out).and_then(|w| self.param(w, k))
        {
            self.internal.push(out);
            self.nodes.push(mul);
            out = self.ix.output(mul).unwrap_or(out);
            scale = Some(p);
            out = self.cast_after(out);
        }
        if with_shift
            && let Some((add, op)) = self.ix.sole_consumer(out)
            && op_is(op, "Add")
            && let Some(p) = self.other(add, out).and_then(|b| self.param(b, k))
        {
            self.internal.push(out);
            self.nodes.push(add);
            out = self.ix.output(add).unwrap_or(out);
            shift = Some(p);
            out = self.cast_after(out);
        }
        (out, scale, shift)
    }

    /// Every internal value is read only by nodes of the pattern.
    fn closed(&self) -> bool {
        let inside: HashSet<NodeIndex> = self.nodes.iter().copied().collect();
        self.internal.iter().all(|&v| {
            !self.ix.is_graph_output(v)
                && self
                    .ix
                    .consumers(v)
                    .iter()
                    .all(|(n, slot)| inside.contains(n) && *slot != InputSlot::Captured)
        })
    }

    /// The shared tail of both decomposed forms: `Sqrt(variance + ε)`, the division of `centred` by it, scale
    /// (and for LayerNorm shift), then the checks that make it a norm.
    fn finish(
        mut self,
        kind: NormKind,
        x: ValueId,
        centred: ValueId,
        variance: ValueId,
        axis: i64,
    ) -> Option<Norm> {
        let (epsilon, ve) = self.epsilon(variance)?;
        let normalized = self.divide_by_root(ve, centred)?;
        let (output, scale, shift) =
            self.affine(normalized, (-axis) as usize, kind == NormKind::LayerNorm);
        let input = self.source(x);
        self.closed().then_some(())?;
        Some(Norm {
            kind,
            form: NormForm::Decomposed,
            input,
            skip: None,
            bias: None,
            sum: None,
            embedding: false,
            output,
            axis,
            epsilon,
            scale,
            shift,
            nodes: self.nodes,
        })
    }

    /// The tensor the norm reads: `x`, or what a Cast to float32 read when that Cast only feeds the norm.
    fn source(&mut self, x: ValueId) -> ValueId {
        if let Some((cast, op)) = self.ix.produced_by(x, "Cast") {
            let inside: HashSet<NodeIndex> = self.nodes.iter().copied().collect();
            let only_norm = self.ix.consumers(x).iter().all(|(n, _)| inside.contains(n))
                && !self.ix.is_graph_output(x);
            if only_norm && op.attribute("to").map(|a| a.i()) == Some(1) {
                self.nodes.push(cast);
                self.internal.push(x);
                if let Some(src) = self.ix.inputs(cast).first().copied().flatten() {
                    return src;
                }
            }
        }
        x
    }
}

/// `x²` as `Pow(x, 2)` or `Mul(x, x)` read from node `n`: returns `x`.
fn square_of(ix: &GraphIndex, n: NodeIndex) -> Option<ValueId> {
    let op = ix.graph.graph[n].op()?;
    match (op.op_type(), ix.inputs(n)) {
        ("Pow", [Some(x), Some(e)]) if op.domain().is_empty() && scalar(ix, *e) == Some(2.0) => {
            Some(*x)
        }
        ("Mul", [Some(a), Some(b)]) if op.domain().is_empty() && a == b => Some(*a),
        _ => None,
    }
}

/// Starting at the first `ReduceMean` (the mean) of a decomposed LayerNorm.
fn decomposed_layernorm(ix: &GraphIndex, facts: &Facts, mean_node: NodeIndex) -> Option<Norm> {
    let op = ix.graph.graph[mean_node].op()?;
    if !op_is(op, "ReduceMean") {
        return None;
    }
    let x = ix.inputs(mean_node).first().copied().flatten()?;
    let mut m = Match::new(ix, facts);
    let axis = m.mean_axis(mean_node, x)?;
    let mean = m.take(mean_node)?;
    let sub = m.next(mean, "Sub")?;
    if ix.inputs(sub) != [Some(x), Some(mean)] {
        return None;
    }
    let d = m.take(sub)?;
    // d is read by the square and by the division: two readers, both checked by `closed`.
    m.internal.push(d);
    let sq_node = ix
        .consumers(d)
        .iter()
        .map(|&(n, _)| n)
        .find(|&n| square_of(ix, n) == Some(d))?;
    let sq = m.take(sq_node)?;
    let var_node = m.next(sq, "ReduceMean")?;
    if m.mean_axis(var_node, x)? != axis {
        return None;
    }
    let var = m.take(var_node)?;
    m.finish(NormKind::LayerNorm, x, d, var, axis)
}

/// Starting at the square (`Pow(x, 2)` or `Mul(x, x)`) of a decomposed RMSNorm.
fn decomposed_rmsnorm(ix: &GraphIndex, facts: &Facts, sq_node: NodeIndex) -> Option<Norm> {
    let x = square_of(ix, sq_node)?;
    let mut m = Match::new(ix, facts);
    let sq = m.take(sq_node)?;
    let mean_node = m.next(sq, "ReduceMean")?;
    let axis = m.mean_axis(mean_node, x)?;
    let ms = m.take(mean_node)?;
    m.finish(NormKind::RmsNorm, x, x, ms, axis)
}
