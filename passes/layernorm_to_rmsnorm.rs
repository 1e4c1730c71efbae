//! `layernorm-to-rmsnorm` — a Pre-LN model becomes a Pre-RMSNorm model with the same function (Jiang et al.,
//! NeurIPS 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers").
//!
//! * Idea: `LN(x) = RMSNorm(x − mean(x))` with the same ε, and the residual stream of a Pre-LN model is only
//!   ever read through norms and by the next residual `Add`. Make the stream zero-mean across the hidden axis
//!   by centring everything that writes to it, and every norm reading it can drop its mean.
//! * Writers centred (new initializers; shared weights are never changed in place): embedding and position
//!   tables read by `Gather` (each row minus its mean); the output projections of every branch, `MatMul(·, W)`
//!   and `Gemm` (each row of `W` minus its mean across the hidden axis) and their bias (minus its mean); through
//!   `Add`, `Reshape`, `Dropout`, `Identity` and a constant-scalar `Mul`; a per-channel constant `Mul` after a
//!   projection (LayerScale, `x + λ ⊙ F(N(x))`) is folded into that projection first. A writer that is not linear (an
//!   embedding norm, as in BLOOM) gets an explicit centring `x − ReduceMean(x)` after it.
//! * Replacement: each LayerNorm over the last axis reading the stream → `RMSNormalization(x, γ)` (opset 23,
//!   upgrading the model), followed by `Add(β)` when it has a shift (run `fold-norm-affine` first to move `γ`
//!   and `β` into the next layers).
//! * Preconditions, refused naming the node that breaks them: a Pre-LN model (Post-LN trunks are not
//!   shift-invariant); every writer is one of the above, and no intermediate value of a writer is read
//!   elsewhere; every reader of the stream is a LayerNorm over the hidden axis, the next residual `Add`, its
//!   scaled skip, or a shape-only op; the stream is not itself a graph output; no Casts in the norms.
//! * Exact: yes, up to float rounding.

use std::collections::HashSet;

use petgraph::stable_graph::NodeIndex;

use super::{Pass, PassClass, PassContext, PassError};
use crate::analysis::constants::{constant, scalar};
use crate::analysis::facts::Facts;
use crate::analysis::{
    Analysis, NormKind, NormSummary, Placement, ResidualUnit, Stream, analyze, keeps_zero_mean,
};
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Model, Patch, ValueId, ValueRef};
use crate::onnx::build::{attr_float, attr_int, float_tensor, i64_tensor, node};
use crate::tensor::to_f64;

pub struct LayerNormToRmsNorm;

impl Pass for LayerNormToRmsNorm {
    fn name(&self) -> &'static str {
        "layernorm-to-rmsnorm"
    }
    fn description(&self) -> &'static str {
        "Pre-LN -> Pre-RMSNorm: centre what writes the residual stream, then its LayerNorms drop the mean"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        let ix = GraphIndex::new(&model.graph);
        let analysis = analyze(&ix);
        let refuse = |reason: String| PassError::Refused {
            pass: "layernorm-to-rmsnorm",
            reason,
        };
        let mut patch = Patch::new();
        if analysis.residual_units.is_empty() {
            patch.note("no residual units: nothing to do".into());
            return Ok(patch);
        }
        let mut plan = Plan {
            ix: &ix,
            analysis: &analysis,
            patch: &mut patch,
            centred: HashSet::new(),
            hidden: None,
            recentred: None,
            facts: Facts::infer(&ix),
        };
        plan.build().map_err(refuse)?;
        if patch.sites > 0 {
            // RMSNormalization: the manager upgrades the rest of the model (`run_one`).
            patch.require_opset("", 23);
        }
        Ok(patch)
    }
}

struct Plan<'a, 'g> {
    ix: &'a GraphIndex<'g>,
    analysis: &'a Analysis,
    patch: &'a mut Patch,
    /// Writer nodes already planned (a value may be reached twice).
    centred: HashSet<NodeIndex>,
    /// The hidden size, as the centred tables and weights show it.
    hidden: Option<usize>,
    /// The explicitly centred stream value, when the embedding needed one: (old, centred).
    recentred: Option<(ValueId, ValueRef)>,
    /// Element types, to tell a norm's Casts that change nothing (OLMo casts a float32 stream to float32).
    facts: Facts,
}

