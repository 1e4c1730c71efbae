//! The role of every norm around the units found.
//!
//! Per unit: **pre** (reads `x`, feeds only the branch), **branch-output** (its output is the branch's), **post**
//! (reads the sum, and its output is the next unit's stream). A norm on the last unit's sum is that unit's post
//! norm when the other units are post, else the model's **final** norm; a norm whose output becomes the first
//! unit's stream (through ops that keep it the stream, or a projection to the stream's width) is the
//! **embedding** norm; every other norm is **internal** (QK-norm and the like).

use std::collections::{HashMap, HashSet};

use petgraph::stable_graph::NodeIndex;

use super::branch::branch_kind;
use super::flow::{Flow, is_constant};
use super::search::Candidate;
use super::stream::{carried_chain, origin};
use super::types::{Branch, NormInfo, Placement, ResidualUnit, Role};
use crate::analysis::norms::Norm;
use crate::ir::ValueId;
use crate::ir::index::GraphIndex;

/// A role per norm (`None`: internal so far) and the unit it belongs to.
pub(super) type Roles = Vec<Option<(Role, Option<usize>)>>;

struct Lookup<'a> {
    norms: &'a [Norm],
    by_output: HashMap<ValueId, usize>,
    by_node: HashMap<NodeIndex, usize>,
    /// Norms by the value they normalize (before pass-through ops), in graph order.
    reading: HashMap<ValueId, Vec<usize>>,
}

impl<'a> Lookup<'a> {
    fn new(ix: &GraphIndex, norms: &'a [Norm]) -> Self {
        let mut reading: HashMap<ValueId, Vec<usize>> = HashMap::new();
        for (i, m) in norms.iter().enumerate() {
            if let Some(v) = m.normalized() {
                reading.entry(origin(ix, v)).or_default().push(i);
            }
        }
        Lookup {
            norms,
            by_output: norms
                .iter()
                .enumerate()
                .map(|(i, m)| (m.output, i))
                .collect(),
            by_node: norms
                .iter()
                .enumerate()
                .flat_map(|(i, m)| m.nodes.iter().map(move |&n| (n, i)))
                .collect(),
            reading,
        }
    }

    fn reading(&self, v: ValueId) -> &[usize] {
        self.reading.get(&v).map(Vec::as_slice).unwrap_or(&[])
    }

    fn normalizes(&self, ix: &GraphIndex, i: usize, v: ValueId) -> bool {
        self.norms[i]
            .normalized()
            .is_some_and(|n| origin(ix, n) == origin(ix, v))
    }
}

/// The units with their branches and norms, and the role of every norm.
pub(super) fn assign(
    ix: &GraphIndex,
    flow: &Flow,
    norms: &[Norm],
    candidates: &[Candidate],
) -> (Vec<ResidualUnit>, Roles) {
    let look = Lookup::new(ix, norms);
    let mut roles: Roles = vec![None; norms.len()];
    let mut units: Vec<ResidualUnit> = candidates
        .iter()
        .enumerate()
        .map(|(u, c)| unit_of(ix, flow, &look, &mut roles, u, c))
        .collect();
    // Each unit's stream and the values it is carried from: a post-norm's output becomes one of them.
    let leads_on = |v: ValueId| look.by_output.contains_key(&v);
    let streams: HashSet<ValueId> = candidates
        .iter()
        .flat_map(|c| carried_chain(ix, c.x, &leads_on))
        .collect();
    assign_post(ix, &look, &mut roles, &mut units, &streams);
    assign_final(ix, &look, &mut roles, &mut units);
    assign_embedding(ix, &look, &mut roles, &units);
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
    (units, roles)
}

/// A unit with its branches' pre and output norms.
fn unit_of(
    ix: &GraphIndex,
    flow: &Flow,
    look: &Lookup,
    roles: &mut Roles,
    u: usize,
    c: &Candidate,
) -> ResidualUnit {
    let norms = look.norms;
    let mut branches = Vec::new();
    for (output, window) in &c.branches {
        let inside: HashSet<NodeIndex> = window.iter().copied().collect();
        // Pre norms: read the stream, feed this branch. A Skip op that wrote this stream as its sum is outside
        // the branch; its normalized output is read inside it.
        let mut pre: Vec<usize> = look
            .reading(origin(ix, c.x))
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
        let output_norm = look
            .by_output
            .get(output)
            .copied()
            .filter(|&i| !look.normalizes(ix, i, c.x) && !norms[i].takes_sum());
        for &i in &pre {
            roles[i] = Some((Role::Pre, Some(u)));
        }
        if let Some(i) = output_norm {
            roles[i] = Some((Role::BranchOutput, Some(u)));
        }
        branches.push(Branch {
            kind: branch_kind(ix, flow, window),
            output: *output,
            pre_norms: pre,
            output_norm,
        });
    }
    ResidualUnit {
        placement: Placement::None,
        branches,
        post_norm: None,
        skip_scale: c.scaled_skip.map(|(alpha, _)| alpha),
        scaled_skip: c.scaled_skip.map(|(_, mul)| mul),
        stream_in: c.x,
        skip: c.skip,
        sum: c.sum,
        add: c.add,
        adds: c.adds.clone(),
        skip_reader: c.skip_reader,
        fused_norm: look
            .by_node
            .get(&c.add)
            .copied()
            .filter(|&i| norms[i].takes_sum()),
        function: None,
    }
}

