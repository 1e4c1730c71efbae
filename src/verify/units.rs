//! Verification unit by unit: both models cut at the residual stream between their units, each segment run on
//! its own, so that memory is bounded by the largest segment rather than the model, and every unit's error is
//! reported.
//!
//! The cuts are the original's stream values (what enters each unit, and the last unit's output), where the
//! rewritten model computes a value of the same name: passes keep the names of the values they do not replace.
//! Segment `s` of a model computes cut `s` from what earlier segments computed ([`Graph::segments`]): the
//! stream, and the side values next to it (masks, shapes), which are handed on by name. The reference is run
//! segment by segment, keeping only the values that cross cuts. The candidate is run twice per segment, in one
//! preparation: *chained* on its own earlier segments (its end-to-end figures), and, for an exact pipeline,
//! *isolated* on the reference's values at its inputs (so a unit's own error is not the sum of those before it).
//!
//! [`Graph::segments`]: crate::ir::Graph::segments

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use serde::Serialize;

use super::running::{ModelRef, run_sets};
use super::sets::InputSet;
use super::{Comparison, Tolerance, VerifyError, compare};
use crate::analysis::analyze;
use crate::analysis::facts::{Facts, declare_interface, declared};
use crate::ir::index::GraphIndex;
use crate::ir::{Graph, Model, ValueId};
use crate::runtime::{Named, RuntimeKind, TensorData};

/// How to run the models of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyBy {
    /// Unit by unit when the model has residual units (one segment's weights in a runtime at a time: on a
    /// BERT-base-size export 0.2× the file's size added, against 0.95× for two whole models), else whole.
    #[default]
    Auto,
    Unit,
    Model,
}

impl VerifyBy {
    /// What `self` means for `model`: unit or model (never auto).
    pub fn resolve(self, cuts: &[Cut]) -> VerifyBy {
        match self {
            VerifyBy::Auto if cuts.len() >= 2 => VerifyBy::Unit,
            VerifyBy::Auto => VerifyBy::Model,
            by => by,
        }
    }
}

/// A value of the original's residual stream at which both models are cut, and the units computed before it
/// since the previous cut (empty for the first: the prologue of embeddings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub value: String,
    pub units: Range<usize>,
}

/// The stream values of `model`, one per unit boundary: each unit's input, then the last unit's output (its
/// post-norm's, or its sum). Only values computed by an op qualify (a graph input is no cut).
pub fn cuts(model: &Model) -> Vec<Cut> {
    let g = &model.graph;
    let ix = GraphIndex::new(g);
    let analysis = analyze(&ix);
    let mut values: Vec<(ValueId, usize)> = analysis
        .residual_units
        .iter()
        .enumerate()
        .map(|(k, u)| (u.stream_in, k))
        .collect();
    if let Some(end) = analysis.last_output() {
        values.push((end, analysis.residual_units.len()));
    }
    let mut cuts: Vec<Cut> = Vec::new();
    let mut start = 0;
    for (v, end) in values {
        let computed = ix.producer_op(v).is_some();
        if !computed || cuts.iter().any(|c| c.value == g.value(v).name) {
            continue;
        }
        cuts.push(Cut {
            value: g.value(v).name.clone(),
            units: start..end,
        });
        start = end;
    }
    cuts
}

/// Error figures of one value, worst over the input sets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Figures {
    pub max_abs: f64,
    pub max_rel: f64,
    pub rel_l2: f64,
    pub cosine: f64,
    pub ok: bool,
}

impl Figures {
    fn worst(comparisons: &[Comparison]) -> Option<Figures> {
        let first = comparisons.first()?;
        let start = Figures {
            max_abs: first.max_abs,
            max_rel: first.max_rel,
            rel_l2: first.rel_l2,
            cosine: first.cosine,
            ok: first.ok,
        };
        Some(comparisons[1..].iter().fold(start, |f, c| Figures {
            max_abs: f.max_abs.max(c.max_abs),
            max_rel: f.max_rel.max(c.max_rel),
            rel_l2: f.rel_l2.max(c.rel_l2),
            cosine: f.cosine.min(c.cosine),
            ok: f.ok && c.ok,
        }))
    }
}

