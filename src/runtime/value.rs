//! The tensors that cross the [`Runtime`](super::Runtime) boundary: the project's own type, so that no tract or
//! onnxruntime type reaches verification, test data or the command line.

use half::{bf16, f16};
use serde::Serialize;

use crate::onnx::TensorProto;
use crate::onnx::tensor_proto::DataType;

/// A tensor's elements, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// Element types a runtime is fed and returns here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    F32,
    F64,
    F16,
    Bf16,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl std::fmt::Display for ElemType {
    /// The type's name as the JSON reports spell it (`f32`, `i64`, `bool`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
            ElemType::F16 => "f16",
            ElemType::Bf16 => "bf16",
            ElemType::I64 => "i64",
            ElemType::I32 => "i32",
            ElemType::I8 => "i8",
            ElemType::U8 => "u8",
            ElemType::Bool => "bool",
        };
        f.pad(name)
    }
}

impl ElemType {
    pub fn from_onnx(elem_type: i32) -> Option<ElemType> {
        Some(match DataType::try_from(elem_type).ok()? {
            DataType::Float => ElemType::F32,
            DataType::Double => ElemType::F64,
            DataType::Float16 => ElemType::F16,
            DataType::Bfloat16 => ElemType::Bf16,
            DataType::Int64 => ElemType::I64,
            DataType::Int32 => ElemType::I32,
            DataType::Int8 => ElemType::I8,
            DataType::Uint8 => ElemType::U8,
            DataType::Bool => ElemType::Bool,
            _ => return None,
        })
    }

    pub fn onnx(self) -> DataType {
        match self {
            ElemType::F32 => DataType::Float,
            ElemType::F64 => DataType::Double,
            ElemType::F16 => DataType::Float16,
            ElemType::Bf16 => DataType::Bfloat16,
            ElemType::I64 => DataType::Int64,
            ElemType::I32 => DataType::Int32,
            ElemType::I8 => DataType::Int8,
            ElemType::U8 => DataType::Uint8,
            ElemType::Bool => DataType::Bool,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            ElemType::F64 | ElemType::I64 => 8,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::Bf16 => 2,
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
        }
    }

    /// Whether the type holds floating-point numbers.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElemType::F32 | ElemType::F64 | ElemType::F16 | ElemType::Bf16
        )
    }

    /// Unit roundoff of the half-precision types: below it, two correct computations may differ by one rounding.
    pub fn half_precision_epsilon(self) -> Option<f64> {
        match self {
            ElemType::F16 => Some(2f64.powi(-10)),
            ElemType::Bf16 => Some(2f64.powi(-7)),
            _ => None,
        }
    }
}

/// A shaped tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    shape: Vec<usize>,
    values: Values,
}

/// A named input or output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub tensor: TensorData,
}

macro_rules! each_values {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::F32($v) => $body,
            Values::F64($v) => $body,
            Values::F16($v) => $body,
            Values::Bf16($v) => $body,
            Values::I64($v) => $body,
            Values::I32($v) => $body,
            Values::I8($v) => $body,
            Values::U8($v) => $body,
            Values::Bool($v) => $body,
        }
    };
}

impl Values {
    pub fn len(&self) -> usize {
        each_values!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elem_type(&self) -> ElemType {
        match self {
            Values::F32(_) => ElemType::F32,
            Values::F64(_) => ElemType::F64,
            Values::F16(_) => ElemType::F16,
            Values::Bf16(_) => ElemType::Bf16,
            Values::I64(_) => ElemType::I64,
            Values::I32(_) => ElemType::I32,
            Values::I8(_) => ElemType::I8,
            Values::U8(_) => ElemType::U8,
            Values::Bool(_) => ElemType::Bool,
        }
    }
}

impl TensorData {
    /// A tensor of `shape` holding `values`; refused when the counts disagree.
    pub fn new(shape: Vec<usize>, values: Values) -> Result<TensorData, String> {
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?} overflows"))?;
        if count != values.len() {
            return Err(format!(
                "shape {shape:?} needs {count} elements, {} given",
                values.len()
            ));
        }
        Ok(TensorData { shape, values })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &Values {
        &self.values
    }

    pub fn into_parts(self) -> (Vec<usize>, Values) {
        (self.shape, self.values)
    }

