//! Calibration as a step of the pass pipeline: after `post-to-pre` runs, its result is refitted on the
//! calibration sets, and both mappings are judged on the held-out sets, before the next pass runs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CalibrateError, Calibration, Fitted, HeldOut, HeldOutJudge, calibrate};
use crate::ir::Model;
use crate::passes::Hook;
use crate::verify::{ModelRef, RuntimeChoice};

/// The pass calibration refits.
pub const CALIBRATED: &str = "post-to-pre";

/// What calibration did and how close it came, on sets it did not fit on, against the plain mapping.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationReport {
    pub dir: PathBuf,
    pub fitted: Fitted,
    /// The held-out sets (every `hold_out_every`-th folder), which judge both mappings.
    pub held_out_sets: usize,
    pub hold_out_every: usize,
    pub calibrated: HeldOut,
    pub plain: HeldOut,
}

/// The pipeline's calibration step: keeps the model `post-to-pre` is given, then refits what it made.
pub struct Calibrating<'a> {
    calibration: &'a Calibration,
    /// Where the model came from: its external data resolves there, and messages name it.
    input: &'a Path,
    choice: RuntimeChoice,
    /// Told when calibration and judging begin, for a progress display.
    stage: &'a mut dyn FnMut(&str),
    before: Option<Model>,
    report: Option<CalibrationReport>,
}

impl<'a> Calibrating<'a> {
    pub fn new(
        calibration: &'a Calibration,
        input: &'a Path,
        choice: RuntimeChoice,
        stage: &'a mut dyn FnMut(&str),
    ) -> Self {
        Calibrating {
            calibration,
            input,
            choice,
            stage,
            before: None,
            report: None,
        }
    }

    /// What calibration did; `None` when the pipeline ended before `post-to-pre` ran.
    pub fn report(self) -> Option<CalibrationReport> {
        self.report
    }
}

impl<E: From<CalibrateError>> Hook<E> for Calibrating<'_> {
    fn before(&mut self, pass: &str, model: &Model) -> Result<(), E> {
        if pass == CALIBRATED && self.report.is_none() {
            self.before = Some(model.clone());
        }
        Ok(())
    }

    fn after(&mut self, pass: &str, model: &mut Model) -> Result<(), E> {
        if pass != CALIBRATED {
            return Ok(());
        }
        let Some(before) = self.before.take() else {
            return Ok(());
        };
        let calibration = self.calibration;
        let reference = ModelRef::loaded(&before, self.input);
        (self.stage)(&format!(
            "calibrating on {} input sets",
            calibration.fit.len()
        ));
        let (calibrated, fitted) = calibrate(
            &reference,
            model,
            &calibration.fit,
            self.choice,
            calibration.settings,
        )?;
        (self.stage)(&format!(
            "judging both mappings on {} held-out sets",
            calibration.held_out.len()
        ));
        let plain = std::mem::replace(model, calibrated);
        let judge = HeldOutJudge::new(reference, &calibration.held_out, fitted.runtime)?;
        let candidate = |m| ModelRef {
            model: m,
            ..reference
        };
        self.report = Some(CalibrationReport {
            dir: calibration.dir.clone(),
            held_out_sets: calibration.held_out.len(),
            hold_out_every: calibration.hold_out_every,
            calibrated: judge.judge(&candidate(model))?,
            plain: judge.judge(&candidate(&plain))?,
            fitted,
        });
        Ok(())
    }
}
