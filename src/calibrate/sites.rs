//! Where calibration reads and writes: for each unit of a Post-LN model, the norm its branch reads, its
//! residual sum, and its output projection; and the last post-norm, which becomes the final norm. Found from the
//! original's structure (analysis), and named by values so that the same places can be found again in the
//! model `post-to-pre` made of it, which keeps every value and node name.

use crate::analysis::constants::constant;
use crate::analysis::{Analysis, Norm, NormKind, Param, Placement, analyze, analyze_model};
use crate::ir::index::GraphIndex;
use crate::ir::{Model, ValueId};
use crate::tensor::to_f64;

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

/// A unit's output projection: `Add(MatMul(a, W), b)` with constant `W` (`[k, d]`) and `b` (`[d]`), whose
/// result is what the branch adds to the stream.
#[derive(Debug, Clone)]
pub struct Projection {
    /// `a`: what the projection reads.
    pub activation: String,
    pub weight: Slot,
    pub bias: Slot,
}

/// One residual unit as calibration sees it.
#[derive(Debug, Clone)]
pub struct UnitSite {
    /// The norm whose output the unit's branch reads: the embedding norm for the first unit, the previous
    /// unit's post-norm after that. In the Pre-LN model it is the unit's pre-norm.
    pub reads: NormSite,
    /// The residual sum `x + F(x)` (the input of the unit's post-norm).
    pub sum: String,
    pub projection: Projection,
}

/// Every unit, and the last post-norm.
#[derive(Debug, Clone)]
pub struct Sites {
    pub units: Vec<UnitSite>,
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
    let mut width = None;
    for l in 0..a.residual_units.len() {
        let site =
            unit_site(&ix, &a, l).map_err(|e| format!("unit {l} cannot be calibrated: {e}"))?;
        let d = site.reads.scale.values.len();
        if *width.get_or_insert(d) != d {
            return Err(format!("unit {l} has width {d}, the others another"));
        }
        units.push(site);
    }
    let last = a.residual_units.len() - 1;
    let final_norm = a.residual_units[last]
        .post_norm
        .ok_or_else(|| format!("unit {last} has no post-norm"))
        .and_then(|i| norm_site(&ix, &a.norms[i].norm))
        .map_err(|e| format!("the last post-norm cannot be calibrated: {e}"))?;
    Ok(Sites {
        units,
        final_norm,
        width: width.unwrap_or(0),
    })
}

/// Calibration fits the main graph's units only, and `post-to-pre` also converts the units inside subgraph
/// bodies (a merged decoder's branches): those would be handed on with the plain mapping, so a model with any
/// is refused, naming the body.
fn refuse_units_in_bodies(model: &Model) -> Result<(), String> {
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
    let reads = a
        .norms
        .iter()
        .find(|n| n.norm.output == unit.stream_in)
        .ok_or_else(|| {
            let made_by = ix
                .producer_op(unit.stream_in)
                .map_or("no op (a graph input)".to_string(), |(_, op)| {
                    format!("`{}`", op.op_type())
                });
            // ALBERT and ELECTRA project the embedding norm's output to the hidden width: the first unit
            // reads that projection, not a norm, and there is nothing between the two for calibration to refit.
            format!(
                "its stream `{}` is made by {made_by}, not by a norm: calibration refits the norm each \
                 unit reads, so {} must read one directly",
                g.value(unit.stream_in).name,
                if l == 0 { "the first unit" } else { "every unit" }
            )
        })?;
    let reads = norm_site(ix, &reads.norm)?;
    let projection = projection(ix, unit.branch_sum)?;
    if projection.bias.values.len() != reads.scale.values.len() {
        return Err("its output projection's width is not the stream's".into());
    }
    Ok(UnitSite {
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

/// `Add(MatMul(a, W), b)` writing `branch`, in either operand order.
fn projection(ix: &GraphIndex, branch: ValueId) -> Result<Projection, String> {
    let none = || {
        format!(
            "its branch `{}` does not end in a linear output projection Add(MatMul(a, W), b) with constant W and b",
            ix.graph.value(branch).name
        )
    };
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
                bias,
            })
        })
        .ok_or_else(none)
}