/// One row of the per-unit report: the value at the end of a segment, compared between the models.
#[derive(Debug, Clone, Serialize)]
pub struct UnitRow {
    /// `prologue`, `unit 3`, or `units 3-4` when the candidate lacks the cut between them.
    pub segment: String,
    pub units: Range<usize>,
    pub value: String,
    /// The candidate's segment run on the reference's values at its inputs: this segment's own error (exact
    /// pipelines verified unit by unit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own: Option<Figures>,
    /// The candidate run on its own values from the start: the error accumulated up to here.
    pub accumulated: Figures,
}

impl UnitRow {
    /// Whether this row shows a difference beyond tolerance: its own error where that was measured.
    pub fn differs(&self) -> bool {
        !self.own.unwrap_or(self.accumulated).ok
    }
}

fn segment_label(units: &Range<usize>) -> String {
    match units.len() {
        0 => "prologue".into(),
        1 => format!("unit {}", units.start),
        _ => format!("units {}-{}", units.start, units.end - 1),
    }
}

/// The first row that differs beyond tolerance.
pub fn first_differing(rows: &[UnitRow]) -> Option<String> {
    rows.iter().find(|r| r.differs()).map(|r| r.segment.clone())
}

/// Values by name, one map per input set.
pub type Store = Vec<HashMap<String, TensorData>>;

/// Feeds of a segment run: a label, and per input set the stores searched in order for each input.
type Feeds<'s> = [(&'s str, Vec<Vec<&'s HashMap<String, TensorData>>>)];

fn seeded(sets: &[InputSet]) -> Store {
    sets.iter()
        .map(|s| {
            s.inputs
                .iter()
                .map(|n| (n.name.clone(), n.tensor.clone()))
                .collect()
        })
        .collect()
}

/// A model cut for segmented runs.
struct Segmented<'a> {
    at: ModelRef<'a>,
    graph_facts: Facts,
    segments: Vec<crate::ir::Segment>,
}

impl<'a> Segmented<'a> {
    /// `model` cut at those of `cuts` it computes; with `against`, handing on between segments only values of
    /// the names the original's store holds (so that every segment can be fed the original's values).
    fn new(
        at: ModelRef<'a>,
        cuts: &[Cut],
        against: Option<&Store>,
    ) -> Result<Segmented<'a>, VerifyError> {
        let g = &at.model.graph;
        let ix = GraphIndex::new(g);
        let ids: Vec<ValueId> = cuts
            .iter()
            .filter_map(|c| g.value_id(&c.value))
            .filter(|v| ix.producer_op(*v).is_some())
            .collect();
        let original = against.and_then(|s| s.first());
        let segments = g.segments(&ids, |v| {
            original.is_none_or(|o| o.contains_key(&g.value(v).name))
        })?;
        Ok(Segmented {
            graph_facts: Facts::infer(&ix),
            segments,
            at,
        })
    }

    /// Segment `s` as a model of its own, its interface typed.
    fn model(&self, s: usize) -> Result<Model, VerifyError> {
        let seg = &self.segments[s];
        let mut part = self.at.model.extract(&seg.inputs, &seg.outputs)?.graph;
        declare_interface(&self.graph_facts, &mut part.graph);
        Ok(part)
    }

    fn names(&self, ids: &[ValueId]) -> Vec<String> {
        let g: &Graph = &self.at.model.graph;
        ids.iter().map(|v| g.value(*v).name.clone()).collect()
    }

    /// Runs segment `s` on each feed (values by name), returning its outputs by name per feed.
    fn run(
        &self,
        kind: RuntimeKind,
        s: usize,
        feeds: &Feeds,
    ) -> Result<Vec<Vec<Named>>, VerifyError> {
        self.run_model(kind, s, &self.model(s)?, feeds)
    }

    /// Runs `model` (segment `s`, possibly with more outputs) on each feed.
    fn run_model(
        &self,
        kind: RuntimeKind,
        s: usize,
        model: &Model,
        feeds: &Feeds,
    ) -> Result<Vec<Vec<Named>>, VerifyError> {
        let label = PathBuf::from(format!(
            "{} [segment {} of {}]",
            self.at.label.display(),
            s + 1,
            self.segments.len()
        ));
        let at = ModelRef {
            model,
            dir: self.at.dir,
            label: &label,
        };
        let names = self.names(&self.segments[s].inputs);
        let mut sets = Vec::new();
        for (what, stores) in feeds {
            for (i, store) in stores.iter().enumerate() {
                let inputs = names
                    .iter()
                    .map(|n| {
                        let found = store.iter().find_map(|m| m.get(n));
                        let tensor = found.cloned().ok_or_else(|| {
                            VerifyError::Inputs(format!(
                                "{}: no value for `{n}` ({what}, set {i})",
                                label.display()
                            ))
                        })?;
                        Ok(Named {
                            name: n.clone(),
                            tensor,
                        })
                    })
                    .collect::<Result<Vec<_>, VerifyError>>()?;
                sets.push(InputSet {
                    label: format!("{what} {i}"),
                    inputs,
                });
            }
        }
        // An input neither the model declares nor inference types (the fourth output of onnxruntime's Skip
        // ops, say) gets the type of the tensor it is fed: runtimes refuse an untyped input.
        let untyped: Vec<usize> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                let g = &model.graph;
                g.value_id(n).is_some_and(|v| g.value(v).ty().is_none())
            })
            .map(|(i, _)| i)
            .collect();
        if let (false, Some(first)) = (untyped.is_empty(), sets.first()) {
            let mut typed = model.clone();
            for i in untyped {
                let fed = &first.inputs[i];
                let v = typed.graph.value_id(&fed.name).expect("checked above");
                let elem = fed.tensor.elem_type().onnx() as i32;
                typed.graph.value_mut(v).info =
                    Some(declared(&fed.name, elem, Some(fed.tensor.shape().len())));
            }
            let at = ModelRef {
                model: &typed,
                ..at
            };
            return run_sets(kind, &at, &sets);
        }
        run_sets(kind, &at, &sets)
    }
}

