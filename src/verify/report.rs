//! Whole verifications: two models on the same inputs, one model against stored outputs, or one model in two
//! runtimes. Each runs its models from memory through a [`Runtime`](crate::runtime::Runtime), chosen by a
//! [`RuntimeChoice`].

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::units::{self, Culprit, Cut, Store, UnitRow, VerifyBy};
use super::{
    Comparison, DimSizes, Tolerance, VerifyError, compare, generate_inputs_within, load_test_data,
    test_data_sets,
};
use crate::analysis::quantized::{ActivationQuantization, activation_quantization};
use crate::ir::Model;
use crate::runtime::{self, ModelSource, Named, RuntimeError, RuntimeKind, conformance};

/// Where the inputs of a comparison come from.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// Generated from each seed.
    Seeds { seeds: Vec<u64>, dims: DimSizes },
    /// A test-data folder (`input_K.pb`), or a folder of `test_data_set_N` folders.
    Dir(PathBuf),
    /// Sets already read (calibration's held-out sets).
    Sets(Vec<InputSet>),
}

impl Default for InputSource {
    /// Two seeded sets, as `convert` verifies with.
    fn default() -> Self {
        InputSource::Seeds {
            seeds: vec![0, 1],
            dims: DimSizes::default(),
        }
    }
}

/// Which runtime judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeChoice {
    /// tract; when tract cannot load or run a model of the comparison, onnxruntime if it is available. For a
    /// model that quantizes activations, onnxruntime first ([`conformance`]).
    #[default]
    Auto,
    Only(RuntimeKind),
}

impl RuntimeChoice {
    /// The runtimes to try, in order, for models that quantize as `q` says.
    fn candidates(self, q: &ActivationQuantization) -> Vec<RuntimeKind> {
        match self {
            RuntimeChoice::Auto => conformance::auto_order(q).to_vec(),
            RuntimeChoice::Only(kind) => vec![kind],
        }
    }
}

/// What the choice of `kind` adds to a report's note: why `auto` started with onnxruntime, and what `kind` is
/// known to compute differently from the ONNX specification on a model that quantizes as `q` says.
fn conformance_note(
    choice: RuntimeChoice,
    kind: RuntimeKind,
    q: &ActivationQuantization,
) -> Option<String> {
    let first = (choice == RuntimeChoice::Auto && kind == RuntimeKind::Ort)
        .then(|| conformance::order_note(q))
        .flatten();
    join_notes([first, conformance::deviation(kind, q)])
}

/// The notes that are there, in one.
fn join_notes(notes: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    let all: Vec<String> = notes.into_iter().flatten().collect();
    (!all.is_empty()).then(|| all.join("; "))
}

/// A model to run: the IR, the folder its external data is relative to, and how reports name it.
#[derive(Clone, Copy)]
pub struct ModelRef<'a> {
    pub model: &'a Model,
    pub dir: &'a Path,
    pub label: &'a Path,
}

impl<'a> ModelRef<'a> {
    /// A model loaded from `path` (external data beside it).
    pub fn loaded(model: &'a Model, path: &'a Path) -> ModelRef<'a> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        ModelRef {
            model,
            dir,
            label: path,
        }
    }

    /// The model encoded for a runtime.
    pub fn source(&self) -> Result<ModelSource, VerifyError> {
        Ok(ModelSource::new(
            self.model,
            self.dir,
            self.label.display().to_string(),
        )?)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `seed 0`, or the test-data folder.
    pub inputs: String,
    pub input_shapes: Vec<(String, Vec<usize>)>,
    pub outputs: Vec<Comparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub model: PathBuf,
    /// The other model, or the reference folder.
    pub against: PathBuf,
    pub tolerance: Tolerance,
    pub runs: Vec<RunReport>,
    pub ok: bool,
    /// The runtime that ran `model` (and `against`, when that is a model run in the same runtime).
    pub runtime: RuntimeKind,
    /// When one model was run in two runtimes: the one whose outputs are the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_runtime: Option<RuntimeKind>,
    /// Why `runtime` judged, when it was not the first choice (`auto`: tract could not run a model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_note: Option<String>,
    /// Whether the models were run whole or segment by segment (`unit`).
    pub verified_by: VerifyBy,
    /// The per-unit report: the residual stream compared after each unit (two models with residual units).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<UnitRow>,
    /// When outputs differ: the first segment whose value differs beyond tolerance (`unit 3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_differing: Option<String>,
    /// `verify --bisect` on differing outputs: the first value inside that segment that differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bisection: Option<Culprit>,
    /// Why `--bisect` could not run (the verdict stands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bisect_failed: Option<String>,
}

