//! Judging: the reference's outputs (and its values at the residual stream's cuts) computed once, then any
//! number of candidates compared with them, whole or unit by unit, with a retry at batch 1 when generated inputs
//! run nowhere; and the one-shot verifications built on it (two models, stored outputs, two runtimes).

use std::path::Path;

use super::report::{RunReport, VerifyReport, all_ok, compare_sets};
use super::running::{
    ModelRef, Outputs, RuntimeChoice, conformance_note, first_that_runs, join_notes, note_of,
    run_sets,
};
use super::sets::{InputSet, InputSource, input_sets, signature, symbol_sizes};
use super::units::{self, Culprit, Cut, Store, UnitRow, VerifyBy};
use super::{DimSizes, Tolerance, VerifyError, load_test_data, test_data_sets};
use crate::analysis::quantized::activation_quantization;
use crate::ir::Model;
use crate::runtime::{Named, RuntimeError, RuntimeKind, conformance};

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
            "{why} (the generated inputs sized {}; give a size the model accepts for the symbol at fault, or \
             stored inputs)",
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
