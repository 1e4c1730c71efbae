//! Where calibration reads and writes: for each unit of a Post-LN model, the norm its branch reads, its
//! residual sum, and its output projection; and the last post-norm, which becomes the final norm. Found from the
//! original's structure (analysis), and named by values so that the same places can be found again in the
//! model `post-to-pre` made of it, which keeps every value and node name.

use crate::analysis::constants::constant;
use crate::analysis::{Analysis, Norm, NormKind, Param, Placement, analyze, analyze_model};
use crate::ir::index::GraphIndex;
use crate::ir::{Model, ValueId};
use crate::tensor::{to_f64, transpose};
use serde::Serialize;

/// A constant the calibration rewrites, and the op input that reads it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The first output of the op reading it (ops are found again by it).
    pub reader: String,
    pub slot: usize,
    pub values: Vec<f64>,
    pub dims: Vec<i64>,
    pub elem: i32,
}

/// A LayerNorm over the last axis with a constant scale and shift.
#[derive(Debug, Clone)]
pub struct NormSite {
    pub input: String,
    pub output: String,
    pub epsilon: f64,
    pub scale: Slot,
    pub shift: Slot,
}

/// A unit's output projection: `Add(MatMul(a, W), b)` or `Gemm(a, W, b)` with constant `W` (`[k, d]`, or
/// `[d, k]` for a Gemm with `transB`) and `b` (`d` values), whose result is what the branch adds to the stream.
#[derive(Debug, Clone)]
pub struct Projection {
    /// `a`: what the projection reads.
    pub activation: String,
    /// `W` as `[k, d]` values (transposed from the op's `[d, k]` when `transposed`).
    pub weight: Slot,
    pub transposed: bool,
    pub bias: Slot,
}

/// One residual unit as calibration sees it.
#[derive(Debug, Clone)]
pub struct UnitSite {
    /// The unit's place among the model's residual units.
    pub index: usize,
    /// The norm whose output the unit's branch reads: the embedding norm for the first unit, the previous
    /// unit's post-norm after that (for the second unit too, when the first is kept). In the Pre-LN model it
    /// is the unit's pre-norm.
    pub reads: NormSite,
    /// The residual sum `x + F(x)` (the input of the unit's post-norm).
    pub sum: String,
    pub projection: Projection,
}

/// A unit calibration leaves as the plain mapping has it, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KeptUnit {
    pub unit: usize,
    pub why: String,
}

/// Every unit, and the last post-norm.
#[derive(Debug, Clone)]
pub struct Sites {
    /// The units calibration refits, in order.
    pub units: Vec<UnitSite>,
    /// The units before them, left as they are.
    pub kept: Vec<KeptUnit>,
    pub final_norm: NormSite,
    /// The hidden size.
    pub width: usize,
}

/// The sites of a Post-LN `model`, or why it cannot be calibrated (naming the unit).
pub fn find(model: &Model) -> Result<Sites, String> {
    refuse_units_in_bodies(model)?;
    let ix = GraphIndex::new(&model.graph);
    let a = analyze(&ix);
    if a.residual_units.is_empty() {
        return Err("the model has no residual units".into());
    }
    let mut units = Vec::new();
    let mut kept = Vec::new();
    let mut width = None;
    for l in 0..a.residual_units.len() {
        if l == 0
            && let Some(why) = kept_first_unit(&ix, &a)
        {
            kept.push(KeptUnit { unit: 0, why });
            continue;
        }
        let site =
            unit_site(&ix, &a, l).map_err(|e| format!("unit {l} cannot be calibrated: {e}"))?;
        let d = site.reads.scale.values.len();
        if *width.get_or_insert(d) != d {
            return Err(format!("unit {l} has width {d}, the others another"));
        }
        units.push(site);
    }
    if units.is_empty() {
        return Err("its only unit reads no norm: there is nothing to refit".into());
    }
    let last = a.residual_units.len() - 1;
    let final_norm = a.residual_units[last]
        .post_norm
        .ok_or_else(|| format!("unit {last} has no post-norm"))
        .and_then(|i| norm_site(&ix, &a.norms[i].norm))
        .map_err(|e| format!("the last post-norm cannot be calibrated: {e}"))?;
    Ok(Sites {
        units,
        kept,
        final_norm,
        width: width.unwrap_or(0),
    })
}

