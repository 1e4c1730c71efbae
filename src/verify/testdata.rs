//! The ONNX test-data layout: `test_data_set_N/input_K.pb` and `output_K.pb`, each a serialized `TensorProto`.

use std::path::{Path, PathBuf};

use prost::Message;

use super::VerifyError;
use crate::onnx::TensorProto;
use crate::runtime::{Named, TensorData};

/// The tensors of one test-data folder, in K order.
#[derive(Debug, Clone, Default)]
pub struct TestData {
    pub inputs: Vec<Named>,
    pub outputs: Vec<Named>,
}

/// Reads `input_K.pb` and `output_K.pb` from `dir` (K = 0, 1, ... without gaps).
pub fn load_test_data(dir: &Path) -> Result<TestData, VerifyError> {
    if !dir.is_dir() {
        return Err(VerifyError::TestData {
            path: dir.into(),
            reason: "not a folder".into(),
        });
    }
    let mut reserved = 0;
    Ok(TestData {
        inputs: numbered(dir, "input", &mut reserved)?,
        outputs: numbered(dir, "output", &mut reserved)?,
    })
}

fn numbered(dir: &Path, stem: &str, reserved: &mut u64) -> Result<Vec<Named>, VerifyError> {
    let mut found = Vec::new();
    for k in 0.. {
        let path = dir.join(format!("{stem}_{k}.pb"));
        if !path.exists() {
            break;
        }
        found.push(read_tensor_within(&path, reserved)?);
    }
    Ok(found)
}

/// Reads one serialized `TensorProto`.
pub fn read_tensor_file(path: &Path) -> Result<Named, VerifyError> {
    read_tensor_within(path, &mut 0)
}

/// Reads one serialized `TensorProto` when `reserved` bytes of test data are read already, checking the file
/// against the memory budget first ([`crate::limits`]): its tensor is held decoded, about the file's size again.
fn read_tensor_within(path: &Path, reserved: &mut u64) -> Result<Named, VerifyError> {
    let err = |reason: String| VerifyError::TestData {
        path: path.into(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    let held = size.saturating_mul(2);
    crate::limits::check(Some(held.into()), None, *reserved, || {
        format!(
            "the file ({} on disk, about twice that read and decoded)",
            crate::limits::Size(size.into())
        )
    })
    .map_err(|e| err(e.to_string()))?;
    *reserved = reserved.saturating_add(held);
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let proto = TensorProto::decode(bytes.as_slice())
        .map_err(|e| err(format!("not a TensorProto ({e})")))?;
    let name = proto.name().to_string();
    let tensor = TensorData::from_proto(&proto).map_err(err)?;
    Ok(Named { name, tensor })
}

/// Writes `input_K.pb` and `output_K.pb` into `dir` (created if missing), the ONNX test-data layout.
pub fn write_test_data(dir: &Path, inputs: &[Named], outputs: &[Named]) -> Result<(), VerifyError> {
    let err = |path: &Path, reason: String| VerifyError::TestData {
        path: path.into(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
    for (stem, tensors) in [("input", inputs), ("output", outputs)] {
        for (k, named) in tensors.iter().enumerate() {
            let path = dir.join(format!("{stem}_{k}.pb"));
            let proto = named.tensor.to_proto(&named.name);
            std::fs::write(&path, proto.encode_to_vec()).map_err(|e| err(&path, e.to_string()))?;
        }
    }
    Ok(())
}

/// Test-data folders under `dir`: `dir` itself if it holds `input_0.pb`, else its `test_data_set_*` folders.
pub fn test_data_sets(dir: &Path) -> Vec<PathBuf> {
    if dir.join("input_0.pb").exists() {
        return vec![dir.into()];
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    sets
}
