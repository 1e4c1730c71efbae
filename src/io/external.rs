//! External tensor data: `location` / `offset` / `length` entries resolved against the model's folder.
//!
//! A location must stay inside that folder: absolute paths, `..` components and symlinks that resolve outside
//! are refused. Each data file is mapped once and every tensor is a zero-copy slice of the map.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::onnx::TensorProto;
use crate::onnx::tensor_proto::DataLocation;

#[derive(Debug, thiserror::Error)]
pub enum ExternalDataError {
    #[error("tensor `{tensor}`: external data location {location:?} leaves the model's folder")]
    Escapes { tensor: String, location: String },
    #[error("tensor `{tensor}`: external data entry has no location")]
    NoLocation { tensor: String },
    #[error("tensor `{tensor}`: cannot open external data {path}: {source}")]
    Open {
        tensor: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "tensor `{tensor}`: external data offset {offset} + length {length} runs past the end of {path} ({size} bytes)"
    )]
    OutOfRange {
        tensor: String,
        path: PathBuf,
        offset: u64,
        length: u64,
        size: u64,
    },
    #[error("tensor `{tensor}`: external data field `{key}` is not a number: {value:?}")]
    BadNumber {
        tensor: String,
        key: String,
        value: String,
    },
}

pub fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

/// Where one tensor's data sits.
struct Entry {
    location: String,
    offset: u64,
    length: Option<u64>,
}

fn entry(t: &TensorProto) -> Result<Entry, ExternalDataError> {
    let tensor = t.name().to_string();
    let mut location = None;
    let mut offset = 0;
    let mut length = None;
    for kv in &t.external_data {
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| ExternalDataError::BadNumber {
                tensor: tensor.clone(),
                key: kv.key().into(),
                value: v.into(),
            })
        };
        match kv.key() {
            "location" => location = Some(kv.value().to_string()),
            "offset" => offset = number(kv.value())?,
            "length" => length = Some(number(kv.value())?),
            _ => {}
        }
    }
    let location = location.ok_or(ExternalDataError::NoLocation { tensor })?;
    Ok(Entry {
        location,
        offset,
        length,
    })
}

/// Resolves `location` inside `dir`, refusing anything that leaves it, including through symlinks.
pub fn resolve_inside(
    dir: &Path,
    location: &str,
    tensor: &str,
) -> Result<PathBuf, ExternalDataError> {
    let escapes = || ExternalDataError::Escapes {
        tensor: tensor.into(),
        location: location.into(),
    };
    let rel = Path::new(location);
    if location.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(escapes());
    }
    let joined = dir.join(rel);
    let open_err = |source| ExternalDataError::Open {
        tensor: tensor.into(),
        path: joined.clone(),
        source,
    };
    let real_dir = dir.canonicalize().map_err(open_err)?;
    let real = joined.canonicalize().map_err(open_err)?;
    if !real.starts_with(&real_dir) {
        return Err(escapes());
    }
    Ok(real)
}

/// External data of every initializer that has some, keyed by tensor name, and the files it came from.
pub struct Resolved {
    pub data: HashMap<String, Bytes>,
    pub files: Vec<PathBuf>,
}

/// Maps the external data of every initializer that has some.
pub fn resolve_all<'a>(
    dir: &Path,
    tensors: impl Iterator<Item = &'a TensorProto>,
) -> Result<Resolved, ExternalDataError> {
    let mut files: HashMap<PathBuf, Bytes> = HashMap::new();
    let mut data = HashMap::new();
    for t in tensors.filter(|t| is_external(t)) {
        let e = entry(t)?;
        let path = resolve_inside(dir, &e.location, t.name())?;
        let file = match files.get(&path) {
            Some(b) => b.clone(),
            None => {
                let bytes = map_file(&path).map_err(|source| ExternalDataError::Open {
                    tensor: t.name().into(),
                    path: path.clone(),
                    source,
                })?;
                files.insert(path.clone(), bytes.clone());
                bytes
            }
        };
        let size = file.len() as u64;
        let length = e.length.unwrap_or(size.saturating_sub(e.offset));
        let end = e
            .offset
            .checked_add(length)
            .filter(|&end| end <= size)
            .ok_or_else(|| ExternalDataError::OutOfRange {
                tensor: t.name().into(),
                path: path.clone(),
                offset: e.offset,
                length,
                size,
            })?;
        data.insert(
            t.name().to_string(),
            file.slice(e.offset as usize..end as usize),
        );
    }
    Ok(Resolved {
        data,
        files: files.into_keys().collect(),
    })
}

