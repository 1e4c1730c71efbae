//! Running models in a runtime chosen by a [`RuntimeChoice`]: the first runtime that can run a model (tract,
//! then onnxruntime), or onnxruntime first for models that quantize activations, where tract departs from the
//! specification. A runtime that fails is named, with why, in the report's note.

use std::path::Path;

use super::VerifyError;
use super::sets::{InputSet, signature};
use crate::analysis::quantized::{ActivationQuantization, activation_quantization};
use crate::ir::Model;
use crate::runtime::{self, ModelSource, Named, RuntimeError, RuntimeKind, conformance};

/// Which runtime judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeChoice {
    /// tract; when tract cannot load or run a model of the comparison, onnxruntime if it is available. For a
    /// model that quantizes activations, onnxruntime first ([`conformance`]).
    #[default]
    Auto,
    Only(RuntimeKind),
}

impl RuntimeChoice {
    /// The runtimes to try, in order, for models that quantize as `q` says.
    pub(super) fn candidates(self, q: &ActivationQuantization) -> Vec<RuntimeKind> {
        match self {
            RuntimeChoice::Auto => conformance::auto_order(q).to_vec(),
            RuntimeChoice::Only(kind) => vec![kind],
        }
    }
}

/// What the choice of `kind` adds to a report's note: why `auto` started with onnxruntime, and what `kind` is
/// known to compute differently from the ONNX specification on a model that quantizes as `q` says.
pub(super) fn conformance_note(
    choice: RuntimeChoice,
    kind: RuntimeKind,
    q: &ActivationQuantization,
) -> Option<String> {
    let first = (choice == RuntimeChoice::Auto && kind == RuntimeKind::Ort)
        .then(|| conformance::order_note(q))
        .flatten();
    join_notes([first, conformance::deviation(kind, q)])
}

/// The notes that are there, in one.
pub(super) fn join_notes(notes: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    let all: Vec<String> = notes.into_iter().flatten().collect();
    (!all.is_empty()).then(|| all.join("; "))
}

/// A model to run: the IR, the folder its external data is relative to, and how reports name it.
#[derive(Clone, Copy)]
pub struct ModelRef<'a> {
    pub model: &'a Model,
    pub dir: &'a Path,
    pub label: &'a Path,
}

impl<'a> ModelRef<'a> {
    /// A model loaded from `path` (external data beside it).
    pub fn loaded(model: &'a Model, path: &'a Path) -> ModelRef<'a> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        ModelRef {
            model,
            dir,
            label: path,
        }
    }

    /// The model encoded for a runtime.
    pub fn source(&self) -> Result<ModelSource, VerifyError> {
        Ok(ModelSource::new(
            self.model,
            self.dir,
            self.label.display().to_string(),
        )?)
    }
}

/// A model prepared for one input signature.
pub(super) type PreparedFor = (
    Vec<(runtime::ElemType, Vec<usize>)>,
    Box<dyn runtime::Prepared>,
);

/// Runs `model` in `kind` on every set, preparing it once per distinct input signature and releasing it before
/// returning.
pub fn run_sets(
    kind: RuntimeKind,
    model: &ModelRef,
    sets: &[InputSet],
) -> Result<Vec<Vec<Named>>, VerifyError> {
    let rt = runtime::open(kind)?;
    let source = model.source()?;
    let mut prepared: Option<PreparedFor> = None;
    let mut outputs = Vec::with_capacity(sets.len());
    for set in sets {
        let sig = signature(&set.inputs);
        if prepared.as_ref().is_none_or(|(s, _)| *s != sig) {
            // The previous one is released before the next is prepared: one prepared model at a time.
            drop(prepared.take());
            prepared = Some((sig, rt.prepare(&source, &set.inputs)?));
        }
        let (_, p) = prepared.as_mut().expect("prepared just above");
        outputs.push(p.run(&set.inputs)?);
    }
    Ok(outputs)
}

/// A runtime failure for the report's note: "tract cannot run X: ...".
pub(super) fn note_of(failures: &[RuntimeError]) -> Option<String> {
    (!failures.is_empty()).then(|| {
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `work` in the first runtime of `choice` that does it without a runtime failure, with that runtime and a note
/// naming those that failed before it (`done` says what it did: "run", "judged").
pub(super) fn in_first_runtime<T>(
    choice: RuntimeChoice,
    done: &str,
    quantization: &ActivationQuantization,
    mut work: impl FnMut(RuntimeKind) -> Result<T, VerifyError>,
) -> Result<(RuntimeKind, T, Option<String>), VerifyError> {
    let candidates = choice.candidates(quantization);
    let mut failures = Vec::new();
    for kind in candidates.iter().copied() {
        match work(kind) {
            Ok(t) => {
                let note = join_notes([
                    note_of(&failures).map(|n| format!("{n}; {done} by {kind}")),
                    conformance_note(choice, kind, quantization),
                ]);
                return Ok((kind, t, note));
            }
            Err(VerifyError::Runtime(e)) if candidates.len() > 1 => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    Err(VerifyError::NoRuntime(
        note_of(&failures).unwrap_or_default(),
    ))
}

/// What a model computed on each input set, the runtime that ran it, and why that one (when not the first).
pub struct Outputs {
    pub runtime: RuntimeKind,
    pub sets: Vec<Vec<Named>>,
    pub note: Option<String>,
}

/// Runs `model` on `sets` in the first runtime of `choice` that can, with a note naming those that could not.
pub fn first_that_runs(
    choice: RuntimeChoice,
    model: &ModelRef,
    sets: &[InputSet],
) -> Result<Outputs, VerifyError> {
    let quantization = activation_quantization(&model.model.graph);
    let (runtime, sets, note) = in_first_runtime(choice, "run", &quantization, |kind| {
        run_sets(kind, model, sets)
    })?;
    Ok(Outputs {
        runtime,
        sets,
        note,
    })
}

/// Models prepared in one runtime for the same inputs: what `bench` times.
pub struct PreparedModels {
    pub runtime: RuntimeKind,
    pub models: Vec<Box<dyn runtime::Prepared>>,
    /// Why this runtime, when it was not the first of the choice.
    pub note: Option<String>,
}

/// Prepares every model in the first runtime of `choice` that prepares them all.
pub fn prepare_models(
    choice: RuntimeChoice,
    models: &[ModelSource],
    inputs: &[Named],
) -> Result<PreparedModels, VerifyError> {
    let quantization = models
        .iter()
        .fold(ActivationQuantization::default(), |q, m| {
            q.and(m.quantization)
        });
    let (runtime, models, note) = in_first_runtime(choice, "run", &quantization, |kind| {
        let rt = runtime::open(kind)?;
        Ok(models
            .iter()
            .map(|m| rt.prepare(m, inputs))
            .collect::<Result<Vec<_>, _>>()?)
    })?;
    Ok(PreparedModels {
        runtime,
        models,
        note,
    })
}
