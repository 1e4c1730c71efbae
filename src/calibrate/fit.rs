//! The numbers of calibration: per-token statistics, per-channel least squares for a norm's scale and shift,
//! and the weighted ridge least squares for an output projection. Token-by-channel data are [`Rows`]; the
//! dense products and solves are faer's.

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};

/// Tokens by channels, row-major.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub data: Vec<f64>,
    pub width: usize,
}

impl Rows {
    pub fn new(data: Vec<f64>, width: usize) -> Rows {
        Rows { data, width }
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn row(&self, t: usize) -> &[f64] {
        &self.data[t * self.width..(t + 1) * self.width]
    }

    fn row_mut(&mut self, t: usize) -> &mut [f64] {
        &mut self.data[t * self.width..(t + 1) * self.width]
    }

    pub fn rows(&self) -> impl Iterator<Item = &[f64]> {
        self.data.chunks_exact(self.width.max(1))
    }

    pub fn extend(&mut self, more: &Rows) {
        self.width = more.width;
        self.data.extend_from_slice(&more.data);
    }

    fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_row_major_slice(&self.data, self.len(), self.width)
    }

    fn from_mat(m: &Mat<f64>) -> Rows {
        let (n, w) = (m.nrows(), m.ncols());
        Rows::new((0..n * w).map(|i| m[(i / w, i % w)]).collect(), w)
    }

    /// Each row minus its mean.
    pub fn centred(&self) -> Rows {
        let mut out = self.clone();
        for t in 0..out.len() {
            let r = out.row_mut(t);
            let m = mean(r);
            r.iter_mut().for_each(|v| *v -= m);
        }
        out
    }

