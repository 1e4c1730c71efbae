//! The pass manager inside subgraph bodies: every pass runs on each `If` branch and `Loop`/`Scan` body (nested
//! ones too) as on a graph of its own, seeing the constants of the graphs around it, and the body is written
//! back into its node with the node's reads from the enclosing graph re-derived.

use super::{BodyRun, Pass, PassContext, PassError, apply_and_clean};
use crate::ir::subgraph::{BodyAt, Scope};
use crate::ir::{Graph, Model, ValidationError};

/// Runs `pass` in every body of `model`, after it ran on the main graph. The model's opset is already what the
/// bodies need (`raise_opset_for_bodies`).
pub(super) fn run_in_bodies(
    model: &mut Model,
    pass: &dyn Pass,
    cx: &PassContext,
) -> Result<Vec<BodyRun>, PassError> {
    let opset = model.opset_version("").unwrap_or(1);
    let mut runs = Vec::new();
    let mut visit = |at: &BodyAt, body: &mut Model| -> Result<bool, PassError> {
        let patch = pass.plan(body, cx).map_err(|e| inside(&at.path, e))?;
        if let Some(needed) = patch.required_opset("").filter(|&v| v > opset) {
            return Err(PassError::Refused {
                pass: pass.name(),
                reason: format!(
                    "inside {} it needs opset {needed} after the model was raised to {opset}",
                    at.path
                ),
            });
        }
        let notes = patch.notes.clone();
        let (changes, cleaned) = apply_and_clean(body, patch, pass, cx)?;
        runs.push(BodyRun {
            path: at.path.clone(),
            changes,
            cleaned,
            notes,
        });
        Ok(changes > 0 || cleaned > 0)
    };
    rewrite_bodies(model, &Scope::default(), "", pass.name(), &mut visit)?;
    Ok(runs)
}

/// A refusal inside a body says which body.
fn inside(path: &str, e: PassError) -> PassError {
    match e {
        PassError::Refused { pass, reason } => PassError::Refused {
            pass,
            reason: format!("in {path}: {reason}"),
        },
        other => other,
    }
}

/// The highest default-domain opset the pass's patches would need in any body.
pub(super) fn opset_needed_in_bodies(
    model: &Model,
    pass: &dyn Pass,
    cx: &PassContext,
) -> Result<i64, PassError> {
    let mut needed = 0;
    let invalid = |source| PassError::Invalid {
        pass: pass.name(),
        source,
    };
    let mut visit = |at: &BodyAt, body: &Graph| -> Result<(), PassError> {
        let body = body_model(model, body.clone());
        let patch = pass.plan(&body, cx).map_err(|e| inside(&at.path, e))?;
        needed = needed.max(patch.required_opset("").unwrap_or(0));
        Ok(())
    };
    model
        .graph
        .visit_bodies(&Scope::default(), "", &mut |at, body| {
            visit(at, body).map_err(BodyError::Pass)
        })
        .map_err(|e| match e {
            BodyError::Pass(e) => e,
            BodyError::Invalid(source) => invalid(source),
        })?;
    Ok(needed)
}

/// What the read-only walk can fail with: the pass, or the import of a body.
enum BodyError {
    Pass(PassError),
    Invalid(ValidationError),
}

impl From<ValidationError> for BodyError {
    fn from(e: ValidationError) -> Self {
        BodyError::Invalid(e)
    }
}

/// A body as a model of its own: the enclosing model's header (opsets, functions) around the body's graph.
fn body_model(outer: &Model, graph: Graph) -> Model {
    Model {
        graph,
        header: outer.header.clone(),
        warnings: Vec::new(),
        external_files: Vec::new(),
        source_file: None,
    }
}

/// Calls `visit` on every body (parents before the bodies nested in them), and writes back each body that
/// `visit` or a nested body changed.
fn rewrite_bodies(
    model: &mut Model,
    enclosing: &Scope,
    prefix: &str,
    pass: &'static str,
    visit: &mut dyn FnMut(&BodyAt, &mut Model) -> Result<bool, PassError>,
) -> Result<bool, PassError> {
    let invalid = |source| PassError::Invalid { pass, source };
    let seen = enclosing.inner(&model.graph);
    let mut any = false;
    for at in model.graph.bodies(prefix).map_err(invalid)? {
        let graph = model.graph.import_body(&at, &seen).map_err(invalid)?;
        let mut body = body_model(model, graph);
        let mut changed = visit(&at, &mut body)?;
        if body.graph.has_bodies() {
            changed |= rewrite_bodies(&mut body, &seen, &at.path, pass, visit)?;
        }
        if changed {
            let proto = body.graph.to_proto().map_err(invalid)?;
            model.graph.replace_body(&at, proto).map_err(invalid)?;
            adopt_imports(&mut model.header, &body.header);
            any = true;
        }
    }
    Ok(any)
}

/// A rewrite inside a body may import a domain (`com.microsoft` for onnxruntime's fused norms) or need a newer
/// IR version: the model, which owns both, takes them over.
fn adopt_imports(model: &mut crate::onnx::ModelProto, body: &crate::onnx::ModelProto) {
    for import in &body.opset_import {
        match model
            .opset_import
            .iter_mut()
            .find(|o| o.domain() == import.domain())
        {
            Some(have) => have.version = have.version.max(import.version),
            None => model.opset_import.push(import.clone()),
        }
    }
    if body.ir_version() > model.ir_version() {
        model.ir_version = body.ir_version;
    }
}
