//! The pass catalogue: one file per pass, each opening with its pattern, its preconditions and whether it keeps
//! the model's function exactly.
//!
//! A pass has a stable kebab-case name (what `--passes` takes and `normshift passes` lists), a one-line
//! description and a class. It edits a [`Model`] in place and says how many sites it changed; the caller
//! re-validates the graph after every pass.

mod eliminate_dead_nodes;

use serde::Serialize;

use crate::ir::{Model, ValidationError};

/// Whether a pass keeps the model's function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassClass {
    /// Outputs are unchanged up to float rounding; verification must match.
    Exact,
    /// Outputs change by design; verification measures by how much.
    FunctionChanging,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass `{pass}` left an invalid graph: {source}")]
    Invalid {
        pass: &'static str,
        source: ValidationError,
    },
    #[error("unknown pass `{0}` (`normshift passes` lists them)")]
    Unknown(String),
}

pub trait Pass {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn class(&self) -> PassClass;
    /// Applies the pass; returns how many places it changed.
    fn run(&self, model: &mut Model) -> Result<usize, PassError>;
}

/// Every pass, in the order `normshift passes` lists them.
pub fn catalogue() -> Vec<Box<dyn Pass>> {
    vec![Box::new(eliminate_dead_nodes::EliminateDeadNodes)]
}

pub fn by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    catalogue()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| PassError::Unknown(name.into()))
}

/// What one pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassRun {
    pub pass: &'static str,
    pub class: PassClass,
    pub changes: usize,
}

/// Runs the named passes in order, validating the graph after each.
pub fn run_pipeline(model: &mut Model, names: &[String]) -> Result<Vec<PassRun>, PassError> {
    let passes: Vec<Box<dyn Pass>> = names.iter().map(|n| by_name(n)).collect::<Result<_, _>>()?;
    let mut runs = Vec::new();
    for pass in passes {
        let changes = pass.run(model)?;
        model
            .graph
            .validate()
            .map_err(|source| PassError::Invalid {
                pass: pass.name(),
                source,
            })?;
        runs.push(PassRun {
            pass: pass.name(),
            class: pass.class(),
            changes,
        });
    }
    Ok(runs)
}
