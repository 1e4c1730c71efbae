//! Models that ship their layers as model-local functions (`torch.onnx.export(...,
//! export_modules_as_functions=...)`, onnxscript): analysis sees through the calls, passes rewrite inside them
//! and keep the calls they do not touch, and tract (which runs no functions) runs them inlined.

use std::path::PathBuf;

use normshift::analysis::analyze_model;
use normshift::passes::{PassContext, by_name, run_one};
use normshift::runtime::RuntimeKind;
use normshift::verify::{InputSource, ModelRef, RuntimeChoice, Tolerance, VerifyBy, verify_pair};

fn wild(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/wild")
        .join(name)
        .join("model.onnx")
}

fn load(name: &str) -> normshift::Model {
    normshift::io::load(&wild(name)).unwrap()
}

fn run(model: &mut normshift::Model, pass: &str) -> normshift::passes::PassRun {
    run_one(
        model,
        by_name(pass).unwrap().as_ref(),
        &PassContext::default(),
    )
    .unwrap()
}

/// The calls of model-local functions in the main graph.
fn calls(model: &normshift::Model) -> usize {
    let defined: Vec<(String, String)> = model
        .header
        .functions
        .iter()
        .map(|f| (f.domain().to_string(), f.name().to_string()))
        .collect();
    model
        .graph
        .graph
        .node_weights()
        .filter_map(|n| n.op())
        .filter(|op| defined.contains(&(op.domain().to_string(), op.op_type().to_string())))
        .count()
}

/// `a` and `b` compute the same outputs, judged by tract on generated inputs.
fn same_function(a: &normshift::Model, b: &normshift::Model, path: &std::path::Path) {
    let report = verify_pair(
        &ModelRef::loaded(a, path),
        &ModelRef::loaded(b, path),
        &InputSource::default(),
        Tolerance::default(),
        RuntimeChoice::Only(RuntimeKind::Tract),
        VerifyBy::Model,
    )
    .unwrap();
    assert!(report.ok, "{:?}", report.worst());
}

#[test]
fn analysis_sees_through_calls_and_names_the_function_of_each_unit() {
    for (name, units, norms) in [
        ("gpt2.functions", 6, 7),
        ("bert.functions", 4, 5),
        ("tiny.onnxscript_functions", 4, 5),
    ] {
        let a = analyze_model(&load(name)).unwrap();
        assert_eq!(
            (a.main.unit_count, a.main.norm_count),
            (units, norms),
            "{name}"
        );
        let seen = a.functions.as_ref().expect("functions seen through");
        assert!(
            seen.inlined_calls > 0 && seen.kept.is_empty(),
            "{name}: {seen:?}"
        );
        assert!(
            a.main.residual_units.iter().all(|u| u.function.is_some()),
            "{name}: every unit sits in a layer function"
        );
    }
    // Nested: onnxscript's Block calls LayerNorm, SelfAttention and Mlp; the innermost function comes first.
    let a = analyze_model(&load("tiny.onnxscript_functions")).unwrap();
    let norm = a.main.norms.iter().find(|n| n.unit == Some(0)).unwrap();
    assert_eq!(
        norm.function.as_deref(),
        Some("tiny.fn.LayerNorm in tiny.fn.Block")
    );
}

#[test]
fn a_model_with_functions_round_trips_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "gpt2.functions",
        "bert.functions",
        "tiny.onnxscript_functions",
    ] {
        let out = dir.path().join(format!("{name}.onnx"));
        normshift::io::save(&load(name), &out, &Default::default()).unwrap();
        assert_eq!(
            std::fs::read(wild(name)).unwrap(),
            std::fs::read(&out).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_pass_that_touches_no_function_keeps_the_model_as_it_was() {
    // Every norm of the GPT-2 export is a LayerNormalization already: nothing to fuse, nothing inlined.
    let original = load("gpt2.functions");
    let mut model = original.clone();
    assert_eq!(run(&mut model, "fuse-layernorm").changes, 0);
    assert_eq!(
        model.to_text(Default::default()),
        original.to_text(Default::default())
    );
    assert_eq!(
        model.header.functions.len(),
        original.header.functions.len()
    );
}

#[test]
fn a_pass_inlines_the_calls_it_rewrites_and_keeps_the_others() {
    // unfuse-norms rewrites every LayerNormalization, which sit inside the LayerNorm function called by each
    // block and by the main graph: every call is inlined.
    let path = wild("gpt2.functions");
    let original = load("gpt2.functions");
    let mut model = original.clone();
    let before = calls(&model);
    let r = run(&mut model, "unfuse-norms");
    assert!(r.changes > 0);
    // Every LayerNorm function body changed: no call of it is left, and a function nothing calls is dropped.
    assert!(calls(&model) < before);
    assert!(
        model
            .header
            .functions
            .iter()
            .all(|f| f.name() != "LayerNorm"),
        "{:?}",
        model
            .header
            .functions
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
    );
    same_function(&original, &model, &path);
    // And back: the fusion finds the decomposed norms where the calls were.
    assert!(run(&mut model, "fuse-layernorm").changes > 0);
    same_function(&original, &model, &path);
    let a = analyze_model(&model).unwrap();
    let b = analyze_model(&original).unwrap();
    assert_eq!(
        (a.main.placement, a.main.unit_count, a.main.norm_count),
        (b.main.placement, b.main.unit_count, b.main.norm_count)
    );
}

#[test]
fn pre_to_post_keeps_the_calls_it_does_not_move_a_skip_in() {
    let path = wild("tiny.onnxscript_functions");
    let original = load("tiny.onnxscript_functions");
    let mut model = original.clone();
    let r = run(&mut model, "pre-to-post");
    assert_eq!(r.changes, 4);
    // The final LayerNorm call in the main graph is not touched: it stays a call.
    assert!(calls(&model) > 0, "{:?}", r.notes);
    assert!(
        r.notes.iter().any(|n| n.contains("stay calls")),
        "{:?}",
        r.notes
    );
    run(&mut model, "post-to-pre");
    same_function(&original, &model, &path);
}

#[test]
fn tract_runs_a_function_model_inlined_and_agrees_with_its_test_data() {
    for name in [
        "gpt2.functions",
        "bert.functions",
        "tiny.onnxscript_functions",
    ] {
        let path = wild(name);
        let model = load(name);
        let report = normshift::verify::verify_reference(
            &ModelRef::loaded(&model, &path),
            &path.parent().unwrap().join("test_data_set_0"),
            Tolerance::default(),
            RuntimeChoice::Only(RuntimeKind::Tract),
        )
        .unwrap();
        assert!(report.ok, "{name}: {:?}", report.worst());
    }
}
