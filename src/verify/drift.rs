//! The drift profile of a function-changing rewrite: how far the two models' residual streams are apart after
//! each unit, so that a user sees where divergence starts and how it grows with depth.
//!
//! The probe after unit `l` is the first norm reading unit `l`'s residual sum in the original model (its
//! post-norm, or the next unit's pre-norm, or the final norm; when no norm reads it directly, the unit's
//! post-norm, which may read it through shape-only ops as OPT's do). The placement rewrites leave every norm
//! node and its output name in place, so the same value exists in both models: both are run with the probes
//! added as extra outputs, on the same inputs, and compared like outputs.

use serde::Serialize;

use super::judge::verify_pair;
use super::running::{ModelRef, RuntimeChoice};
use super::sets::InputSource;
use super::{Tolerance, VerifyError};
use crate::analysis::analyze;
use crate::ir::Model;
use crate::ir::index::GraphIndex;

/// One unit's figures, worst over the input sets.
#[derive(Debug, Clone, Serialize)]
pub struct DriftRow {
    pub unit: usize,
    /// The probed value (a norm output present in both models).
    pub value: String,
    pub rel_l2: f64,
    pub cosine: f64,
    pub max_abs: f64,
}

/// The probes of `model`: (unit, value name) of the stream after each unit as the next sublayer reads it
/// ([`crate::analysis::Analysis::probe_after`]).
pub fn probes(model: &Model) -> Vec<(usize, String)> {
    let a = analyze(&GraphIndex::new(&model.graph));
    (0..a.residual_units.len())
        .filter_map(|l| Some((l, model.graph.value(a.probe_after(l)?).name.clone())))
        .collect()
}

/// `model` with the probes as extra outputs (those it has).
fn probed(model: &Model, probes: &[(usize, String)]) -> Model {
    let mut m = model.clone();
    for (_, name) in probes {
        if let Some(id) = m.graph.value_id(name)
            && !m.graph.outputs.contains(&id)
        {
            m.graph.outputs.push(id);
        }
    }
    m
}

/// Runs both models with the probes of `original` as extra outputs and compares them probe by probe.
pub fn drift_profile(
    original: &ModelRef,
    rewritten: &ModelRef,
    source: &InputSource,
    choice: RuntimeChoice,
) -> Result<Vec<DriftRow>, VerifyError> {
    let probes: Vec<(usize, String)> = probes(original.model)
        .into_iter()
        .filter(|(_, name)| rewritten.model.graph.value_id(name).is_some())
        .collect();
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let a = probed(original.model, &probes);
    let b = probed(rewritten.model, &probes);
    let report = verify_pair(
        &ModelRef {
            model: &a,
            ..*original
        },
        &ModelRef {
            model: &b,
            ..*rewritten
        },
        source,
        Tolerance::default(),
        choice,
        super::VerifyBy::Model,
    )?;
    let rows = probes
        .iter()
        .map(|(unit, name)| {
            let seen: Vec<_> = report
                .runs
                .iter()
                .filter_map(|r| r.outputs.iter().find(|o| &o.name == name))
                .collect();
            DriftRow {
                unit: *unit,
                value: name.clone(),
                rel_l2: seen.iter().map(|c| c.rel_l2).fold(0.0, f64::max),
                cosine: seen.iter().map(|c| c.cosine).fold(1.0, f64::min),
                max_abs: seen.iter().map(|c| c.max_abs).fold(0.0, f64::max),
            }
        })
        .collect();
    Ok(rows)
}
