//! The pass catalogue and the pass manager. One file per pass, each opening with its pattern, its
//! preconditions and whether it keeps the model's function exactly; `README.md` here says how to write one.
//!
//! A pass has a stable kebab-case name (what `--passes` takes and `normshift passes` lists), a one-line
//! description and a class. It never edits the model itself: [`Pass::plan`] reads the model and returns a
//! [`Patch`], and the manager ([`run_pipeline`]) applies it, cleans up what it left unused, validates the graph,
//! and can dump the text form before and after.

mod bodies;
mod cleanup;
mod dedupe_constants;
mod eliminate_dead_nodes;
mod fold_norm_affine;
mod fuse;
mod fuse_layernorm;
mod fuse_rmsnorm;
mod layernorm_to_rmsnorm;
mod placement;
mod post_to_pre;
mod pre_to_post;
mod remove_identity;
mod remove_unused;
mod unfuse_norms;
pub mod upgrade_opset;

use std::path::PathBuf;

use serde::Serialize;

use crate::ir::text::TextOptions;
use crate::ir::{Model, Patch, PatchError, ValidationError};

/// Whether a pass keeps the model's function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassClass {
    /// Outputs are unchanged up to float rounding; verification must match.
    Exact,
    /// Outputs change by design; verification measures by how much.
    FunctionChanging,
}

/// Which runtime the rewritten model is meant for: it decides which fused ops a fusion may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Standard ONNX ops only (`LayerNormalization` at opset 17, `RMSNormalization` at opset 23).
    #[default]
    Onnx,
    /// onnxruntime: also its `com.microsoft` contrib ops (`SimplifiedLayerNormalization`,
    /// `SkipLayerNormalization`, `SkipSimplifiedLayerNormalization`).
    Ort,
}

/// What a pass may know about the run it is part of.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassContext {
    pub target: Target,
    /// Placement rewrites: leave the units they cannot map as they are (with a note) instead of refusing.
    pub allow_partial: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass `{pass}` left an invalid graph: {source}")]
    Invalid {
        pass: &'static str,
        source: ValidationError,
    },
    #[error("pass `{pass}` made a patch that does not fit the graph: {source}")]
    Patch {
        pass: &'static str,
        source: PatchError,
    },
    #[error("pass `{pass}` cannot run on this model: {reason}")]
    Refused { pass: &'static str, reason: String },
    #[error("unknown pass `{0}` (`normshift passes` lists them)")]
    Unknown(String),
    #[error("the pass to stop after, `{0}`, is not among the passes to run")]
    StopAfterUnknown(String),
    #[error("writing the IR dump to {path}: {source}")]
    Dump {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub trait Pass {
    /// Stable kebab-case name.
    fn name(&self) -> &'static str;
    /// One line for `normshift passes`.
    fn description(&self) -> &'static str;
    fn class(&self) -> PassClass;
    /// Reads the model and says what to change. An empty patch means there is nothing to do.
    fn plan(&self, model: &Model, cx: &PassContext) -> Result<Patch, PassError>;
    /// Whether the manager cleans up after it (dead nodes, unused initializers). Cleanup passes say no.
    fn wants_cleanup(&self) -> bool {
        true
    }
}

/// Every pass, in the order `normshift passes` lists them.
pub fn catalogue() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(fuse_layernorm::FuseLayerNorm),
        Box::new(fuse_rmsnorm::FuseRmsNorm),
        Box::new(unfuse_norms::UnfuseNorms),
        Box::new(fold_norm_affine::FoldNormAffine),
        Box::new(layernorm_to_rmsnorm::LayerNormToRmsNorm),
        Box::new(post_to_pre::PostToPre),
        Box::new(pre_to_post::PreToPost),
        Box::new(eliminate_dead_nodes::EliminateDeadNodes),
        Box::new(remove_unused::RemoveUnused),
        Box::new(remove_identity::RemoveIdentity),
        Box::new(dedupe_constants::DedupeConstants),
        Box::new(cleanup::Cleanup),
    ]
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
    /// Places the pass changed, in the main graph and in every subgraph body (`subgraphs` splits them).
    pub changes: usize,
    /// Nodes and initializers the cleanup after it removed.
    pub cleaned: usize,
    /// What it left alone and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Time spent planning, applying, cleaning up and validating.
    pub elapsed_ms: f64,
    /// What it did inside each subgraph body (`If` branches, `Loop`/`Scan` bodies), when the model has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subgraphs: Vec<BodyRun>,
}

