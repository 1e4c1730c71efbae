//! The calibration input sets: read from a folder in the ONNX test-data layout, every N-th held out.

use std::path::{Path, PathBuf};

use super::{CalibrateError, Settings};
use crate::verify::{InputSet, load_test_data, test_data_sets};

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
