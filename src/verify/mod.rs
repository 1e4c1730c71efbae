//! The verifier: runs models through a [`Runtime`](crate::runtime::Runtime) and compares their outputs.
//!
//! Inputs are either the user's (an ONNX test-data folder) or generated from a seed so that they are valid for
//! the model: token ids stay below the row count of the table they index, other integer inputs (masks) are
//! ones, floats are N(0, 1), and symbolic dimensions get sizes that agree across the graph ([`inputs`]).
//! Models are run from memory: nothing is written to verify a rewrite.
//!
//! * [`sets`]: the input sets (generated, read, given); [`inputs`] generates them, [`testdata`] reads them;
//! * [`running`]: running models in the runtime a [`RuntimeChoice`] picks;
//! * [`judge`]: a reference's outputs computed once, candidates judged against them, whole or [`units`] by unit;
//! * [`report`] and [`compare`]: what a verification reports, output by output; [`drift`]: the stream's
//!   divergence after each unit of a function-changing rewrite.

mod compare;
mod drift;
mod inputs;
mod judge;
mod report;
mod running;
mod sets;
mod testdata;
mod units;

pub use compare::{Comparison, Tolerance, compare, cosine};
pub use drift::{DriftRow, drift_profile, probes};
pub use inputs::{DimSizes, generate_inputs, generate_inputs_within};
pub use judge::{Judge, verify_and_bisect, verify_pair, verify_reference, verify_runtimes};
pub use report::{RunReport, VerifyReport};
pub use running::{
    ModelRef, Outputs, PreparedModels, RuntimeChoice, first_that_runs, prepare_models, run_sets,
};
pub use sets::{InputSet, InputSource, input_sets};
pub use testdata::{TestData, load_test_data, read_tensor_file, test_data_sets, write_test_data};
pub use units::{Culprit, Cut, Figures, UnitRow, VerifyBy, cuts, first_differing};

pub use crate::runtime::Named;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// `auto` tried every runtime and none could run the models: why, runtime by runtime.
    #[error("no runtime can run the models: {0}")]
    NoRuntime(String),
    #[error("cannot read test data {path}: {reason}")]
    TestData { path: PathBuf, reason: String },
    #[error("{0}")]
    Inputs(String),
    #[error("the models disagree on their outputs: {0}")]
    OutputMismatch(String),
    #[error("the model cannot be encoded for a runtime: {0}")]
    Encode(#[from] crate::ir::ValidationError),
    #[error("the model cannot be cut into segments: {0}")]
    Segment(#[from] crate::ir::ExtractError),
}
