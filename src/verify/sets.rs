//! The input sets of a verification: generated from seeds (with sizes for symbolic dimensions), read from a
//! test-data folder, or given.

use std::path::PathBuf;

use super::{DimSizes, VerifyError, generate_inputs_within, load_test_data, test_data_sets};
use crate::ir::Model;
use crate::runtime::{self, Named};

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
pub(super) fn symbol_sizes(model: &Model, inputs: &[Named]) -> Vec<(String, usize)> {
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
pub(super) fn signature(inputs: &[Named]) -> Vec<(runtime::ElemType, Vec<usize>)> {
    inputs
        .iter()
        .map(|i| (i.tensor.elem_type(), i.tensor.shape().to_vec()))
        .collect()
}

pub(super) fn shapes(inputs: &[Named]) -> Vec<(String, Vec<usize>)> {
    inputs
        .iter()
        .map(|i| (i.name.clone(), i.tensor.shape().to_vec()))
        .collect()
}