impl Plan<'_, '_> {
    fn label(&self, n: NodeIndex) -> String {
        self.ix.graph.node_label(n)
    }

    fn name(&self, v: ValueId) -> String {
        self.ix.graph.value(v).name.clone()
    }

    fn build(&mut self) -> Result<(), String> {
        let a = self.analysis;
        if a.placement != Placement::Pre {
            return Err(format!(
                "the model's placement is {}, not pre: only a Pre-LN stream is read through norms alone",
                a.placement
            ));
        }
        if a.norm == NormSummary::RmsNorm {
            return Err("its norms are RMSNorms already".into());
        }
        let units = &a.residual_units;
        let Stream {
            values: stream,
            carriers,
        } = a.stream(self.ix).map_err(|e| e.to_string())?;
        if let Some(&n) = carriers.iter().find(|&&n| !keeps_zero_mean(self.ix, n)) {
            return Err(format!(
                "{} carries the stream but may scale its channels differently, which a centred stream does \
                 not survive",
                self.label(n)
            ));
        }

        // Readers of the stream: LayerNorms (converted below), the nodes of residual sums and their scaled
        // skips, and the ops that carry the stream between units.
        let converted: Vec<usize> = (0..a.norms.len())
            .filter(|&i| stream.contains(&a.norms[i].norm.input))
            .collect();
        let allowed: HashSet<NodeIndex> = converted
            .iter()
            .flat_map(|&i| a.norms[i].norm.nodes.iter().copied())
            .chain(units.iter().flat_map(|u| u.adds.iter().copied()))
            .chain(carriers.iter().copied())
            .chain(units.iter().filter_map(|u| u.scaled_skip))
            .collect();
        for &s in &stream {
            if self.ix.is_graph_output(s) {
                return Err(format!(
                    "the stream value `{}` is a graph output",
                    self.name(s)
                ));
            }
            for &(n, slot) in self.ix.consumers(s) {
                // Shape and type queries see nothing of the centring.
                let metadata_only = self.ix.graph.graph[n]
                    .op()
                    .is_some_and(|op| !op.reads_data_at(slot));
                if !(allowed.contains(&n) || metadata_only) || slot == InputSlot::Captured {
                    return Err(format!(
                        "{} reads the residual stream `{}` and is neither a LayerNorm nor the next unit",
                        self.label(n),
                        self.name(s)
                    ));
                }
            }
        }
        for &i in &converted {
            let info = &a.norms[i];
            if info.norm.kind != NormKind::LayerNorm {
                return Err(format!(
                    "norm #{i} (`{}`) reading the stream is an RMSNorm: centring would change it",
                    self.name(info.norm.output)
                ));
            }
            if info.norm.axis != -1 {
                return Err(format!(
                    "norm #{i} normalizes over more than the hidden axis"
                ));
            }
        }

        // Writers: the embedding, then every unit's branch side.
        self.centre_embedding(stream[0])?;
        for u in units {
            for writer in u.writers() {
                self.centre_writer(u, writer)?;
            }
        }
        for &i in &converted {
            self.convert_norm(i)?;
        }
        Ok(())
    }

    /// Centres what a branch writes into the stream, which only the unit's sum may read (a sum of branches
    /// that something else also reads would change that reader too).
    fn centre_writer(&mut self, unit: &ResidualUnit, writer: ValueId) -> Result<(), String> {
        let only_the_sum = !self.ix.is_graph_output(writer)
            && self
                .ix
                .consumers(writer)
                .iter()
                .all(|(n, _)| unit.adds.contains(n));
        if !only_the_sum {
            return Err(format!(
                "`{}` writes the stream and is also read elsewhere",
                self.name(writer)
            ));
        }
        self.centre(writer)
    }

    /// Whether `v` is read only by `reader` (so changing it changes nothing else).
    fn private_to(&self, v: ValueId, reader: NodeIndex) -> bool {
        !self.ix.is_graph_output(v) && self.ix.consumers(v).iter().all(|&(n, _)| n == reader)
    }