impl VerifyReport {
    /// The worst output of all runs, by max abs error.
    pub fn worst(&self) -> Option<&Comparison> {
        self.runs
            .iter()
            .flat_map(|r| &r.outputs)
            .max_by(|a, b| a.max_abs.total_cmp(&b.max_abs))
    }

    /// The largest relative L2 error of any output on any input set.
    pub fn worst_rel_l2(&self) -> f64 {
        self.runs
            .iter()
            .flat_map(|r| &r.outputs)
            .map(|o| o.rel_l2)
            .fold(0.0, f64::max)
    }
}

fn shapes(inputs: &[Named]) -> Vec<(String, Vec<usize>)> {
    inputs
        .iter()
        .map(|i| (i.name.clone(), i.tensor.shape().to_vec()))
        .collect()
}

/// One labelled set of inputs.
#[derive(Debug, Clone)]
pub struct InputSet {
    pub label: String,
    pub inputs: Vec<Named>,
}

/// Input sets for a model from `source`.
pub fn input_sets(model: &Model, source: &InputSource) -> Result<Vec<InputSet>, VerifyError> {
    match source {
        InputSource::Seeds { seeds, dims } => {
            // The sets are held together: the memory budget is for all of them.
            let mut reserved = 0;
            seeds
                .iter()
                .map(|&s| {
                    let (inputs, bytes) = generate_inputs_within(model, s, dims, reserved)?;
                    reserved = reserved.saturating_add(bytes);
                    Ok(InputSet {
                        label: format!("seed {s}"),
                        inputs,
                    })
                })
                .collect()
        }
        InputSource::Sets(sets) => Ok(sets.clone()),
        InputSource::Dir(dir) => {
            let sets = test_data_sets(dir);
            if sets.is_empty() {
                return Err(VerifyError::TestData {
                    path: dir.clone(),
                    reason: "no input_0.pb and no test_data_set_* folder".into(),
                });
            }
            sets.iter()
                .map(|d| {
                    Ok(InputSet {
                        label: d.display().to_string(),
                        inputs: load_test_data(d)?.inputs,
                    })
                })
                .collect()
        }
    }
}

/// The size each symbolic dimension of `model`'s inputs has in `inputs`, each symbol once, in input order.
fn symbol_sizes(model: &Model, inputs: &[Named]) -> Vec<(String, usize)> {
    let g = &model.graph;
    let mut sizes: Vec<(String, usize)> = Vec::new();
    for (id, given) in g.runtime_inputs().zip(inputs) {
        let Some((_, Some(shape))) = g.value(id).ty().and_then(crate::onnx::tensor_type) else {
            continue;
        };
        for (d, &n) in shape.iter().zip(given.tensor.shape()) {
            if let crate::onnx::Dim::Symbol(sym) = d
                && !sizes.iter().any(|(s, _)| s == sym)
            {
                sizes.push((sym.clone(), n));
            }
        }
    }
    sizes
}

/// The shapes and types of a set: sets that agree share one prepared model.
fn signature(inputs: &[Named]) -> Vec<(runtime::ElemType, Vec<usize>)> {
    inputs
        .iter()
        .map(|i| (i.tensor.elem_type(), i.tensor.shape().to_vec()))
        .collect()
}