/// Maps a whole file read-only. An empty file maps to empty bytes (mmap refuses length 0).
pub fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only; a file truncated by another process while mapped is the one hazard
    // mmap-based loaders (tract's, onnxruntime's) all accept.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(Mapped::register(map)))
}

/// The address ranges of the live file mappings. Only pages inside one of them may be released with
/// `MADV_DONTNEED` (see [`release_pages`]): done to heap memory, that would zero it.
static MAPPINGS: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

/// A file mapping, listed in [`MAPPINGS`] for as long as it lives.
struct Mapped(memmap2::Mmap);

impl Mapped {
    fn register(map: memmap2::Mmap) -> Mapped {
        let range = (map.as_ptr() as usize, map.len());
        MAPPINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(range);
        Mapped(map)
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let start = self.0.as_ptr() as usize;
        MAPPINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&(s, _)| s != start);
    }
}

/// Tells the kernel that this process no longer needs the pages of `data` — when `data` lies in a file mapping —
/// so that streaming gigabytes of weights from the input to the output does not grow the resident set by as
/// much: the pages stay in the page cache and fault back in if read again. Anything else is left alone.
pub fn release_pages(data: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        let start = data.as_ptr() as usize;
        let end = start + data.len();
        let mapped = MAPPINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|&(s, len)| s <= start && end <= s + len);
        if !mapped {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let first = start.div_ceil(page) * page;
        let last = end / page * page;
        if first < last {
            // SAFETY: [first, last) lies inside a live read-only file mapping (checked above; `data` borrows
            // from the mapping's owner, so it cannot be unmapped meanwhile). MADV_DONTNEED on such a mapping
            // only drops this process's page table entries; the next read faults the same bytes in again.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

/// Tensors smaller than this stay inline when a model is handed to a runtime: one read each would cost more
/// than the copy.
const REFER_ABOVE: usize = 64 * 1024;

/// Rewrites `proto`'s inline initializers whose bytes lie in `source` (the mapped file the model was read
/// from) as external data pointing into that file, at their offset, so that a runtime reads each one from the
/// file once instead of being handed a copy inside the encoded model (which it then decodes into a second
/// copy). `dir` is the folder the runtime resolves locations against: the file must be inside it. Returns how
/// many tensors now refer to the file.
pub fn refer_to_source(
    proto: &mut crate::onnx::ModelProto,
    source: &crate::ir::SourceFile,
    dir: &Path,
) -> usize {
    let Some(location) = std::fs::canonicalize(dir)
        .ok()
        .and_then(|dir| source.path.strip_prefix(dir).ok().map(Path::to_path_buf))
        .and_then(|rel| rel.to_str().map(String::from))
    else {
        return 0;
    };
    let base = source.bytes.as_ptr() as usize;
    let end = base + source.bytes.len();
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let mut referred = 0;
    for t in &mut graph.initializer {
        let Some(raw) = t.raw_data.as_ref() else {
            continue;
        };
        let start = raw.as_ptr() as usize;
        if raw.len() < REFER_ABOVE || start < base || start + raw.len() > end {
            continue;
        }
        let entry = |key: &str, value: String| crate::onnx::StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value),
        };
        t.external_data = vec![
            entry("location", location.clone()),
            entry("offset", (start - base).to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data = None;
        referred += 1;
    }
    referred
}
