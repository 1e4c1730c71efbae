//! Calibrated `post-to-pre`: the Pre-LN model `post-to-pre` makes of a trained Post-LN model, with its pre-norms,
//! output projections and final norm refitted on calibration inputs so that it approximates the original.
//!
//! The plain mapping moves each skip across a norm and keeps every parameter; on a trained model the trunk then
//! carries raw sums whose scale and per-channel shape the original's norms used to reset, and the outputs are
//! lost (cosine ≈ 0.1 on MiniLM). Write the Post-LN stream as `x_l = γ ⊙ z_l + β` with `z_l` the standardized
//! sum of the unit before. A Pre-LN trunk `h_l = α_{l,t} z_l` reproduces it exactly only if every unit adds
//! `α_{l,t} [F_l(x_l) + (γ − 1) ⊙ z_l + β]`: a per-token scale (A) and a per-channel rescaling of the whole trunk
//! (B) that Pre-LN form cannot express. Calibration approximates both, unit by unit along the converted model's
//! own trajectory on the calibration tokens:
//!
//! 1. **Gains**: `c_l = ᾱ_l / mean|γ|`, with `ᾱ_l` the median over tokens of the exact trunk scale
//!    (`α_0 = std(e)`, `e` what the first refitted norm normalizes; `α_{l+1} = α_l · std(y_l) / mean|γ|`;
//!    measured on the original), folded with `β` into the output projection: `W₀ = W diag(c_l S_{l+1})`,
//!    `b₀ = c_l S_{l+1} ⊙ (b + β)`.
//! 2. **Basis**: the trunk's channels are carried in a basis that follows `γ` part of the way,
//!    `S_{l+1} = S_l ⊙ (mean|γ| / |γ|)^λ` (λ = 1 would remove (B) exactly but spreads channel scales by orders
//!    of magnitude, which the norms' statistics do not survive).
//! 3. **Norms**: each pre-norm's `γ, β` are refitted per channel by least squares so that it outputs the
//!    original's `x_l` from the converted trunk; the final norm likewise outputs the original's last `x`.
//! 4. **Projections**: each unit's `W, b` are refitted by weighted ridge least squares so that the trunk after
//!    the unit is `α_{l+1,t} S_{l+1} ⊙ z_{l+1,t}` up to its per-token mean (token weights `1/α²`: a relative
//!    fit), the ridge pulling toward step 1's `W₀, b₀` (pulling toward zero overfits the calibration tokens).
//!
//! The branches between norm and projection are run in a runtime on the converted trunk's values (each
//! branch extracted from the original, whose branches `post-to-pre` does not touch); everything else is
//! computed here. The result has the plain mapping's graph and new constants: a true Pre-LN model, or `mixed`
//! when the first unit is kept (below), as the plain mapping is.
//!
//! A first unit that reads no norm (no embedding norm, as in OPT; or one behind a projection to the hidden
//! width, as in ALBERT and ELECTRA) is one `post-to-pre` leaves as it is: the converted trunk after it is the
//! original's first sum exactly, and the walk starts there, with that sum in the embedding's place.

mod fit;
mod held_out;
mod hook;
mod patch;
mod sets;
mod sites;
mod walk;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

pub use held_out::{HeldOut, HeldOutJudge, OutputFit};
pub use hook::{CALIBRATED, Calibrating, CalibrationReport};
pub use patch::UnsharedConstant;
pub use sets::Calibration;
pub use sites::KeptUnit;

