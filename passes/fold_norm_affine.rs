//! `fold-norm-affine` — a norm's scale and shift move into the linear layers that read it.
//!
//! * Pattern: a LayerNorm or RMSNorm over the last axis (fused `LayerNormalization` / `RMSNormalization`, or
//!   decomposed without Casts) with a constant scale `γ` and/or shift `β`, every reader of whose output is a
//!   `MatMul(y, W)` with a constant 2-D `W` (`[H, N]`).
//! * Replacement: each `MatMul` reads the bare normalization `n` and `W' = diag(γ)·W`; when `β` is present,
//!   `b' = b + β·W` is added after it (merged into the `MatMul`'s own bias `Add` when that is its only reader
//!   and a constant). The norm keeps `γ = 1`, no `β` (fused), or loses its `Mul`/`Add` (decomposed). `W'`
//!   and `b'` are new initializers: a weight shared elsewhere (tied embeddings) is never changed in place.
//! * Preconditions: as above; otherwise the norm is left alone with a note saying which reader or parameter
//!   stands in the way. float32, float64 and float16 weights.
//! * Exact: yes, up to float rounding (`(n·γ)·W` and `n·(γ·W)` round differently).

use petgraph::stable_graph::NodeIndex;

use super::{Pass, PassClass, PassContext, PassError};
use crate::analysis::constants::constant;
use crate::analysis::{Norm, NormForm, Param, find_norms};
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Model, Op, Patch, ValueId, ValueRef};
use crate::onnx::build::{float_tensor, node};
use crate::tensor::to_f64;

pub struct FoldNormAffine;

impl Pass for FoldNormAffine {
    fn name(&self) -> &'static str {
        "fold-norm-affine"
    }
    fn description(&self) -> &'static str {
        "a norm's scale and shift -> the MatMul weights and biases that read it"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        let ix = GraphIndex::new(&model.graph);
        let mut patch = Patch::new();
        for norm in find_norms(&ix) {
            if norm.scale.is_none() && norm.shift.is_none() {
                continue;
            }
            let mut site = Patch::new();
            match fold(&ix, &norm, &mut site) {
                Ok(()) => patch.merge(site),
                Err(reason) => patch.note(format!(
                    "left `{}` alone: {reason}",
                    model.graph.value(norm.output).name
                )),
            }
        }
        Ok(patch)
    }
}

/// A constant as numbers with its dims and element type.
struct Numbers {
    values: Vec<f64>,
    dims: Vec<i64>,
    elem: i32,
}

fn numbers(ix: &GraphIndex, v: ValueId) -> Option<Numbers> {
    let t = constant(ix, v)?;
    Some(Numbers {
        values: to_f64(&t).ok()?,
        dims: t.dims().to_vec(),
        elem: t.elem_type(),
    })
}

/// `γ` or `β` as a vector of `h` numbers (leading dims of 1 dropped; Gemma's `1 + w` applied).
fn vector(
    ix: &GraphIndex,
    p: Option<Param>,
    h: usize,
    what: &str,
) -> Result<Option<Vec<f64>>, String> {
    let Some(p) = p else { return Ok(None) };
    let n = numbers(ix, p.value).ok_or_else(|| format!("its {what} is not a readable constant"))?;
    if n.values.len() != h {
        return Err(format!(
            "its {what} has {} values for a hidden size of {h}",
            n.values.len()
        ));
    }
    Ok(Some(
        n.values
            .iter()
            .map(|v| if p.plus_one { v + 1.0 } else { *v })
            .collect(),
    ))
}

/// A linear layer reading the norm: `MatMul(y, W)` (with its bias `Add` when that is the result's only reader
/// and adds a constant `[n]`), or `Gemm(y, B, C)` with `alpha = beta = 1` and no transposed `y`.
struct Reader {
    node: NodeIndex,
    /// The weight as `[h, n]`, row-major (a `Gemm` with `transB` stores it as `[n, h]`).
    weight: Numbers,
    trans_b: bool,
    /// The layer's result.
    out: ValueId,
    bias: Bias,
}

enum Bias {
    /// A `MatMul` whose result has no constant bias `Add` of its own.
    None,
    /// The `MatMul`'s bias `Add`: (node, bias, the bias's input slot).
    Add(NodeIndex, Numbers, usize),
    /// A `Gemm`'s `C` (absent: `None`).
    Gemm(Option<Numbers>),
}