fn store_outputs(store: &mut Store, outputs: Vec<Vec<Named>>) {
    for (map, outs) in store.iter_mut().zip(outputs) {
        for o in outs {
            map.insert(o.name, o.tensor);
        }
    }
}

/// Runs the reference segment by segment in `kind`: every value that crosses a cut, per set.
pub fn reference_values(
    kind: RuntimeKind,
    reference: &ModelRef,
    cuts: &[Cut],
    sets: &[InputSet],
) -> Result<Store, VerifyError> {
    let segmented = Segmented::new(*reference, cuts, None)?;
    let mut store = seeded(sets);
    for s in 0..segmented.segments.len() {
        let feeds = [("reference", store.iter().map(|m| vec![m]).collect())];
        let outputs = segmented.run(kind, s, &feeds)?;
        store_outputs(&mut store, outputs);
    }
    Ok(store)
}

/// The candidate run segment by segment against the reference's values: its values, chained from the inputs,
/// and the per-unit rows.
pub fn candidate_rows(
    kind: RuntimeKind,
    candidate: &ModelRef,
    cuts: &[Cut],
    reference: &Store,
    tol: Tolerance,
    isolate: bool,
    sets: &[InputSet],
) -> Result<(Store, Vec<UnitRow>), VerifyError> {
    let segmented = Segmented::new(*candidate, cuts, Some(reference))?;
    let mut chained = seeded(sets);
    let mut own: Store = vec![HashMap::new(); sets.len()];
    for s in 0..segmented.segments.len() {
        let mut feeds = vec![("chained", chained.iter().map(|c| vec![c]).collect())];
        let names = segmented.names(&segmented.segments[s].inputs);
        let fed_by_original = reference
            .first()
            .is_some_and(|r| names.iter().all(|n| r.contains_key(n)));
        // A segment the original's values cannot feed whole has no error of its own to measure (its row
        // shows the accumulated one only).
        if isolate && s > 0 && fed_by_original {
            let isolated = reference.iter().map(|r| vec![r]).collect();
            feeds.push(("isolated", isolated));
        }
        let mut outputs = segmented.run(kind, s, &feeds)?;
        let isolated_out = outputs.split_off(sets.len());
        store_outputs(&mut chained, outputs);
        store_outputs(&mut own, isolated_out);
    }
    let rows = rows_of(cuts, reference, &chained, isolate.then_some(&own), tol);
    Ok((chained, rows))
}

