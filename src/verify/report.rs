//! What a verification reports: per input set, each output's figures; the verdict; the runtime that judged and
//! why; the per-unit rows.

use std::path::PathBuf;

use serde::Serialize;

use super::sets::{InputSet, shapes};
use super::units::{Culprit, UnitRow, VerifyBy};
use super::{Comparison, Tolerance, VerifyError, compare};
use crate::runtime::{Named, RuntimeKind};

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

/// Compares each set's `actual` outputs with `reference`'s, output by output.
pub(super) fn compare_sets(
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

pub(super) fn all_ok(runs: &[RunReport]) -> bool {
    !runs.is_empty() && runs.iter().all(|r| r.outputs.iter().all(|o| o.ok))
}