/// The output of a `Reshape` reading the norm, to look through. Folding through it is right exactly when its
/// result's last axis is the hidden axis: a row-major reshape whose last dimension is `H` maps every row onto
/// one row of the norm's output. The linear layers behind it guarantee that: their weights have `H` rows,
/// the same `H` as the scale and shift (`vector` checks their lengths).
fn keeps_last_axis(ix: &GraphIndex, n: NodeIndex, slot: InputSlot) -> Option<ValueId> {
    let op = ix.graph.graph[n].op()?;
    if op.op_type() != "Reshape" || !op.domain().is_empty() || slot != InputSlot::Operand(0) {
        return None;
    }
    let out = ix.output(n)?;
    (!ix.is_graph_output(out)).then_some(out)
}

/// Shape-only ops: they read the norm's shape, which folding does not change.
fn reads_only_the_shape(ix: &GraphIndex, n: NodeIndex) -> bool {
    ix.graph.graph[n].op().is_some_and(Op::reads_shape_only)
}

/// Why a reader whose numbers are quantized cannot take the scale: onnxruntime's 4-bit `MatMulNBits`, dynamic
/// int8 (`DynamicQuantizeLinear` before `MatMulInteger`), a `QuantizeLinear` calibrated for the unscaled
/// values, or a MatMul/Gemm whose weight is a `DequantizeLinear` (static QDQ). Requantizing is not exact.
fn quantized_linear(ix: &GraphIndex, n: NodeIndex) -> Option<String> {
    let op = ix.graph.graph[n].op()?;
    let layer = match (op.domain(), op.op_type()) {
        ("com.microsoft", "MatMulNBits") => "block-quantized weights (MatMulNBits)",
        ("", "MatMulInteger" | "DynamicQuantizeLinear" | "QLinearMatMul") => {
            "int8 weights (MatMulInteger)"
        }
        ("", "QuantizeLinear") => {
            return Some(
                "a QuantizeLinear calibrated for the values as they are: scaling them first would change what \
                 it quantizes"
                    .into(),
            );
        }
        ("", "MatMul" | "Gemm") => {
            let weight = ix.inputs(n).get(1).copied().flatten()?;
            ix.produced_by(weight, "DequantizeLinear")?;
            "quantized weights (DequantizeLinear)"
        }
        _ => return None,
    };
    Some(format!(
        "a linear layer on {layer}: folding the scale in would change quantized weights, and requantizing \
         them is not exact"
    ))
}

fn reader(ix: &GraphIndex, n: NodeIndex, slot: InputSlot) -> Result<Reader, String> {
    let op = ix.graph.graph[n].op().ok_or("a source reads it")?;
    let label = || ix.graph.node_label(n);
    let not_linear = || {
        format!(
            "{} reads it, which is not a MatMul or Gemm taking it as its left operand",
            label()
        )
    };
    let is = |ty: &str| op.op_type() == ty && op.domain().is_empty();
    if let Some(form) = quantized_linear(ix, n) {
        return Err(format!("{} reads it: {form}", label()));
    }
    if slot != InputSlot::Operand(0) || !(is("MatMul") || is("Gemm")) {
        return Err(not_linear());
    }
    let gemm = is("Gemm");
    let trans_b = match (gemm, op.plain_gemm()) {
        (false, _) => false,
        (true, Some(trans_b)) => trans_b,
        (true, None) => {
            return Err(format!(
                "{} transposes its input or scales by alpha/beta",
                label()
            ));
        }
    };
    let input = |slot: usize| ix.inputs(n).get(slot).copied().flatten();
    let stored = input(1)
        .and_then(|w| numbers(ix, w))
        .filter(|w| w.dims.len() == 2)
        .ok_or_else(|| format!("{} has no constant 2-D weight", label()))?;
    let weight = if trans_b { transposed(stored) } else { stored };
    let cols = weight.dims[1];
    let out = ix.output(n).ok_or("a linear layer without output")?;
    let is_bias = |nums: &Numbers| {
        nums.values.len() as i64 == cols && nums.dims.iter().rev().skip(1).all(|&d| d == 1)
    };
    let bias = if gemm {
        match input(2) {
            None => Bias::Gemm(None),
            Some(c) => {
                Bias::Gemm(Some(numbers(ix, c).filter(is_bias).ok_or_else(|| {
                    format!("{} adds a C that is not a constant row", label())
                })?))
            }
        }
    } else {
        match ix.sole_consumer(out) {
            Some((add, op)) if op.op_type() == "Add" && op.domain().is_empty() => {
                let inputs = ix.inputs(add);
                (0..2)
                    .find_map(|slot| {
                        let b = inputs.get(slot).copied().flatten()?;
                        let nums = numbers(ix, b)?;
                        (b != out && is_bias(&nums)).then_some(Bias::Add(add, nums, slot))
                    })
                    .unwrap_or(Bias::None)
            }
            _ => Bias::None,
        }
    };
    Ok(Reader {
        node: n,
        weight,
        trans_b,
        out,
        bias,
    })
}

