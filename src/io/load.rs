//! Loading a model file into the IR.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::external::{self, ExternalDataError};
use crate::ir::{Model, ValidationError};
use crate::onnx::ModelProto;
use crate::tensor::{TensorError, check_length};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(PathBuf),
    #[error("{path} is not an ONNX model: {reason}")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    External {
        path: PathBuf,
        source: ExternalDataError,
    },
    #[error("{path}: {source}")]
    Tensor { path: PathBuf, source: TensorError },
    #[error("{path}: invalid graph: {source}")]
    Invalid {
        path: PathBuf,
        source: ValidationError,
    },
}

/// Reads, decodes and imports a model file. Tensor data stays in the file's memory map.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    let io = |source| LoadError::Io {
        path: path.into(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.is_dir() {
        return Err(io(std::io::Error::other("it is a folder, not a file")));
    }
    let bytes = external::map_file(path).map_err(io)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut model = load_bytes(bytes.clone(), path, dir)?;
    model.source_file = std::fs::canonicalize(path)
        .ok()
        .map(|path| crate::ir::SourceFile { path, bytes });
    Ok(model)
}

/// Decodes and imports a model held in memory; `dir` is where its external data lives.
pub fn load_bytes(bytes: Bytes, path: &Path, dir: &Path) -> Result<Model, LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Empty(path.into()));
    }
    let file_len = bytes.len();
    let not_onnx = |reason: String| LoadError::NotOnnx {
        path: path.into(),
        reason,
    };
    let proto = ModelProto::decode(bytes)
        .map_err(|e| not_onnx(format!("protobuf decoding failed ({e})")))?;
    if proto.ir_version.is_none() || proto.graph.is_none() {
        return Err(not_onnx(
            "it decodes as protobuf but has no ir_version or no graph".into(),
        ));
    }
    let mut warnings = Vec::new();
    let reencoded = proto.encoded_len();
    if reencoded != file_len {
        warnings.push(format!(
            "the file is {file_len} bytes but re-encodes to {reencoded}: it holds fields this ONNX schema \
             does not know (dropped) or non-canonical encodings, so a written copy will not be byte-identical"
        ));
    }
    let graph = proto.graph.as_ref().map(|g| g.initializer.iter());
    let external = external::resolve_all(dir, graph.into_iter().flatten()).map_err(|source| {
        LoadError::External {
            path: path.into(),
            source,
        }
    })?;
    let mut model =
        Model::from_proto(proto, external.data).map_err(|source| LoadError::Invalid {
            path: path.into(),
            source,
        })?;
    for tensor in model.graph.tensors.values() {
        check_length(tensor).map_err(|source| LoadError::Tensor {
            path: path.into(),
            source,
        })?;
    }
    model.warnings.splice(0..0, warnings);
    model.external_files = external.files;
    Ok(model)
}