/// What one pass did inside one subgraph body.
#[derive(Debug, Clone, Serialize)]
pub struct BodyRun {
    /// `/If_0/then_branch`, as `analyze` reports it.
    pub path: String,
    pub changes: usize,
    pub cleaned: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How to run a pipeline.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    pub context: PassContext,
    /// Write the text form before and after each pass into this folder (`NN-pass.before.txt`, `.after.txt`).
    pub dump_ir: Option<PathBuf>,
    /// Stop after the first run of this pass.
    pub stop_after: Option<String>,
}

/// Runs the named passes in order: plan, apply, clean up, validate, and dump if asked.
pub fn run_pipeline(
    model: &mut Model,
    names: &[String],
    options: &PipelineOptions,
) -> Result<Vec<PassRun>, PassError> {
    run_pipeline_with(model, names, options, &mut NoHook)
}

/// What a caller does around each pass of a pipeline: [`Hook::after`] may change the pass's result before the
/// next pass runs (calibration refits the constants of what `post-to-pre` made), and the pass's dump shows
/// what the hook made of it, which is what the next pass is given. Errors stop the pipeline.
pub trait Hook<E> {
    /// Pass `pass` is about to run on `model`.
    fn before(&mut self, _pass: &str, _model: &Model) -> Result<(), E> {
        Ok(())
    }
    /// Pass `pass` ran and left `model`.
    fn after(&mut self, _pass: &str, _model: &mut Model) -> Result<(), E> {
        Ok(())
    }
}

/// The pipeline without anything around its passes.
struct NoHook;

impl Hook<PassError> for NoHook {}

