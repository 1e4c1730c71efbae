//! onnxruntime through the `ort` crate, loaded at run time (`load-dynamic`): nothing is downloaded or linked at
//! build time. The shared library is `ORT_DYLIB_PATH` when set, or else the one inside the `onnxruntime` Python
//! package (`onnxruntime/capi/libonnxruntime.so.*`, which pip's wheels ship).
//!
//! Sessions run with every graph optimization off, so that the file is judged, not onnxruntime's rewrite of it.
//! Models come from memory; their external data is found through the session option that names its folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use half::{bf16, f16};
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use super::guard::contain;
use super::{
    ModelSource, Named, Prepared, Runtime, RuntimeError, RuntimeKind, Stage, TensorData, Values,
};

/// The environment variable naming the onnxruntime shared library.
pub const DYLIB_VAR: &str = "ORT_DYLIB_PATH";

/// The onnxruntime session option naming the folder external data is relative to, for models from memory.
const EXTERNAL_FOLDER_KEY: &str = "session.model_external_initializers_file_folder_path";

pub struct Ort {
    env: &'static Environment,
}

fn unavailable(reason: String) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: RuntimeKind::Ort,
        reason,
    }
}

/// How to get the library, said once wherever it is missing.
const HOW_TO_GET_IT: &str = "set ORT_DYLIB_PATH to libonnxruntime.so, or `pip install onnxruntime` for the python3 \
     on PATH (or the one $PYTHON names)";

/// The Python to look for the `onnxruntime` package in when `PYTHON` is not set (else `python3` on PATH): the
/// Python package sets its own interpreter, so that a model converted from Python is judged by the
/// onnxruntime installed beside it.
static DEFAULT_PYTHON: OnceLock<PathBuf> = OnceLock::new();

/// Sets the Python that [`find_library`] asks when `PYTHON` is not set; only the first call counts.
pub fn set_default_python(executable: PathBuf) {
    let _first_only = DEFAULT_PYTHON.set(executable);
}

/// The library to load: `ORT_DYLIB_PATH`, or the `onnxruntime` Python package's.
pub fn find_library() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(DYLIB_VAR).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{DYLIB_VAR} is {}, which is not a file",
                path.display()
            ))
        };
    }
    let python = std::env::var_os("PYTHON")
        .or_else(|| DEFAULT_PYTHON.get().map(|p| p.clone().into_os_string()))
        .unwrap_or_else(|| "python3".into());
    // find_spec locates the package without importing it (which would load the library and take seconds).
    let found = Command::new(&python)
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ])
        .output();
    let package = match found {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => String::new(),
    };
    if package.is_empty() {
        return Err(format!(
            "no onnxruntime library found: {DYLIB_VAR} is not set and {} has no onnxruntime package; {HOW_TO_GET_IT}",
            Path::new(&python).display()
        ));
    }
    let capi = Path::new(&package).join("capi");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&capi)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    // The versioned file (libonnxruntime.so.1.32.0) is the library itself; prefer it to a symlink.
    candidates.sort_by_key(|p| std::cmp::Reverse(p.to_string_lossy().len()));
    candidates.into_iter().next().ok_or_else(|| {
        format!(
            "{} holds no libonnxruntime.so*; {HOW_TO_GET_IT}",
            capi.display()
        )
    })
}

/// The process's one onnxruntime environment (the library can be loaded once per process).
fn environment() -> Result<&'static Environment, String> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = find_library()?;
        let loaded = contain(|| -> Result<Environment, String> {
            let builder =
                ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
            let env = builder
                .with_name("normshift")
                .build()
                .map_err(|e| format!("starting onnxruntime from {}: {e}", lib.display()))?;
            // onnxruntime logs a failing kernel to stderr before returning its status; the status is what we
            // report, in one line, so its own log stays quiet.
            env.set_log_level(LogLevel::Fatal);
            Ok(env)
        });
        loaded.and_then(|r| r)
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl Ort {
    pub fn open() -> Result<Ort, RuntimeError> {
        environment().map(|env| Ort { env }).map_err(unavailable)
    }
}

fn failure(model: &str, stage: Stage, message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Failed {
        runtime: RuntimeKind::Ort,
        model: model.into(),
        stage,
        message: message.to_string().replace('\n', " "),
    }
}

