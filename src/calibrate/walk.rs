//! The fitting walk: the original's values on the calibration sets, and the converted trunk walked unit by
//! unit, each unit's pre-norm and output projection refitted (steps 1 to 4 of the module's documentation).

use std::path::PathBuf;

use super::fit::{self, Linear, Rows};
use super::sites::{self, NormSite, Sites};
use super::{CalibrateError, Settings};
use crate::ir::Model;
use crate::runtime::{Named, RuntimeKind, TensorData, Values};
use crate::verify::{InputSet, ModelRef, RuntimeChoice, first_that_runs, run_sets};

/// The values of one model on every set, as rows of tokens, and each set's shape for feeding them back.
pub(super) struct Gathered {
    rows: Rows,
    shapes: Vec<Vec<usize>>,
}

pub(super) fn gather(outputs: &[Vec<Named>], name: &str) -> Result<Gathered, CalibrateError> {
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

/// The original's values on the calibration sets: what the first refitted norm normalizes (the embedding, or
/// the sum of a first unit left as it is), and the sum of every unit refitted.
pub(super) struct Reference<'s> {
    sites: &'s Sites,
    /// What the first refitted norm normalizes: where the walk starts.
    start: Gathered,
    sums: Vec<Rows>,
}

impl<'s> Reference<'s> {
    pub(super) fn run(
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

    pub(super) fn tokens(&self) -> usize {
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
    pub(super) fn stream_in(&self, l: usize) -> Rows {
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
pub(super) struct Walk<'r, 's> {
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
pub(super) struct ProjectionStep {
    pub linear: Linear,
    pub trunk_scale: f64,
    pub gain: f64,
    pub analytic_fit: f64,
    pub fit: f64,
}

impl<'r, 's> Walk<'r, 's> {
    pub(super) fn start(
        sites: &Sites,
        reference: &'r Reference<'s>,
        settings: Settings,
    ) -> Walk<'r, 's> {
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
    pub(super) fn refit_norm(
        &self,
        norm: &NormSite,
        target: &Rows,
    ) -> (Vec<f64>, Vec<f64>, Rows, f64) {
        let n = fit::standardized(&self.trunk, norm.epsilon);
        let (gamma, beta) = fit::fit_affine(&n, target, &norm.scale.values);
        let out = fit::affine(&n, &gamma, &beta);
        let err = fit::rel_l2(&out, target);
        (gamma, beta, out, err)
    }

    /// Steps 1, 2 and 4 for unit `l` whose projection reads `a`; moves the trunk past the unit.
    pub(super) fn refit_projection(
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
pub(super) fn run_branch(
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
