//! `normshift._native`, the Python package's native module (built by maturin from `pyproject.toml`; the
//! package's Python half is `src/python/normshift/`).
//!
//! Each function takes a model as the Python half hands it over — a path, or the serialized bytes (borrowed
//! from the Python `bytes` object, not copied) with the folder its external data lives in — and returns the
//! same JSON the command line's `--json` prints: the library API's reports (`crate::api`), which both front ends
//! call. A failure raises `NativeError(kind, message, report)`: the error's one-line message, its kind
//! ([`ErrorKind`]) for the Python half to pick the exception class by, and the report when there is one. The
//! GIL is released while a model is loaded, rewritten or run.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use bytes::Bytes;
use prost::Message;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::Model;
use crate::api::{
    self, ConvertRequest, ErrorKind, InputsRequest, OutputLayout, RuntimeRequest, VerifyRequest,
};
use crate::convert::Quiet;
use crate::io::{PROTOBUF_LIMIT, SaveReport};
use crate::onnx::ModelProto;
use crate::passes::Target;
use crate::runtime::RuntimeKind;
use crate::verify::{ModelRef, RuntimeChoice, Tolerance, VerifyBy};

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

impl From<api::Error> for Failure {
    fn from(e: api::Error) -> Self {
        let remedy = match e.remedy() {
            Some(api::Remedy::Force) => "; pass force=True to allow it",
            None => "",
        };
        Failure {
            kind: e.kind(),
            message: format!("{}{remedy}", one_line(&e)),
            report: None,
        }
    }
}

impl Failure {
    fn usage(message: String) -> Self {
        api::Error::Usage(message).into()
    }

    /// A failure of normshift's own making (a report that does not serialize): no class of its own.
    fn other(e: impl std::fmt::Display) -> Self {
        Failure {
            kind: ErrorKind::Other,
            message: e.to_string(),
            report: None,
        }
    }
}

/// An error as one line: each cause once, even when a message already ends with its source's text.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
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
        Ok(match (&self.path, &self.data) {
            (Some(path), None) => api::load(path)?,
            (None, Some(data)) => {
                let dir = self.base_dir.clone().unwrap_or_else(|| PathBuf::from("."));
                api::load_bytes(data.clone(), &self.label(), &dir)?
            }
            _ => return Err(Failure::usage("give a model as a path or as bytes".into())),
        })
    }
}

fn json(value: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(Failure::other)
}

/// One of the names a keyword argument takes (`target="ort"`), or a usage error listing them.
fn value<T: Copy>(what: &str, name: &str, names: &[(&str, T)]) -> Result<T, Failure> {
    names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let listed: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            Failure::usage(format!(
                "{what} `{name}` is not one of {}",
                listed.join(", ")
            ))
        })
}

const TARGETS: &[(&str, Target)] = &[("onnx", Target::Onnx), ("ort", Target::Ort)];
const RUNTIMES: &[(&str, RuntimeChoice)] = &[
    ("auto", RuntimeChoice::Auto),
    ("tract", RuntimeChoice::Only(RuntimeKind::Tract)),
    ("ort", RuntimeChoice::Only(RuntimeKind::Ort)),
];
const VERIFY_BY: &[(&str, VerifyBy)] = &[
    ("auto", VerifyBy::Auto),
    ("unit", VerifyBy::Unit),
    ("model", VerifyBy::Model),
];

/// Where the inputs come from: `inputs=`, `seeds=` and `dims=`.
fn inputs_request(
    inputs: Option<PathBuf>,
    seeds: Option<u64>,
    dims: HashMap<String, usize>,
) -> InputsRequest {
    InputsRequest {
        inputs,
        seeds,
        dims: dims.into_iter().collect(),
    }
}

#[pyfunction]
fn analyze_model(py: Python<'_>, source: Source) -> PyResult<(String, String, Vec<String>)> {
    Ok(py.detach(|| -> Result<_, Failure> {
        let model = source.load()?;
        let analysis = api::analyze(&model)?;
        Ok((json(&analysis)?, analysis.table(), model.warnings.clone()))
    })?)
}

#[pyfunction]
fn inspect_model(py: Python<'_>, source: Source) -> PyResult<String> {
    Ok(py.detach(|| -> Result<_, Failure> {
        let model = source.load()?;
        json(&api::inspect(&model, &source.label())?)
    })?)
}

#[pyfunction]
fn dump_model(py: Python<'_>, source: Source, node_names: bool) -> PyResult<(String, Vec<String>)> {
    Ok(py.detach(|| -> Result<_, Failure> {
        let model = source.load()?;
        Ok((api::dump(&model, node_names), model.warnings.clone()))
    })?)
}

#[pyfunction]
fn list_passes() -> PyResult<String> {
    Ok(json(&api::passes())?)
}