    /// The stream's first value: tables read by `Gather` are centred; anything else gets an explicit centring.
    fn centre_embedding(&mut self, e: ValueId) -> Result<(), String> {
        if self.centre_tables(e).is_ok() {
            return Ok(());
        }
        // Not linear (e.g. an embedding norm): x − ReduceMean(x), read by everything that read x.
        let anchor = self
            .ix
            .producer(e)
            .map(|(n, _)| n)
            .ok_or("the stream has no producer")?;
        let name = self.name(e);
        let axes = self
            .patch
            .initializer(format!("{name}/centre_axes"), i64_tensor(vec![1], &[-1]));
        let mean = self.patch.value(format!("{name}/mean"));
        let centred = self.patch.value(format!("{name}/centred"));
        // The model is raised to opset 23, so ReduceMean takes its axes as an input.
        self.patch.add_node(
            node(
                "ReduceMean",
                "",
                format!("{name}/ReduceMean"),
                vec![attr_int("keepdims", 1)],
            ),
            vec![Some(e.into()), Some(axes)],
            vec![Some(mean)],
            anchor,
        );
        self.patch.add_node(
            node("Sub", "", format!("{name}/Centre"), vec![]),
            vec![Some(e.into()), Some(mean)],
            vec![Some(centred)],
            anchor,
        );
        self.patch.rewire(e, centred);
        self.recentred = Some((e, centred));
        self.patch.sites += 1;
        Ok(())
    }

