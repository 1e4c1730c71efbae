//! `fuse-rmsnorm` — every decomposed RMSNorm becomes one `RMSNormalization` (opset 23).
//!
//! * Pattern: what analysis calls a decomposed RMSNorm: square (`Pow(x, 2)` or `Mul(x, x)`), `ReduceMean`,
//!   `Add ε`, `Sqrt`, division (three forms), optional scale, optional Casts; Gemma's `(1 + w)` scale when
//!   the graph computes it.
//! * Replacement: `RMSNormalization(x, γ; axis = −k, epsilon = ε)`, with `(1 + w)` folded into a new `γ` and a
//!   missing scale made ones. With `--target ort`, a norm reading a residual `Add` of rank 2 or 3 over the
//!   last axis becomes `com.microsoft.SkipSimplifiedLayerNormalization`. (onnxruntime registers its
//!   `SimplifiedLayerNormalization` under the default domain, where the official checker rejects it, so a
//!   norm without a residual `Add` becomes the standard op on that target too.)
//! * Preconditions: the analysis's. Below opset 23 the model is upgraded first, or the pass refuses naming
//!   the op that cannot be upgraded.
//! * Exact: yes, up to float rounding.

use super::{Pass, PassClass, PassContext, PassError, fuse};
use crate::analysis::NormKind;
use crate::ir::{Model, Patch};

pub struct FuseRmsNorm;

impl Pass for FuseRmsNorm {
    fn name(&self) -> &'static str {
        "fuse-rmsnorm"
    }
    fn description(&self) -> &'static str {
        "decomposed RMSNorm -> RMSNormalization (opset 23; for onnxruntime, SkipSimplifiedLayerNormalization)"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, cx: &PassContext) -> Result<Patch, PassError> {
        fuse::plan(model, NormKind::RmsNorm, cx)
    }
}