/// Why the first unit is left as it is, when it reads no norm: a model without embedding norm (OPT), or one
/// that projects its embedding norm's output to the hidden width (ALBERT, ELECTRA). `post-to-pre` leaves that
/// unit as it is, so the converted trunk after it is the original's first residual sum exactly, and the walk
/// starts there: the second unit reads it through the first unit's post-norm, as the first unit of a model with
/// an embedding norm reads the embedding.
fn kept_first_unit(ix: &GraphIndex, a: &Analysis) -> Option<String> {
    let stream = a.residual_units[0].stream_in;
    if a.norm_read_through(ix, stream).is_some() {
        return None;
    }
    Some(format!(
        "it reads `{}`, made by {}, not a norm: `post-to-pre` leaves it as it is",
        ix.graph.value(stream).name,
        made_by(ix, stream)
    ))
}

/// `` `Add` `` for a value an op makes, or what else makes it.
fn made_by(ix: &GraphIndex, v: ValueId) -> String {
    ix.producer_op(v)
        .map_or("no op (a graph input)".to_string(), |(_, op)| {
            format!("`{}`", op.op_type())
        })
}

/// Calibration fits the main graph's units only, and `post-to-pre` also converts the units inside subgraph
/// bodies (a merged decoder's branches): those would be handed on with the plain mapping, so a model with any
/// is refused, naming the body.
fn refuse_units_in_bodies(model: &Model) -> Result<(), String> {
    if !model.graph.has_bodies() {
        return Ok(());
    }
    let analysis = analyze_model(model).map_err(|e| e.to_string())?;
    match analysis
        .subgraphs
        .iter()
        .find(|b| !b.analysis.residual_units.is_empty())
    {
        Some(body) => Err(format!(
            "the subgraph body `{}` holds residual units, and calibration fits only the main graph's \
             (`post-to-pre` would hand those on with the plain mapping)",
            body.path
        )),
        None => Ok(()),
    }
}

fn unit_site(ix: &GraphIndex, a: &Analysis, l: usize) -> Result<UnitSite, String> {
    let unit = &a.residual_units[l];
    let g = ix.graph;
    if unit.placement != Placement::Post {
        return Err(format!("it is {}, not post", unit.placement));
    }
    if unit.branches.len() != 1 {
        return Err(format!(
            "it is a parallel unit ({} branches); calibration fits one output projection per unit",
            unit.branches.len()
        ));
    }
    if unit.skip_scale.is_some() {
        return Err("its skip is scaled (α·x + F(x))".into());
    }
    let sum = unit
        .sum
        .ok_or("its residual sum exists only inside a fused Skip op: run `unfuse-norms` first")?;
    let reads = a.norm_read_through(ix, unit.stream_in).ok_or_else(|| {
        format!(
            "its stream `{}` is made by {}, not by a norm: calibration refits the norm each unit after \
             the first reads",
            g.value(unit.stream_in).name,
            made_by(ix, unit.stream_in)
        )
    })?;
    let reads = norm_site(ix, &reads.norm)?;
    let projection = projection(ix, unit.branches[0].output)?;
    if projection.bias.values.len() != reads.scale.values.len() {
        return Err("its output projection's width is not the stream's".into());
    }
    Ok(UnitSite {
        index: l,
        reads,
        sum: g.value(sum).name.clone(),
        projection,
    })
}

fn norm_site(ix: &GraphIndex, norm: &Norm) -> Result<NormSite, String> {
    let g = ix.graph;
    let name = || g.value(norm.output).name.clone();
    if norm.kind != NormKind::LayerNorm {
        return Err(format!("`{}` is an RMSNorm, not a LayerNorm", name()));
    }
    if norm.axis != -1 {
        return Err(format!(
            "`{}` normalizes over more than the last axis",
            name()
        ));
    }
    if norm.skip.is_some() || norm.embedding {
        return Err(format!(
            "`{}` is a fused Skip or Embed op: run `unfuse-norms` first",
            name()
        ));
    }
    let param = |p: Option<Param>, what: &str| {
        let p = p.ok_or_else(|| format!("`{}` has no {what}", name()))?;
        if p.plus_one {
            return Err(format!("`{}` scales by 1 + w", name()));
        }
        param_slot(ix, norm, p.value)
            .ok_or_else(|| format!("`{}`'s {what} is not a constant it reads", name()))
    };
    let scale = param(norm.scale, "scale")?;
    let shift = param(norm.shift, "shift")?;
    if scale.values.len() != shift.values.len() {
        return Err(format!("`{}`'s scale and shift differ in length", name()));
    }
    Ok(NormSite {
        input: g.value(norm.input).name.clone(),
        output: name(),
        epsilon: norm.epsilon,
        scale,
        shift,
    })
}