/// A model prepared for one input signature.
type PreparedFor = (
    Vec<(runtime::ElemType, Vec<usize>)>,
    Box<dyn runtime::Prepared>,
);

/// Runs `model` in `kind` on every set, preparing it once per distinct input signature and releasing it before
/// returning.
pub fn run_sets(
    kind: RuntimeKind,
    model: &ModelRef,
    sets: &[InputSet],
) -> Result<Vec<Vec<Named>>, VerifyError> {
    let rt = runtime::open(kind)?;
    let source = model.source()?;
    let mut prepared: Option<PreparedFor> = None;
    let mut outputs = Vec::with_capacity(sets.len());
    for set in sets {
        let sig = signature(&set.inputs);
        if prepared.as_ref().is_none_or(|(s, _)| *s != sig) {
            // The previous one is released before the next is prepared: one prepared model at a time.
            drop(prepared.take());
            prepared = Some((sig, rt.prepare(&source, &set.inputs)?));
        }
        let (_, p) = prepared.as_mut().expect("prepared just above");
        outputs.push(p.run(&set.inputs)?);
    }
    Ok(outputs)
}

/// Compares each set's `actual` outputs with `reference`'s, output by output.
fn compare_sets(
    sets: &[InputSet],
    actual: &[Vec<Named>],
    reference: &[Vec<Named>],
    tol: Tolerance,
    what: &dyn Fn() -> String,
) -> Result<Vec<RunReport>, VerifyError> {
    sets.iter()
        .zip(actual.iter().zip(reference))
        .map(|(set, (a, r))| {
            if a.len() != r.len() {
                return Err(VerifyError::OutputMismatch(format!(
                    "{}: {} outputs against {}",
                    what(),
                    a.len(),
                    r.len()
                )));
            }
            Ok(RunReport {
                inputs: set.label.clone(),
                input_shapes: shapes(&set.inputs),
                outputs: a
                    .iter()
                    .zip(r)
                    .map(|(x, y)| {
                        let name = if x.name.is_empty() { &y.name } else { &x.name };
                        compare(name, &x.tensor, &y.tensor, tol)
                    })
                    .collect(),
            })
        })
        .collect()
}

fn all_ok(runs: &[RunReport]) -> bool {
    !runs.is_empty() && runs.iter().all(|r| r.outputs.iter().all(|o| o.ok))
}