use crate::ir::Model;
use crate::runtime::RuntimeKind;
use crate::verify::{InputSet, ModelRef, RuntimeChoice, VerifyError};
use sites::Slot;
use walk::{Reference, Walk, run_branch};

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("cannot calibrate: {0}")]
    Refused(String),
    #[error("cannot read the calibration inputs {path}: {reason}")]
    Inputs { path: PathBuf, reason: String },
    #[error("calibration could not run the model: {0}")]
    Run(#[from] VerifyError),
    #[error("calibration could not cut out a branch: {0}")]
    Extract(#[from] crate::ir::ExtractError),
    #[error("calibration could not write its constants: {0}")]
    Patch(#[from] crate::passes::PassError),
    #[error("calibration failed at unit {unit}: {reason}")]
    Fit { unit: usize, reason: String },
}

/// The method's two constants.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settings {
    /// How far the trunk's basis follows the norms' scales (step 2).
    pub lambda: f64,
    /// The ridge's pull toward the analytic projection, relative to the data (step 4).
    pub ridge: f64,
}

impl Default for Settings {
    fn default() -> Self {
        // Chosen on MiniLM-L6's 36 fitted / 12 held-out sets (docs/calibration.md): held-out token cosine rises from 0.82
        // to 0.91 as the ridge goes from 0.05 to 8 (weaker pulls overfit), and λ = 0.4 beats 0.2, 0.6 and 0.8.
        Settings {
            lambda: 0.4,
            ridge: 8.0,
        }
    }
}

/// What calibration fitted, and how closely on the tokens it fitted on.
#[derive(Debug, Clone, Serialize)]
pub struct Fitted {
    pub sets: usize,
    /// The runtime that ran the original and its branches.
    pub runtime: RuntimeKind,
    pub tokens: usize,
    pub settings: Settings,
    /// The units left as the plain mapping has them (a first unit that reads no norm), before the fitted ones.
    pub kept: Vec<KeptUnit>,
    pub units: Vec<UnitFit>,
    /// Shared constants that refitted readers now hold copies of.
    pub unshared: Vec<UnsharedConstant>,
    /// How many bytes of weights the calibrated model has more than the plain mapping (the copies, less the
    /// originals no op reads any more).
    pub added_bytes: i64,
    /// The final norm, refitted (step 3).
    pub final_norm: String,
    /// Relative L2 of the final norm's output against the original's, on the fitted tokens.
    pub final_fit: f64,
    pub elapsed_s: f64,
}

/// One unit's fit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitFit {
    pub unit: usize,
    /// The pre-norm refitted (its output's name).
    pub norm: String,
    /// The output projection refitted (its weight's reader).
    pub projection: String,
    /// `ᾱ_l`, the median exact trunk scale.
    pub trunk_scale: f64,
    /// `c_l`.
    pub gain: f64,
    /// Relative L2 of the pre-norm's output against the original's `x_l`, on the fitted tokens.
    pub norm_fit: f64,
    /// Relative L2 of the trunk after the unit against its target, with the analytic projection and refitted.
    pub analytic_fit: f64,
    pub projection_fit: f64,
}

/// Calibrates `plain` (what `post-to-pre` made of `original`) on `sets`, running models in the first runtime of
/// `choice` that runs the original.
pub fn calibrate(
    original: &ModelRef,
    plain: &Model,
    sets: &[InputSet],
    choice: RuntimeChoice,
    settings: Settings,
) -> Result<(Model, Fitted), CalibrateError> {
    let started = Instant::now();
    let sites = sites::find(original.model).map_err(CalibrateError::Refused)?;
    let (reference, kind) = Reference::run(original, &sites, sets, choice)?;
    let mut walk = Walk::start(&sites, &reference, settings);
    let mut fits = Vec::new();
    let mut new_params: Vec<(&Slot, Vec<f64>)> = Vec::new();
    for (l, unit) in sites.units.iter().enumerate() {
        let fail = |reason: String| CalibrateError::Fit {
            unit: unit.index,
            reason,
        };
        let (gamma, beta, x_hat, norm_fit) = walk.refit_norm(&unit.reads, &reference.stream_in(l));
        let a = run_branch(original, unit, &x_hat, &reference, sets, kind)?;
        let step = walk.refit_projection(l, unit, &a).map_err(fail)?;
        fits.push(UnitFit {
            unit: unit.index,
            norm: unit.reads.output.clone(),
            projection: unit.projection.weight.reader.clone(),
            trunk_scale: step.trunk_scale,
            gain: step.gain,
            norm_fit,
            analytic_fit: step.analytic_fit,
            projection_fit: step.fit,
        });
        new_params.push((&unit.reads.scale, gamma));
        new_params.push((&unit.reads.shift, beta));
        new_params.push((
            &unit.projection.weight,
            unit.projection.stored(step.linear.weight),
        ));
        new_params.push((&unit.projection.bias, step.linear.bias));
    }
    let last = reference.stream_in(sites.units.len());
    let (gamma, beta, _, final_fit) = walk.refit_norm(&sites.final_norm, &last);
    new_params.push((&sites.final_norm.scale, gamma));
    new_params.push((&sites.final_norm.shift, beta));
    let (model, unshared) = patch::with_constants(plain, &new_params)?;
    let weights = |m: &Model| m.graph.tensors.values().map(|t| t.byte_len()).sum::<u64>() as i64;
    let added_bytes = weights(&model) - weights(plain);
    Ok((
        model,
        Fitted {
            sets: sets.len(),
            tokens: reference.tokens(),
            runtime: kind,
            settings,
            kept: sites.kept.clone(),
            units: fits,
            unshared,
            added_bytes,
            final_norm: sites.final_norm.output.clone(),
            final_fit,
            elapsed_s: started.elapsed().as_secs_f64(),
        },
    ))
}
