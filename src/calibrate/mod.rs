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

pub mod fit;
mod sites;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use fit::{Linear, Rows};
pub use sites::KeptUnit;
use sites::{NormSite, Sites, Slot};

use crate::ir::index::GraphIndex;
use crate::ir::{Model, Patch, ValueRef};
use crate::onnx::build::float_tensor;
use crate::runtime::{Named, RuntimeKind, TensorData, Values};
use crate::verify::{
    InputSet, ModelRef, RuntimeChoice, VerifyError, first_that_runs, load_test_data, run_sets,
    test_data_sets,
};

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

/// The calibration input sets, split into those fitted on and those held out to judge the fit.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub dir: PathBuf,
    pub fit: Vec<InputSet>,
    pub held_out: Vec<InputSet>,
    /// Every this many sets (in folder order) one is held out: the 4th, 8th, ...
    pub hold_out_every: usize,
    pub settings: Settings,
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

impl Calibration {
    /// Reads `dir`'s `test_data_set_*` folders (ONNX test-data layout, inputs only) and holds out every
    /// `hold_out_every`-th; at least two sets are needed, one to fit and one to judge.
    pub fn load(dir: &Path, hold_out_every: usize) -> Result<Calibration, CalibrateError> {
        let err = |reason: String| CalibrateError::Inputs {
            path: dir.into(),
            reason,
        };
        if hold_out_every < 2 {
            return Err(err("one set in at least every 2 must be fitted on".into()));
        }
        let folders = test_data_sets(dir);
        if folders.len() < 2 {
            return Err(err(format!(
                "{} test_data_set_* folder(s); calibration needs at least 2 (some to fit, one held out to judge)",
                folders.len()
            )));
        }
        let (mut fit, mut held_out) = (Vec::new(), Vec::new());
        for (i, folder) in folders.iter().enumerate() {
            let set = InputSet {
                label: folder.display().to_string(),
                inputs: load_test_data(folder)
                    .map_err(|e| err(e.to_string()))?
                    .inputs,
            };
            if i % hold_out_every == hold_out_every - 1 {
                held_out.push(set);
            } else {
                fit.push(set);
            }
        }
        if held_out.is_empty() {
            // Fewer sets than `hold_out_every`: the last one judges.
            held_out.extend(fit.pop());
        }
        Ok(Calibration {
            dir: dir.into(),
            fit,
            held_out,
            hold_out_every,
            settings: Settings::default(),
        })
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

/// The values of one model on every set, as rows of tokens, and each set's shape for feeding them back.
struct Gathered {
    rows: Rows,
    shapes: Vec<Vec<usize>>,
}

fn gather(outputs: &[Vec<Named>], name: &str) -> Result<Gathered, CalibrateError> {
    let mut rows = Rows::default();
    let mut shapes = Vec::new();
    for outs in outputs {
        let t = outs
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| CalibrateError::Refused(format!("the run did not return `{name}`")))?;
        let shape = t.tensor.shape().to_vec();
        let width = *shape.last().unwrap_or(&1);
        rows.extend(&Rows::new(t.tensor.to_f64(), width));
        shapes.push(shape);
    }
    Ok(Gathered { rows, shapes })
}

/// `model` with `names` as extra outputs (those it lacks).
fn with_outputs(model: &Model, names: &[&str]) -> Result<Model, CalibrateError> {
    let mut m = model.clone();
    for name in names {
        let id = m
            .graph
            .value_id(name)
            .ok_or_else(|| CalibrateError::Refused(format!("no value `{name}`")))?;
        if !m.graph.outputs.contains(&id) {
            m.graph.outputs.push(id);
        }
    }
    Ok(m)
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
    let (model, unshared) = with_constants(plain, &new_params)?;
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

/// The original's values on the calibration sets: what the first refitted norm normalizes (the embedding, or
/// the sum of a first unit left as it is), and the sum of every unit refitted.
struct Reference<'s> {
    sites: &'s Sites,
    /// What the first refitted norm normalizes: where the walk starts.
    start: Gathered,
    sums: Vec<Rows>,
}

impl<'s> Reference<'s> {
    fn run(
        original: &ModelRef,
        sites: &'s Sites,
        sets: &[InputSet],
        choice: RuntimeChoice,
    ) -> Result<(Reference<'s>, RuntimeKind), CalibrateError> {
        let mut names = vec![sites.units[0].reads.input.as_str()];
        names.extend(sites.units.iter().map(|u| u.sum.as_str()));
        let probed = with_outputs(original.model, &names)?;
        let ran = first_that_runs(
            choice,
            &ModelRef {
                model: &probed,
                ..*original
            },
            sets,
        )?;
        let outputs = ran.sets;
        let float32 = outputs
            .iter()
            .flatten()
            .filter(|o| names.contains(&o.name.as_str()))
            .all(|o| matches!(o.tensor.values(), Values::F32(_)));
        if !float32 {
            return Err(CalibrateError::Refused(
                "its residual stream is not float32 (calibration fits float32 models)".into(),
            ));
        }
        let start = gather(&outputs, names[0])?;
        let sums = sites
            .units
            .iter()
            .map(|u| gather(&outputs, &u.sum).map(|g| g.rows))
            .collect::<Result<_, _>>()?;
        Ok((Reference { sites, start, sums }, ran.runtime))
    }

