//! `fuse-layernorm` — every decomposed LayerNorm becomes one `LayerNormalization` (opset 17).
//!
//! * Pattern: what analysis calls a decomposed LayerNorm (`passes/fuse.rs` and `src/analysis/norms.rs` spell
//!   out the forms): `ReduceMean`, `Sub`, square, `ReduceMean`, `Add ε`, `Sqrt`, division, optional scale and
//!   shift, optional Casts.
//! * Replacement: `LayerNormalization(x, γ, β; axis = −k, epsilon = ε)`; a missing scale becomes ones of the
//!   normalized shape, a missing shift is left out. With `--target ort`, a norm reading a residual `Add` of
//!   rank 2 or 3 over the last axis becomes `com.microsoft.SkipLayerNormalization`.
//! * Preconditions: the analysis's (trailing contiguous axes, keepdims, constant ε and parameters, a closed
//!   pattern). Below opset 17 the model is upgraded first (`upgrade_opset.rs`), or the pass refuses naming
//!   the op that cannot be upgraded.
//! * Exact: yes, up to float rounding (the fused op may compute the same formula in another order).

use super::{Pass, PassClass, PassContext, PassError, fuse};
use crate::analysis::NormKind;
use crate::ir::{Model, Patch};

pub struct FuseLayerNorm;

impl Pass for FuseLayerNorm {
    fn name(&self) -> &'static str {
        "fuse-layernorm"
    }
    fn description(&self) -> &'static str {
        "decomposed LayerNorm -> LayerNormalization (opset 17; for onnxruntime, SkipLayerNormalization)"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, cx: &PassContext) -> Result<Patch, PassError> {
        fuse::plan(model, NormKind::LayerNorm, cx)
    }
}
