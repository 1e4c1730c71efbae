//! `normshift._native`, the Python package's native module (built by maturin from `pyproject.toml`; the
//! package's Python half is `src/python/normshift/`).
//!
//! Each function takes a model as the Python half hands it over — a path, or the serialized bytes (borrowed
//! from the Python `bytes` object, not copied) with the folder its external data lives in — and returns the
//! same JSON the command line's `--json` prints, built by the same code, plus the warnings loading gave. A
//! failure raises `NativeError(kind, message, report)`: the command line's one-line message, its kind
//! ([`ErrorKind`]) for the Python half to pick the exception class by, and the report when there is one. The
//! GIL is released while a model is loaded, rewritten or run.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use bytes::Bytes;
use clap::ValueEnum;
use prost::Message;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::Model;
use crate::cli::convert::{ConvertArgs, refusal_reason};
use crate::cli::verify::{InputArgs, RuntimeArg, ToleranceArgs, VerifyByArg};
use crate::cli::{ErrorKind, UsageError, analyze, inspect, one_line, verify};
use crate::convert::{Quiet, convert, convert_in_memory};
use crate::io::{PROTOBUF_LIMIT, SaveReport};
use crate::ir::text::TextOptions;
use crate::onnx::ModelProto;
use crate::verify::{ModelRef, Tolerance};

pyo3::create_exception!(
    _native,
    NativeError,
    PyException,
    "A failure: (kind, one-line message, report as JSON or None)."
);

/// The label of a model handed over as bytes, in messages and reports. Its folder is the one external data
/// resolves against.
const IN_MEMORY: &str = "<in memory>";

/// A failure on its way to Python.
struct Failure {
    kind: ErrorKind,
    message: String,
    report: Option<String>,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure {
            kind: ErrorKind::of(&e),
            message: one_line(&e),
            report: None,
        }
    }
}

impl Failure {
    fn usage(message: String) -> Self {
        anyhow::Error::new(UsageError(message)).into()
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        NativeError::new_err((f.kind.name(), f.message, f.report))
    }
}

/// A model as the Python half hands it over: the tuple `(path, bytes, base_dir)`.
#[derive(FromPyObject)]
struct Source {
    #[pyo3(item(0))]
    path: Option<PathBuf>,
    #[pyo3(item(1))]
    data: Option<Bytes>,
    #[pyo3(item(2))]
    base_dir: Option<PathBuf>,
}

impl Source {
    /// The path that labels the model; its folder is where external data is looked for.
    fn label(&self) -> PathBuf {
        match (&self.path, &self.base_dir) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) => dir.join(IN_MEMORY),
            (None, None) => PathBuf::from(IN_MEMORY),
        }
    }

    fn load(&self) -> Result<Model, Failure> {
        let loaded = match (&self.path, &self.data) {
            (Some(path), None) => crate::io::load(path),
            (None, Some(data)) => {
                let dir = self.base_dir.clone().unwrap_or_else(|| PathBuf::from("."));
                crate::io::load_bytes(data.clone(), &self.label(), &dir)
            }
            _ => return Err(Failure::usage("give a model as a path or as bytes".into())),
        };
        loaded.map_err(|e| anyhow::Error::new(e).into())
    }
}

fn json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| anyhow::Error::new(e).into())
}

/// Parses one of the command line's value names (`onnx`, `ort`, `auto`, `tract`).
fn value<T: ValueEnum>(what: &str, name: &str) -> Result<T, Failure> {
    T::from_str(name, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        Failure::usage(format!(
            "{what} `{name}` is not one of {}",
            names.join(", ")
        ))
    })
}

/// Where the inputs come from, as the command line's `--inputs`, `--seeds` and `--dim` say it.
fn input_args(
    inputs: Option<PathBuf>,
    seeds: Option<u64>,
    dims: HashMap<String, usize>,
) -> Result<InputArgs, Failure> {
    if inputs.is_some() && (seeds.is_some() || !dims.is_empty()) {
        return Err(Failure::usage(
            "inputs= names stored inputs: seeds= and dims= make generated ones; give one or the other".into(),
        ));
    }
    if seeds == Some(0) {
        return Err(Failure::usage("seeds= must be at least 1".into()));
    }
    Ok(InputArgs {
        inputs,
        seeds,
        dims: dims.into_iter().collect(),
    })
}