    fn tokens(&self) -> usize {
        self.start.rows.len()
    }

    /// What the norm the `l`-th refitted unit reads (or, for `l` = their count, the final norm) normalizes in
    /// the original: the start, or the sum of the unit before.
    fn normalized(&self, l: usize) -> &Rows {
        if l == 0 {
            &self.start.rows
        } else {
            &self.sums[l - 1]
        }
    }

    /// `x_l`: the original's stream entering unit `l` (the final norm's output for `l` = the unit count).
    fn stream_in(&self, l: usize) -> Rows {
        let norm = self.norm(l);
        fit::affine(
            &fit::standardized(self.normalized(l), norm.epsilon),
            &norm.scale.values,
            &norm.shift.values,
        )
    }

    fn norm(&self, l: usize) -> &'s NormSite {
        match self.sites.units.get(l) {
            Some(u) => &u.reads,
            None => &self.sites.final_norm,
        }
    }
}

/// The converted model's trunk as calibration walks it, with the exact conversion's scales beside it.
struct Walk<'r, 's> {
    reference: &'r Reference<'s>,
    settings: Settings,
    /// The converted trunk `h_l` on the calibration tokens.
    trunk: Rows,
    /// `S_l`.
    basis: Vec<f64>,
    /// `α_{l,t}` of the exact conversion.
    scales: Vec<f64>,
}

/// Rounds of the projection's fit, each refitting `W, b` for the per-token scales the previous one gave.
const ALTERNATIONS: usize = 3;

/// What refitting one projection gave.
struct ProjectionStep {
    linear: Linear,
    trunk_scale: f64,
    gain: f64,
    analytic_fit: f64,
    fit: f64,
}

impl<'r, 's> Walk<'r, 's> {
    fn start(sites: &Sites, reference: &'r Reference<'s>, settings: Settings) -> Walk<'r, 's> {
        let e = &reference.start.rows;
        Walk {
            reference,
            settings,
            trunk: e.clone(),
            basis: vec![1.0; sites.width],
            scales: fit::token_std(e, sites.units[0].reads.epsilon),
        }
    }

    /// Step 3: the norm's `γ, β` that best give `target` from the trunk; the output they give; its fit.
    fn refit_norm(&self, norm: &NormSite, target: &Rows) -> (Vec<f64>, Vec<f64>, Rows, f64) {
        let n = fit::standardized(&self.trunk, norm.epsilon);
        let (gamma, beta) = fit::fit_affine(&n, target, &norm.scale.values);
        let out = fit::affine(&n, &gamma, &beta);
        let err = fit::rel_l2(&out, target);
        (gamma, beta, out, err)
    }

