//! Comparing two output tensors: the figures a user needs to judge a difference.

use serde::Serialize;

use crate::runtime::TensorData;

/// An element passes when `|a - b| <= atol + rtol * |b|`, `b` being the reference. For float16 and bfloat16 outputs the
/// tolerance is raised to what the type can resolve (see [`Comparison::raised_tolerance`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rtol: 1e-4,
            atol: 1e-5,
        }
    }
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
/// the type, relative to each element and to the largest element (an intermediate rounded at that magnitude).
fn effective(tol: Tolerance, reference: &TensorData, values: &[f64]) -> Option<Tolerance> {
    let eps = reference.elem_type().half_precision_epsilon()?;
    let largest = values
        .iter()
        .fold(0f64, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let raised = Tolerance {
        rtol: tol.rtol.max(eps),
        atol: tol.atol.max(eps * largest),
    };
    (raised.rtol > tol.rtol || raised.atol > tol.atol).then_some(raised)
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
    c.cosine = if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na.sqrt() * nb.sqrt()).max(1e-300)
    };
    c.mismatched = bad;
    c.ok = bad == 0;
    c
}