impl Runtime for Ort {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Ort
    }

    fn prepare(
        &self,
        model: &ModelSource,
        _inputs: &[Named],
    ) -> Result<Box<dyn Prepared>, RuntimeError> {
        let label = model.label.as_str();
        let session = contain(|| -> Result<Session, RuntimeError> {
            let fail = |e: ort::Error<ort::session::builder::SessionBuilder>| {
                failure(label, Stage::Load, e)
            };
            let mut builder = Session::builder(self.env)
                .map_err(|e| failure(label, Stage::Load, e))?
                .with_optimization_level(GraphOptimizationLevel::Disable)
                .map_err(fail)?
                .with_config_entry(EXTERNAL_FOLDER_KEY, model.dir.to_string_lossy())
                .map_err(fail)?;
            builder
                .commit_from_memory(&model.bytes)
                .map_err(|e| failure(label, Stage::Load, e))
        })
        .map_err(|panic| failure(label, Stage::Load, panic))??;
        Ok(Box::new(OrtModel {
            label: model.label.clone(),
            input_names: model.input_names.clone(),
            output_names: model.output_names.clone(),
            session,
        }))
    }
}

struct OrtModel {
    label: String,
    input_names: Vec<String>,
    output_names: Vec<String>,
    session: Session,
}

impl Prepared for OrtModel {
    fn run(&mut self, inputs: &[Named]) -> Result<Vec<Named>, RuntimeError> {
        let label = self.label.clone();
        let fail = |m: String| failure(&label, Stage::Run, m);
        if inputs.len() != self.input_names.len() {
            return Err(fail(format!(
                "it takes {} inputs, {} were given",
                self.input_names.len(),
                inputs.len()
            )));
        }
        let mut feed: Vec<(String, SessionInputValue<'static>)> = Vec::with_capacity(inputs.len());
        for (name, input) in self.input_names.iter().zip(inputs) {
            feed.push((name.clone(), to_ort(&input.tensor).map_err(&fail)?.into()));
        }
        let output_names = self.output_names.clone();
        let session = &mut self.session;
        contain(move || -> Result<Vec<Named>, String> {
            let outputs = session.run(feed).map_err(|e| e.to_string())?;
            output_names
                .iter()
                .map(|name| {
                    let value = outputs
                        .get(name.as_str())
                        .ok_or_else(|| format!("no output named `{name}`"))?;
                    Ok(Named {
                        name: name.clone(),
                        tensor: from_ort(value).map_err(|e| format!("output `{name}`: {e}"))?,
                    })
                })
                .collect()
        })
        .map_err(&fail)?
        .map_err(fail)
    }
}

fn dims(t: &TensorData) -> Vec<i64> {
    t.shape().iter().map(|&d| d as i64).collect()
}

fn to_ort(t: &TensorData) -> Result<DynValue, String> {
    let shape = dims(t);
    let e = |e: ort::Error| e.to_string();
    Ok(match t.values() {
        Values::F32(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::F64(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::F16(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::Bf16(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::I64(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::I32(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::I8(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::U8(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
        Values::Bool(v) => Tensor::from_array((shape, v.clone()))
            .map_err(e)?
            .into_dyn(),
    })
}

fn from_ort(value: &DynValue) -> Result<TensorData, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("not a tensor but {}", value.dtype()));
    };
    fn get<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> Result<(Vec<usize>, Vec<T>), String> {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("a dimension of {d}")))
            .collect::<Result<_, _>>()?;
        Ok((shape, data.to_vec()))
    }
    let (shape, values) = match ty {
        TensorElementType::Float32 => get::<f32>(value).map(|(s, v)| (s, Values::F32(v)))?,
        TensorElementType::Float64 => get::<f64>(value).map(|(s, v)| (s, Values::F64(v)))?,
        TensorElementType::Float16 => get::<f16>(value).map(|(s, v)| (s, Values::F16(v)))?,
        TensorElementType::Bfloat16 => get::<bf16>(value).map(|(s, v)| (s, Values::Bf16(v)))?,
        TensorElementType::Int64 => get::<i64>(value).map(|(s, v)| (s, Values::I64(v)))?,
        TensorElementType::Int32 => get::<i32>(value).map(|(s, v)| (s, Values::I32(v)))?,
        TensorElementType::Int8 => get::<i8>(value).map(|(s, v)| (s, Values::I8(v)))?,
        TensorElementType::Uint8 => get::<u8>(value).map(|(s, v)| (s, Values::U8(v)))?,
        TensorElementType::Bool => get::<bool>(value).map(|(s, v)| (s, Values::Bool(v)))?,
        // Other integer widths: widened to i64, which holds every value of theirs.
        TensorElementType::Int16 => get::<i16>(value).map(|(s, v)| (s, widen(v)))?,
        TensorElementType::Uint16 => get::<u16>(value).map(|(s, v)| (s, widen(v)))?,
        TensorElementType::Uint32 => get::<u32>(value).map(|(s, v)| (s, widen(v)))?,
        other => return Err(format!("element type {other:?} is not compared here")),
    };
    TensorData::new(shape, values)
}

fn widen<T: Into<i64>>(v: Vec<T>) -> Values {
    Values::I64(v.into_iter().map(Into::into).collect())
}