/// Norms of a unit's sum: the one its Skip op computes, then those reading the sum's value.
fn sum_norms(ix: &GraphIndex, look: &Lookup, unit: &ResidualUnit) -> Vec<usize> {
    let mut found: Vec<usize> = unit.fused_norm.into_iter().collect();
    if let Some(sum) = unit.sum {
        found.extend(look.reading(origin(ix, sum)).iter().copied());
    }
    found
}

/// Post norms: read a sum and become the next stream.
fn assign_post(
    ix: &GraphIndex,
    look: &Lookup,
    roles: &mut Roles,
    units: &mut [ResidualUnit],
    streams: &HashSet<ValueId>,
) {
    for (u, unit) in units.iter_mut().enumerate() {
        let post = sum_norms(ix, look, unit)
            .into_iter()
            .find(|&i| roles[i].is_none() && streams.contains(&look.norms[i].output));
        if let Some(i) = post {
            unit.post_norm = Some(i);
            roles[i] = Some((Role::Post, Some(u)));
        }
    }
}

/// The last unit's sum norm: post in a post model, final otherwise.
fn assign_final(ix: &GraphIndex, look: &Lookup, roles: &mut Roles, units: &mut [ResidualUnit]) {
    let Some(last) = units.len().checked_sub(1) else {
        return;
    };
    let others_post = units[..last]
        .iter()
        .filter(|u| u.post_norm.is_some())
        .count();
    let others_not = last - others_post;
    let own_other_norms = units[last]
        .branches
        .iter()
        .any(|b| !b.pre_norms.is_empty() || b.output_norm.is_some());
    if let Some(i) = sum_norms(ix, look, &units[last])
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

/// Embedding norm: its output becomes the first unit's stream through ops that keep it the stream (DeBERTa
/// multiplies it by the attention mask), or is projected into it (ALBERT, ELECTRA: the embedding is narrower
/// than the stream, and a linear layer widens it after the norm), or centred (`layernorm-to-rmsnorm` writes an
/// explicit centring after an embedding norm, which no linear map can centre).
fn assign_embedding(ix: &GraphIndex, look: &Lookup, roles: &mut Roles, units: &[ResidualUnit]) {
    let Some(first) = units.first() else {
        return;
    };
    let leads_on = |v: ValueId| look.by_output.contains_key(&v);
    let chain = carried_chain(ix, first.stream_in, &leads_on);
    let entry = *chain.last().unwrap_or(&first.stream_in);
    let embedding = chain
        .iter()
        .find_map(|v| look.by_output.get(v))
        .or_else(|| projected_from(ix, entry).and_then(|v| look.by_output.get(&v)))
        .or_else(|| centred_from(ix, entry).and_then(|v| look.by_output.get(&v)))
        .copied();
    if let Some(i) = embedding
        && roles[i].is_none()
    {
        roles[i] = Some((Role::Embedding, None));
    }
}

/// `e` of an explicit centring `e − ReduceMean(e)` over the last axis, if `v` is one.
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
            .and_then(|a| crate::analysis::constants::integers(ix, a))
            .is_some_and(|axes| axes == [-1]),
    };
    let keeps = op.attribute("keepdims").is_none_or(|a| a.i() == 1);
    (ix.inputs(mean).first().copied().flatten() == Some(e) && last_axis && keeps).then_some(e)
}

/// What an affine projection `x·W (+ b)` with constant `W` and `b` reads (before pass-through ops), if `v` is
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

/// The report: every norm with its role, the units, and the model's figures.
pub(super) fn summarize(
    norms: Vec<Norm>,
    roles: Roles,
    units: Vec<ResidualUnit>,
) -> super::Analysis {
    let placement = match units.first() {
        None => Placement::None,
        Some(first) if units.iter().all(|u| u.placement == first.placement) => first.placement,
        Some(_) => Placement::Mixed,
    };
    let kinds: HashSet<_> = norms.iter().map(|n| n.kind).collect();
    let norm = match (kinds.len(), norms.first().map(|n| n.kind)) {
        (1, Some(crate::analysis::NormKind::LayerNorm)) => super::NormSummary::LayerNorm,
        (1, Some(crate::analysis::NormKind::RmsNorm)) => super::NormSummary::RmsNorm,
        (0, _) => super::NormSummary::None,
        _ => super::NormSummary::Mixed,
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
                function: None,
            }
        })
        .collect();
    super::Analysis {
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
