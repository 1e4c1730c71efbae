//! A whole conversion, as `normshift convert` runs it: the passes, verification of the result against the
//! original, the search for the pass at fault when an exact pipeline changed the outputs, the drift profile of
//! a function-changing one, and the write.
//!
//! The original stays in memory for all of it (no reloads), models are run from memory (nothing is staged on
//! disk to verify it), and the output is written last, through [`io::save`](crate::io::save)'s atomic commit,
//! only if it was accepted. So an interrupt at any moment — loading, passes, verification, writing — leaves
//! either the complete output or nothing, and no stray file or folder.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::calibrate::{CALIBRATED, CalibrateError, Calibrating, Calibration, CalibrationReport};
use crate::io::{SaveError, SaveOptions, SaveReport, save};
use crate::ir::Model;
use crate::passes::{self, PassClass, PassError, PassRun, PipelineOptions};
use crate::verify::{
    DriftRow, InputSource, Judge, ModelRef, RuntimeChoice, Tolerance, VerifyBy, VerifyError,
    VerifyReport, drift_profile,
};

/// How to verify a conversion.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub runtime: RuntimeChoice,
    pub inputs: InputSource,
    pub tolerance: Tolerance,
    /// Whole models or unit by unit.
    pub by: VerifyBy,
}

/// Everything a conversion does, besides the model and the paths.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Pass names, in order (`passes::catalogue()`).
    pub passes: Vec<String>,
    pub pipeline: PipelineOptions,
    pub save: SaveOptions,
    /// `None`: write without running either model (`--no-verify`).
    pub verify: Option<VerifyOptions>,
    /// For function-changing pipelines: refuse the result above this relative L2 error on any output.
    pub max_divergence: Option<f64>,
    /// Calibrate `post-to-pre` on these sets (`--calibration DIR`).
    pub calibration: Option<Calibration>,
}

impl ConvertOptions {
    /// Refuses unknown pass names, before anything is read.
    pub fn check(&self) -> Result<(), ConvertError> {
        for name in &self.passes {
            passes::by_name(name)?;
        }
        if self.calibration.is_some() && !self.passes.iter().any(|p| p == CALIBRATED) {
            return Err(ConvertError::Calibrate(CalibrateError::Refused(format!(
                "calibration refits what `{CALIBRATED}` makes, and the pipeline has no `{CALIBRATED}`"
            ))));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} is the input file, which is overwritten only when forced")]
    SameFile(PathBuf),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
}

/// Why the result was not written.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    /// An exact pipeline changed the outputs beyond tolerance.
    Mismatch {
        /// The first pass after which the outputs differ (the pipeline rerun one pass at a time).
        failing_pass: Option<&'static str>,
    },
    /// A function-changing pipeline moved the outputs further than `--max-divergence` allows.
    Divergence { rel_l2: f64, max_divergence: f64 },
}

/// The drift profile, or why there is none.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Drift {
    Rows(Vec<DriftRow>),
    Failed { error: String },
}

/// What a conversion did: the JSON `convert --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Whether `output` was written.
    pub written: bool,
    /// Whether the pipeline keeps the function (every pass exact, or a function-changing one changed nothing).
    pub exact: bool,
    pub passes: Vec<PassRun>,
    /// What was written (absent when nothing was).
    pub file: Option<SaveReport>,
    /// The comparison of the result with the original (absent with `--no-verify` or no passes).
    pub verification: Option<VerifyReport>,
    /// Why there is no verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_skipped: Option<&'static str>,
    /// When an exact pipeline failed: the first pass at fault.
    pub failing_pass: Option<&'static str>,
    /// For a function-changing pipeline: the stream's divergence unit by unit.
    pub drift: Option<Drift>,
    /// What `--calibration` fitted, and both mappings' figures on the held-out sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
    /// Why `output` was not written, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

impl Refusal {
    /// Why the result was not written, in words.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Mismatch { failing_pass } => {
                let failing = match failing_pass {
                    Some(pass) => format!("pass {pass}"),
                    None => "the passes (though rerun one at a time, each verified)".into(),
                };
                format!("{failing} changed the outputs beyond tolerance")
            }
            Refusal::Divergence {
                rel_l2,
                max_divergence,
            } => format!(
                "the outputs moved by a relative L2 error of {rel_l2:.3e}, above the maximum divergence \
                 asked for, {max_divergence}"
            ),
        }
    }
}