fn transposed(m: Numbers) -> Numbers {
    Numbers {
        values: crate::tensor::transpose(&m.values, m.dims[0] as usize),
        dims: vec![m.dims[1], m.dims[0]],
        elem: m.elem,
    }
}

fn fold(ix: &GraphIndex, norm: &Norm, patch: &mut Patch) -> Result<(), String> {
    if norm.axis != -1 {
        return Err("it normalizes over more than the last axis".into());
    }
    if ix.is_graph_output(norm.output) {
        return Err("its output is a graph output".into());
    }
    let consumers = ix.consumers(norm.output);
    let shape_readers = consumers.iter().any(|&(n, _)| reads_only_the_shape(ix, n));
    // Linear layers reading the norm directly (`None`) or through a Reshape that keeps the last axis (GPT-2's
    // Conv1D exports as Reshape → Gemm → Reshape): (layer, the Reshape it reads through).
    let mut readers: Vec<(Reader, Option<NodeIndex>)> = Vec::new();
    for &(n, slot) in consumers {
        if reads_only_the_shape(ix, n) {
            continue;
        }
        match keeps_last_axis(ix, n, slot) {
            Some(out) => {
                for &(m, slot) in ix.consumers(out) {
                    if !reads_only_the_shape(ix, m) {
                        readers.push((reader(ix, m, slot)?, Some(n)));
                    }
                }
            }
            None => readers.push((reader(ix, n, slot)?, None)),
        }
    }
    let h = readers
        .first()
        .map(|(r, _)| r.weight.dims[0] as usize)
        .ok_or("no linear layer reads it")?;
    if readers.iter().any(|(r, _)| r.weight.dims[0] as usize != h) {
        return Err("its readers' weights disagree on the hidden size".into());
    }
    let gamma = vector(ix, norm.scale, h, "scale")?;
    let beta = vector(ix, norm.shift, h, "shift")?;
    let normalized = bare_norm(ix, norm, patch, h)?;
    if shape_readers && normalized != ValueRef::Old(norm.output) {
        // Same shape: the shape readers can read the bare normalization, and the old affine ops go.
        patch.rewire(norm.output, normalized);
    }
    let mut reshapes: Vec<NodeIndex> = readers.iter().filter_map(|(_, via)| *via).collect();
    reshapes.sort();
    reshapes.dedup();
    for &reshape in &reshapes {
        // The Reshape now reads the bare normalization; its result keeps its name and readers.
        let op = ix.graph.graph[reshape].op().ok_or("not an op")?;
        let shape = ix
            .inputs(reshape)
            .get(1)
            .copied()
            .flatten()
            .ok_or("a Reshape without shape")?;
        let out = ix.output(reshape).ok_or("a Reshape without output")?;
        patch.add_node(
            op.proto.clone(),
            vec![Some(normalized), Some(shape.into())],
            vec![Some(out.into())],
            reshape,
        );
        patch.remove(reshape);
    }
    for (r, via) in &readers {
        let input = match via {
            Some(reshape) => ValueRef::Old(ix.output(*reshape).ok_or("a Reshape without output")?),
            None => normalized,
        };
        fold_into(ix, r, gamma.as_deref(), beta.as_deref(), input, patch)?;
    }
    patch.sites = 1;
    Ok(())
}

