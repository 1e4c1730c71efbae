//! The verifier: runs models with tract and compares their outputs.
//!
//! tract needs concrete input shapes before `into_optimized()` (left symbolic, it fails on half of the decoder
//! exports we tried), so every run pins the shapes of the inputs it is given. Inputs are either the user's (an
//! ONNX test-data folder) or generated from a seed so that they are valid for the model: token ids stay below
//! the row count of the table they index, other integer inputs (masks) are ones, floats are N(0, 1).

mod compare;
mod drift;
mod inputs;
mod run;
mod testdata;

pub use compare::{Comparison, Tolerance, compare};
pub use drift::{DriftRow, drift_profile, probes};
pub use inputs::{DimSizes, generate_inputs};
pub use run::{Runner, TractFailure};
pub use testdata::{
    TestData, load_test_data, read_tensor_file, tensor_from_proto, tensor_to_proto, test_data_sets,
    write_test_data,
};

use std::path::PathBuf;

/// A named input or output tensor.
#[derive(Debug, Clone)]
pub struct Named {
    pub name: String,
    pub tensor: tract_onnx::prelude::Tensor,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Tract(#[from] TractFailure),
    #[error("cannot read test data {path}: {reason}")]
    TestData { path: PathBuf, reason: String },
    #[error("{0}")]
    Inputs(String),
    #[error("the models disagree on their outputs: {0}")]
    OutputMismatch(String),
}

mod report;
pub use report::{
    InputSource, RunReport, VerifyReport, output_names, verify_pair, verify_reference,
};