    /// `self · w + b` with `w` `[k, d]` row-major.
    pub fn project(&self, w: &[f64], b: &[f64]) -> Rows {
        let d = b.len();
        let w = MatRef::from_row_major_slice(w, self.width, d);
        let mut out = Rows::from_mat(&(self.mat() * w));
        for t in 0..out.len() {
            out.row_mut(t).iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
        out
    }

    /// `self + other`, elementwise.
    pub fn plus(&self, other: &Rows) -> Rows {
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a + b)
            .collect();
        Rows::new(data, self.width)
    }
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The median (of a copy).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Each row's `sqrt(var + ε)`, the divisor of a LayerNorm.
pub fn token_std(x: &Rows, epsilon: f64) -> Vec<f64> {
    x.rows()
        .map(|r| {
            let m = mean(r);
            (r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / r.len() as f64 + epsilon).sqrt()
        })
        .collect()
}

/// What a LayerNorm computes before its scale and shift: `(x − mean) / sqrt(var + ε)` per row.
pub fn standardized(x: &Rows, epsilon: f64) -> Rows {
    let std = token_std(x, epsilon);
    let mut out = x.centred();
    for (t, s) in std.iter().enumerate() {
        out.row_mut(t).iter_mut().for_each(|v| *v /= s);
    }
    out
}

/// `γ ⊙ n + β` per row.
pub fn affine(n: &Rows, gamma: &[f64], beta: &[f64]) -> Rows {
    let mut out = n.clone();
    for t in 0..out.len() {
        for ((v, g), b) in out.row_mut(t).iter_mut().zip(gamma).zip(beta) {
            *v = *v * g + b;
        }
    }
    out
}

/// The per-channel `γ, β` minimizing `Σ_t (γ_c n_tc + β_c − x_tc)²`. A channel `n` does not vary on keeps
/// `fallback`'s scale and takes the mean as its shift.
pub fn fit_affine(n: &Rows, x: &Rows, fallback: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (d, len) = (n.width, n.len() as f64);
    let (mut sn, mut sx, mut snn, mut snx) =
        (vec![0.0; d], vec![0.0; d], vec![0.0; d], vec![0.0; d]);
    for (rn, rx) in n.rows().zip(x.rows()) {
        for c in 0..d {
            sn[c] += rn[c];
            sx[c] += rx[c];
            snn[c] += rn[c] * rn[c];
            snx[c] += rn[c] * rx[c];
        }
    }
    let mut gamma = vec![0.0; d];
    let mut beta = vec![0.0; d];
    for c in 0..d {
        let (mn, mx) = (sn[c] / len, sx[c] / len);
        let var = snn[c] / len - mn * mn;
        gamma[c] = if var > 1e-12 {
            (snx[c] / len - mn * mx) / var
        } else {
            fallback[c]
        };
        beta[c] = mx - gamma[c] * mn;
    }
    (gamma, beta)
}

/// Each row's scale along `direction`'s row: `⟨x, u⟩ / ⟨u, u⟩`, kept at least 1e-3 of the median (a row the
/// projection flips or zeroes would weigh without bound in a relative fit).
pub fn scales_along(x: &Rows, direction: &Rows) -> Vec<f64> {
    let raw: Vec<f64> = x
        .rows()
        .zip(direction.rows())
        .map(|(x, u)| {
            let dot: f64 = x.iter().zip(u).map(|(x, u)| x * u).sum();
            let uu: f64 = u.iter().map(|u| u * u).sum();
            dot / uu.max(f64::MIN_POSITIVE)
        })
        .collect();
    let floor = 1e-3 * median(&raw).abs().max(f64::MIN_POSITIVE);
    raw.into_iter().map(|s| s.max(floor)).collect()
}

/// Each row of `x` times its scale.
pub fn scaled(x: &Rows, scales: &[f64]) -> Rows {
    let mut out = x.clone();
    for (t, s) in scales.iter().enumerate() {
        out.row_mut(t).iter_mut().for_each(|v| *v *= s);
    }
    out
}

/// `‖a − b‖ / ‖b‖` over all elements.
pub fn rel_l2(a: &Rows, b: &Rows) -> f64 {
    let num: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    let den: f64 = b.data.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// A projection `W` (`[k, d]`, row-major) and bias `b` (`[d]`).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

/// Weighted ridge least squares for a projection whose result is added to a LayerNorm'd stream: the `W, b`
/// minimizing `Σ_t w_t ‖centre(a_t W + b − r_t)‖² + μ (‖W − W₀‖² + ‖b − b₀‖²)`, with `μ = rho` times the
/// mean diagonal of the weighted Gram matrix (so `rho` does not depend on the data's scale).
///
/// Only the centred part of each row is fitted: the stream's per-token mean is what every LayerNorm reading
/// it removes, so the part of `W` and `b` that moves all channels alike (their mean over output channels)
/// changes nothing and stays the prior's. Centring the targets and the prior per output channel gives the
/// same solution as the centred problem (the solve is linear and the centred inputs sum to zero).
pub fn ridge(a: &Rows, r: &Rows, w: &[f64], prior: &Linear, rho: f64) -> Result<Linear, String> {
    let (k, d, n) = (a.width, r.width, a.len());
    // Rows scaled by √w_t, with a 1 for the bias.
    let scaled = Mat::<f64>::from_fn(n, k + 1, |t, i| {
        let s = w[t].sqrt();
        if i < k { a.row(t)[i] * s } else { s }
    });
    let target = Mat::<f64>::from_fn(n, d, |t, j| r.row(t)[j] * w[t].sqrt());
    let target = centre_columns(target);
    let mut gram = scaled.transpose() * &scaled;
    let mu = rho * (0..=k).map(|i| gram[(i, i)]).sum::<f64>() / (k + 1) as f64;
    for i in 0..=k {
        gram[(i, i)] += mu;
    }
    let prior_mat = Mat::<f64>::from_fn(k + 1, d, |i, j| {
        if i < k {
            prior.weight[i * d + j]
        } else {
            prior.bias[j]
        }
    });
    let prior_means: Vec<f64> = (0..=k)
        .map(|i| (0..d).map(|j| prior_mat[(i, j)]).sum::<f64>() / d as f64)
        .collect();
    let prior_centred = Mat::<f64>::from_fn(k + 1, d, |i, j| prior_mat[(i, j)] - prior_means[i]);
    let rhs = scaled.transpose() * &target + &prior_centred * faer::Scale(mu);
    let llt = gram
        .llt(Side::Lower)
        .map_err(|e| format!("the ridge system is not positive definite ({e:?})"))?;
    let solved = llt.solve(&rhs);
    let value = |i: usize, j: usize| solved[(i, j)] + prior_means[i];
    Ok(Linear {
        weight: (0..k * d).map(|x| value(x / d, x % d)).collect(),
        bias: (0..d).map(|j| value(k, j)).collect(),
    })
}

/// Each row of `m` minus its mean (over the columns: the output channels).
fn centre_columns(mut m: Mat<f64>) -> Mat<f64> {
    for t in 0..m.nrows() {
        let mean = (0..m.ncols()).map(|j| m[(t, j)]).sum::<f64>() / m.ncols() as f64;
        for j in 0..m.ncols() {
            m[(t, j)] -= mean;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_affine_recovers_a_channel_map() {
        let n = Rows::new(vec![0.0, 1.0, 1.0, -1.0, 2.0, 0.5], 2);
        let x = affine(&n, &[2.0, -3.0], &[0.5, 1.0]);
        let (g, b) = fit_affine(&n, &x, &[1.0, 1.0]);
        for (got, want) in g.iter().chain(&b).zip([2.0, -3.0, 0.5, 1.0]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn ridge_without_penalty_solves_the_centred_problem_and_keeps_the_prior_mean() {
        // Targets made by a known centred map: the fit finds it (up to the mean over channels, the prior's).
        let a = Rows::new((0..40).map(|i| ((i * 37 % 11) as f64) - 5.0).collect(), 2);
        let truth = Linear {
            weight: vec![1.0, -1.0, 0.5, -0.5],
            bias: vec![0.25, -0.25],
        };
        let r = a.project(&truth.weight, &truth.bias);
        let prior = Linear {
            weight: vec![3.0, 3.0, 1.0, 1.0],
            bias: vec![2.0, 2.0],
        };
        let fit = ridge(&a, &r, &vec![1.0; a.len()], &prior, 1e-12).unwrap();
        let want = [4.0, 2.0, 1.5, 0.5, 2.25, 1.75];
        for (got, want) in fit.weight.iter().chain(&fit.bias).zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