/// Rewrites one linear layer to read `normalized` with `γ` and `β` folded into its weight and bias.
fn fold_into(
    ix: &GraphIndex,
    r: &Reader,
    gamma: Option<&[f64]>,
    beta: Option<&[f64]>,
    normalized: ValueRef,
    patch: &mut Patch,
) -> Result<(), String> {
    let g = ix.graph;
    let (rows, cols) = (r.weight.dims[0] as usize, r.weight.dims[1] as usize);
    let mut w = r.weight.values.clone();
    if let Some(gamma) = gamma {
        for (row, chunk) in w.chunks_mut(cols).enumerate().take(rows) {
            chunk.iter_mut().for_each(|x| *x *= gamma[row]);
        }
    }
    let folded = Numbers {
        values: w,
        dims: r.weight.dims.clone(),
        elem: r.weight.elem,
    };
    let folded = if r.trans_b {
        transposed(folded)
    } else {
        folded
    };
    let out_name = g.value(r.out).name.clone();
    let name = |what: &str| format!("{out_name}/{what}");
    let tensor = |n: &Numbers| {
        float_tensor(n.elem, n.dims.clone(), &n.values)
            .ok_or("a weight or bias is not of a float type")
    };
    let w_new = patch.initializer(format!("{out_name}_folded_weight"), tensor(&folded)?);
    // β·W: the shift's contribution to every output column.
    let shift_term: Option<Vec<f64>> = beta.map(|beta| {
        (0..cols)
            .map(|c| {
                (0..rows)
                    .map(|row| beta[row] * r.weight.values[row * cols + c])
                    .sum()
            })
            .collect()
    });
    let plus = |bias: &Numbers, term: &[f64]| Numbers {
        values: bias.values.iter().zip(term).map(|(b, t)| b + t).collect(),
        dims: bias.dims.clone(),
        elem: bias.elem,
    };
    let op = g.graph[r.node].op().ok_or("not an op")?;
    match (&r.bias, &shift_term) {
        (Bias::Gemm(c), _) => {
            let c_new: Option<ValueRef> = match (c, &shift_term) {
                (Some(c), Some(term)) => Some(
                    patch.initializer(format!("{out_name}_folded_bias"), tensor(&plus(c, term))?),
                ),
                (None, Some(term)) => {
                    let row = Numbers {
                        values: term.clone(),
                        dims: vec![cols as i64],
                        elem: r.weight.elem,
                    };
                    Some(patch.initializer(format!("{out_name}_folded_bias"), tensor(&row)?))
                }
                (_, None) => ix
                    .inputs(r.node)
                    .get(2)
                    .copied()
                    .flatten()
                    .map(ValueRef::Old),
            };
            let mut inputs = vec![Some(normalized), Some(w_new)];
            inputs.extend(c_new.map(Some));
            patch.add_node(op.proto.clone(), inputs, vec![Some(r.out.into())], r.node);
        }
        (_, None) => {
            patch.add_node(
                op.proto.clone(),
                vec![Some(normalized), Some(w_new)],
                vec![Some(r.out.into())],
                r.node,
            );
        }
        (Bias::Add(add, bias, slot), Some(term)) => {
            patch.add_node(
                op.proto.clone(),
                vec![Some(normalized), Some(w_new)],
                vec![Some(r.out.into())],
                r.node,
            );
            let b_new = patch.initializer(
                format!("{out_name}_folded_bias"),
                tensor(&plus(bias, term))?,
            );
            let mut inputs = vec![Some(ValueRef::Old(r.out)); 2];
            inputs[*slot] = Some(b_new);
            let add_out = ix.output(*add).ok_or("a bias Add without output")?;
            let add_op = g.graph[*add].op().ok_or("not an op")?;
            patch.add_node(
                add_op.proto.clone(),
                inputs,
                vec![Some(add_out.into())],
                *add,
            );
            patch.remove(*add);
        }
        (Bias::None, Some(term)) => {
            let product = patch.value(name("MatMul"));
            patch.add_node(
                op.proto.clone(),
                vec![Some(normalized), Some(w_new)],
                vec![Some(product)],
                r.node,
            );
            let row = Numbers {
                values: term.clone(),
                dims: vec![cols as i64],
                elem: r.weight.elem,
            };
            let b_new = patch.initializer(format!("{out_name}_folded_bias"), tensor(&row)?);
            patch.add_node(
                node("Add", "", name("AddShift"), vec![]),
                vec![Some(product), Some(b_new)],
                vec![Some(r.out.into())],
                r.node,
            );
        }
    }
    patch.remove(r.node);
    Ok(())
}