#[pyfunction]
fn analyze_model(py: Python<'_>, source: Source) -> PyResult<(String, String, Vec<String>)> {
    Ok(py.detach(|| -> Result<_, Failure> {
        let model = source.load()?;
        let analysis = crate::analysis::analyze_model(&model).map_err(anyhow::Error::new)?;
        Ok((
            json(&analysis)?,
            analyze::model_table(&analysis),
            model.warnings.clone(),
        ))
    })?)
}

#[pyfunction]
fn inspect_model(py: Python<'_>, source: Source) -> PyResult<String> {
    Ok(py.detach(|| -> Result<_, Failure> {
        let model = source.load()?;
        let summary = inspect::summary_json(&model, &source.label())?;
        json(&summary)
    })?)
}

#[pyfunction]
fn dump_model(py: Python<'_>, source: Source, node_names: bool) -> PyResult<(String, Vec<String>)> {
    Ok(py.detach(|| -> Result<_, Failure> {
        let model = source.load()?;
        Ok((
            model.to_text(TextOptions { node_names }),
            model.warnings.clone(),
        ))
    })?)
}

#[pyfunction]
fn list_passes() -> PyResult<String> {
    Ok(json(&inspect::passes_json())?)
}

/// What `convert` is asked to do, beside the model: the command line's options, by the same names.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct ConvertRequest {
    passes: Vec<String>,
    target: String,
    verify: bool,
    runtime: String,
    verify_by: String,
    inputs: Option<PathBuf>,
    seeds: Option<u64>,
    dims: HashMap<String, usize>,
    rtol: f64,
    atol: f64,
    allow_partial: bool,
    max_divergence: Option<f64>,
    calibration: Option<PathBuf>,
    hold_out_every: usize,
    stop_after: Option<String>,
    dump_ir: Option<PathBuf>,
    output: Option<PathBuf>,
    external_data: Option<String>,
    inline_data: bool,
    force: bool,
}

impl ConvertRequest {
    fn args(self, input: PathBuf) -> Result<ConvertArgs, Failure> {
        if self.output.is_none() && (self.external_data.is_some() || self.inline_data) {
            return Err(Failure::usage(
                "external_data= and inline_data= say how output= is written: give output= too"
                    .into(),
            ));
        }
        if self.external_data.is_some() && self.inline_data {
            return Err(Failure::usage(
                "external_data= and inline_data=True contradict each other".into(),
            ));
        }
        Ok(ConvertArgs {
            input,
            output: self.output.unwrap_or_else(|| PathBuf::from(IN_MEMORY)),
            passes: self.passes,
            force: self.force,
            external_data: self.external_data,
            inline_data: self.inline_data,
            target: value("target", &self.target)?,
            dump_ir: self.dump_ir,
            stop_after: self.stop_after,
            max_divergence: self.max_divergence,
            calibration: self.calibration,
            hold_out_every: self.hold_out_every,
            allow_partial: self.allow_partial,
            no_verify: !self.verify,
            runtime: value("runtime", &self.runtime)?,
            verify_by: value("verify_by", &self.verify_by)?,
            inputs: input_args(self.inputs, self.seeds, self.dims)?,
            tolerance: ToleranceArgs {
                rtol: self.rtol,
                atol: self.atol,
            },
            json: true,
        })
    }
}

#[pyfunction]
fn convert_model(
    py: Python<'_>,
    source: Source,
    request: ConvertRequest,
) -> PyResult<(Option<Py<PyBytes>>, String, Vec<String>)> {
    let in_memory = request.output.is_none();
    let args = request.args(source.label())?;
    let (converted, report, warnings) = py.detach(|| -> Result<_, Failure> {
        let options = args.options().map_err(anyhow::Error::new)?;
        options.check().map_err(anyhow::Error::new)?;
        let model = source.load()?;
        let (converted, mut report) = if in_memory {
            let (result, report) =
                convert_in_memory(&model, &args.input, &args.output, &options, &mut Quiet)
                    .map_err(anyhow::Error::new)?;
            // Tensors that were external stay so (the proto keeps their entries): the size is the model's own.
            let proto = result.to_proto().map_err(anyhow::Error::new)?;
            (Some(Box::new(proto)), report)
        } else {
            let report = convert(&model, &args.input, &args.output, &options, &mut Quiet)
                .map_err(anyhow::Error::new)?;
            (None, report)
        };
        if let Some(refusal) = &report.refusal {
            return Err(Failure {
                kind: ErrorKind::Verification,
                message: format!(
                    "{}; {}",
                    refusal_reason(refusal),
                    if in_memory {
                        "no model was returned".to_string()
                    } else {
                        format!("{} was not written", args.output.display())
                    }
                ),
                report: Some(json(&report)?),
            });
        }
        if let Some(proto) = &converted {
            let size = proto.encoded_len();
            if size as u64 > PROTOBUF_LIMIT {
                return Err(Failure::usage(format!(
                    "the result is {size} bytes, over protobuf's 2 GiB limit: give output= to write it with \
                     external data"
                )));
            }
            report.written = true;
            report.file = Some(SaveReport {
                model_bytes: size as u64,
                data_file: None,
                data_bytes: 0,
            });
        }
        Ok((converted, json(&report)?, model.warnings.clone()))
    })?;
    // The result in memory, encoded into a Python `bytes` object; none when it was written to `output`.
    let bytes = converted.map(|proto| encode(py, &proto)).transpose()?;
    Ok((bytes, report, warnings))
}