    /// Embedding sums of tables: `Gather(table, ids)` and `Add`s of them. Plans nothing unless all of it fits.
    fn centre_tables(&mut self, v: ValueId) -> Result<(), String> {
        let mut gathers = Vec::new();
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            let (n, op) = self.ix.producer_op(v).ok_or("not computed by an op")?;
            match op.op_type() {
                "Add" => {
                    for &i in self.ix.inputs(n).iter().flatten() {
                        if !self.private_to(i, n) {
                            return Err("an embedding summand is read elsewhere".into());
                        }
                        stack.push(i);
                    }
                }
                "Gather" if op.attribute("axis").is_none_or(|a| a.i() == 0) => gathers.push(n),
                "Cast" | "Identity" => {
                    let i = self
                        .ix
                        .inputs(n)
                        .first()
                        .copied()
                        .flatten()
                        .ok_or("an empty input")?;
                    stack.push(i);
                }
                _ => return Err(format!("{} is not a table lookup", self.label(n))),
            }
        }
        for g in gathers {
            let table = self
                .ix
                .inputs(g)
                .first()
                .copied()
                .flatten()
                .ok_or("a Gather without table")?;
            let t = constant(self.ix, table).ok_or("a table that is not a constant")?;
            if t.dims().len() != 2 {
                return Err("a table that is not 2-D".into());
            }
            self.hidden = Some(t.dims()[1] as usize);
            let centred = centre_rows(
                &to_f64(&t).map_err(|e| e.to_string())?,
                t.dims()[1] as usize,
            );
            let tensor = float_tensor(t.elem_type(), t.dims().to_vec(), &centred)
                .ok_or("a table of no float type")?;
            let name = self.name(table);
            let new = self.patch.initializer(format!("{name}_centred"), tensor);
            let op = self.ix.graph.graph[g].op().ok_or("not an op")?;
            let ids = self
                .ix
                .inputs(g)
                .get(1)
                .copied()
                .flatten()
                .ok_or("a Gather without indices")?;
            let out = self.ix.output(g).ok_or("a Gather without output")?;
            self.patch.add_node(
                op.proto.clone(),
                vec![Some(new), Some(ids.into())],
                vec![Some(out.into())],
                g,
            );
            self.patch.remove(g);
            self.patch.sites += 1;
        }
        Ok(())
    }

    /// Centres what computes `v` (a branch's contribution to the stream) across the hidden axis.
    fn centre(&mut self, v: ValueId) -> Result<(), String> {
        let (n, op) = self.ix.producer_op(v).ok_or_else(|| {
            format!(
                "`{}` writes the stream but is not computed by an op",
                self.name(v)
            )
        })?;
        if !self.centred.insert(n) {
            return Ok(());
        }
        let inputs: Vec<Option<ValueId>> = self.ix.inputs(n).to_vec();
        let through = |plan: &mut Self, v: ValueId| -> Result<(), String> {
            if !plan.private_to(v, n) {
                return Err(format!(
                    "`{}` writes the stream and is also read elsewhere",
                    plan.name(v)
                ));
            }
            plan.centre(v)
        };
        if op.op_type() == "Mul"
            && op.domain().is_empty()
            && let [Some(p), Some(q)] = inputs[..]
            && let Some((inner, scale)) = self
                .channel_scale(q)
                .map(|s| (p, s))
                .or_else(|| self.channel_scale(p).map(|s| (q, s)))
        {
            return self.fold_channel_scale(n, v, inner, &scale);
        }
        match (op.op_type(), &inputs[..]) {
            ("Add", [Some(p), Some(q)]) => {
                match (
                    constant(self.ix, *p).is_some(),
                    constant(self.ix, *q).is_some(),
                ) {
                    (false, false) => {
                        through(self, *p)?;
                        through(self, *q)
                    }
                    (false, true) => {
                        through(self, *p)?;
                        self.centre_bias(n, 1)
                    }
                    (true, false) => {
                        through(self, *q)?;
                        self.centre_bias(n, 0)
                    }
                    (true, true) => Err(format!(
                        "{} adds two constants to the stream",
                        self.label(n)
                    )),
                }
            }
            ("Reshape" | "Dropout" | "Identity" | "Cast", [Some(p), ..]) => through(self, *p),
            ("Mul", [Some(p), Some(q)]) if scalar(self.ix, *q).is_some() => through(self, *p),
            ("Mul", [Some(p), Some(q)]) if scalar(self.ix, *p).is_some() => through(self, *q),
            ("MatMul", [Some(_), Some(w)]) => self.centre_weight(n, *w, false, None),
            ("Gemm", [Some(_), Some(w), ..]) => {
                let trans_b = op.plain_gemm().ok_or_else(|| {
                    format!(
                        "{} transposes its input or scales by alpha/beta",
                        self.label(n)
                    )
                })?;
                self.centre_weight(n, *w, trans_b, inputs.get(2).copied().flatten())
            }
            _ if self.quantized_product(n) => Err(format!(
                "{} writes the stream with quantized weights: centring them would change quantized \
                     weights, and requantizing them is not exact",
                self.label(n)
            )),
            _ => Err(format!(
                "{} writes the stream and is not a linear layer, a table or a sum of them",
                self.label(n)
            )),
        }
    }

    /// Whether `n` is a linear layer on quantized weights (`MatMulNBits`, `MatMulInteger`, ...), or rescales
    /// one's output (dynamic int8: `Mul(Cast(MatMulInteger(·)), scale)`).
    fn quantized_product(&self, n: NodeIndex) -> bool {
        let quantized = |n: NodeIndex| {
            self.ix.graph.graph[n].op().is_some_and(|op| {
                matches!(
                    op.op_type(),
                    "MatMulNBits" | "MatMulInteger" | "QLinearMatMul" | "MatMulIntegerToFloat"
                )
            })
        };
        quantized(n)
            || self.ix.inputs(n).iter().flatten().any(|&v| {
                let v = self
                    .ix
                    .produced_by(v, "Cast")
                    .and_then(|(c, _)| self.ix.inputs(c).first().copied().flatten())
                    .unwrap_or(v);
                self.ix.producer(v).is_some_and(|(p, _)| quantized(p))
            })
    }

    /// The values of a per-channel constant scale (LayerScale's `λ`): a constant of more than one element
    /// that varies only along its last axis.
    fn channel_scale(&self, c: ValueId) -> Option<Vec<f64>> {
        let t = constant(self.ix, c)?;
        let dims = t.dims();
        let (&h, rest) = dims.split_last()?;
        (h > 1 && rest.iter().all(|&d| d == 1))
            .then(|| to_f64(&t).ok())
            .flatten()
    }

    /// `λ ⊙ (x·W + b)` (LayerScale on a branch output) becomes `x·W' + b'` with `W' = W·diag(λ)` and
    /// `b' = λ ⊙ b`, both centred across the hidden axis: the scale is linear, so it folds into the projection
    /// before it, and the projection is centred as any other.
    fn fold_channel_scale(
        &mut self,
        mul: NodeIndex,
        out: ValueId,
        inner: ValueId,
        scale: &[f64],
    ) -> Result<(), String> {
        let label = self.label(mul);
        let unfit = |what: &str| format!("{label} scales the stream per channel, {what}");
        if !self.private_to(inner, mul) {
            return Err(unfit("and what it scales is read elsewhere"));
        }
        // An optional bias Add, then the MatMul.
        let (bias, product) = match self.ix.produced_by(inner, "Add") {
            Some((add, _)) => match self.ix.inputs(add) {
                [Some(a), Some(b)] if constant(self.ix, *b).is_some() => (Some((add, *b)), *a),
                [Some(a), Some(b)] if constant(self.ix, *a).is_some() => (Some((add, *a)), *b),
                _ => return Err(unfit("and what it scales is not a projection")),
            },
            None => (None, inner),
        };
        if let Some((add, _)) = bias
            && !self.private_to(product, add)
        {
            return Err(unfit("and its projection's output is read elsewhere"));
        }
        let (mm, mm_op) = self
            .ix
            .produced_by(product, "MatMul")
            .ok_or_else(|| unfit("and what it scales is not a MatMul projection"))?;
        let [Some(x), Some(w)] = self.ix.inputs(mm)[..] else {
            return Err(unfit("and its MatMul has an empty operand"));
        };
        if self.ix.produced_by(w, "DequantizeLinear").is_some() {
            return Err(unfit(
                "and its MatMul's weights are quantized (DequantizeLinear)",
            ));
        }
        let t =
            constant(self.ix, w).ok_or_else(|| unfit("and its MatMul's weight is not constant"))?;
        let h = scale.len();
        if t.dims().len() != 2 || t.dims()[1] as usize != h {
            return Err(unfit(
                "and its MatMul's weight is not 2-D with one column per channel",
            ));
        }
        let scaled: Vec<f64> = to_f64(&t)
            .map_err(|e| e.to_string())?
            .iter()
            .enumerate()
            .map(|(i, v)| v * scale[i % h])
            .collect();
        self.hidden = Some(h);
        let tensor = float_tensor(t.elem_type(), t.dims().to_vec(), &centre_rows(&scaled, h))
            .ok_or("a weight of no float type")?;
        let new_w = self
            .patch
            .initializer(format!("{}_scaled_centred", self.name(w)), tensor);
        let mm_proto = mm_op.proto.clone();
        match bias {
            Some((add, b)) => {
                let bt = constant(self.ix, b).ok_or("a bias that is not constant")?;
                if bt.elem_count() as usize != h {
                    return Err(unfit("and its bias is not one value per channel"));
                }
                let values: Vec<f64> = to_f64(&bt)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .zip(scale)
                    .map(|(v, s)| v * s)
                    .collect();
                let tensor =
                    float_tensor(bt.elem_type(), bt.dims().to_vec(), &centre_rows(&values, h))
                        .ok_or("a bias of no float type")?;
                let new_b = self
                    .patch
                    .initializer(format!("{}_scaled_centred", self.name(b)), tensor);
                let projected = self.patch.value(format!("{}_scaled", self.name(product)));
                self.patch.add_node(
                    mm_proto,
                    vec![Some(x.into()), Some(new_w)],
                    vec![Some(projected)],
                    mm,
                );
                let add_proto = self.ix.graph.graph[add]
                    .op()
                    .ok_or("not an op")?
                    .proto
                    .clone();
                self.patch.add_node(
                    add_proto,
                    vec![Some(projected), Some(new_b)],
                    vec![Some(out.into())],
                    mul,
                );
                self.patch.remove(add);
            }
            None => {
                self.patch.add_node(
                    mm_proto,
                    vec![Some(x.into()), Some(new_w)],
                    vec![Some(out.into())],
                    mul,
                );
            }
        }
        self.patch.remove(mm);
        self.patch.remove(mul);
        self.patch.sites += 1;
        Ok(())
    }

    /// A linear layer's weight with each row centred across the hidden (output) axis, and its `Gemm` bias.
    fn centre_weight(
        &mut self,
        n: NodeIndex,
        w: ValueId,
        trans_b: bool,
        c: Option<ValueId>,
    ) -> Result<(), String> {
        if self.ix.produced_by(w, "DequantizeLinear").is_some() {
            return Err(format!(
                "{} has quantized weights (DequantizeLinear): centring them would write float weights, and \
                 requantizing them is not exact",
                self.label(n)
            ));
        }
        let t = constant(self.ix, w)
            .ok_or_else(|| format!("{} has no constant weight", self.label(n)))?;
        if t.dims().len() != 2 {
            return Err(format!("{} has no 2-D weight", self.label(n)));
        }
        let values = to_f64(&t).map_err(|e| e.to_string())?;
        let (rows, cols) = (t.dims()[0] as usize, t.dims()[1] as usize);
        self.hidden = Some(if trans_b { rows } else { cols });
        let centred = if trans_b {
            // [H, K]: centre each column across the rows.
            let mut out = values.clone();
            for c in 0..cols {
                let mean = (0..rows).map(|r| values[r * cols + c]).sum::<f64>() / rows as f64;
                (0..rows).for_each(|r| out[r * cols + c] -= mean);
            }
            out
        } else {
            centre_rows(&values, cols)
        };
        let tensor = float_tensor(t.elem_type(), t.dims().to_vec(), &centred)
            .ok_or("a weight of no float type")?;
        let name = self.name(w);
        let new_w = self.patch.initializer(format!("{name}_centred"), tensor);
        let mut changes = vec![(1, new_w)];
        if let Some(c) = c {
            changes.push((2, self.centred_constant(c, n)?));
        }
        self.patch.replace_inputs(self.ix, n, &changes);
        self.patch.sites += 1;
        Ok(())
    }

    /// The bias at `slot` of `Add` node `n`, minus its mean.
    fn centre_bias(&mut self, n: NodeIndex, slot: usize) -> Result<(), String> {
        let b = self
            .ix
            .inputs(n)
            .get(slot)
            .copied()
            .flatten()
            .ok_or("an Add without bias")?;
        let new_b = self.centred_constant(b, n)?;
        self.patch.replace_inputs(self.ix, n, &[(slot, new_b)]);
        Ok(())
    }

    /// A constant whose last axis is the hidden axis, centred along it (a scalar or a row of ones stays valid
    /// only if it is already zero-mean: a broadcast constant cannot be centred per element).
    fn centred_constant(&mut self, c: ValueId, n: NodeIndex) -> Result<ValueRef, String> {
        let t = constant(self.ix, c)
            .ok_or_else(|| format!("{} adds a non-constant bias", self.label(n)))?;
        let h = *t
            .dims()
            .last()
            .ok_or_else(|| format!("{} adds a scalar bias", self.label(n)))?
            as usize;
        if h < 2 {
            return Err(format!(
                "{} adds a bias that broadcasts over the hidden axis",
                self.label(n)
            ));
        }
        let centred = centre_rows(&to_f64(&t).map_err(|e| e.to_string())?, h);
        let tensor = float_tensor(t.elem_type(), t.dims().to_vec(), &centred)
            .ok_or("a bias of no float type")?;
        let name = self.name(c);
        Ok(self.patch.initializer(format!("{name}_centred"), tensor))
    }

    /// LayerNorm `i` (reading the now zero-mean stream) → `RMSNormalization(x, γ)` [+ `Add(β)`].
    fn convert_norm(&mut self, i: usize) -> Result<(), String> {
        let norm = &self.analysis.norms[i].norm;
        let g = self.ix.graph;
        let changes_type = |n: NodeIndex| {
            let Some(op) = g.graph[n].op().filter(|op| op.op_type() == "Cast") else {
                return false;
            };
            let from = self
                .ix
                .inputs(n)
                .first()
                .copied()
                .flatten()
                .and_then(|v| self.facts.elem_type(v));
            from.is_none() || from != op.attribute("to").and_then(|a| i32::try_from(a.i()).ok())
        };
        if norm.nodes.iter().any(|&n| changes_type(n)) {
            return Err(format!(
                "norm #{i} computes in another type (Casts around its statistics), and RMSNormalization would \
                 compute in the stream's"
            ));
        }
        let anchor = self
            .ix
            .producer(norm.output)
            .map(|(n, _)| n)
            .ok_or("a norm without producer")?;
        let name = self.name(norm.output);
        if let (Some(own), Some(stream)) = (self.hidden_size(norm), self.hidden)
            && own != stream
        {
            return Err(format!(
                "norm #{i} normalizes {own} values, the stream has {stream}"
            ));
        }
        let h = self
            .hidden_size(norm)
            .or(self.hidden)
            .or_else(|| {
                let last = self.facts.last_dim(norm.input)?;
                usize::try_from(last).ok()
            })
            .ok_or_else(|| format!("norm #{i}'s hidden size is not known"))?;
        let scale = match norm.scale {
            Some(p)
                if !p.plus_one
                    && constant(self.ix, p.value).is_some_and(|t| t.dims().len() == 1) =>
            {
                ValueRef::Old(p.value)
            }
            Some(p) => {
                let t = constant(self.ix, p.value).ok_or("a scale that is not constant")?;
                let values: Vec<f64> = to_f64(&t)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|v| if p.plus_one { v + 1.0 } else { *v })
                    .collect();
                let tensor =
                    float_tensor(t.elem_type(), vec![h as i64], &values).ok_or("no float scale")?;
                self.patch.initializer(format!("{name}_rms_scale"), tensor)
            }
            None => {
                ones_within_budget(h, || {
                    format!(
                        "norm #{i}'s scale of ones for hidden size {h} ({}), as float64 values and their \
                         f32 encoding",
                        self.hidden_origin(norm)
                    )
                })?;
                let tensor =
                    float_tensor(1, vec![h as i64], &vec![1.0; h]).ok_or("no float scale")?;
                self.patch.initializer(format!("{name}_rms_scale"), tensor)
            }
        };
        let result = match norm.shift {
            Some(_) => self.patch.value(format!("{name}/rms")),
            None => norm.output.into(),
        };
        self.patch.add_node(
            node(
                "RMSNormalization",
                "",
                format!("{name}/RMSNormalization"),
                vec![
                    attr_int("axis", -1),
                    attr_float("epsilon", norm.epsilon as f32),
                ],
            ),
            vec![Some(self.stream_value(norm.input)), Some(scale)],
            vec![Some(result)],
            anchor,
        );
        if let Some(p) = norm.shift {
            self.patch.add_node(
                node("Add", "", format!("{name}/shift"), vec![]),
                vec![Some(result), Some(p.value.into())],
                vec![Some(norm.output.into())],
                anchor,
            );
        }
        for &n in &norm.nodes {
            self.patch.remove(n);
        }
        self.patch.sites += 1;
        Ok(())
    }

    /// What a converted norm reads: the stream value, or its explicit centring.
    fn stream_value(&self, v: ValueId) -> ValueRef {
        match self.recentred {
            Some((old, centred)) if old == v => centred,
            _ => v.into(),
        }
    }

    /// Where the hidden size of a norm without scale or shift comes from, for messages.
    fn hidden_origin(&self, norm: &crate::analysis::Norm) -> &'static str {
        if self.hidden.is_some() {
            "from the weights the stream meets"
        } else if self.facts.last_dim(norm.input).is_some() {
            "from the graph around the norm"
        } else {
            "unknown"
        }
    }

    /// The hidden size: the scale's or shift's length.
    fn hidden_size(&self, norm: &crate::analysis::Norm) -> Option<usize> {
        [norm.scale, norm.shift]
            .iter()
            .flatten()
            .find_map(|p| constant(self.ix, p.value).map(|t| t.elem_count() as usize))
    }
}

/// Refuses a scale of `h` ones whose float64 values and float32 encoding are over the memory budget: a hidden size
/// read from a file (a weight of shape `[0, 2^40]` holds no data) can be one no machine holds.
fn ones_within_budget(h: usize, what: impl FnOnce() -> String) -> Result<(), String> {
    crate::limits::check(crate::limits::bytes_of(Some(h as u64), 12), None, 0, what)
        .map_err(|e| e.to_string())
}

/// Each row of a row-major `[·, cols]` matrix minus its mean (a matrix without columns has nothing to centre).
fn centre_rows(values: &[f64], cols: usize) -> Vec<f64> {
    if cols == 0 {
        return values.to_vec();
    }
    values
        .chunks(cols)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / row.len() as f64;
            row.iter().map(move |v| v - mean)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_centred_and_a_matrix_without_columns_is_left_as_it_is() {
        assert_eq!(
            centre_rows(&[1.0, 3.0, 10.0, 20.0], 2),
            [-1.0, 1.0, -5.0, 5.0]
        );
        // A table of shape [5, 0] from a file: nothing to centre, no panic.
        assert_eq!(centre_rows(&[], 0), Vec::<f64>::new());
    }
}
