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
use super::norms::{Norm, find_norms};
use crate::ir::ValueId;
use crate::ir::index::GraphIndex;

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
    /// The stream entering the unit.
    pub stream_in: ValueId,
    /// The residual sum.
    pub sum: ValueId,
    pub add: NodeIndex,
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

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub placement: Placement,
    /// `layernorm`, `rmsnorm`, `mixed` or `none`.
    pub norm: String,
    pub parallel: bool,
    pub embedding_norm: bool,
    pub final_norm: bool,
    pub unit_count: usize,
    pub norm_count: usize,
    #[serde(serialize_with = "units_json")]
    pub residual_units: Vec<ResidualUnit>,
    pub norms: Vec<NormInfo>,
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

const LINEAR: &[&str] = &[
    "MatMul",
    "Gemm",
    "Conv",
    "MatMulInteger",
    "QLinearMatMul",
    "ConvTranspose",
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

/// The stream behind a skip operand: `x` itself, or `x` of a constant-scaled `Mul(x, α)`.
fn unscaled(ix: &GraphIndex, v: ValueId) -> (ValueId, Option<f64>) {
    if let Some((mul, _)) = ix.produced_by(v, "Mul")
        && let [Some(a), Some(b)] = ix.inputs(mul)[..]
    {
        if let Some(alpha) = scalar(ix, b) {
            return (a, Some(alpha));
        }
        if let Some(alpha) = scalar(ix, a) {
            return (b, Some(alpha));
        }
    }
    (v, None)
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
    skip_scale: Option<f64>,
    sum: ValueId,
    branches: Vec<(ValueId, Vec<NodeIndex>)>,
}

fn candidate(ix: &GraphIndex, add: NodeIndex) -> Option<Candidate> {
    let op = ix.graph.graph[add].op()?;
    if op.op_type() != "Add" || !op.domain().is_empty() {
        return None;
    }
    let [Some(p), Some(q)] = ix.inputs(add)[..] else {
        return None;
    };
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
    let (x, skip_scale, window) = match with_linear(early) {
        Some(window) => (early, None, window),
        None => match unscaled(ix, early) {
            (x, Some(alpha)) => (x, Some(alpha), with_linear(x)?),
            _ => return None,
        },
    };
    let mut branches = Vec::new();
    terms(ix, x, late, window, &mut branches);
    Some(Candidate {
        add,
        x,
        skip_scale,
        sum: ix.output(add)?,
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
            // A decomposed norm ends in the Add of its shift: look for norms before Adds.
            if let Some(norm) = norm_by_output.get(&v) {
                v = norm.input;
                continue;
            }
            if let Some((add, _)) = ix.produced_by(v, "Add") {
                break candidate(ix, add);
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
fn origin(ix: &GraphIndex, mut v: ValueId) -> ValueId {
    while let Some(input) = shape_only_input(ix, v) {
        v = input;
    }
    v
}

fn branch_kind(ix: &GraphIndex, window: &[NodeIndex]) -> BranchKind {
    if has_op(ix, window, &["Softmax"]) {
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
    // Norms by where their input comes from, in graph order: one lookup per unit instead of a scan of every norm.
    let mut norms_reading: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, m) in norms.iter().enumerate() {
        norms_reading
            .entry(origin(ix, m.input))
            .or_default()
            .push(i);
    }
    let reading = |v: ValueId| norms_reading.get(&v).map(Vec::as_slice).unwrap_or(&[]);
    let mut roles: Vec<Option<(Role, Option<usize>)>> = vec![None; norms.len()];
    let streams: HashSet<ValueId> = candidates.iter().map(|c| origin(ix, c.x)).collect();

    let mut units = Vec::new();
    for (u, c) in candidates.iter().enumerate() {
        let mut branches = Vec::new();
        for (output, window) in &c.branches {
            // Pre norms: read the stream, feed this branch.
            let mut pre: Vec<usize> = window
                .iter()
                .filter_map(|n| norm_nodes.get(n).copied())
                .filter(|&i| origin(ix, norms[i].input) == origin(ix, c.x))
                .collect();
            pre.sort_unstable();
            pre.dedup();
            let output_norm = norm_by_output
                .get(output)
                .copied()
                .filter(|&i| origin(ix, norms[i].input) != origin(ix, c.x));
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
            skip_scale: c.skip_scale,
            stream_in: c.x,
            sum: c.sum,
            add: c.add,
        });
    }
    // Post norms: read a sum and become the next stream.
    for (u, unit) in units.iter_mut().enumerate() {
        let post = reading(unit.sum)
            .iter()
            .copied()
            .find(|&i| roles[i].is_none() && streams.contains(&norms[i].output));
        if let Some(i) = post {
            unit.post_norm = Some(i);
            roles[i] = Some((Role::Post, Some(u)));
        }
    }
    // The last unit's sum norm: post in a post model, final otherwise.
    if let Some(last) = units.len().checked_sub(1) {
        let sum = units[last].sum;
        let others_post = units[..last]
            .iter()
            .filter(|u| u.post_norm.is_some())
            .count();
        let others_not = last - others_post;
        let own_other_norms = units[last]
            .branches
            .iter()
            .any(|b| !b.pre_norms.is_empty() || b.output_norm.is_some());
        if let Some(i) = reading(sum).iter().copied().find(|&i| roles[i].is_none()) {
            if others_post > others_not || (last == 0 && !own_other_norms) {
                units[last].post_norm = Some(i);
                roles[i] = Some((Role::Post, Some(last)));
            } else {
                roles[i] = Some((Role::Final, None));
            }
        }
    }
    // Embedding norm: its output is the first unit's stream.
    if let Some(first) = units.first()
        && let Some(&i) = norm_by_output.get(&origin(ix, first.stream_in))
        && roles[i].is_none()
    {
        roles[i] = Some((Role::Embedding, None));
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
    let norm = match kinds.len() {
        0 => "none".to_string(),
        1 => norms[0].kind.as_str().to_string(),
        _ => "mixed".to_string(),
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