/// What `convert` is asked to do, beside the model: the keyword arguments of `normshift.convert`.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct ConvertCall {
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

impl ConvertCall {
    fn request(self) -> Result<ConvertRequest, Failure> {
        if self.output.is_none() && (self.external_data.is_some() || self.inline_data) {
            return Err(Failure::usage(
                "external_data= and inline_data= say how output= is written: give output= too"
                    .into(),
            ));
        }
        let layout = match (self.external_data, self.inline_data) {
            (Some(_), true) => {
                return Err(Failure::usage(
                    "external_data= and inline_data=True contradict each other".into(),
                ));
            }
            (Some(location), false) => OutputLayout::External(Some(location)),
            (None, true) => OutputLayout::Inline,
            (None, false) => OutputLayout::Keep,
        };
        Ok(ConvertRequest {
            passes: self.passes,
            target: value("target", &self.target, TARGETS)?,
            verify: self.verify,
            runtime: value("runtime", &self.runtime, RUNTIMES)?,
            verify_by: value("verify_by", &self.verify_by, VERIFY_BY)?,
            inputs: inputs_request(self.inputs, self.seeds, self.dims),
            tolerance: Tolerance {
                rtol: self.rtol,
                atol: self.atol,
                ..Tolerance::default()
            },
            allow_partial: self.allow_partial,
            max_divergence: self.max_divergence,
            calibration: self.calibration,
            hold_out_every: self.hold_out_every,
            stop_after: self.stop_after,
            dump_ir: self.dump_ir,
            layout,
            force: self.force,
        })
    }
}

#[pyfunction]
fn convert_model(
    py: Python<'_>,
    source: Source,
    call: ConvertCall,
) -> PyResult<(Option<Py<PyBytes>>, String, Vec<String>)> {
    let output = call.output.clone();
    let input = source.label();
    let request = call.request()?;
    let (converted, report, warnings) = py.detach(|| -> Result<_, Failure> {
        request.options()?;
        let model = source.load()?;
        let (converted, mut report) = match &output {
            None => {
                let label = PathBuf::from(IN_MEMORY);
                let (result, report) =
                    api::convert_in_memory(&model, &input, &label, &request, &mut Quiet)?;
                // Tensors that were external stay so (the proto keeps their entries): the size is the model's own.
                let proto = result.to_proto().map_err(api::Error::from)?;
                (Some(Box::new(proto)), report)
            }
            Some(path) => (
                None,
                api::convert(&model, &input, path, &request, &mut Quiet)?,
            ),
        };
        if let Some(refusal) = &report.refusal {
            return Err(Failure {
                kind: ErrorKind::Verification,
                message: format!(
                    "{}; {}",
                    refusal.reason(),
                    match &output {
                        None => "no model was returned".to_string(),
                        Some(path) => format!("{} was not written", path.display()),
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
        proto.encode(&mut buf).map_err(|e| Failure::other(e).into())
    })?;
    Ok(bytes.unbind())
}

/// The second model, stored outputs or runtimes `verify` compares against: the keyword arguments of
/// `normshift.verify`.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct VerifyCall {
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
    request: VerifyCall,
) -> PyResult<(String, Vec<String>)> {
    let a = source;
    let b = (request.other_path.is_some() || request.other_data.is_some()).then(|| Source {
        path: request.other_path,
        data: request.other_data,
        base_dir: request.other_base_dir,
    });
    let runtime = match &request.runtime[..] {
        [one] => RuntimeRequest::Choice(value("runtime", one, RUNTIMES)?),
        [first, second] => {
            let kind = |name: &str| match value("runtime", name, RUNTIMES)? {
                RuntimeChoice::Only(kind) => Ok(kind),
                RuntimeChoice::Auto => Err(Failure::usage(
                    "two runtimes are named: (\"tract\", \"ort\") or (\"ort\", \"tract\")".into(),
                )),
            };
            RuntimeRequest::Both {
                reference: kind(first)?,
                other: kind(second)?,
            }
        }
        _ => {
            return Err(Failure::usage(
                "runtime= names one runtime, or two to run one model in both".into(),
            )
            .into());
        }
    };
    let verify_request = VerifyRequest {
        runtime,
        by: value("verify_by", &request.verify_by, VERIFY_BY)?,
        bisect: request.bisect,
        inputs: inputs_request(request.inputs, request.seeds, request.dims),
        tolerance: Tolerance {
            rtol: request.rtol,
            atol: request.atol,
            ..Tolerance::default()
        },
    };
    let reference = request.reference;
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
        let report = api::verify(
            &a_ref,
            b_ref.as_ref(),
            reference.as_deref(),
            &verify_request,
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

/// The `normshift` command: runs the program on `argv` (the program name first) and returns its exit status.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(|| crate::main(argv))
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
