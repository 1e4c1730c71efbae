//! `verify`: two models on the same inputs, one model against stored outputs, or one model in two runtimes.

use std::path::{Path, PathBuf};

use super::Error;
use crate::runtime::RuntimeKind;
use crate::verify::{
    DimSizes, InputSource, ModelRef, RuntimeChoice, Tolerance, VerifyBy, VerifyReport,
    verify_and_bisect, verify_pair, verify_reference, verify_runtimes,
};

/// Where the inputs come from: stored (a test-data folder), or generated from seeds with sizes for symbolic
/// dimensions.
#[derive(Debug, Clone, Default)]
pub struct InputsRequest {
    pub inputs: Option<PathBuf>,
    /// How many seeded sets to generate (seeds 0..N); the command's default when absent.
    pub seeds: Option<u64>,
    /// Sizes of symbolic dimensions, by name.
    pub dims: Vec<(String, usize)>,
}

/// The most seeded sets one request may make.
const MAX_SEEDS: u64 = 1000;

impl InputsRequest {
    /// Stored inputs exclude generated ones; at least one set, and not absurdly many.
    pub fn check(&self) -> Result<(), Error> {
        if self.inputs.is_some() && (self.seeds.is_some() || !self.dims.is_empty()) {
            return Err(Error::Usage(
                "stored inputs and seeds or dimension sizes for generated ones exclude each other: give one \
                 or the other"
                    .into(),
            ));
        }
        match self.seeds {
            Some(n) if !(1..=MAX_SEEDS).contains(&n) => Err(Error::Usage(format!(
                "{n} seeded input sets: give between 1 and {MAX_SEEDS}"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the request names its inputs (stored, or how many to generate) rather than leaving it to the
    /// command.
    pub fn is_named(&self) -> bool {
        self.inputs.is_some() || self.seeds.is_some()
    }

    /// The inputs as the verifier takes them; `default_seeds` sets when neither stored inputs nor a number of
    /// seeds is given.
    pub fn source(&self, default_seeds: u64) -> InputSource {
        match &self.inputs {
            Some(dir) => InputSource::Dir(dir.clone()),
            None => InputSource::Seeds {
                seeds: (0..self.seeds.unwrap_or(default_seeds)).collect(),
                dims: DimSizes {
                    by_name: self.dims.iter().cloned().collect(),
                    ..Default::default()
                },
            },
        }
    }
}

/// Which runtimes run the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeRequest {
    /// One choice runs every model.
    Choice(RuntimeChoice),
    /// One model run in two runtimes, the second compared against the first.
    Both {
        reference: RuntimeKind,
        other: RuntimeKind,
    },
}

impl Default for RuntimeRequest {
    fn default() -> Self {
        RuntimeRequest::Choice(RuntimeChoice::Auto)
    }
}

/// What a verification is asked to compare, beside the model.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub runtime: RuntimeRequest,
    pub by: VerifyBy,
    /// When the outputs differ: find the first value inside the first differing unit.
    pub bisect: bool,
    pub inputs: InputsRequest,
    pub tolerance: Tolerance,
}

/// Input sets a verification makes when none are named.
const VERIFY_SEEDS: u64 = 1;

/// Compares `a` with `other`, or with the stored outputs in `reference`, or in two runtimes: what the request
/// and the arguments given say.
pub fn verify(
    a: &ModelRef,
    other: Option<&ModelRef>,
    reference: Option<&Path>,
    request: &VerifyRequest,
) -> Result<VerifyReport, Error> {
    request.inputs.check()?;
    let usage = |text: &str| Err(Error::Usage(text.into()));
    let source = request.inputs.source(VERIFY_SEEDS);
    let tol = request.tolerance;
    // Verification cuts models at their residual stream, which calls of model-local functions hide.
    let a_run = a.model.functions_inlined()?;
    let a = ModelRef {
        model: &a_run,
        ..*a
    };
    Ok(match (other, reference, request.runtime) {
        (None, None, RuntimeRequest::Both { reference, other }) => {
            if reference == other {
                return usage(&format!(
                    "the runtimes {reference},{other} are the same runtime twice"
                ));
            }
            verify_runtimes(&a, &source, tol, reference, other)?
        }
        (_, _, RuntimeRequest::Both { .. }) => {
            return usage(
                "two runtimes compare one model with itself: give no second model and no stored outputs",
            );
        }
        (Some(other), None, RuntimeRequest::Choice(choice)) => {
            let other_run = other.model.functions_inlined()?;
            let other = ModelRef {
                model: &other_run,
                ..*other
            };
            match request.bisect {
                true => verify_and_bisect(&a, &other, &source, tol, choice, request.by)?,
                false => verify_pair(&a, &other, &source, tol, choice, request.by)?,
            }
        }
        (None, Some(dir), RuntimeRequest::Choice(choice)) => {
            verify_reference(&a, dir, tol, choice)?
        }
        _ => {
            return usage(
                "give a second model to compare with, stored outputs to compare against, or two runtimes",
            );
        }
    })
}
