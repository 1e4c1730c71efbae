//! Whole verifications: two models on the same inputs, or one model against stored outputs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    Comparison, DimSizes, Named, Runner, Tolerance, VerifyError, compare, generate_inputs,
    load_test_data, test_data_sets,
};
use crate::ir::Model;

/// Where the inputs of a comparison come from.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// Generated from each seed.
    Seeds { seeds: Vec<u64>, dims: DimSizes },
    /// A test-data folder (`input_K.pb`), or a folder of `test_data_set_N` folders.
    Dir(PathBuf),
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
}

impl VerifyReport {
    fn new(model: &Path, against: &Path, tolerance: Tolerance, runs: Vec<RunReport>) -> Self {
        let ok = !runs.is_empty() && runs.iter().all(|r| r.outputs.iter().all(|o| o.ok));
        VerifyReport {
            model: model.into(),
            against: against.into(),
            tolerance,
            runs,
            ok,
        }
    }

    /// The worst output of all runs, by max abs error.
    pub fn worst(&self) -> Option<&Comparison> {
        self.runs
            .iter()
            .flat_map(|r| &r.outputs)
            .max_by(|a, b| a.max_abs.total_cmp(&b.max_abs))
    }
}

/// The names of the model's graph outputs, in order (what a [`Runner`] run is labelled with).
pub fn output_names(model: &Model) -> Vec<String> {
    model
        .graph
        .outputs
        .iter()
        .map(|&v| model.graph.value(v).name.clone())
        .collect()
}

fn shapes(inputs: &[Named]) -> Vec<(String, Vec<usize>)> {
    inputs
        .iter()
        .map(|i| (i.name.clone(), i.tensor.shape().to_vec()))
        .collect()
}

/// Input sets (label, tensors) for a model from `source`.
fn input_sets(
    model: &Model,
    source: &InputSource,
) -> Result<Vec<(String, Vec<Named>)>, VerifyError> {
    match source {
        InputSource::Seeds { seeds, dims } => {
            let mut dims = dims.clone();
            seeds
                .iter()
                .map(|&s| Ok((format!("seed {s}"), generate_inputs(model, s, &mut dims)?)))
                .collect()
        }
        InputSource::Dir(dir) => {
            let sets = test_data_sets(dir);
            if sets.is_empty() {
                return Err(VerifyError::TestData {
                    path: dir.clone(),
                    reason: "no input_0.pb and no test_data_set_* folder".into(),
                });
            }
            sets.iter()
                .map(|d| Ok((d.display().to_string(), load_test_data(d)?.inputs)))
                .collect()
        }
    }
}

/// Runs `a` and `b` on the same inputs and compares every output of `b` against `a`'s.
pub fn verify_pair(
    a_path: &Path,
    a: &Model,
    b_path: &Path,
    b: &Model,
    source: &InputSource,
    tol: Tolerance,
) -> Result<VerifyReport, VerifyError> {
    let names = output_names(a);
    let mut runs = Vec::new();
    for (label, inputs) in input_sets(a, source)? {
        let ra = Runner::new(a_path, &inputs)?.run(&inputs, &names)?;
        let rb = Runner::new(b_path, &inputs)?.run(&inputs, &output_names(b))?;
        if ra.len() != rb.len() {
            return Err(VerifyError::OutputMismatch(format!(
                "{} has {} outputs, {} has {}",
                a_path.display(),
                ra.len(),
                b_path.display(),
                rb.len()
            )));
        }
        let outputs = ra
            .iter()
            .zip(&rb)
            .map(|(x, y)| compare(&x.name, &y.tensor, &x.tensor, tol))
            .collect();
        runs.push(RunReport {
            inputs: label,
            input_shapes: shapes(&inputs),
            outputs,
        });
    }
    Ok(VerifyReport::new(a_path, b_path, tol, runs))
}

/// Runs `model` on each test-data set under `dir` and compares with its `output_K.pb`.
pub fn verify_reference(
    path: &Path,
    model: &Model,
    dir: &Path,
    tol: Tolerance,
) -> Result<VerifyReport, VerifyError> {
    let sets = test_data_sets(dir);
    if sets.is_empty() {
        return Err(VerifyError::TestData {
            path: dir.into(),
            reason: "no input_0.pb and no test_data_set_* folder".into(),
        });
    }
    let names = output_names(model);
    let mut runs = Vec::new();
    for set in sets {
        let data = load_test_data(&set)?;
        if data.outputs.is_empty() {
            return Err(VerifyError::TestData {
                path: set,
                reason: "no output_0.pb to compare with".into(),
            });
        }
        let got = Runner::new(path, &data.inputs)?.run(&data.inputs, &names)?;
        if got.len() != data.outputs.len() {
            return Err(VerifyError::OutputMismatch(format!(
                "the model has {} outputs, the reference {}",
                got.len(),
                data.outputs.len()
            )));
        }
        let outputs = got
            .iter()
            .zip(&data.outputs)
            .map(|(x, r)| compare(&x.name, &x.tensor, &r.tensor, tol))
            .collect();
        runs.push(RunReport {
            inputs: set.display().to_string(),
            input_shapes: shapes(&data.inputs),
            outputs,
        });
    }
    Ok(VerifyReport::new(path, dir, tol, runs))
}
