//! `run`, `extract` and `diff`: one run of a model, a part of a model as a model, what a rewrite changed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Error;
use super::verify::InputsRequest;
use crate::Model;
use crate::analysis::facts::extract_typed;
use crate::io::{SaveOptions, SaveReport, save};
use crate::ir::diff::GraphDiff;
use crate::runtime::{ElemType, RuntimeKind};
use crate::verify::{
    DimSizes, InputSet, ModelRef, Named, RuntimeChoice, first_that_runs, generate_inputs,
    load_test_data, write_test_data,
};

/// Shape and simple statistics of one tensor, as `run` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    pub name: String,
    pub r#type: ElemType,
    pub shape: Vec<usize>,
    pub mean: f64,
    pub std: f64,
    /// The first four values.
    pub first: Vec<f64>,
}

impl TensorSummary {
    fn of(t: &Named) -> TensorSummary {
        let values = t.tensor.to_f64();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        TensorSummary {
            name: t.name.clone(),
            r#type: t.tensor.elem_type(),
            shape: t.tensor.shape().to_vec(),
            mean,
            std,
            first: values.iter().take(4).copied().collect(),
        }
    }
}

/// What `run` did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub model: PathBuf,
    pub runtime: RuntimeKind,
    /// Why `runtime` ran it, when it was not the first choice.
    pub runtime_note: Option<String>,
    pub inputs: Vec<TensorSummary>,
    pub outputs: Vec<TensorSummary>,
    /// The test-data folder the inputs and outputs were written into.
    pub written: Option<PathBuf>,
}

/// Runs `model` (read from `path`) once on stored inputs or on the inputs generated from `seed`, and writes
/// them and its outputs into `output` (ONNX test-data layout) when given.
pub fn run(
    model: &Model,
    path: &Path,
    inputs: &InputsRequest,
    seed: u64,
    runtime: RuntimeChoice,
    output: Option<&Path>,
) -> Result<RunReport, Error> {
    inputs.check()?;
    let inputs = match &inputs.inputs {
        Some(dir) => load_test_data(dir)?.inputs,
        None => {
            let mut dims = DimSizes {
                by_name: inputs.dims.iter().cloned().collect(),
                ..Default::default()
            };
            generate_inputs(model, seed, &mut dims)?
        }
    };
    let sets = [InputSet {
        label: "inputs".into(),
        inputs,
    }];
    let ran = first_that_runs(runtime, &ModelRef::loaded(model, path), &sets)?;
    let outputs = ran.sets.into_iter().next().unwrap_or_default();
    let [InputSet { inputs, .. }] = sets;
    if let Some(dir) = output {
        write_test_data(dir, &inputs, &outputs)?;
    }
    Ok(RunReport {
        model: path.into(),
        runtime: ran.runtime,
        runtime_note: ran.note,
        inputs: inputs.iter().map(TensorSummary::of).collect(),
        outputs: outputs.iter().map(TensorSummary::of).collect(),
        written: output.map(Path::to_path_buf),
    })
}

/// What `extract` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    pub model: PathBuf,
    pub output: PathBuf,
    pub nodes: usize,
    pub initializers: usize,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// `from` values that were computed in the model (the others were its graph inputs).
    pub added_inputs: Vec<String>,
    /// Graph inputs of the model the outputs need that `from` did not name.
    pub implied_inputs: Vec<String>,
    /// `from` values no output depends on.
    pub unread_inputs: Vec<String>,
    /// Inputs or outputs whose element type or rank neither the model nor inference knows (the official
    /// checker refuses such a model; runtimes take it).
    pub untyped: Vec<String>,
    pub file: SaveReport,
}

/// Writes the part of `model` (read from `path`) that computes `to` from `from` as a model of its own.
pub fn extract(
    model: &Model,
    path: &Path,
    from: &[String],
    to: &[String],
    output: &Path,
) -> Result<ExtractReport, Error> {
    let (part, untyped) = extract_typed(model, from, to)?;
    let file = save(&part.graph, output, &SaveOptions::default())?;
    let g = &part.graph.graph;
    let names = |ids: &[crate::ir::ValueId]| -> Vec<String> {
        ids.iter().map(|v| g.value(*v).name.clone()).collect()
    };
    Ok(ExtractReport {
        model: path.into(),
        output: output.into(),
        nodes: g.op_count(),
        initializers: g.initializers.len(),
        inputs: names(&g.runtime_inputs().collect::<Vec<_>>()),
        outputs: names(&g.outputs),
        added_inputs: part.added_inputs,
        implied_inputs: part.implied_inputs,
        unread_inputs: part.unread_inputs,
        untyped,
        file,
    })
}

/// What changed from `a` to `b`, matched by structure, not by names or order.
pub fn diff(a: &Model, b: &Model) -> GraphDiff {
    crate::ir::diff::diff(&a.graph, &b.graph)
}
