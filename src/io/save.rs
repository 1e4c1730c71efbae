//! Writing a model: atomically (a temporary file in the target folder, renamed into place), streamed from the
//! IR, with weights inline or in one external data file beside the model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use super::stream::StreamBuf;
use super::unfinished;
use super::{EXTERNAL_THRESHOLD, PROTOBUF_LIMIT};
use crate::ir::{Model, ValidationError};
use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::{ModelProto, StringStringEntryProto};

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the graph cannot be written: {0}")]
    Invalid(#[from] ValidationError),
    #[error(
        "the model is {0} bytes, over protobuf's 2 GiB limit: it must be written with external data"
    )]
    TooLargeInline(u64),
    #[error("external data location {0:?} must be a plain file name")]
    BadLocation(String),
    #[error(
        "{0} holds the input's own external data; writing it would destroy the input unless forced"
    )]
    WouldReplaceSource(PathBuf),
    #[error("protobuf encoding failed: {0}")]
    Encode(#[from] prost::EncodeError),
}

/// Where initializer data goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DataLayout {
    /// As the input had it: external if any initializer was, and always when the model would pass 2 GiB.
    #[default]
    Keep,
    /// Everything in the model file (refused over 2 GiB).
    Inline,
    /// Tensors of at least 1 KiB in one data file beside the model: `location`, or `<model file name>.data`.
    External { location: Option<String> },
}

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    pub layout: DataLayout,
    /// Allow the data file to replace one the model was loaded from (converting in place).
    pub replace_sources: bool,
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SaveReport {
    pub model_bytes: u64,
    pub data_file: Option<PathBuf>,
    pub data_bytes: u64,
}

pub fn save(model: &Model, path: &Path, options: &SaveOptions) -> Result<SaveReport, SaveError> {
    let mut proto = model.to_proto()?;
    let external_bytes: u64 = model
        .graph
        .tensors
        .values()
        .filter_map(|t| t.external.as_ref())
        .map(|b| b.len() as u64)
        .sum();
    let inline_size = proto.encoded_len() as u64 + external_bytes;
    let any_external = external_bytes > 0;
    let go_external = match &options.layout {
        DataLayout::Inline if inline_size > PROTOBUF_LIMIT => {
            return Err(SaveError::TooLargeInline(inline_size));
        }
        DataLayout::Inline => false,
        DataLayout::External { .. } => true,
        DataLayout::Keep => any_external || inline_size > PROTOBUF_LIMIT,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !go_external {
        inline_all(model, &mut proto);
        let model_bytes = write_model(&proto, path)?;
        return Ok(SaveReport {
            model_bytes,
            data_file: None,
            data_bytes: 0,
        });
    }
    let location = match &options.layout {
        DataLayout::External { location: Some(l) } => l.clone(),
        _ => format!(
            "{}.data",
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model.onnx".into())
        ),
    };
    if Path::new(&location).components().count() != 1
        || location.contains(['/', '\\'])
        || location == ".."
    {
        return Err(SaveError::BadLocation(location));
    }
    let blobs = move_out(model, &mut proto, &location);
    let data_path = dir.join(&location);
    if !options.replace_sources
        && let Ok(real) = data_path.canonicalize()
        && model.external_files.contains(&real)
    {
        return Err(SaveError::WouldReplaceSource(data_path));
    }
    let data_bytes = blobs.iter().map(|b| b.len() as u64).sum();
    let data_tmp = write_temp(&data_path, |w| {
        blobs.iter().try_for_each(|b| stream_out(w, b))
    })?;
    let model_tmp = write_temp(path, |w| encode_into(&proto, w))?;
    let model_bytes = model_tmp.len;
    // The data file first: a model must never point at data that is not there yet.
    commit(vec![data_tmp, model_tmp])?;
    Ok(SaveReport {
        model_bytes,
        data_file: Some(data_path),
        data_bytes,
    })
}

/// Puts every externally stored tensor's data back into `raw_data`.
fn inline_all(model: &Model, proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    for (t, id) in graph.initializer.iter_mut().zip(&model.graph.initializers) {
        if let Some(data) = &model.graph.tensors[id].external {
            t.raw_data = Some(data.clone());
            t.data_location = None;
            t.external_data.clear();
        }
    }
}

/// Points every large (or already external) tensor at `location`, returning the data in file order.
fn move_out(model: &Model, proto: &mut ModelProto, location: &str) -> Vec<Bytes> {
    let mut blobs = Vec::new();
    let mut offset = 0u64;
    let Some(graph) = proto.graph.as_mut() else {
        return blobs;
    };
    for (t, id) in graph.initializer.iter_mut().zip(&model.graph.initializers) {
        let tensor = &model.graph.tensors[id];
        let Some(data) = tensor.raw_bytes() else {
            continue;
        };
        if tensor.external.is_none() && (data.len() as u64) < EXTERNAL_THRESHOLD {
            continue;
        }
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.raw_data = None;
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", data.len().to_string()),
        ];
        offset += data.len() as u64;
        blobs.push(data.clone());
    }
    blobs
}

/// Writes `data` in pieces, releasing each piece's input pages once written (see
/// [`super::external::release_pages`]): peak memory stays near one piece, not the whole model.
fn stream_out(w: &mut BufWriter<File>, data: &[u8]) -> std::io::Result<()> {
    const PIECE: usize = 16 << 20;
    for piece in data.chunks(PIECE) {
        w.write_all(piece)?;
        super::external::release_pages(piece);
    }
    Ok(())
}

fn encode_into(proto: &ModelProto, w: &mut BufWriter<File>) -> std::io::Result<()> {
    let mut stream = StreamBuf::new(w);
    proto.encode(&mut stream).map_err(std::io::Error::other)?;
    stream.finish().map(|_| ())
}

fn write_model(proto: &ModelProto, path: &Path) -> Result<u64, SaveError> {
    let tmp = write_temp(path, |w| encode_into(proto, w))?;
    let len = tmp.len;
    commit(vec![tmp])?;
    Ok(len)
}

/// A finished temporary file waiting to be renamed into place; removed if dropped uncommitted.
struct TempFile {
    tmp: PathBuf,
    target: PathBuf,
    len: u64,
    committed: bool,
}

/// Renames the temporaries into place, all of them before an interrupt can act (see [`unfinished`]).
fn commit(mut files: Vec<TempFile>) -> Result<(), SaveError> {
    let pairs: Vec<(&Path, &Path)> = files
        .iter()
        .map(|f| (f.tmp.as_path(), f.target.as_path()))
        .collect();
    let result = unfinished::rename_together(&pairs);
    let renamed = match &result {
        Ok(()) => files.len(),
        Err((target, _)) => files.iter().position(|f| &f.target == target).unwrap_or(0),
    };
    for f in &mut files[..renamed] {
        f.committed = true;
    }
    result.map_err(|(path, source)| SaveError::Io { path, source })
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
            unfinished::end(&self.tmp);
        }
    }
}

fn write_temp(
    target: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<TempFile, SaveError> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.normshift-tmp", std::process::id()));
    let io = |source| SaveError::Io {
        path: target.into(),
        source,
    };
    unfinished::begin(&tmp).map_err(io)?;
    let mut guard = TempFile {
        tmp,
        target: target.into(),
        len: 0,
        committed: false,
    };
    let file = File::create(&guard.tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    fill(&mut w).map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    guard.len = file.metadata().map_err(io)?.len();
    Ok(guard)
}
