//! Comparing two output tensors: the figures a user needs to judge a difference.

use serde::Serialize;

use crate::runtime::TensorData;

/// An element passes when `|a - b| <= atol + rtol * |b|`, `b` being the reference. For float16 and bfloat16 outputs, and
/// for every output of a model that computes in one of them, the tolerance is raised to what the type can resolve
/// (see [`Comparison::raised_tolerance`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
    /// The unit roundoff of the half-precision type the compared models compute in, when they do (their
    /// outputs may still be float32: `convert_float_to_float16(keep_io_types=True)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed_in_half: Option<f64>,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rtol: 1e-4,
            atol: 1e-5,
            computed_in_half: None,
        }
    }
}

impl Tolerance {
    /// This tolerance for comparing outputs of `model` (and its rewrites): it notes the half-precision type the
    /// model computes in, if it does.
    pub fn for_model(self, model: &crate::Model) -> Tolerance {
        Tolerance {
            computed_in_half: self.computed_in_half.or(half_compute_epsilon(model)),
            ..self
        }
    }
}

/// Roundings of a half-precision type that two correct computations of a model in that type may differ by: a
/// fused op keeps in float32 a sum the unfused graph rounds (or the reverse: onnxruntime runs most float16 ops
/// of a graph in float32 on CPU, but not its fused norms), and a norm scales that rounding by `γ/σ`, up to the
/// largest element of a row over its deviation. Measured on float16 BERTs fused for onnxruntime (a `model.half()`
/// export and an onnxconverter-common one): up to 1.6 roundings of the largest output (7.8e-3 of 5.0).
const HALF_COMPUTE_ROUNDINGS: f64 = 4.0;

/// The unit roundoff of the half-precision type a model computes in: the type of most of its float weights.
pub fn half_compute_epsilon(model: &crate::Model) -> Option<f64> {
    use crate::runtime::ElemType;
    let mut bytes: std::collections::HashMap<ElemType, u64> = Default::default();
    for t in model.graph.tensors.values() {
        if let Some(ty) = ElemType::from_onnx(t.elem_type()).filter(|t| t.is_float()) {
            *bytes.entry(ty).or_default() += t.byte_len();
        }
    }
    let (&most, _) = bytes.iter().max_by_key(|&(_, b)| *b)?;
    most.half_precision_epsilon()
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub shape: Vec<usize>,
    pub max_abs: f64,
    pub max_rel: f64,
    /// ‖actual − reference‖₂ / ‖reference‖₂.
    pub rel_l2: f64,
    pub cosine: f64,
    /// Elements outside tolerance.
    pub mismatched: usize,
    pub ok: bool,
    /// Set when the two cannot be compared element by element (shape or type differ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The tolerance used when the output's type cannot resolve the one asked for (half precision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raised_tolerance: Option<Tolerance>,
}

/// The tolerance a comparison of `reference` can honour: for half-precision outputs at least one rounding of
/// the type, relative to each element and to the largest element (an intermediate rounded at that magnitude);
/// for any float output of a model computed in half precision, [`HALF_COMPUTE_ROUNDINGS`] of them.
fn effective(tol: Tolerance, reference: &TensorData, values: &[f64]) -> Option<Tolerance> {
    let computed = tol
        .computed_in_half
        .filter(|_| reference.elem_type().is_float())
        .map(|eps| eps * HALF_COMPUTE_ROUNDINGS);
    let eps = match (reference.elem_type().half_precision_epsilon(), computed) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b)?,
    };
    let largest = values
        .iter()
        .fold(0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let raised = Tolerance {
        rtol: tol.rtol.max(eps),
        atol: tol.atol.max(eps * largest),
        computed_in_half: tol.computed_in_half,
    };
    (raised.rtol > tol.rtol || raised.atol > tol.atol).then_some(raised)
}

/// The cosine of the angle between `a` and `b`: 1 for two zero vectors (equal), 0 for one zero vector.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum();
    let nb: f64 = b.iter().map(|x| x * x).sum();
    cosine_of(dot, na, nb)
}

/// The cosine from a dot product and the two squared norms.
fn cosine_of(dot: f64, na: f64, nb: f64) -> f64 {
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na.sqrt() * nb.sqrt()).max(1e-300)
    }
}

/// Compares `actual` against `reference`.
pub fn compare(
    name: &str,
    actual: &TensorData,
    reference: &TensorData,
    tol: Tolerance,
) -> Comparison {
    let mut c = Comparison {
        name: name.into(),
        shape: reference.shape().to_vec(),
        max_abs: f64::NAN,
        max_rel: f64::NAN,
        rel_l2: f64::NAN,
        cosine: f64::NAN,
        mismatched: reference.len(),
        ok: false,
        problem: None,
        raised_tolerance: None,
    };
    if actual.shape() != reference.shape() {
        c.problem = Some(format!(
            "shape {:?} vs reference {:?}",
            actual.shape(),
            reference.shape()
        ));
        return c;
    }
    if actual.elem_type() != reference.elem_type() {
        c.problem = Some(format!(
            "element type {:?} vs reference {:?}",
            actual.elem_type(),
            reference.elem_type()
        ));
        return c;
    }
    let (a, b) = (actual.to_f64(), reference.to_f64());
    c.raised_tolerance = effective(tol, reference, &b);
    let tol = c.raised_tolerance.unwrap_or(tol);
    let (mut max_abs, mut max_rel, mut dot, mut na, mut nb, mut bad) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0usize);
    let mut diff_sq = 0f64;
    for (&x, &y) in a.iter().zip(&b) {
        let d = (x - y).abs();
        // NaN in either is a mismatch unless both are NaN at the same place.
        let same_nan = x.is_nan() && y.is_nan();
        // Written so that a NaN difference counts as outside tolerance.
        let within = d <= tol.atol + tol.rtol * y.abs();
        if !same_nan && !within && x != y {
            bad += 1;
        }
        if !same_nan {
            max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
            if d > 0.0 {
                max_rel = max_rel.max(d / y.abs().max(1e-12));
            }
        }
        diff_sq += (x - y) * (x - y);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    c.max_abs = max_abs;
    c.max_rel = max_rel;
    c.rel_l2 = if nb == 0.0 {
        if diff_sq == 0.0 { 0.0 } else { f64::INFINITY }
    } else {
        (diff_sq / nb).sqrt()
    };
    c.cosine = cosine_of(dot, na, nb);
    c.mismatched = bad;
    c.ok = bad == 0;
    c
}
