//! The calibrated model: the plain mapping with each refitted constant in place (shared constants copied per
//! reader).

use std::collections::BTreeMap;

use serde::Serialize;

use super::CalibrateError;
use super::sites::Slot;
use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueRef};
use crate::onnx::build::float_tensor;

/// A constant several ops of the original read (ALBERT shares its layers' weights), of which calibration
/// refitted some readers: each of those now reads a copy of its own, and the model grows by them.
#[derive(Debug, Clone, Serialize)]
pub struct UnsharedConstant {
    pub name: String,
    /// The ops that read it.
    pub readers: usize,
    /// Those that now read a calibrated copy.
    pub copies: usize,
}

/// `plain` with each slot reading a new constant of the same type and dims holding the values given, and the
/// shared constants that became per-reader copies.
pub(super) fn with_constants(
    plain: &Model,
    params: &[(&Slot, Vec<f64>)],
) -> Result<(Model, Vec<UnsharedConstant>), CalibrateError> {
    let ix = GraphIndex::new(&plain.graph);
    let mut patch = Patch::new();
    let mut edits: BTreeMap<petgraph::stable_graph::NodeIndex, Vec<(usize, ValueRef)>> =
        BTreeMap::new();
    let mut copies: BTreeMap<crate::ir::ValueId, usize> = BTreeMap::new();
    for (slot, values) in params {
        let node = plain
            .graph
            .value_id(&slot.reader)
            .and_then(|v| ix.producer_op(v))
            .map(|(n, _)| n)
            .ok_or_else(|| {
                CalibrateError::Refused(format!(
                    "the converted model has no op writing `{}`",
                    slot.reader
                ))
            })?;
        let tensor = float_tensor(slot.elem, slot.dims.clone(), values).ok_or_else(|| {
            CalibrateError::Refused(format!(
                "`{}` reads a constant that is not a float tensor",
                slot.reader
            ))
        })?;
        let value = patch.initializer(format!("{}/calibrated", slot.reader), tensor);
        edits.entry(node).or_default().push((slot.slot, value));
        if let Some(read) = ix.inputs(node).get(slot.slot).copied().flatten() {
            *copies.entry(read).or_default() += 1;
        }
    }
    let unshared = copies
        .into_iter()
        .filter_map(|(v, copies)| {
            let readers = ix.consumers(v).len();
            (readers > 1).then(|| UnsharedConstant {
                name: plain.graph.value(v).name.clone(),
                readers,
                copies,
            })
        })
        .collect();
    for (node, inputs) in edits {
        patch.replace_slots(&ix, node, &inputs, &[]);
        patch.sites += 1;
    }
    let mut model = plain.clone();
    crate::passes::apply_patch(&mut model, patch, "post-to-pre")?;
    Ok((model, unshared))
}