/// [`run_pipeline`] with `hook` around every pass.
pub fn run_pipeline_with<E: From<PassError>>(
    model: &mut Model,
    names: &[String],
    options: &PipelineOptions,
    hook: &mut dyn Hook<E>,
) -> Result<Vec<PassRun>, E> {
    let passes: Vec<Box<dyn Pass>> = names.iter().map(|n| by_name(n)).collect::<Result<_, _>>()?;
    let end = match stop_index(names, options)? {
        Some(stop) => stop + 1,
        None => names.len(),
    };
    if let Some(dir) = &options.dump_ir {
        std::fs::create_dir_all(dir).map_err(|source| PassError::Dump {
            path: dir.clone(),
            source,
        })?;
    }
    let mut runs = Vec::new();
    for (i, pass) in passes.iter().enumerate().take(end) {
        dump(model, options, &dump_stem(names, i), "before")?;
        let before = options.dump_ir.as_ref().map(|_| model.graph.clone());
        hook.before(pass.name(), model)?;
        let run = run_one(model, pass.as_ref(), &options.context)?;
        hook.after(pass.name(), model)?;
        if let Some(before) = before {
            dump_result(&before, model, names, i, options)?;
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Where `--stop-after` ends the pipeline `names`: the index of the first run of that pass (`None` when there
/// is no stop), or an error when the pipeline does not contain it.
pub fn stop_index(names: &[String], options: &PipelineOptions) -> Result<Option<usize>, PassError> {
    options
        .stop_after
        .as_ref()
        .map(|stop| {
            names
                .iter()
                .position(|n| n == stop)
                .ok_or_else(|| PassError::StopAfterUnknown(stop.clone()))
        })
        .transpose()
}

/// Writes what pass `i` of the pipeline `names` handed on (`model`) to the `--dump-ir` folder: its text and
/// its diff from `before`, the graph the pass was given.
fn dump_result(
    before: &crate::ir::Graph,
    model: &Model,
    names: &[String],
    i: usize,
    options: &PipelineOptions,
) -> Result<(), PassError> {
    let Some(dir) = &options.dump_ir else {
        return Ok(());
    };
    let stem = dump_stem(names, i);
    dump(model, options, &stem, "after")?;
    // What the pass changed, matched by structure: the file to snapshot when testing a rewrite.
    let path = dir.join(format!("{stem}.diff"));
    let text = crate::ir::diff::diff(before, &model.graph).to_text();
    std::fs::write(&path, text).map_err(|source| PassError::Dump { path, source })
}

/// `02-post-to-pre`: the dump files' stem for pass `i` of the pipeline `names`.
fn dump_stem(names: &[String], i: usize) -> String {
    format!("{:02}-{}", i + 1, names[i])
}

/// Applies one pass to the main graph and then inside every subgraph body, each followed (if it changed
/// anything) by the cleanup and validated. A model that ships layers as model-local functions is rewritten with
/// every call replaced by its function's body; the calls whose bodies the pass left untouched are put back.
pub fn run_one(model: &mut Model, pass: &dyn Pass, cx: &PassContext) -> Result<PassRun, PassError> {
    let invalid = |source| PassError::Invalid {
        pass: pass.name(),
        source,
    };
    let Some((mut inlined, outline)) = model.inline_functions().map_err(invalid)? else {
        return run_plain(model, pass, cx);
    };
    let mut run = run_plain(&mut inlined, pass, cx)?;
    run.notes.extend(outline.kept.iter().cloned());
    if run.changes > 0 {
        let (restored, put_back) = outline.restore(model, &inlined).map_err(invalid)?;
        let calls = outline.call_count();
        if put_back < calls {
            run.notes.push(format!(
                "inlined {} of the {calls} calls of model-local functions, those whose bodies it rewrote; \
                 the other {put_back} stay calls",
                calls - put_back
            ));
        }
        *model = restored;
    }
    Ok(run)
}

/// [`run_one`] on a model whose calls of model-local functions (if any) are opaque ops.
fn run_plain(model: &mut Model, pass: &dyn Pass, cx: &PassContext) -> Result<PassRun, PassError> {
    let started = std::time::Instant::now();
    let has_bodies = model.graph.has_bodies();
    if has_bodies {
        raise_opset_for_bodies(model, pass, cx)?;
    }
    let patch = with_opset_upgrade(model, pass.plan(model, cx)?, pass.name())?;
    let notes = patch.notes.clone();
    let (mut changes, mut cleaned) = apply_and_clean(model, patch, pass, cx)?;
    let mut subgraphs = Vec::new();
    if has_bodies {
        subgraphs = bodies::run_in_bodies(model, pass, cx)?;
        let changed: usize = subgraphs.iter().map(|b| b.changes).sum();
        changes += changed;
        if changed > 0 {
            // What the bodies no longer read from the main graph (a decomposed norm's constants) goes too.
            cleaned += cleanup::clean(model, cx).map_err(|e| attribute_to(pass.name(), e))?;
            validate(model, pass.name())?;
        }
    }
    Ok(PassRun {
        pass: pass.name(),
        class: pass.class(),
        changes,
        cleaned,
        notes,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        subgraphs,
    })
}

/// Applies a pass's patch, then (if it changed anything) the cleanup, and validates the result. Returns the
/// patch's sites and what the cleanup removed.
fn apply_and_clean(
    model: &mut Model,
    patch: Patch,
    pass: &dyn Pass,
    cx: &PassContext,
) -> Result<(usize, usize), PassError> {
    let name = pass.name();
    let changes = patch.sites;
    model
        .apply(patch)
        .map_err(|source| PassError::Patch { pass: name, source })?;
    let mut cleaned = 0;
    if changes > 0 && pass.wants_cleanup() {
        cleaned = cleanup::clean(model, cx).map_err(|e| attribute_to(name, e))?;
    }
    validate(model, name)?;
    Ok((changes, cleaned))
}

/// Applies a patch planned outside the pass catalogue on behalf of `pass` (calibration's new constants), then
/// the cleanup, and validates the result. Returns what the cleanup removed.
pub fn apply_patch(
    model: &mut Model,
    patch: Patch,
    pass: &'static str,
) -> Result<usize, PassError> {
    model
        .apply(patch)
        .map_err(|source| PassError::Patch { pass, source })?;
    let cleaned =
        cleanup::clean(model, &PassContext::default()).map_err(|e| attribute_to(pass, e))?;
    validate(model, pass)?;
    Ok(cleaned)
}

/// The cleanup's patch errors are the pass's: it is the pass that left the graph that way.
fn attribute_to(pass: &'static str, e: PassError) -> PassError {
    match e {
        PassError::Patch { source, .. } => PassError::Patch { pass, source },
        other => other,
    }
}

fn validate(model: &Model, pass: &'static str) -> Result<(), PassError> {
    model
        .graph
        .validate()
        .map_err(|source| PassError::Invalid { pass, source })
}

/// A fusion inside a body may need a newer opset than the model imports (`LayerNormalization` needs 17). The
/// opset is the model's, so it is raised once for the whole model (the upgrade adapts every body) before the
/// pass runs anywhere.
fn raise_opset_for_bodies(
    model: &mut Model,
    pass: &dyn Pass,
    cx: &PassContext,
) -> Result<(), PassError> {
    let current = model.opset_version("").unwrap_or(1);
    let needed = bodies::opset_needed_in_bodies(model, pass, cx)?;
    if needed <= current {
        return Ok(());
    }
    let upgrade = upgrade_opset::plan(model, needed, &Default::default()).map_err(|e| {
        PassError::Refused {
            pass: pass.name(),
            reason: format!("its ops inside subgraph bodies need opset {needed}, but {e}"),
        }
    })?;
    model.apply(upgrade).map_err(|source| PassError::Patch {
        pass: pass.name(),
        source,
    })?;
    validate(model, pass.name())
}

/// `patch` with the upgrade of every other node when it needs a newer default-domain opset than the model's
/// (a pass only says which ops it writes, with [`Patch::require_opset`]); refused, naming the node that cannot be
/// upgraded, when there is no adapter for it.
fn with_opset_upgrade(
    model: &Model,
    mut patch: Patch,
    pass: &'static str,
) -> Result<Patch, PassError> {
    let current = model.opset_version("").unwrap_or(1);
    let Some(needed) = patch.required_opset("").filter(|&v| v > current) else {
        return Ok(patch);
    };
    let removed: std::collections::HashSet<_> = patch.removed().iter().copied().collect();
    let upgrade = upgrade_opset::plan(model, needed, &removed).map_err(|e| PassError::Refused {
        pass,
        reason: format!("its ops need opset {needed}, but {e}"),
    })?;
    patch.merge(upgrade);
    Ok(patch)
}

/// Runs the named passes one at a time on a copy of `original` and returns the first after which `holds` says
/// the model no longer does what it should (the verification gate uses it to name the pass at fault).
pub fn first_failing<E: From<PassError>>(
    original: &Model,
    names: &[String],
    cx: &PassContext,
    mut holds: impl FnMut(&Model) -> Result<bool, E>,
) -> Result<Option<&'static str>, E> {
    let mut model = original.clone();
    for name in names {
        let pass = by_name(name)?;
        run_one(&mut model, pass.as_ref(), cx)?;
        if !holds(&model)? {
            return Ok(Some(pass.name()));
        }
    }
    Ok(None)
}

fn dump(model: &Model, options: &PipelineOptions, stem: &str, when: &str) -> Result<(), PassError> {
    let Some(dir) = &options.dump_ir else {
        return Ok(());
    };
    let path = dir.join(format!("{stem}.{when}.txt"));
    std::fs::write(&path, model.to_text(TextOptions { node_names: true }))
        .map_err(|source| PassError::Dump { path, source })
}