/// A runtime failure for the report's note: "tract cannot run X: ...".
fn note_of(failures: &[RuntimeError]) -> Option<String> {
    (!failures.is_empty()).then(|| {
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// The outputs of a reference model on fixed input sets, computed once, against which candidates are judged:
/// what `convert` needs to verify a rewrite and then, if it failed, each pass of the pipeline in turn.
pub struct Judge<'a> {
    reference: ModelRef<'a>,
    choice: RuntimeChoice,
    tolerance: Tolerance,
    source: InputSource,
    sets: Vec<InputSet>,
    /// Set when the generated inputs had to be made again at batch 1: why.
    batch_note: Option<String>,
    /// The reference's outputs (and its values at the cuts), per runtime that ran it whole.
    baselines: Vec<(RuntimeKind, Vec<Vec<Named>>)>,
    /// The reference's values at and across the cuts, per runtime that ran it unit by unit.
    unit_baselines: Vec<(RuntimeKind, Store)>,
    /// Where the models are cut: the reference's residual stream.
    cuts: Vec<Cut>,
    by: VerifyBy,
    /// Whether the candidates compute the reference's function: then each unit's own error is measured.
    exact: bool,
    /// Runtimes that could not run the reference (or could not be had), in the order tried.
    failures: Vec<RuntimeError>,
}

impl<'a> Judge<'a> {
    /// Makes the input sets (from the reference model when generated); runs nothing yet.
    pub fn new(
        reference: ModelRef<'a>,
        source: &InputSource,
        tolerance: Tolerance,
        choice: RuntimeChoice,
    ) -> Result<Judge<'a>, VerifyError> {
        Ok(Judge {
            sets: input_sets(reference.model, source)?,
            source: source.clone(),
            batch_note: None,
            tolerance: tolerance.for_model(reference.model),
            reference,
            choice,
            baselines: Vec::new(),
            unit_baselines: Vec::new(),
            cuts: units::cuts(reference.model),
            by: VerifyBy::Auto,
            exact: true,
            failures: Vec::new(),
        })
    }

    /// How to run the models, and whether the candidates are meant to compute the reference's function (exact
    /// pipelines: each segment of a candidate is also run on the reference's values, for its own error).
    pub fn by(mut self, by: VerifyBy, exact: bool) -> Self {
        self.by = by;
        self.exact = exact;
        self
    }

    pub fn sets(&self) -> &[InputSet] {
        &self.sets
    }

    /// Where the sets came from (after a retry at batch 1, the inputs generated that way).
    pub fn source(&self) -> &InputSource {
        &self.source
    }

    /// Runs `candidate` on the sets and compares it with the reference, in the first runtime (of the choice)
    /// that runs both.
    ///
    /// Generated inputs that no runtime can run the reference on are generated once more with every unnamed
    /// leading (batch) axis 1, and the report says so: some kernels take batch 1 only (onnxruntime's
    /// `RotaryEmbedding` in torch's opset-23 exports, `GroupQueryAttention` with a past and several new tokens).
    pub fn check(&mut self, candidate: &ModelRef) -> Result<VerifyReport, VerifyError> {
        match self.check_all(candidate) {
            // Only when the reference itself ran nowhere: a candidate's failure is the candidate's.
            Err(
                e @ (VerifyError::NoRuntime(_) | VerifyError::Runtime(RuntimeError::Failed { .. })),
            ) if self.baselines.is_empty() && self.unit_baselines.is_empty() => {
                let why = match e {
                    VerifyError::NoRuntime(why) => why,
                    other => other.to_string(),
                };
                let Some((source, sets, leading)) = self.at_batch_one()? else {
                    return Err(VerifyError::NoRuntime(self.with_sizes(why)));
                };
                let note = format!(
                    "generated inputs at batch {leading}: {why}; generated again at batch 1"
                );
                self.sets = sets;
                self.source = source;
                self.failures.clear();
                self.batch_note = Some(note);
                self.check_all(candidate).map_err(|e| match e {
                    VerifyError::NoRuntime(again) => VerifyError::NoRuntime(
                        self.with_sizes(format!("{why}; and at batch 1: {again}")),
                    ),
                    e => e,
                })
            }
            done => done,
        }
    }

    /// `why` no runtime could run generated inputs, with the size each symbolic dimension was given and how to
    /// choose another: the runtime's message names the op that refused them.
    fn with_sizes(&self, why: String) -> String {
        let (InputSource::Seeds { .. }, Some(set)) = (&self.source, self.sets.first()) else {
            return why;
        };
        let sizes = symbol_sizes(self.reference.model, &set.inputs);
        if sizes.is_empty() {
            return why;
        }
        let listed: Vec<String> = sizes.iter().map(|(s, n)| format!("{s}={n}")).collect();
        format!(
            "{why} (the generated inputs sized {}; give --dim NAME=SIZE for a size the model accepts, or \
             --inputs DIR)",
            listed.join(", ")
        )
    }

    /// Generated inputs made again with every unnamed leading axis 1 (and the batch they had), unless they were
    /// not generated, were at batch 1 already, or come out the same (no symbolic leading axis, or one `--dim`
    /// names).
    fn at_batch_one(&self) -> Result<Option<(InputSource, Vec<InputSet>, usize)>, VerifyError> {
        let InputSource::Seeds { seeds, dims } = &self.source else {
            return Ok(None);
        };
        if dims.leading == 1 {
            return Ok(None);
        }
        let source = InputSource::Seeds {
            seeds: seeds.clone(),
            dims: DimSizes {
                leading: 1,
                ..dims.clone()
            },
        };
        let sets = input_sets(self.reference.model, &source)?;
        let unchanged = sets
            .iter()
            .zip(&self.sets)
            .all(|(a, b)| signature(&a.inputs) == signature(&b.inputs));
        Ok((!unchanged).then_some((source, sets, dims.leading)))
    }

    fn check_all(&mut self, candidate: &ModelRef) -> Result<VerifyReport, VerifyError> {
        let (by, by_note) = match self.by.resolve(&self.cuts) {
            VerifyBy::Unit if self.cuts.is_empty() => (
                VerifyBy::Model,
                Some("no residual units to cut at: verified as a whole".to_string()),
            ),
            by => (by, None),
        };
        let quantization = activation_quantization(&self.reference.model.graph);
        let candidates = self.choice.candidates(&quantization);
        let several = candidates.len() > 1;
        // Failures of this candidate only: another candidate (a later step of the failing-pass search) may run.
        let mut failed_here: Vec<RuntimeError> = Vec::new();
        for kind in candidates.iter().copied() {
            if self.failures.iter().any(|f| f.runtime() == kind) {
                continue;
            }
            let baseline = match by {
                VerifyBy::Unit => self.unit_baseline_in(kind),
                _ => self.baseline_in(kind),
            };
            if let Err(e) = baseline {
                match e {
                    VerifyError::Runtime(e) if several => {
                        self.failures.push(e);
                        continue;
                    }
                    e => return Err(e),
                }
            }
            let checked = match by {
                VerifyBy::Unit => self.by_units_in(kind, candidate),
                _ => self.whole_in(kind, candidate),
            };
            let (runs, rows) = match checked {
                Ok(done) => done,
                Err(VerifyError::Runtime(e)) if several => {
                    failed_here.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut tried = self.failures.clone();
            tried.extend(failed_here);
            let ok = all_ok(&runs);
            let note = join_notes([
                by_note,
                self.note(&tried, kind),
                conformance_note(self.choice, kind, &quantization),
            ]);
            return Ok(VerifyReport {
                model: self.reference.label.into(),
                against: candidate.label.into(),
                tolerance: self.tolerance,
                ok,
                runs,
                runtime: kind,
                reference_runtime: None,
                runtime_note: note,
                verified_by: by,
                first_differing: (!ok).then(|| units::first_differing(&rows)).flatten(),
                units: rows,
                bisection: None,
                bisect_failed: None,
            });
        }
        let mut tried = self.failures.clone();
        tried.extend(failed_here);
        Err(VerifyError::NoRuntime(
            note_of(&tried).unwrap_or_else(|| "no runtime to try".into()),
        ))
    }

    fn describe(&self, candidate: &ModelRef) -> String {
        format!(
            "{} against {}",
            candidate.label.display(),
            self.reference.label.display()
        )
    }

    /// Both models run whole in `kind`, with the cuts as extra outputs: the outputs compared in order, the
    /// cuts by name.
    fn whole_in(
        &self,
        kind: RuntimeKind,
        candidate: &ModelRef,
    ) -> Result<(Vec<RunReport>, Vec<UnitRow>), VerifyError> {
        let probed = units::with_cut_outputs(candidate.model, &self.cuts);
        let mut actual = run_sets(
            kind,
            &ModelRef {
                model: &probed,
                ..*candidate
            },
            &self.sets,
        )?;
        let reference = self.baseline(kind);
        let rows = units::rows_of(
            &self.cuts,
            &units::store_of(reference),
            &units::store_of(&actual),
            None,
            self.tolerance,
        );
        let own = candidate.model.graph.outputs.len();
        let theirs = self.reference.model.graph.outputs.len();
        for outs in &mut actual {
            outs.truncate(own);
        }
        let reference: Vec<Vec<Named>> = reference
            .iter()
            .map(|outs| outs[..theirs.min(outs.len())].to_vec())
            .collect();
        let runs = compare_sets(&self.sets, &actual, &reference, self.tolerance, &|| {
            self.describe(candidate)
        })?;
        Ok((runs, rows))
    }

    /// Both models run segment by segment in `kind`: the outputs compared in order, and a row per cut.
    fn by_units_in(
        &self,
        kind: RuntimeKind,
        candidate: &ModelRef,
    ) -> Result<(Vec<RunReport>, Vec<UnitRow>), VerifyError> {
        let reference = self.unit_baseline(kind);
        let (chained, rows) = units::candidate_rows(
            kind,
            candidate,
            &self.cuts,
            reference,
            self.tolerance,
            self.exact,
            &self.sets,
        )?;
        let outputs_of = |model: &Model, store: &Store| -> Result<Vec<Vec<Named>>, VerifyError> {
            let g = &model.graph;
            store
                .iter()
                .map(|values| {
                    g.outputs
                        .iter()
                        .map(|&o| {
                            let name = &g.value(o).name;
                            let tensor = values.get(name).cloned().ok_or_else(|| {
                                VerifyError::OutputMismatch(format!(
                                    "{}: no segment computed the output `{name}`",
                                    self.describe(candidate)
                                ))
                            })?;
                            Ok(Named {
                                name: name.clone(),
                                tensor,
                            })
                        })
                        .collect()
                })
                .collect()
        };
        let actual = outputs_of(candidate.model, &chained)?;
        let expected = outputs_of(self.reference.model, reference)?;
        let runs = compare_sets(&self.sets, &actual, &expected, self.tolerance, &|| {
            self.describe(candidate)
        })?;
        Ok((runs, rows))
    }

    /// Why `kind` judged and on what inputs, when that was not the first plan.
    fn note(&self, tried: &[RuntimeError], kind: RuntimeKind) -> Option<String> {
        let runtimes = note_of(tried).map(|n| format!("{n}; judged by {kind}"));
        match (&self.batch_note, runtimes) {
            (Some(b), Some(r)) => Some(format!("{b}; {r}")),
            (Some(b), None) => Some(format!("{b}; judged by {kind}")),
            (None, r) => r,
        }
    }

    /// After `report` (of `candidate`) found the outputs differ: the first value that differs inside the first
    /// segment whose own error is beyond tolerance, run in the runtime that judged.
    pub fn bisect(
        &mut self,
        candidate: &ModelRef,
        report: &VerifyReport,
    ) -> Result<Option<Culprit>, VerifyError> {
        let kind = report.runtime;
        self.unit_baseline_in(kind)?;
        let reference = self.unit_baseline(kind);
        let (chained, rows) = units::candidate_rows(
            kind,
            candidate,
            &self.cuts,
            reference,
            self.tolerance,
            true,
            &self.sets,
        )?;
        let baseline = units::Baseline {
            reference: &self.reference,
            cuts: &self.cuts,
            store: reference,
            sets: &self.sets,
        };
        units::bisect(
            kind,
            &baseline,
            candidate,
            (&chained, &rows),
            self.tolerance,
        )
    }

    /// The reference's outputs and cut values in `kind`, computed once per runtime.
    fn baseline_in(&mut self, kind: RuntimeKind) -> Result<(), VerifyError> {
        if !self.baselines.iter().any(|(k, _)| *k == kind) {
            let probed = units::with_cut_outputs(self.reference.model, &self.cuts);
            let at = ModelRef {
                model: &probed,
                ..self.reference
            };
            let outputs = run_sets(kind, &at, &self.sets)?;
            self.baselines.push((kind, outputs));
        }
        Ok(())
    }

    /// The reference's outputs in `kind`, which [`Judge::baseline_in`] computed.
    fn baseline(&self, kind: RuntimeKind) -> &Vec<Vec<Named>> {
        let found = self.baselines.iter().find(|(k, _)| *k == kind);
        &found.expect("computed by baseline_in").1
    }

    /// The reference's values across its cuts in `kind`, which [`Judge::unit_baseline_in`] computed.
    fn unit_baseline(&self, kind: RuntimeKind) -> &Store {
        let found = self.unit_baselines.iter().find(|(k, _)| *k == kind);
        &found.expect("computed by unit_baseline_in").1
    }

    /// The reference's values across its cuts in `kind`, run segment by segment, once per runtime.
    fn unit_baseline_in(&mut self, kind: RuntimeKind) -> Result<(), VerifyError> {
        if !self.unit_baselines.iter().any(|(k, _)| *k == kind) {
            let store = units::reference_values(kind, &self.reference, &self.cuts, &self.sets)?;
            self.unit_baselines.push((kind, store));
        }
        Ok(())
    }
}

/// Runs `a` and `b` on the same inputs and compares every output of `b` against `a`'s.
pub fn verify_pair(
    a: &ModelRef,
    b: &ModelRef,
    source: &InputSource,
    tol: Tolerance,
    choice: RuntimeChoice,
    by: VerifyBy,
) -> Result<VerifyReport, VerifyError> {
    Judge::new(*a, source, tol, choice)?.by(by, true).check(b)
}

/// [`verify_pair`], and when the outputs differ, where `b` first goes wrong ([`Judge::bisect`]).
pub fn verify_and_bisect(
    a: &ModelRef,
    b: &ModelRef,
    source: &InputSource,
    tol: Tolerance,
    choice: RuntimeChoice,
    by: VerifyBy,
) -> Result<VerifyReport, VerifyError> {
    let mut judge = Judge::new(*a, source, tol, choice)?.by(by, true);
    let mut report = judge.check(b)?;
    if !report.ok {
        // The verdict stands whatever the search finds; a search that cannot run says why.
        match judge.bisect(b, &report) {
            Ok(found) => report.bisection = found,
            Err(e) => report.bisect_failed = Some(e.to_string()),
        }
    }
    Ok(report)
}

/// Runs `model` on each test-data set under `dir` and compares with its `output_K.pb`.
pub fn verify_reference(
    model: &ModelRef,
    dir: &Path,
    tol: Tolerance,
    choice: RuntimeChoice,
) -> Result<VerifyReport, VerifyError> {
    let tol = tol.for_model(model.model);
    let dirs = test_data_sets(dir);
    if dirs.is_empty() {
        return Err(VerifyError::TestData {
            path: dir.into(),
            reason: "no input_0.pb and no test_data_set_* folder".into(),
        });
    }
    let mut sets = Vec::new();
    let mut expected = Vec::new();
    for d in dirs {
        let data = load_test_data(&d)?;
        if data.outputs.is_empty() {
            return Err(VerifyError::TestData {
                path: d,
                reason: "no output_0.pb to compare with".into(),
            });
        }
        sets.push(InputSet {
            label: d.display().to_string(),
            inputs: data.inputs,
        });
        expected.push(data.outputs);
    }
    let Outputs {
        runtime: kind,
        sets: actual,
        note,
    } = first_that_runs(choice, model, &sets)?;
    let runs = compare_sets(&sets, &actual, &expected, tol, &|| {
        format!("{} against {}", model.label.display(), dir.display())
    })?;
    Ok(VerifyReport {
        model: model.label.into(),
        against: dir.into(),
        tolerance: tol,
        ok: all_ok(&runs),
        runs,
        runtime: kind,
        reference_runtime: None,
        runtime_note: note,
        verified_by: VerifyBy::Model,
        units: Vec::new(),
        first_differing: None,
        bisection: None,
        bisect_failed: None,
    })
}

/// `work` in the first runtime of `choice` that does it without a runtime failure, with that runtime and a note
/// naming those that failed before it (`done` says what it did: "run", "judged").
fn in_first_runtime<T>(
    choice: RuntimeChoice,
    done: &str,
    quantization: &ActivationQuantization,
    mut work: impl FnMut(RuntimeKind) -> Result<T, VerifyError>,
) -> Result<(RuntimeKind, T, Option<String>), VerifyError> {
    let candidates = choice.candidates(quantization);
    let mut failures = Vec::new();
    for kind in candidates.iter().copied() {
        match work(kind) {
            Ok(t) => {
                let note = join_notes([
                    note_of(&failures).map(|n| format!("{n}; {done} by {kind}")),
                    conformance_note(choice, kind, quantization),
                ]);
                return Ok((kind, t, note));
            }
            Err(VerifyError::Runtime(e)) if candidates.len() > 1 => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    Err(VerifyError::NoRuntime(
        note_of(&failures).unwrap_or_default(),
    ))
}

/// What a model computed on each input set, the runtime that ran it, and why that one (when not the first).
pub struct Outputs {
    pub runtime: RuntimeKind,
    pub sets: Vec<Vec<Named>>,
    pub note: Option<String>,
}

/// Runs `model` on `sets` in the first runtime of `choice` that can, with a note naming those that could not.
pub fn first_that_runs(
    choice: RuntimeChoice,
    model: &ModelRef,
    sets: &[InputSet],
) -> Result<Outputs, VerifyError> {
    let quantization = activation_quantization(&model.model.graph);
    let (runtime, sets, note) = in_first_runtime(choice, "run", &quantization, |kind| {
        run_sets(kind, model, sets)
    })?;
    Ok(Outputs {
        runtime,
        sets,
        note,
    })
}

/// Runs one model in two runtimes on the same inputs and compares the second's outputs against the first's:
/// does tract compute what onnxruntime computes?
pub fn verify_runtimes(
    model: &ModelRef,
    source: &InputSource,
    tol: Tolerance,
    reference: RuntimeKind,
    other: RuntimeKind,
) -> Result<VerifyReport, VerifyError> {
    let tol = tol.for_model(model.model);
    let sets = input_sets(model.model, source)?;
    let expected = run_sets(reference, model, &sets)?;
    let actual = run_sets(other, model, &sets)?;
    let runs = compare_sets(&sets, &actual, &expected, tol, &|| {
        format!("{} in {other} against {reference}", model.label.display())
    })?;
    Ok(VerifyReport {
        model: model.label.into(),
        against: model.label.into(),
        tolerance: tol,
        ok: all_ok(&runs),
        runs,
        runtime: other,
        reference_runtime: Some(reference),
        // Two runtimes that differ on a quantized model: which one departs from the specification, and how.
        runtime_note: [reference, other].into_iter().find_map(|kind| {
            conformance::deviation(kind, &activation_quantization(&model.model.graph))
        }),
        verified_by: VerifyBy::Model,
        units: Vec::new(),
        first_differing: None,
        bisection: None,
        bisect_failed: None,
    })
}

/// Models prepared in one runtime for the same inputs: what `bench` times.
pub struct PreparedModels {
    pub runtime: RuntimeKind,
    pub models: Vec<Box<dyn runtime::Prepared>>,
    /// Why this runtime, when it was not the first of the choice.
    pub note: Option<String>,
}

/// Prepares every model in the first runtime of `choice` that prepares them all.
pub fn prepare_models(
    choice: RuntimeChoice,
    models: &[ModelSource],
    inputs: &[Named],
) -> Result<PreparedModels, VerifyError> {
    let quantization = models
        .iter()
        .fold(ActivationQuantization::default(), |q, m| {
            q.and(m.quantization)
        });
    let (runtime, models, note) = in_first_runtime(choice, "run", &quantization, |kind| {
        let rt = runtime::open(kind)?;
        Ok(models
            .iter()
            .map(|m| rt.prepare(m, inputs))
            .collect::<Result<Vec<_>, _>>()?)
    })?;
    Ok(PreparedModels {
        runtime,
        models,
        note,
    })
}
