//! Runtimes that execute models: tract (built in) and onnxruntime (loaded at run time from a shared library).
//!
//! A [`Runtime`] takes a model from memory — the serialized `ModelProto` plus the folder its external data is
//! relative to — prepares it for one set of input shapes, and runs it on named [`TensorData`]. Nothing of either
//! runtime's own types crosses this boundary, so verification, `run` and `bench` work with either, and a panic
//! inside a runtime comes back as that runtime's [`RuntimeError`], never as a crash of the process.

pub mod conformance;
#[cfg_attr(not(any(feature = "tract", feature = "onnxruntime")), allow(dead_code))]
mod guard;
#[cfg(feature = "onnxruntime")]
mod ort;
#[cfg(feature = "tract")]
mod tract;
mod value;

use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;

pub use value::{ElemType, Named, TensorData, Values};

use crate::ir::Model;

/// Sets the Python whose `onnxruntime` package supplies the library when neither `ORT_DYLIB_PATH` nor `PYTHON`
/// is set (the Python package passes its own interpreter).
#[cfg(feature = "onnxruntime")]
pub fn set_default_python(executable: PathBuf) {
    ort::set_default_python(executable);
}

/// Which runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Tract,
    #[serde(rename = "onnxruntime")]
    Ort,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Tract, RuntimeKind::Ort];

    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Tract => "tract",
            RuntimeKind::Ort => "onnxruntime",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A runtime could not be had, or could not load, prepare or run a model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime} is not available: {reason}")]
    Unavailable {
        runtime: RuntimeKind,
        reason: String,
    },
    /// The message is the runtime's own, which names the failing node where the runtime knows it.
    #[error("{runtime} cannot {stage} {model}: {message}")]
    Failed {
        runtime: RuntimeKind,
        model: String,
        stage: Stage,
        message: String,
    },
}

impl RuntimeError {
    pub fn runtime(&self) -> RuntimeKind {
        match self {
            RuntimeError::Unavailable { runtime, .. } | RuntimeError::Failed { runtime, .. } => {
                *runtime
            }
        }
    }
}

/// The step of running a model that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Load,
    Prepare,
    Run,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Load => "load",
            Stage::Prepare => "prepare",
            Stage::Run => "run",
        })
    }
}

/// A model as a runtime takes it: the encoded `ModelProto` and the folder its external data lives in.
pub struct ModelSource {
    /// How messages name the model (its path, or a description of an in-memory model).
    pub label: String,
    pub bytes: bytes::Bytes,
    pub dir: PathBuf,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
    /// The model with its model-local functions' calls replaced by their bodies, when it calls any: for a
    /// runtime that cannot run functions (tract), it computes the same.
    pub inlined: Option<bytes::Bytes>,
    /// How it quantizes activations: where the runtimes depart from the specification ([`conformance`]).
    pub quantization: crate::analysis::quantized::ActivationQuantization,
}

impl ModelSource {
    /// Encodes `model`, whose external tensors are relative to `dir` (the folder it was loaded from).
    pub fn new(
        model: &Model,
        dir: &Path,
        label: impl Into<String>,
    ) -> Result<ModelSource, crate::ir::ValidationError> {
        let g = &model.graph;
        let encode = |m: &Model| -> Result<bytes::Bytes, crate::ir::ValidationError> {
            let mut proto = m.to_proto()?;
            // Weights read from the model's file stay there: the runtime reads them itself, once.
            if let Some(source) = &m.source_file {
                crate::io::refer_to_source(&mut proto, source, dir);
            }
            Ok(proto.encode_to_vec().into())
        };
        Ok(ModelSource {
            label: label.into(),
            bytes: encode(model)?,
            dir: dir.into(),
            input_names: g
                .runtime_inputs()
                .map(|v| g.value(v).name.clone())
                .collect(),
            output_names: g.outputs.iter().map(|&v| g.value(v).name.clone()).collect(),
            inlined: model
                .inline_functions()?
                .map(|(m, _)| encode(&m))
                .transpose()?,
            quantization: crate::analysis::quantized::activation_quantization(g),
        })
    }
}

/// An engine that runs ONNX models.
pub trait Runtime {
    fn kind(&self) -> RuntimeKind;

    /// Loads `model` and prepares it for inputs of exactly the types and shapes of `inputs` (tract needs
    /// concrete shapes before it optimizes; onnxruntime takes them as they come).
    fn prepare(
        &self,
        model: &ModelSource,
        inputs: &[Named],
    ) -> Result<Box<dyn Prepared>, RuntimeError>;
}

/// A model ready to run.
pub trait Prepared {
    /// Runs on `inputs` (in the model's input order); outputs come back in the model's output order, named.
    fn run(&mut self, inputs: &[Named]) -> Result<Vec<Named>, RuntimeError>;
}

/// The runtime of `kind`, if this build has it and (for onnxruntime) its shared library can be found and loaded.
pub fn open(kind: RuntimeKind) -> Result<Box<dyn Runtime>, RuntimeError> {
    match kind {
        #[cfg(feature = "tract")]
        RuntimeKind::Tract => Ok(Box::new(tract::Tract)),
        #[cfg(feature = "onnxruntime")]
        RuntimeKind::Ort => Ok(Box::new(ort::Ort::open()?)),
        #[allow(unreachable_patterns)]
        kind => Err(RuntimeError::Unavailable {
            runtime: kind,
            reason: format!(
                "this build of normshift has no {kind} (cargo feature `{}`)",
                match kind {
                    RuntimeKind::Tract => "tract",
                    RuntimeKind::Ort => "onnxruntime",
                }
            ),
        }),
    }
}

/// Where the onnxruntime shared library would be loaded from, or why none was found (for messages and tests).
pub fn onnxruntime_library() -> Result<PathBuf, String> {
    #[cfg(feature = "onnxruntime")]
    {
        ort::find_library()
    }
    #[cfg(not(feature = "onnxruntime"))]
    {
        Err("this build of normshift has no onnxruntime (cargo feature `onnxruntime`)".into())
    }
}