/// Makes the norm produce its bare normalization and returns that value: a fused norm gets `γ = 1` and no
/// `β`; a decomposed one is read before its scale `Mul` (which, left unread, the cleanup removes).
fn bare_norm(
    ix: &GraphIndex,
    norm: &Norm,
    patch: &mut Patch,
    h: usize,
) -> Result<ValueRef, String> {
    let g = ix.graph;
    let nodes_of = |ty: &str| -> Vec<NodeIndex> {
        norm.nodes
            .iter()
            .copied()
            .filter(|&n| g.graph[n].op().is_some_and(|op| op.op_type() == ty))
            .collect()
    };
    if norm.form == NormForm::Fused {
        let [n] = norm.nodes[..] else {
            return Err("not one node".into());
        };
        let op = g.graph[n].op().ok_or("not an op")?;
        if !op.domain().is_empty()
            || !matches!(op.op_type(), "LayerNormalization" | "RMSNormalization")
        {
            return Err(format!("{} is not a standard norm op", g.node_label(n)));
        }
        if g.graph[n]
            .outputs
            .iter()
            .skip(1)
            .flatten()
            .any(|&v| ix.use_count(v) > 0)
        {
            return Err("its mean or inverse deviation output is used".into());
        }
        let x = ix.inputs(n).first().copied().flatten().ok_or("no input")?;
        let elem = norm
            .scale
            .and_then(|p| constant(ix, p.value).map(|t| t.elem_type()))
            .ok_or("no scale")?;
        let ones = float_tensor(elem, vec![h as i64], &vec![1.0; h]).ok_or("unsupported type")?;
        let name = &g.value(norm.output).name;
        let ones = patch.initializer(format!("{name}_unit_scale"), ones);
        patch.add_node(
            op.proto.clone(),
            vec![Some(x.into()), Some(ones)],
            vec![Some(norm.output.into())],
            n,
        );
        patch.remove(n);
        return Ok(norm.output.into());
    }
    // Decomposed: the scale's Mul reads the bare normalization; without a scale, the shift's Add does.
    let param_value = |p: Param| -> ValueId {
        // Gemma's (1 + w): the Mul reads the Add's output, not w.
        if p.plus_one {
            nodes_of("Add")
                .into_iter()
                .find(|&a| ix.inputs(a).contains(&Some(p.value)))
                .and_then(|a| ix.output(a))
                .unwrap_or(p.value)
        } else {
            p.value
        }
    };
    if norm.scale.is_none() && norm.shift.is_none() {
        return Err("nothing to fold".into());
    }
    // The scale's Mul and the shift's Add; a Cast after either would change the type the readers see (one
    // before them, as in fp16 exports, does not matter: the readers take the value the Mul read).
    let applying = |ty: &str, p: Option<Param>| -> Option<(NodeIndex, ValueId)> {
        let pv = param_value(p?);
        nodes_of(ty).into_iter().find_map(|n| match ix.inputs(n) {
            [Some(a), Some(b)] if *b == pv => Some((n, *a)),
            [Some(a), Some(b)] if *a == pv => Some((n, *b)),
            _ => None,
        })
    };
    let scale_mul = applying("Mul", norm.scale);
    let shift_add = applying("Add", norm.shift);
    let affine_outputs: Vec<ValueId> = [scale_mul, shift_add]
        .iter()
        .flatten()
        .filter_map(|&(n, _)| ix.output(n))
        .collect();
    let cast_after_affine = nodes_of("Cast").into_iter().any(|c| {
        ix.inputs(c)
            .first()
            .copied()
            .flatten()
            .is_some_and(|v| affine_outputs.contains(&v))
    });
    if cast_after_affine {
        return Err("it casts after its scale or shift".into());
    }
    match if norm.scale.is_some() {
        scale_mul
    } else {
        shift_add
    } {
        Some((_, bare)) => Ok(ValueRef::Old(bare)),
        None => Err("its scale or shift is not applied by a Mul or Add of the pattern".into()),
    }
}
