//! The ONNX test-data layout: `test_data_set_N/input_K.pb` and `output_K.pb`, each a serialized `TensorProto`.

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::prelude::*;

use super::{Named, VerifyError};
use crate::ir;
use crate::onnx::TensorProto;
use crate::onnx::tensor_proto::DataType;
use crate::tensor::{check_length, declared_count, to_f64};

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
    Ok(TestData {
        inputs: numbered(dir, "input")?,
        outputs: numbered(dir, "output")?,
    })
}

fn numbered(dir: &Path, stem: &str) -> Result<Vec<Named>, VerifyError> {
    let mut found = Vec::new();
    for k in 0.. {
        let path = dir.join(format!("{stem}_{k}.pb"));
        if !path.exists() {
            break;
        }
        found.push(read_tensor_file(&path)?);
    }
    Ok(found)
}

/// Reads one serialized `TensorProto` into a tract tensor.
pub fn read_tensor_file(path: &Path) -> Result<Named, VerifyError> {
    let err = |reason: String| VerifyError::TestData {
        path: path.into(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let proto = TensorProto::decode(bytes.as_slice())
        .map_err(|e| err(format!("not a TensorProto ({e})")))?;
    let name = proto.name().to_string();
    let tensor = tensor_from_proto(proto).map_err(err)?;
    Ok(Named { name, tensor })
}

/// Converts a `TensorProto` with inline data into a tract tensor of the same element type.
pub fn tensor_from_proto(proto: TensorProto) -> Result<Tensor, String> {
    let shape: Vec<usize> = proto
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    declared_count(&proto).map_err(|e| e.to_string())?;
    let ty = DataType::try_from(proto.data_type())
        .map_err(|_| format!("unknown element type {}", proto.data_type()))?;
    let t = ir::Tensor {
        proto,
        external: None,
    };
    check_length(&t).map_err(|e| e.to_string())?;
    let values = to_f64(&t).map_err(|e| e.to_string())?;
    let made = match ty {
        DataType::Float => Tensor::from_shape(
            &shape,
            &values.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        ),
        DataType::Double => Tensor::from_shape(&shape, &values),
        DataType::Float16 => Tensor::from_shape(
            &shape,
            &values.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>(),
        ),
        DataType::Int64 => Tensor::from_shape(
            &shape,
            &values.iter().map(|&v| v as i64).collect::<Vec<_>>(),
        ),
        DataType::Int32 => Tensor::from_shape(
            &shape,
            &values.iter().map(|&v| v as i32).collect::<Vec<_>>(),
        ),
        DataType::Int8 => {
            Tensor::from_shape(&shape, &values.iter().map(|&v| v as i8).collect::<Vec<_>>())
        }
        DataType::Uint8 => {
            Tensor::from_shape(&shape, &values.iter().map(|&v| v as u8).collect::<Vec<_>>())
        }
        DataType::Bool => Tensor::from_shape(
            &shape,
            &values.iter().map(|&v| v != 0.0).collect::<Vec<_>>(),
        ),
        other => {
            return Err(format!(
                "element type {} is not supported in test data",
                other.as_str_name()
            ));
        }
    };
    made.map_err(|e| e.to_string())
}

/// A tract tensor as a `TensorProto` named `name`, with raw little-endian data (what `onnx.numpy_helper` writes).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> Result<TensorProto, String> {
    fn raw<T: Datum + Copy, const N: usize>(
        t: &Tensor,
        bytes: fn(T) -> [u8; N],
    ) -> Result<Vec<u8>, String> {
        Ok(t.to_plain_array_view::<T>()
            .map_err(|e| e.to_string())?
            .iter()
            .flat_map(|&v| bytes(v))
            .collect())
    }
    let (ty, data) = match t.datum_type() {
        DatumType::F32 => (DataType::Float, raw::<f32, 4>(t, f32::to_le_bytes)?),
        DatumType::F64 => (DataType::Double, raw::<f64, 8>(t, f64::to_le_bytes)?),
        DatumType::F16 => (
            DataType::Float16,
            raw::<f16, 2>(t, |v| v.to_bits().to_le_bytes())?,
        ),
        DatumType::I64 => (DataType::Int64, raw::<i64, 8>(t, i64::to_le_bytes)?),
        DatumType::I32 => (DataType::Int32, raw::<i32, 4>(t, i32::to_le_bytes)?),
        DatumType::I8 => (DataType::Int8, raw::<i8, 1>(t, i8::to_le_bytes)?),
        DatumType::U8 => (DataType::Uint8, raw::<u8, 1>(t, u8::to_le_bytes)?),
        DatumType::Bool => (DataType::Bool, raw::<bool, 1>(t, |v| [v as u8])?),
        other => {
            return Err(format!(
                "element type {other:?} cannot be written as test data"
            ));
        }
    };
    Ok(TensorProto {
        name: Some(name.into()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(ty as i32),
        raw_data: Some(data.into()),
        ..Default::default()
    })
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
            let proto = tensor_to_proto(&named.name, &named.tensor).map_err(|e| err(&path, e))?;
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
