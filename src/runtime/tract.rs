//! tract: the built-in runtime. Input shapes are pinned before `into_optimized()` (left symbolic, tract fails
//! on half of the decoder exports we tried), and the model's `value_info` and declared output shapes are not
//! read: exporters leave symbolic dims there (`batch`) that tract cannot unify with the pinned sizes
//! ("Impossible to unify Sym(batch) with Val(2)"), while tract infers every shape from the inputs anyway.

use std::sync::Arc;

use half::f16;
use prost::Message;
use tract_onnx::prelude::*;

use super::guard::contain;
use super::{
    ModelSource, Named, Prepared, Runtime, RuntimeError, RuntimeKind, Stage, TensorData, Values,
};

pub struct Tract;

fn failure(model: &ModelSource, stage: Stage, message: String) -> RuntimeError {
    RuntimeError::Failed {
        runtime: RuntimeKind::Tract,
        model: model.label.clone(),
        stage,
        message,
    }
}

/// tract's chain of causes on one line.
fn chain(e: TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

impl Runtime for Tract {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Tract
    }

    fn prepare(
        &self,
        model: &ModelSource,
        inputs: &[Named],
    ) -> Result<Box<dyn Prepared>, RuntimeError> {
        let plan = contain(|| plan(model, inputs))
            .map_err(|panic| failure(model, Stage::Prepare, panic))??;
        Ok(Box::new(TractModel {
            label: model.label.clone(),
            output_names: model.output_names.clone(),
            plan,
        }))
    }
}

fn plan(model: &ModelSource, inputs: &[Named]) -> Result<Arc<TypedRunnableModel>, RuntimeError> {
    // tract does not run model-local functions: it is given their bodies in place of the calls.
    let bytes = model.inlined.clone().unwrap_or_else(|| model.bytes.clone());
    let proto = tract_onnx::pb::ModelProto::decode(bytes)
        .map_err(|e| failure(model, Stage::Load, format!("protobuf decoding failed: {e}")))?;
    let onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    let parsed = onnx
        .parse(&proto, model.dir.to_str())
        .map_err(|e| failure(model, Stage::Load, chain(e)))?;
    drop(proto);
    if !parsed.unresolved_inputs.is_empty() {
        return Err(failure(
            model,
            Stage::Load,
            format!(
                "values read but never defined: {:?}",
                parsed.unresolved_inputs
            ),
        ));
    }
    let mut typed = parsed.model;
    let declared = typed
        .input_outlets()
        .map_err(|e| failure(model, Stage::Load, chain(e)))?
        .len();
    if declared != inputs.len() {
        return Err(failure(
            model,
            Stage::Prepare,
            format!("it takes {declared} inputs, {} were given", inputs.len()),
        ));
    }
    for (ix, input) in inputs.iter().enumerate() {
        let dt = datum_type(&input.tensor).map_err(|e| failure(model, Stage::Prepare, e))?;
        typed
            .set_input_fact(ix, InferenceFact::dt_shape(dt, input.tensor.shape()))
            .map_err(|e| failure(model, Stage::Prepare, chain(e)))?;
    }
    typed
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| failure(model, Stage::Prepare, chain(e)))
}

struct TractModel {
    label: String,
    output_names: Vec<String>,
    plan: Arc<TypedRunnableModel>,
}

impl Prepared for TractModel {
    fn run(&mut self, inputs: &[Named]) -> Result<Vec<Named>, RuntimeError> {
        let fail = |message: String| RuntimeError::Failed {
            runtime: RuntimeKind::Tract,
            model: self.label.clone(),
            stage: Stage::Run,
            message,
        };
        let values: TVec<TValue> = inputs
            .iter()
            .map(|i| to_tract(&i.tensor).map(|t| t.into_tvalue()))
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        let outputs = contain(|| self.plan.run(values))
            .map_err(fail)?
            .map_err(|e| fail(chain(e)))?;
        outputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let name = self
                    .output_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("output_{i}"));
                from_tract(&t)
                    .map(|tensor| Named { name, tensor })
                    .map_err(fail)
            })
            .collect()
    }
}

fn datum_type(t: &TensorData) -> Result<DatumType, String> {
    Ok(match t.values() {
        Values::F32(_) => DatumType::F32,
        Values::F64(_) => DatumType::F64,
        Values::F16(_) => DatumType::F16,
        Values::I64(_) => DatumType::I64,
        Values::I32(_) => DatumType::I32,
        Values::I8(_) => DatumType::I8,
        Values::U8(_) => DatumType::U8,
        Values::Bool(_) => DatumType::Bool,
        Values::Bf16(_) => return Err("tract has no bfloat16 tensors".into()),
    })
}

fn to_tract(t: &TensorData) -> Result<Tensor, String> {
    let shape = t.shape();
    match t.values() {
        Values::F32(v) => Tensor::from_shape(shape, v),
        Values::F64(v) => Tensor::from_shape(shape, v),
        Values::F16(v) => Tensor::from_shape(shape, v),
        Values::I64(v) => Tensor::from_shape(shape, v),
        Values::I32(v) => Tensor::from_shape(shape, v),
        Values::I8(v) => Tensor::from_shape(shape, v),
        Values::U8(v) => Tensor::from_shape(shape, v),
        Values::Bool(v) => Tensor::from_shape(shape, v),
        Values::Bf16(_) => return Err("tract has no bfloat16 tensors".into()),
    }
    .map_err(|e| e.to_string())
}

fn plain<T: Datum + Copy>(t: &Tensor) -> Result<Vec<T>, String> {
    Ok(t.to_plain_array_view::<T>()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect())
}

fn from_tract(t: &Tensor) -> Result<TensorData, String> {
    let values = match t.datum_type() {
        DatumType::F32 => Values::F32(plain(t)?),
        DatumType::F64 => Values::F64(plain(t)?),
        DatumType::F16 => Values::F16(plain::<f16>(t)?),
        DatumType::I64 => Values::I64(plain(t)?),
        DatumType::I32 => Values::I32(plain(t)?),
        DatumType::I8 => Values::I8(plain(t)?),
        DatumType::U8 => Values::U8(plain(t)?),
        DatumType::Bool => Values::Bool(plain(t)?),
        other => {
            // Other integer widths: widened to i64, which holds every value of theirs.
            let wide = t
                .cast_to::<i64>()
                .map_err(|e| format!("an output of type {other:?}: {e}"))?;
            Values::I64(plain(&wide)?)
        }
    };
    TensorData::new(t.shape().to_vec(), values)
}