/// Encodes `proto` straight into a new Python `bytes` object (no intermediate buffer).
fn encode(py: Python<'_>, proto: &ModelProto) -> PyResult<Py<PyBytes>> {
    let bytes = PyBytes::new_with(py, proto.encoded_len(), |mut buf: &mut [u8]| {
        proto
            .encode(&mut buf)
            .map_err(|e| Failure::from(anyhow::Error::new(e)).into())
    })?;
    Ok(bytes.unbind())
}

/// The second model, stored outputs or runtimes `verify` compares against.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct VerifyRequest {
    other_path: Option<PathBuf>,
    other_data: Option<Bytes>,
    other_base_dir: Option<PathBuf>,
    reference: Option<PathBuf>,
    runtime: Vec<String>,
    verify_by: String,
    bisect: bool,
    inputs: Option<PathBuf>,
    seeds: Option<u64>,
    dims: HashMap<String, usize>,
    rtol: f64,
    atol: f64,
}

#[pyfunction]
fn verify_models(
    py: Python<'_>,
    source: Source,
    request: VerifyRequest,
) -> PyResult<(String, Vec<String>)> {
    let a = source;
    let b = (request.other_path.is_some() || request.other_data.is_some()).then(|| Source {
        path: request.other_path,
        data: request.other_data,
        base_dir: request.other_base_dir,
    });
    let runtimes: Vec<RuntimeArg> = request
        .runtime
        .iter()
        .map(|r| value("runtime", r))
        .collect::<Result<_, _>>()?;
    let inputs = input_args(request.inputs, request.seeds, request.dims)?;
    let tolerance = Tolerance {
        rtol: request.rtol,
        atol: request.atol,
        ..Tolerance::default()
    };
    let reference = request.reference;
    let by: VerifyByArg = value("verify_by", &request.verify_by)?;
    let bisect = request.bisect;
    Ok(py.detach(|| -> Result<_, Failure> {
        let a_model = a.load()?;
        let a_label = a.label();
        let mut warnings = a_model.warnings.clone();
        let b_model = b.as_ref().map(Source::load).transpose()?;
        let b_label = b.as_ref().map(Source::label);
        if let Some(m) = &b_model {
            warnings.extend(m.warnings.iter().cloned());
        }
        let a_ref = ModelRef::loaded(&a_model, &a_label);
        let b_ref = b_model
            .as_ref()
            .zip(b_label.as_deref())
            .map(|(m, label)| ModelRef::loaded(m, label));
        let report = verify::compare(
            &a_ref,
            b_ref.as_ref(),
            reference.as_deref(),
            &runtimes,
            &inputs,
            tolerance,
            (by.into(), bisect),
        )?;
        Ok((json(&report)?, warnings))
    })?)
}

/// Tells the onnxruntime runtime which Python to find the `onnxruntime` package in (this one), unless
/// `ORT_DYLIB_PATH` or `PYTHON` say otherwise.
#[pyfunction]
fn set_python(executable: PathBuf) {
    crate::runtime::set_default_python(executable);
}

/// The `normshift` command: runs the command line on `argv` (the program name first) and returns its exit
/// status.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(|| crate::cli::main(argv))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(analyze_model, m)?)?;
    m.add_function(wrap_pyfunction!(inspect_model, m)?)?;
    m.add_function(wrap_pyfunction!(dump_model, m)?)?;
    m.add_function(wrap_pyfunction!(list_passes, m)?)?;
    m.add_function(wrap_pyfunction!(convert_model, m)?)?;
    m.add_function(wrap_pyfunction!(verify_models, m)?)?;
    m.add_function(wrap_pyfunction!(set_python, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    Ok(())
}