/// The op among the norm's nodes that reads `value`, as a [`Slot`].
fn param_slot(ix: &GraphIndex, norm: &Norm, value: ValueId) -> Option<Slot> {
    norm.nodes.iter().find_map(|&n| {
        let slot = ix.inputs(n).iter().position(|&v| v == Some(value))?;
        slot_of(ix, n, slot, value)
    })
}

fn slot_of(
    ix: &GraphIndex,
    node: petgraph::stable_graph::NodeIndex,
    slot: usize,
    value: ValueId,
) -> Option<Slot> {
    let t = constant(ix, value)?;
    Some(Slot {
        reader: ix.graph.value(ix.output(node)?).name.clone(),
        slot,
        values: to_f64(&t).ok()?,
        dims: t.dims().to_vec(),
        elem: t.elem_type(),
    })
}

/// The linear op writing `branch`: `Add(MatMul(a, W), b)` in either operand order, or `Gemm(a, W, b)` (as
/// exporters write a projection of a 2-D view of the stream, OPT's MLP for one) without scaling.
fn projection(ix: &GraphIndex, branch: ValueId) -> Result<Projection, String> {
    let none = || {
        format!(
            "its branch `{}` does not end in a linear output projection (Add(MatMul(a, W), b) or Gemm(a, W, b)) \
             with constant W and b",
            ix.graph.value(branch).name
        )
    };
    if let Some((gemm, _)) = ix.produced_by(branch, "Gemm") {
        return gemm_projection(ix, gemm).ok_or_else(none);
    }
    let (add, _) = ix.produced_by(branch, "Add").ok_or_else(none)?;
    let inputs = ix.inputs(add);
    (0..2)
        .find_map(|bias_slot| {
            let bias = inputs.get(bias_slot).copied().flatten()?;
            let product = inputs.get(1 - bias_slot).copied().flatten()?;
            let (matmul, _) = ix.produced_by(product, "MatMul")?;
            let w = ix.inputs(matmul).get(1).copied().flatten()?;
            let activation = ix.inputs(matmul).first().copied().flatten()?;
            let weight = slot_of(ix, matmul, 1, w).filter(|s| s.dims.len() == 2)?;
            let bias = slot_of(ix, add, bias_slot, bias)
                .filter(|s| s.values.len() as i64 == weight.dims[1])?;
            Some(Projection {
                activation: ix.graph.value(activation).name.clone(),
                weight,
                transposed: false,
                bias,
            })
        })
        .ok_or_else(none)
}

/// `Gemm(a, W, b)` with `alpha = beta = 1`, `a` not transposed, constant `W` (`[k, d]`, or `[d, k]` with
/// `transB`) and constant `b` of `d` values.
fn gemm_projection(ix: &GraphIndex, gemm: petgraph::stable_graph::NodeIndex) -> Option<Projection> {
    let transposed = ix.graph.graph[gemm].op()?.plain_gemm()?;
    let input = |slot: usize| ix.inputs(gemm).get(slot).copied().flatten();
    let mut weight = slot_of(ix, gemm, 1, input(1)?).filter(|s| s.dims.len() == 2)?;
    let d = weight.dims[usize::from(!transposed)];
    // A per-channel bias: `[d]` or `[1, d]` (a `[d, 1]` one would add per row).
    let bias = slot_of(ix, gemm, 2, input(2)?).filter(|s| s.dims == [d] || s.dims == [1, d])?;
    if transposed {
        // The fit works on `[k, d]`; the values go back as stored (`Projection::stored`).
        weight.values = transpose(&weight.values, d as usize);
    }
    Some(Projection {
        activation: ix.graph.value(input(0)?).name.clone(),
        weight,
        transposed,
        bias,
    })
}

impl Projection {
    /// A fitted `[k, d]` weight as the op stores it.
    pub fn stored(&self, weight: Vec<f64>) -> Vec<f64> {
        match self.transposed {
            true => transpose(&weight, weight.len() / self.bias.values.len().max(1)),
            false => weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transpose;

    #[test]
    fn a_gemm_weight_stored_as_d_by_k_is_read_as_k_by_d_and_written_back() {
        // [[1, 2, 3], [4, 5, 6]] (d = 2 rows of k = 3) is [[1, 4], [2, 5], [3, 6]] as [k, d].
        let stored = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let kd = transpose(&stored, 2);
        assert_eq!(kd, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(transpose(&kd, 3), stored);
    }
}
