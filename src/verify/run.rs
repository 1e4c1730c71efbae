//! Running a model file with tract, input shapes pinned to the inputs given.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use super::Named;

/// tract could not load, optimize or run a model. The message is tract's own chain of causes, which names the
/// failing node (`node #12 "/CumSum" CumSum`).
#[derive(Debug, thiserror::Error)]
#[error("tract cannot {stage} {path}: {message}")]
pub struct TractFailure {
    pub path: PathBuf,
    pub stage: &'static str,
    pub message: String,
}

/// A model made runnable for one set of input shapes.
pub struct Runner {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
}

impl Runner {
    /// Loads `path` and pins each input to the type and shape of the matching entry of `inputs`.
    pub fn new(path: &Path, inputs: &[Named]) -> Result<Runner, TractFailure> {
        let fail = |stage: &'static str, e: TractError| TractFailure {
            path: path.into(),
            stage,
            message: format!("{e:#}").replace('\n', " "),
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| fail("load", e))?;
        let declared = model.input_outlets().map_err(|e| fail("load", e))?.len();
        if declared != inputs.len() {
            return Err(TractFailure {
                path: path.into(),
                stage: "feed",
                message: format!("it takes {declared} inputs, {} were given", inputs.len()),
            });
        }
        for (ix, input) in inputs.iter().enumerate() {
            let fact = InferenceFact::dt_shape(input.tensor.datum_type(), input.tensor.shape());
            model
                .set_input_fact(ix, fact)
                .map_err(|e| fail("pin the input shapes of", e))?;
        }
        let plan = model
            .into_optimized()
            .map_err(|e| fail("optimize", e))?
            .into_runnable()
            .map_err(|e| fail("prepare", e))?;
        Ok(Runner {
            path: path.into(),
            plan,
        })
    }

    /// Runs the model; outputs come back named after `output_names` (the graph's outputs, in order).
    pub fn run(
        &self,
        inputs: &[Named],
        output_names: &[String],
    ) -> Result<Vec<Named>, TractFailure> {
        let values: TVec<TValue> = inputs
            .iter()
            .map(|i| i.tensor.clone().into_tvalue())
            .collect();
        let outputs = self.plan.run(values).map_err(|e| TractFailure {
            path: self.path.clone(),
            stage: "run",
            message: format!("{e:#}").replace('\n', " "),
        })?;
        Ok(outputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| Named {
                name: output_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("output_{i}")),
                tensor: t.into_tensor(),
            })
            .collect())
    }
}