/// One row per cut the candidate computed (a cut it lacks merges its units into the next row).
pub fn rows_of(
    cuts: &[Cut],
    reference: &Store,
    accumulated: &Store,
    own: Option<&Store>,
    tol: Tolerance,
) -> Vec<UnitRow> {
    let figures = |store: &Store, name: &str| -> Option<Figures> {
        let comparisons: Option<Vec<Comparison>> = store
            .iter()
            .zip(reference)
            .map(|(a, r)| Some(compare(name, a.get(name)?, r.get(name)?, tol)))
            .collect();
        Figures::worst(&comparisons?)
    };
    let mut rows = Vec::new();
    let mut start = 0;
    for cut in cuts {
        let Some(accumulated) = figures(accumulated, &cut.value) else {
            continue;
        };
        let units = start..cut.units.end;
        start = cut.units.end;
        rows.push(UnitRow {
            segment: segment_label(&units),
            units,
            value: cut.value.clone(),
            own: own.and_then(|o| figures(o, &cut.value)),
            accumulated,
        });
    }
    rows
}

/// Stores from whole-model runs with the cuts as extra outputs: each set's outputs by name.
pub fn store_of(outputs: &[Vec<Named>]) -> Store {
    outputs
        .iter()
        .map(|outs| {
            outs.iter()
                .map(|o| (o.name.clone(), o.tensor.clone()))
                .collect()
        })
        .collect()
}

/// `model` with those `cuts` it computes as extra outputs (after its own), for a whole-model run that reports
/// per unit.
pub fn with_cut_outputs(model: &Model, cuts: &[Cut]) -> Model {
    let mut m = model.clone();
    let ix = GraphIndex::new(&model.graph);
    for c in cuts {
        if let Some(id) = model.graph.value_id(&c.value)
            && ix.producer_op(id).is_some()
            && !m.graph.outputs.contains(&id)
        {
            m.graph.outputs.push(id);
        }
    }
    m
}

/// Where a rewrite first differs inside the first segment that does: the first value (in the original's
/// order) whose two versions differ beyond tolerance, and the node computing it in each model.
#[derive(Debug, Clone, Serialize)]
pub struct Culprit {
    pub segment: String,
    pub original_value: String,
    pub rewritten_value: String,
    /// `name` (the same name in both) or `structure` (computed by nodes `diff` matches).
    pub paired_by: &'static str,
    pub original_node: String,
    pub rewritten_node: String,
    pub figures: Figures,
}

/// Pairs of values that should hold the same numbers: those of nodes matched by structure, then those of the
/// same name computed by ops in both (what a rewrite that replaced a node left under its output's name).
fn value_pairs(a: &Model, b: &Model) -> Vec<(ValueId, ValueId, &'static str)> {
    let m = crate::ir::diff::match_nodes(&a.graph, &b.graph);
    let mut pairs: Vec<(ValueId, ValueId, &'static str)> = m
        .value_pairs(&a.graph, &b.graph)
        .into_iter()
        .map(|(x, y)| (x, y, "structure"))
        .collect();
    let taken_a: std::collections::HashSet<ValueId> = pairs.iter().map(|p| p.0).collect();
    let taken_b: std::collections::HashSet<ValueId> = pairs.iter().map(|p| p.1).collect();
    let (ia, ib) = (GraphIndex::new(&a.graph), GraphIndex::new(&b.graph));
    for &n in ia.ops() {
        for v in a.graph.graph[n].outputs.iter().flatten() {
            let Some(w) = b.graph.value_id(&a.graph.value(*v).name) else {
                continue;
            };
            if !taken_a.contains(v) && !taken_b.contains(&w) && ib.producer_op(w).is_some() {
                pairs.push((*v, w, "name"));
            }
        }
    }
    pairs
}

/// The original's side of a bisection: the model, where it is cut, its values across the cuts and the input
/// sets they were computed on.
#[derive(Clone, Copy)]
pub struct Baseline<'a> {
    pub reference: &'a ModelRef<'a>,
    pub cuts: &'a [Cut],
    pub store: &'a Store,
    pub sets: &'a [InputSet],
}

