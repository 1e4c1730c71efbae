//! The pass manager: patches apply whole or not at all, the graph is validated after every pass, a failing
//! pipeline is bisected to its pass, and `--dump-ir` / `--stop-after` do what they say.

mod common;

use common::forms::*;
use common::*;
use normshift::Model;
use normshift::ir::{Patch, PatchError};
use normshift::passes::{PassContext, PipelineOptions, first_failing, run_pipeline};

fn load(bytes: Vec<u8>) -> Model {
    normshift::io::load_bytes(bytes.into(), "m.onnx".as_ref(), ".".as_ref()).unwrap()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_patch_that_does_not_fit_changes_nothing() {
    let mut model = load(tiny_model(|_| {}));
    let before = model.to_text(Default::default());
    // Re-producing `s` while its producer stays would give it two producers.
    let s = model.graph.value_id("s").unwrap();
    let anchor = model.graph.producer(s).unwrap().0;
    let mut patch = Patch::new();
    patch.add_node(
        normshift::onnx::build::node("Neg", "", "n".into(), vec![]),
        vec![Some(model.graph.value_id("x").unwrap().into())],
        vec![Some(s.into())],
        anchor,
    );
    assert_eq!(
        model.apply(patch),
        Err(PatchError::StillProduced("s".into()))
    );
    assert_eq!(model.to_text(Default::default()), before);

    // Redirecting the readers of a graph output would rename the output.
    let mut patch = Patch::new();
    patch.rewire(model.graph.value_id("y").unwrap(), s.into());
    assert_eq!(
        model.apply(patch),
        Err(PatchError::RewiresGraphOutput("y".into()))
    );
    assert_eq!(model.to_text(Default::default()), before);
}

#[test]
fn a_patch_that_takes_over_a_value_keeps_its_readers_and_name() {
    let mut model = load(tiny_model(|_| {}));
    let s = model.graph.value_id("s").unwrap();
    let (add, _) = model.graph.producer(s).unwrap();
    let x = model.graph.value_id("x").unwrap();
    let w = model.graph.value_id("w").unwrap();
    let mut patch = Patch::new();
    patch.add_node(
        normshift::onnx::build::node("Sub", "", "sub".into(), vec![]),
        vec![Some(x.into()), Some(w.into())],
        vec![Some(s.into())],
        add,
    );
    patch.remove(add);
    model.apply(patch).unwrap();
    model.graph.validate().unwrap();
    let text = model.to_text(Default::default());
    assert!(
        text.contains("s = Sub(x, w)\ny: f32[2, 3] = Relu(s)"),
        "{text}"
    );
}

#[test]
fn the_first_failing_pass_is_named() {
    let model = load(norm_graph(Form { opset: 17, ..LN }));
    let pipeline = names(&["remove-identity", "fuse-layernorm", "unfuse-norms"]);
    // A stand-in verifier that objects to any fused LayerNormalization.
    let culprit = first_failing::<normshift::passes::PassError>(
        &model,
        &pipeline,
        &PassContext::default(),
        |m| Ok(!m.to_text(Default::default()).contains("LayerNormalization")),
    )
    .unwrap();
    assert_eq!(culprit, Some("fuse-layernorm"));
    let none = first_failing::<normshift::passes::PassError>(
        &model,
        &pipeline,
        &PassContext::default(),
        |_| Ok(true),
    )
    .unwrap();
    assert_eq!(none, None);
}

#[test]
fn stop_after_ends_the_pipeline_and_must_name_a_pass_in_it() {
    let mut model = load(norm_graph(LN));
    let options = PipelineOptions {
        stop_after: Some("fuse-layernorm".into()),
        ..Default::default()
    };
    let runs = run_pipeline(
        &mut model,
        &names(&["fuse-layernorm", "unfuse-norms"]),
        &options,
    )
    .unwrap();
    assert_eq!(runs.len(), 1);
    let options = PipelineOptions {
        stop_after: Some("cleanup".into()),
        ..Default::default()
    };
    let err = run_pipeline(&mut model, &names(&["fuse-layernorm"]), &options).unwrap_err();
    assert!(err.to_string().contains("`cleanup`"), "{err}");
}

#[test]
fn dump_ir_writes_the_text_before_and_after_each_pass() {
    let bytes = norm_graph(LN);
    let (dir, input) = temp_model(&bytes, "in.onnx");
    let dump = dir.path().join("dump");
    let out = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        dir.path().join("out.onnx").to_str().unwrap(),
        "--passes",
        "fuse-layernorm,unfuse-norms",
        "--stop-after",
        "fuse-layernorm",
        "--dump-ir",
        dump.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut files: Vec<String> = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "01-fuse-layernorm.after.txt",
            "01-fuse-layernorm.before.txt",
            "01-fuse-layernorm.diff"
        ]
    );
    // The pass's diff: the decomposed norm's nodes out, the fused op in, nothing else.
    let diff = std::fs::read_to_string(dump.join("01-fuse-layernorm.diff")).unwrap();
    let added: Vec<&str> = diff.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(added.len(), 1, "{diff}");
    assert!(added[0].contains("LayerNormalization"), "{diff}");
    assert!(
        diff.lines()
            .any(|l| l.starts_with("- ") && l.contains("ReduceMean")),
        "{diff}"
    );
    assert!(!diff.lines().any(|l| l.starts_with("~ ")), "{diff}");
    let after = std::fs::read_to_string(dump.join("01-fuse-layernorm.after.txt")).unwrap();
    assert!(after.contains("LayerNormalization"), "{after}");
    // Node names are in the dump, for finding a node in the file.
    assert!(after.contains("# y/LayerNormalization"), "{after}");
}

#[test]
fn passes_lists_every_pass_with_its_class() {
    let out = normshift(&["passes", "--json"]);
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "fuse-layernorm",
        "fuse-rmsnorm",
        "unfuse-norms",
        "eliminate-dead-nodes",
        "remove-unused",
        "remove-identity",
        "dedupe-constants",
        "cleanup",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    // Only the placement rewrites change the function.
    for p in list.as_array().unwrap() {
        let changing = matches!(p["name"].as_str(), Some("post-to-pre" | "pre-to-post"));
        let expected = if changing {
            "function-changing"
        } else {
            "exact"
        };
        assert_eq!(p["class"], expected, "{p}");
    }
}
