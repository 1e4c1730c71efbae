//! Judging a calibrated model (and the plain mapping) on the held-out sets: output by output, and unit by unit.

use serde::Serialize;

use super::CalibrateError;
use super::fit;
use crate::runtime::{Named, RuntimeKind};
use crate::verify::{InputSet, ModelRef, RuntimeChoice, cosine, run_sets};

/// How close a model comes to the original on the held-out sets: output by output, and unit by unit.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOut {
    pub outputs: Vec<OutputFit>,
    /// The drift profile on the held-out sets: each unit's probe (the norm reading its sum).
    pub units: Vec<crate::verify::DriftRow>,
}

/// One output's figures over the held-out sets.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFit {
    pub name: String,
    /// The cosine of each token's vector (the last axis) with the original's, averaged over every token.
    pub token_cosine: f64,
    pub min_token_cosine: f64,
    /// The cosine of the mean over the sequence axis (axis 1, for outputs of rank 3 or more; a sentence
    /// embedding's mean pooling for unpadded sets), averaged over the sequences.
    pub pooled_cosine: f64,
    /// `‖candidate − original‖ / ‖original‖` over every set.
    pub rel_l2: f64,
}

/// The original's outputs on the held-out sets, run once, to judge any number of candidates against.
pub struct HeldOutJudge<'a> {
    original: ModelRef<'a>,
    source: crate::verify::InputSource,
    sets: &'a [InputSet],
    kind: RuntimeKind,
    want: Vec<Vec<Named>>,
}

impl<'a> HeldOutJudge<'a> {
    pub fn new(
        original: ModelRef<'a>,
        sets: &'a [InputSet],
        kind: RuntimeKind,
    ) -> Result<Self, CalibrateError> {
        Ok(HeldOutJudge {
            want: run_sets(kind, &original, sets)?,
            source: crate::verify::InputSource::Sets(sets.to_vec()),
            original,
            sets,
            kind,
        })
    }

    /// How close `candidate` comes to the original, output by output and unit by unit.
    pub fn judge(&self, candidate: &ModelRef) -> Result<HeldOut, CalibrateError> {
        let got = run_sets(self.kind, candidate, self.sets)?;
        let outputs = (0..self.want.first().map_or(0, Vec::len))
            .map(|k| output_fit(&self.want, &got, k))
            .collect();
        let units = crate::verify::drift_profile(
            &self.original,
            candidate,
            &self.source,
            RuntimeChoice::Only(self.kind),
        )?;
        Ok(HeldOut { outputs, units })
    }
}

fn output_fit(want: &[Vec<Named>], got: &[Vec<Named>], k: usize) -> OutputFit {
    let (mut tokens, mut pooled) = (Vec::new(), Vec::new());
    let (mut diff, mut norm) = (0.0, 0.0);
    for (w, g) in want.iter().zip(got) {
        let (Some(w), Some(g)) = (w.get(k), g.get(k)) else {
            continue;
        };
        let shape = w.tensor.shape();
        let (a, b) = (w.tensor.to_f64(), g.tensor.to_f64());
        diff += a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>();
        norm += a.iter().map(|x| x * x).sum::<f64>();
        let width = (*shape.last().unwrap_or(&1)).max(1);
        tokens.extend(
            a.chunks(width)
                .zip(b.chunks(width))
                .map(|(x, y)| cosine(x, y)),
        );
        if shape.len() >= 3 {
            let seq = shape[1];
            let per = seq * shape[2..].iter().product::<usize>();
            for (x, y) in a.chunks(per.max(1)).zip(b.chunks(per.max(1))) {
                pooled.push(cosine(&pool(x, seq), &pool(y, seq)));
            }
        }
    }
    let name = want
        .iter()
        .flatten()
        .nth(k)
        .map_or(String::new(), |n| n.name.clone());
    OutputFit {
        name,
        token_cosine: fit::mean(&tokens),
        min_token_cosine: tokens.iter().copied().fold(1.0, f64::min),
        pooled_cosine: if pooled.is_empty() {
            fit::mean(&tokens)
        } else {
            fit::mean(&pooled)
        },
        rel_l2: (diff / norm.max(f64::MIN_POSITIVE)).sqrt(),
    }
}

/// The mean over the sequence of one sequence's `[seq, …, width]` values (every trailing position kept apart).
fn pool(x: &[f64], seq: usize) -> Vec<f64> {
    let per = x.len() / seq.max(1);
    (0..per)
        .map(|i| (0..seq).map(|s| x[s * per + i]).sum::<f64>() / seq as f64)
        .collect()
}