/// Finds the culprit of a failed exact verification: the first segment whose own error is beyond tolerance
/// (the epilogue when only the outputs differ), both models' versions of that segment run on the original's
/// values at its inputs with every paired value as an output, and the first pair that differs.
pub fn bisect(
    kind: RuntimeKind,
    baseline: &Baseline,
    candidate: &ModelRef,
    (chained, rows): (&Store, &[UnitRow]),
    tol: Tolerance,
) -> Result<Option<Culprit>, VerifyError> {
    let Baseline {
        reference,
        cuts,
        store: reference_store,
        sets,
    } = *baseline;
    let ref_cut = Segmented::new(*reference, cuts, None)?;
    let cand_cut = Segmented::new(*candidate, cuts, Some(reference_store))?;
    let (label, value) = match rows.iter().find(|r| r.differs()) {
        Some(r) => (r.segment.clone(), Some(r.value.clone())),
        None => ("epilogue".to_string(), None),
    };
    let index = |s: &Segmented| match &value {
        Some(v) => s.segments.iter().position(|seg| {
            seg.outputs
                .first()
                .is_some_and(|o| &s.at.model.graph.value(*o).name == v)
        }),
        None => s.segments.len().checked_sub(1),
    };
    let (Some(sr), Some(sc)) = (index(&ref_cut), index(&cand_cut)) else {
        return Ok(None);
    };
    let pairs = value_pairs(reference.model, candidate.model);
    let mut ref_part = ref_cut.model(sr)?;
    let mut cand_part = cand_cut.model(sc)?;
    let computed = |m: &Model| -> std::collections::HashSet<ValueId> {
        m.graph
            .graph
            .node_weights()
            .filter(|n| n.op().is_some())
            .flat_map(|n| n.outputs.iter().flatten().copied())
            .collect()
    };
    let (in_ref, in_cand) = (computed(&ref_part), computed(&cand_part));
    let pairs: Vec<_> = pairs
        .into_iter()
        .filter(|(a, b, _)| in_ref.contains(a) && in_cand.contains(b))
        .collect();
    for (a, b, _) in &pairs {
        for (part, v) in [(&mut ref_part, *a), (&mut cand_part, *b)] {
            if !part.graph.outputs.contains(&v) {
                part.graph.outputs.push(v);
            }
        }
    }
    declare_interface(&ref_cut.graph_facts, &mut ref_part.graph);
    declare_interface(&cand_cut.graph_facts, &mut cand_part.graph);
    // The original's values at the inputs; a value only the rewritten model hands on, its own.
    let feeds: Vec<Vec<&HashMap<String, TensorData>>> = reference_store
        .iter()
        .zip(chained)
        .map(|(r, c)| vec![r, c])
        .collect();
    let run = |seg: &Segmented, s: usize, part: &Model| -> Result<Store, VerifyError> {
        let outputs = seg.run_model(kind, s, part, &[("original's values", feeds.clone())])?;
        let mut store = vec![HashMap::new(); sets.len()];
        store_outputs(&mut store, outputs);
        Ok(store)
    };
    let ref_values = run(&ref_cut, sr, &ref_part)?;
    let cand_values = run(&cand_cut, sc, &cand_part)?;
    // In the original's order: the first value that differs is where the rewrite went wrong.
    let position: HashMap<ValueId, usize> = ref_part
        .graph
        .ops_in_order()?
        .into_iter()
        .enumerate()
        .flat_map(|(i, n)| {
            ref_part.graph.graph[n]
                .outputs
                .iter()
                .flatten()
                .map(move |v| (*v, i))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut pairs = pairs;
    pairs.sort_by_key(|(a, _, _)| position.get(a).copied().unwrap_or(usize::MAX));
    let (ga, gb) = (&reference.model.graph, &candidate.model.graph);
    for (a, b, paired_by) in pairs {
        let (na, nb) = (&ga.value(a).name, &gb.value(b).name);
        let comparisons: Option<Vec<Comparison>> = cand_values
            .iter()
            .zip(&ref_values)
            .map(|(c, r)| Some(compare(nb, c.get(nb)?, r.get(na)?, tol)))
            .collect();
        let Some(figures) = comparisons.as_deref().and_then(Figures::worst) else {
            continue;
        };
        if figures.ok {
            continue;
        }
        let node_text = |g: &Graph, v: ValueId| {
            g.producer(v)
                .and_then(|(n, _)| g.node_text(n, Default::default()))
                .unwrap_or_default()
        };
        return Ok(Some(Culprit {
            segment: label,
            original_value: na.clone(),
            rewritten_value: nb.clone(),
            paired_by,
            original_node: node_text(ga, a),
            rewritten_node: node_text(gb, b),
            figures,
        }));
    }
    Ok(None)
}
