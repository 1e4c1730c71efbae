//! The library's API: each command's work as a function of a typed request, returning a typed report, or an
//! [`Error`] that says what kind of failure it is. The command line (`src/cli`) and the Python module
//! (`src/python`) are two thin front ends over it: they turn their arguments into these requests, call, and
//! print or hand back the reports. The requests carry the defaults and the policy (which inputs verify a
//! calibrated conversion, how many input sets a verification makes, what contradicts what).

mod convert;
mod error;
mod run;
mod verify;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use convert::{ConvertRequest, OutputLayout, convert, convert_in_memory};
pub use error::{Error, ErrorKind, Remedy};
pub use run::{ExtractReport, RunReport, TensorSummary, diff, extract, run};
pub use verify::{InputsRequest, RuntimeRequest, VerifyRequest, verify};

use crate::Model;
use crate::analysis::ModelAnalysis;
use crate::passes::PassClass;
use crate::summary::Summary;

/// Reads a model file (tensor data stays in the file's memory map).
pub fn load(path: &Path) -> Result<Model, Error> {
    Ok(crate::io::load(path)?)
}

/// Reads a model held in memory; `label` names it in messages and reports, `dir` is where its external data
/// lives.
pub fn load_bytes(data: bytes::Bytes, label: &Path, dir: &Path) -> Result<Model, Error> {
    Ok(crate::io::load_bytes(data, label, dir)?)
}

/// What `inspect` reports: the model's summary and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: PathBuf,
    #[serde(flatten)]
    pub summary: Summary,
}

pub fn inspect(model: &Model, path: &Path) -> Result<Inspection, Error> {
    Ok(Inspection {
        path: path.into(),
        summary: model.summary()?,
    })
}

/// Every norm and residual unit, in the main graph, every subgraph body and through model-local functions.
pub fn analyze(model: &Model) -> Result<ModelAnalysis, Error> {
    Ok(crate::analysis::analyze_model(model)?)
}

/// The model in its stable text form.
pub fn dump(model: &Model, node_names: bool) -> String {
    model.to_text(crate::ir::text::TextOptions { node_names })
}

/// One pass of the catalogue, as `passes` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PassInfo {
    pub name: &'static str,
    pub class: PassClass,
    pub description: &'static str,
}

/// The passes a conversion accepts, in the catalogue's order.
pub fn passes() -> Vec<PassInfo> {
    crate::passes::catalogue()
        .iter()
        .map(|p| PassInfo {
            name: p.name(),
            class: p.class(),
            description: p.description(),
        })
        .collect()
}