impl ConvertReport {
    /// The names of the function-changing passes that changed something.
    pub fn function_changing(&self) -> Vec<&'static str> {
        self.passes
            .iter()
            .filter(|r| r.class == PassClass::FunctionChanging && r.changes > 0)
            .map(|r| r.pass)
            .collect()
    }
}

/// Told where a long conversion is, for a progress display.
pub trait Progress {
    /// A stage begins (and the previous one, if any, has ended).
    fn stage(&mut self, what: &str);
    /// The last stage has ended.
    fn done(&mut self) {}
}

/// No progress display.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&mut self, _what: &str) {}
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Converts `original` (loaded from `input`) into `output`.
///
/// Returns `Err` only when the conversion could not be carried out (a pass refused, a runtime could not run the
/// models, the file could not be written); a verification that found a difference is a report with
/// `written: false` and its [`Refusal`].
pub fn convert(
    original: &Model,
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    progress: &mut dyn Progress,
) -> Result<ConvertReport, ConvertError> {
    if same_file(input, output) && !options.save.replace_sources {
        return Err(ConvertError::SameFile(output.into()));
    }
    let (model, mut report) = convert_in_memory(original, input, output, options, progress)?;
    if report.refusal.is_none() {
        progress.stage(&format!("writing {}", output.display()));
        report.file = Some(save(&model, output, &options.save)?);
        report.written = true;
    }
    progress.done();
    Ok(report)
}

/// The passes and the verification of [`convert`], without the write: the result stays in memory, for callers
/// that hand it on rather than write it (the Python package). `output` only labels the result in messages and
/// in the report, whose `written` is false and `file` absent until the caller has put the model somewhere.
///
/// The result's tensors that were external in `original` still are, with the same locations: they resolve
/// against `original`'s folder, as its own did.
pub fn convert_in_memory(
    original: &Model,
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
    progress: &mut dyn Progress,
) -> Result<(Model, ConvertReport), ConvertError> {
    options.check()?;
    let mut model = original.clone();
    progress.stage("running the passes");
    let (runs, calibration) = match &options.calibration {
        None => (
            passes::run_pipeline(&mut model, &options.passes, &options.pipeline)?,
            None,
        ),
        Some(c) => run_calibrated(&mut model, input, options, c, progress)?,
    };
    // A function-changing pass that changed nothing leaves the function as it was.
    let exact = runs
        .iter()
        .all(|r| r.class == PassClass::Exact || r.changes == 0);
    let mut report = ConvertReport {
        input: input.into(),
        output: output.into(),
        written: false,
        exact,
        passes: runs,
        file: None,
        verification: None,
        verification_skipped: None,
        failing_pass: None,
        drift: None,
        calibration,
        refusal: None,
    };
    match &options.verify {
        _ if report.passes.is_empty() => report.verification_skipped = Some("no passes were run"),
        None => report.verification_skipped = Some("verification was turned off"),
        Some(verify) => {
            // Verification cuts both models at the stream and probes it after each unit: a model that ships
            // its layers as model-local functions is judged with every call replaced by its body (the same
            // function; the runtimes inline them too).
            let original = original.functions_inlined().map_err(VerifyError::Encode)?;
            let result = model.functions_inlined().map_err(VerifyError::Encode)?;
            judge(&original, &result, &mut report, options, verify, progress)?
        }
    }
    Ok((model, report))
}

/// The pipeline with `post-to-pre` calibrated: the pass manager runs calibration (and the held-out judging of
/// both mappings) right after `post-to-pre`, before the passes after it.
fn run_calibrated(
    model: &mut Model,
    input: &Path,
    options: &ConvertOptions,
    calibration: &Calibration,
    progress: &mut dyn Progress,
) -> Result<(Vec<PassRun>, Option<CalibrationReport>), ConvertError> {
    let names = &options.passes;
    let at = names.iter().position(|p| p == CALIBRATED).ok_or_else(|| {
        CalibrateError::Refused(format!("the pipeline has no `{CALIBRATED}` to calibrate"))
    })?;
    if let Some(stop) = passes::stop_index(names, &options.pipeline)?
        && stop < at
    {
        return Err(CalibrateError::Refused(format!(
            "the pipeline stops after `{}`, before `{CALIBRATED}`: there is nothing to calibrate",
            names[stop]
        ))
        .into());
    }
    // Calibration refits constants inside the layers: a model that ships them as model-local functions is
    // calibrated, and written, with every call replaced by its body.
    if let std::borrow::Cow::Owned(m) = model.functions_inlined().map_err(VerifyError::Encode)? {
        *model = m;
    }
    let choice = options
        .verify
        .as_ref()
        .map_or(RuntimeChoice::Auto, |v| v.runtime);
    let mut stage = |what: &str| progress.stage(what);
    let mut hook = Calibrating::new(calibration, input, choice, &mut stage);
    let runs =
        passes::run_pipeline_with::<ConvertError>(model, names, &options.pipeline, &mut hook)?;
    Ok((runs, hook.report()))
}

