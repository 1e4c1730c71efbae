//! Where a runtime is known to depart from the ONNX specification, and so which runtime `auto` trusts first.
//!
//! Quantization (docs/reliability-limits.md has the experiments): onnxruntime 1.32 computes `QuantizeLinear`
//! as the specification says — `saturate(round_half_to_even(x / scale) + zero_point)` — bit for bit, with graph
//! optimizations off as normshift runs it. tract 0.23.9 does not, in two ways:
//!
//! * its per-tensor `QuantizeLinear` multiplies by `fl32(1 / scale)` instead of dividing, so a value within an
//!   ulp of a rounding tie can land one step off (34 of 62 exact ties at scale 10/255; 1–2 per million random
//!   values at typical scales), and it adds the zero point after a saturating `as i32`, so `x / scale ≥ 2^31`
//!   (+inf included) with a positive zero point wraps to 0 instead of 255;
//! * `DequantizeLinearF32::declutter` turns `DequantizeLinear → Softmax → QuantizeLinear` into a 256-entry
//!   lookup table because tract's Softmax has an element-wise axes mapping: every probability comes out 1.0.
//!   On `models/wild/bert.qdq_s8` (static QDQ) that moves the output by 0.16; with the rewrite blocked, tract
//!   and onnxruntime agree bit for bit.
//!
//! So for a model that quantizes activations, `auto` runs onnxruntime first, and whenever tract runs such a model
//! the report says what tract does differently.

use super::RuntimeKind;
use crate::analysis::quantized::ActivationQuantization;

/// The runtimes `auto` tries, in order, for models that quantize as `q` says.
pub fn auto_order(q: &ActivationQuantization) -> [RuntimeKind; 2] {
    if q.any() {
        [RuntimeKind::Ort, RuntimeKind::Tract]
    } else {
        [RuntimeKind::Tract, RuntimeKind::Ort]
    }
}

/// Why `auto` did not start with tract, when it did not.
pub fn order_note(q: &ActivationQuantization) -> Option<String> {
    q.any().then(|| {
        format!(
            "onnxruntime first: the model quantizes activations ({} QuantizeLinear), where tract departs from the \
             ONNX specification and onnxruntime follows it",
            q.quantize
        )
    })
}

/// What `kind` is known to compute differently from the ONNX specification on a model that quantizes as `q`
/// says, when anything.
pub fn deviation(kind: RuntimeKind, q: &ActivationQuantization) -> Option<String> {
    if kind != RuntimeKind::Tract || !q.any() {
        return None;
    }
    let rounding = "its QuantizeLinear multiplies by 1/scale instead of dividing by the scale, so a value near a \
                    rounding tie can land one step off (1-2 per million values at typical scales)";
    Some(if q.softmax_chains > 0 {
        format!(
            "tract departs from the ONNX specification on this model: it turns each DequantizeLinear -> Softmax -> \
             QuantizeLinear ({} here) into a lookup table that treats Softmax as element-wise (every probability \
             becomes 1.0; 0.16 off on a static-QDQ BERT), and {rounding}; onnxruntime follows the specification",
            q.softmax_chains
        )
    } else {
        format!(
            "tract departs from the ONNX specification on this model: {rounding}; onnxruntime follows the \
             specification"
        )
    })
}
