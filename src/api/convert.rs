//! `convert`: a conversion request, with its defaults and policy, turned into the session's options and run.

use std::path::{Path, PathBuf};

use super::Error;
use super::verify::InputsRequest;
use crate::Model;
use crate::calibrate::Calibration;
use crate::convert::{ConvertOptions, ConvertReport, Progress, VerifyOptions};
use crate::io::{DataLayout, SaveOptions};
use crate::passes::{PassContext, PipelineOptions, Target};
use crate::verify::{InputSource, RuntimeChoice, Tolerance, VerifyBy};

/// How the output keeps its tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OutputLayout {
    /// As the input did (and external on its own past protobuf's 2 GiB).
    #[default]
    Keep,
    /// Everything in the model file.
    Inline,
    /// Tensors of 1 KiB or more in one data file beside the output (`None`: the output's name + `.data`).
    External(Option<String>),
}

/// What a conversion is asked to do.
#[derive(Debug, Clone)]
pub struct ConvertRequest {
    /// Pass names, in order (blank entries are ignored).
    pub passes: Vec<String>,
    pub target: Target,
    /// Verify the result against the original before writing it.
    pub verify: bool,
    pub runtime: RuntimeChoice,
    pub verify_by: VerifyBy,
    pub inputs: InputsRequest,
    pub tolerance: Tolerance,
    pub allow_partial: bool,
    pub max_divergence: Option<f64>,
    /// Calibrate `post-to-pre` on the test-data sets in this folder.
    pub calibration: Option<PathBuf>,
    /// With `calibration`: every this many sets one is held out to judge the fit.
    pub hold_out_every: usize,
    pub stop_after: Option<String>,
    pub dump_ir: Option<PathBuf>,
    pub layout: OutputLayout,
    /// Allow the output to replace the input (or data the input reads).
    pub force: bool,
}

impl Default for ConvertRequest {
    fn default() -> Self {
        ConvertRequest {
            passes: Vec::new(),
            target: Target::default(),
            verify: true,
            runtime: RuntimeChoice::Auto,
            verify_by: VerifyBy::Auto,
            inputs: InputsRequest::default(),
            tolerance: Tolerance::default(),
            allow_partial: false,
            max_divergence: None,
            calibration: None,
            hold_out_every: 4,
            stop_after: None,
            dump_ir: None,
            layout: OutputLayout::Keep,
            force: false,
        }
    }
}

/// Input sets a conversion verifies on when none are named: two, so that a merged decoder runs both branches.
const CONVERT_SEEDS: u64 = 2;

impl ConvertRequest {
    /// The session's options. Reads the calibration sets when `calibration` names them; the held-out sets then
    /// verify the result, unless the request names its own inputs.
    pub fn options(&self) -> Result<ConvertOptions, Error> {
        self.inputs.check()?;
        let layout = match &self.layout {
            OutputLayout::Keep => DataLayout::Keep,
            OutputLayout::Inline => DataLayout::Inline,
            OutputLayout::External(location) => DataLayout::External {
                location: location.clone().filter(|l| !l.is_empty()),
            },
        };
        let mut options = ConvertOptions {
            passes: self
                .passes
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            pipeline: PipelineOptions {
                context: PassContext {
                    target: self.target,
                    allow_partial: self.allow_partial,
                },
                dump_ir: self.dump_ir.clone(),
                stop_after: self.stop_after.clone(),
            },
            save: SaveOptions {
                layout,
                replace_sources: self.force,
            },
            verify: self.verify.then(|| VerifyOptions {
                runtime: self.runtime,
                inputs: self.inputs.source(CONVERT_SEEDS),
                tolerance: self.tolerance,
                by: self.verify_by,
            }),
            max_divergence: self.max_divergence,
            calibration: None,
        };
        if let Some(dir) = &self.calibration {
            let calibration = Calibration::load(dir, self.hold_out_every)?;
            if let Some(verify) = options.verify.as_mut().filter(|_| !self.inputs.is_named()) {
                verify.inputs = InputSource::Sets(calibration.held_out.clone());
            }
            options.calibration = Some(calibration);
        }
        options.check()?;
        Ok(options)
    }
}

/// Converts `model` (read from `input`) and writes the result to `output` when it passes: the passes, the
/// verification, the atomic write.
pub fn convert(
    model: &Model,
    input: &Path,
    output: &Path,
    request: &ConvertRequest,
    progress: &mut dyn Progress,
) -> Result<ConvertReport, Error> {
    let options = request.options()?;
    Ok(crate::convert::convert(
        model, input, output, &options, progress,
    )?)
}

/// [`convert`] without the write: the result stays in memory (its report's `written` is false until the
/// caller puts it somewhere); `output` only labels it.
pub fn convert_in_memory(
    model: &Model,
    input: &Path,
    output: &Path,
    request: &ConvertRequest,
    progress: &mut dyn Progress,
) -> Result<(Model, ConvertReport), Error> {
    let options = request.options()?;
    Ok(crate::convert::convert_in_memory(
        model, input, output, &options, progress,
    )?)
}