/// Verifies `rewritten` against `original` and fills in the verification, the refusal, the pass at fault and
/// the drift profile.
fn judge(
    original: &Model,
    rewritten: &Model,
    report: &mut ConvertReport,
    options: &ConvertOptions,
    verify: &VerifyOptions,
    progress: &mut dyn Progress,
) -> Result<(), ConvertError> {
    let reference = ModelRef::loaded(original, &report.input);
    // The result is still in memory: its unchanged external tensors are the input's, beside the input.
    let candidate = ModelRef {
        model: rewritten,
        dir: reference.dir,
        label: &report.output,
    };
    let mut judge = Judge::new(reference, &verify.inputs, verify.tolerance, verify.runtime)?
        .by(verify.by, report.exact);
    progress.stage("verifying the result against the original");
    let checked = judge.check(&candidate)?;
    let runtime = checked.runtime;
    if report.exact {
        if !checked.ok {
            progress.stage("finding the pass at fault");
            // The mismatch stands whatever the search finds; a search that cannot run names no pass.
            let failing = failing_pass(original, &report.passes, options, &mut judge, &candidate)
                .unwrap_or(None);
            report.failing_pass = failing;
            report.refusal = Some(Refusal::Mismatch {
                failing_pass: failing,
            });
        }
    } else {
        let worst = checked.worst_rel_l2();
        // A NaN error is above any limit.
        if let Some(limit) = options.max_divergence
            && (worst.is_nan() || worst > limit)
        {
            report.refusal = Some(Refusal::Divergence {
                rel_l2: worst,
                max_divergence: limit,
            });
        }
    }
    if !report.exact && checked.verified_by == VerifyBy::Unit {
        // The segmented run measured the stream after every unit already.
        report.drift = Some(Drift::Rows(drift_of_units(&checked.units)));
    } else if !report.exact {
        progress.stage("measuring the drift unit by unit");
        let drift = drift_profile(
            &reference,
            &candidate,
            &verify.inputs,
            RuntimeChoice::Only(runtime),
        );
        report.drift = Some(match drift {
            Ok(rows) => Drift::Rows(rows),
            Err(e) => Drift::Failed {
                error: e.to_string(),
            },
        });
    }
    report.verification = Some(checked);
    Ok(())
}

/// The drift profile from a segmented verification's rows: the stream after each unit.
fn drift_of_units(rows: &[crate::verify::UnitRow]) -> Vec<DriftRow> {
    rows.iter()
        .filter(|r| !r.units.is_empty())
        .map(|r| DriftRow {
            unit: r.units.end - 1,
            value: r.value.clone(),
            rel_l2: r.accumulated.rel_l2,
            cosine: r.accumulated.cosine,
            max_abs: r.accumulated.max_abs,
        })
        .collect()
}

/// After a failed verification of exact passes: reruns them one at a time from the original, verifying after
/// each against the reference outputs already computed, and returns the first after which they differ.
fn failing_pass(
    original: &Model,
    runs: &[PassRun],
    options: &ConvertOptions,
    judge: &mut Judge,
    candidate: &ModelRef,
) -> Result<Option<&'static str>, ConvertError> {
    if let [only] = runs {
        return Ok(Some(only.pass));
    }
    let names: Vec<String> = runs.iter().map(|r| r.pass.to_string()).collect();
    let mut done = names.iter();
    passes::first_failing(original, &names, &options.pipeline.context, |model| {
        // Messages name each step for what it is: the original after the passes so far, not OUT.
        let label = PathBuf::from(format!(
            "{} (the original after {})",
            candidate.label.display(),
            done.next().map_or("?", String::as_str)
        ));
        let step = ModelRef {
            model,
            label: &label,
            ..*candidate
        };
        Ok::<bool, ConvertError>(judge.check(&step)?.ok)
    })
}