    /// Steps 1, 2 and 4 for unit `l` whose projection reads `a`; moves the trunk past the unit.
    fn refit_projection(
        &mut self,
        l: usize,
        unit: &sites::UnitSite,
        a: &Rows,
    ) -> Result<ProjectionStep, String> {
        let reference = self.reference;
        let gamma = &unit.reads.scale.values;
        let beta = &unit.reads.shift.values;
        let mean_gamma = fit::mean(&gamma.iter().map(|g| g.abs()).collect::<Vec<_>>());
        if mean_gamma.is_nan() || mean_gamma <= 0.0 {
            return Err("its norm's scale is zero".into());
        }
        let trunk_scale = fit::median(&self.scales);
        let gain = trunk_scale / mean_gamma;
        // Step 2: the next basis, each channel's ratio bounded so that a near-zero γ cannot blow it up.
        let next_basis: Vec<f64> = self
            .basis
            .iter()
            .zip(gamma)
            .map(|(s, g)| {
                s * (mean_gamma / g.abs().max(0.05 * mean_gamma)).powf(self.settings.lambda)
            })
            .collect();
        // Step 1: the analytic projection.
        let w = &unit.projection.weight.values;
        let b = &unit.projection.bias.values;
        let d = b.len();
        let col = |j: usize| gain * next_basis[j];
        let prior = Linear {
            weight: w.iter().enumerate().map(|(x, v)| v * col(x % d)).collect(),
            bias: (0..d).map(|j| col(j) * (b[j] + beta[j])).collect(),
        };
        // The target's direction: the original's next standardized sum, in the new basis. Its per-token scale
        // is free (the norms reading the trunk do not see it): fitted with the projection, alternately.
        let next_norm = reference.norm(l + 1);
        let z = fit::standardized(&reference.sums[l], next_norm.epsilon);
        let mut direction = z;
        for row in direction.data.chunks_exact_mut(d) {
            row.iter_mut().zip(&next_basis).for_each(|(v, b)| *v *= b);
        }
        let direction = direction.centred();
        let here = self.trunk.centred();
        let after = |p: &Linear| self.trunk.plus(&a.project(&p.weight, &p.bias)).centred();
        let analytic = after(&prior);
        let mut scales = fit::scales_along(&analytic, &direction);
        let analytic_fit = fit::rel_l2(&analytic, &fit::scaled(&direction, &scales));
        let mut linear = prior.clone();
        let mut next = analytic;
        for _ in 0..ALTERNATIONS {
            let target = fit::scaled(&direction, &scales);
            let residual = Rows::new(
                target
                    .data
                    .iter()
                    .zip(&here.data)
                    .map(|(t, h)| t - h)
                    .collect(),
                d,
            );
            let weights: Vec<f64> = scales.iter().map(|s| 1.0 / (s * s)).collect();
            linear = fit::ridge(a, &residual, &weights, &prior, self.settings.ridge)?;
            next = after(&linear);
            scales = fit::scales_along(&next, &direction);
        }
        let fit = fit::rel_l2(&next, &fit::scaled(&direction, &scales));
        if !fit.is_finite() {
            return Err("the refitted trunk is not finite".into());
        }
        let next = self.trunk.plus(&a.project(&linear.weight, &linear.bias));
        let next_scales = scales;
        self.trunk = next;
        self.basis = next_basis;
        self.scales = next_scales;
        Ok(ProjectionStep {
            linear,
            trunk_scale,
            gain,
            analytic_fit,
            fit,
        })
    }
}

/// Runs unit's branch, from its norm's output (fed `x_hat`) to its projection's input, on every set.
fn run_branch(
    original: &ModelRef,
    unit: &sites::UnitSite,
    x_hat: &Rows,
    reference: &Reference,
    sets: &[InputSet],
    kind: RuntimeKind,
) -> Result<Rows, CalibrateError> {
    let (branch, _) = crate::analysis::facts::extract_typed(
        original.model,
        std::slice::from_ref(&unit.reads.output),
        std::slice::from_ref(&unit.projection.activation),
    )?;
    let branch = branch.graph;
    let inputs: Vec<String> = branch
        .graph
        .runtime_inputs()
        .map(|v| branch.graph.value(v).name.clone())
        .collect();
    let mut fed = Vec::with_capacity(sets.len());
    let mut start = 0;
    for (set, shape) in sets.iter().zip(&reference.start.shapes) {
        let rows: usize = shape.iter().rev().skip(1).product();
        let values: Vec<f32> = x_hat.data[start * x_hat.width..(start + rows) * x_hat.width]
            .iter()
            .map(|&v| v as f32)
            .collect();
        start += rows;
        let tensor =
            TensorData::new(shape.clone(), Values::F32(values)).map_err(CalibrateError::Refused)?;
        let mut named = vec![Named {
            name: unit.reads.output.clone(),
            tensor,
        }];
        for name in inputs.iter().skip(1) {
            let given = set.inputs.iter().find(|i| &i.name == name).ok_or_else(|| {
                CalibrateError::Refused(format!("a calibration set lacks the input `{name}`"))
            })?;
            named.push(given.clone());
        }
        fed.push(InputSet {
            label: set.label.clone(),
            inputs: named,
        });
    }
    let label = PathBuf::from(format!("the branch of `{}`", unit.reads.output));
    let outputs = run_sets(
        kind,
        &ModelRef {
            model: &branch,
            dir: original.dir,
            label: &label,
        },
        &fed,
    )?;
    Ok(gather(&outputs, &unit.projection.activation)?.rows)
}

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
fn with_constants(
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

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        1.0
    } else {
        dot / (na * nb)
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