    pub fn elem_type(&self) -> ElemType {
        self.values.elem_type()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The elements as f64: exact for every float type here and for integers up to 2^53 (for comparing; ids and
    /// masks are read through [`TensorData::values`]).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.values {
            Values::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Values::F64(v) => v.clone(),
            Values::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Values::Bf16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Values::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Values::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Values::I8(v) => v.iter().map(|&x| x as f64).collect(),
            Values::U8(v) => v.iter().map(|&x| x as f64).collect(),
            Values::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Reads a `TensorProto` with inline data (raw little-endian bytes or the typed fields), each element type
    /// in its own width: int64 ids above 2^53 stay exact.
    pub fn from_proto(proto: &TensorProto) -> Result<TensorData, String> {
        let shape: Vec<usize> = proto
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
            .collect::<Result<_, _>>()?;
        let ty = ElemType::from_onnx(proto.data_type()).ok_or_else(|| {
            format!(
                "element type {} is not supported here",
                crate::onnx::elem_type_name(proto.data_type())
            )
        })?;
        if proto.data_location() == crate::onnx::tensor_proto::DataLocation::External {
            return Err("its data is stored externally, which test data cannot be".into());
        }
        check_claim(proto, &shape, ty)?;
        let values = match proto.raw_data.as_deref() {
            Some(raw) => values_from_raw(ty, raw)?,
            None => values_from_typed(ty, proto),
        };
        TensorData::new(shape, values)
    }

    /// This tensor as a `TensorProto` named `name`, with raw little-endian data (what `onnx.numpy_helper`
    /// writes).
    pub fn to_proto(&self, name: &str) -> TensorProto {
        let raw: Vec<u8> = match &self.values {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Bf16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I8(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::U8(v) => v.clone(),
            Values::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        };
        TensorProto {
            name: Some(name.into()),
            dims: self.shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(self.elem_type().onnx() as i32),
            raw_data: Some(raw.into()),
            ..Default::default()
        }
    }
}

/// Refuses a tensor whose dims claim more (or fewer) elements than its data holds, before any is decoded: a
/// file may claim 2^40 elements and hold two.
fn check_claim(proto: &TensorProto, shape: &[usize], ty: ElemType) -> Result<(), String> {
    let stored = match proto.raw_data.as_deref() {
        Some(raw) => raw.len() as u64 / ty.size(),
        None => {
            (match ty {
                ElemType::F32 => proto.float_data.len(),
                ElemType::F64 => proto.double_data.len(),
                ElemType::I64 => proto.int64_data.len(),
                _ => proto.int32_data.len(),
            }) as u64
        }
    };
    let claimed = crate::limits::product(shape.iter().map(|&d| d as u64));
    if claimed == Some(stored) {
        return Ok(());
    }
    let name = proto.name();
    Err(match claimed {
        Some(n) => {
            format!("tensor `{name}` claims shape {shape:?} ({n} elements) but holds {stored}")
        }
        None => format!("tensor `{name}` claims shape {shape:?}, whose element count overflows"),
    })
}

fn le<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Result<Vec<T>, String> {
    if !raw.len().is_multiple_of(N) {
        return Err(format!(
            "{} bytes of raw data is not a whole number of {N}-byte elements",
            raw.len()
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

fn values_from_raw(ty: ElemType, raw: &[u8]) -> Result<Values, String> {
    Ok(match ty {
        ElemType::F32 => Values::F32(le(raw, f32::from_le_bytes)?),
        ElemType::F64 => Values::F64(le(raw, f64::from_le_bytes)?),
        ElemType::F16 => Values::F16(le(raw, f16::from_le_bytes)?),
        ElemType::Bf16 => Values::Bf16(le(raw, bf16::from_le_bytes)?),
        ElemType::I64 => Values::I64(le(raw, i64::from_le_bytes)?),
        ElemType::I32 => Values::I32(le(raw, i32::from_le_bytes)?),
        ElemType::I8 => Values::I8(raw.iter().map(|&b| b as i8).collect()),
        ElemType::U8 => Values::U8(raw.to_vec()),
        ElemType::Bool => Values::Bool(raw.iter().map(|&b| b != 0).collect()),
    })
}

/// The typed fields: `float_data`, `double_data`, `int64_data`, and `int32_data` for everything narrower
/// (half-precision floats as their bit patterns).
fn values_from_typed(ty: ElemType, p: &TensorProto) -> Values {
    let narrow = &p.int32_data;
    match ty {
        ElemType::F32 => Values::F32(p.float_data.clone()),
        ElemType::F64 => Values::F64(p.double_data.clone()),
        ElemType::I64 => Values::I64(p.int64_data.clone()),
        ElemType::F16 => Values::F16(narrow.iter().map(|&b| f16::from_bits(b as u16)).collect()),
        ElemType::Bf16 => Values::Bf16(narrow.iter().map(|&b| bf16::from_bits(b as u16)).collect()),
        ElemType::I32 => Values::I32(narrow.clone()),
        ElemType::I8 => Values::I8(narrow.iter().map(|&v| v as i8).collect()),
        ElemType::U8 => Values::U8(narrow.iter().map(|&v| v as u8).collect()),
        ElemType::Bool => Values::Bool(narrow.iter().map(|&v| v != 0).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_ids_above_2_pow_53_survive_a_round_trip() {
        let big = (1i64 << 53) + 1;
        let t = TensorData::new(vec![2], Values::I64(vec![big, -big])).unwrap();
        let back = TensorData::from_proto(&t.to_proto("ids")).unwrap();
        assert_eq!(back.values(), &Values::I64(vec![big, -big]));
        let typed = TensorProto {
            dims: vec![1],
            data_type: Some(DataType::Int64 as i32),
            int64_data: vec![big],
            ..Default::default()
        };
        assert_eq!(
            TensorData::from_proto(&typed).unwrap().values(),
            &Values::I64(vec![big])
        );
    }

    #[test]
    fn a_shape_that_disagrees_with_the_data_is_refused() {
        assert!(TensorData::new(vec![2, 3], Values::F32(vec![0.0; 5])).is_err());
        let proto = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(vec![0u8; 8].into()),
            ..Default::default()
        };
        assert!(TensorData::from_proto(&proto).is_err());
    }
}
