//! Subgraph attributes (If/Loop/Scan) are kept whole, and the values they read from the enclosing graph count
//! as uses.

mod common;

use common::*;
use normshift::onnx::GraphProto;
use normshift::passes;

fn branch(name: &str, reads: &str) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: vec![node("Identity", &[reads], &[&format!("{name}_out")])],
        output: vec![f32_info(&format!("{name}_out"), &[2, 3])],
        ..Default::default()
    }
}

/// `y = If(c, then: Identity(n), else: Identity(x))` with `n = Neg(x)` read only inside the then-branch.
fn if_model() -> Vec<u8> {
    tiny_model(|g| {
        g.input.push(bool_info("c"));
        let mut iff = node("If", &["c"], &["y"]);
        iff.attribute = vec![
            graph_attr("then_branch", branch("then", "n")),
            graph_attr("else_branch", branch("else", "x")),
        ];
        g.node = vec![node("Neg", &["x"], &["n"]), iff];
    })
}

#[test]
fn a_value_read_only_inside_a_subgraph_survives_dead_node_elimination() {
    let bytes = if_model();
    let mut model =
        normshift::io::load_bytes(bytes.clone().into(), "if.onnx".as_ref(), ".".as_ref()).unwrap();
    let runs = passes::run_pipeline(
        &mut model,
        &["eliminate-dead-nodes".into()],
        &Default::default(),
    )
    .unwrap();
    assert_eq!(runs[0].changes, 0);
    assert_eq!(model.graph.op_count(), 2);
    // And the model still encodes to the same bytes.
    use prost::Message;
    assert_eq!(model.to_proto().unwrap().encode_to_vec(), bytes);
}

#[test]
fn the_text_form_names_subgraphs() {
    let model =
        normshift::io::load_bytes(if_model().into(), "if.onnx".as_ref(), ".".as_ref()).unwrap();
    let text = model.to_text(Default::default());
    assert!(
        text.contains("y: f32[2, 3] = If[else_branch=<graph \"else\": 1 nodes>, then_branch=<graph \"then\": 1 nodes>](c) captures(n, x)"),
        "{text}"
    );
}

#[test]
fn a_subgraph_reading_a_value_nobody_makes_is_refused() {
    let bytes = tiny_model(|g| {
        let mut iff = node("If", &["x"], &["y"]);
        iff.attribute = vec![
            graph_attr("then_branch", branch("then", "ghost")),
            graph_attr("else_branch", branch("else", "x")),
        ];
        g.node = vec![iff];
    });
    let err = normshift::io::load_bytes(bytes.into(), "m.onnx".as_ref(), ".".as_ref()).unwrap_err();
    assert!(err.to_string().contains("`ghost`"), "{err}");
}

#[test]
fn deeply_nested_subgraphs_are_refused_not_overflowing_the_stack() {
    let mut inner = branch("leaf", "x");
    // 40 levels of If are 120 levels of protobuf messages: past prost's decoding limit of 100.
    for depth in 0..40 {
        let mut wrap = node("If", &["x"], &[&format!("o{depth}")]);
        wrap.attribute = vec![
            graph_attr("then_branch", inner),
            graph_attr("else_branch", branch("else", "x")),
        ];
        inner = GraphProto {
            name: Some(format!("level{depth}")),
            node: vec![wrap],
            output: vec![f32_info(&format!("o{depth}"), &[2, 3])],
            ..Default::default()
        };
    }
    let bytes = tiny_model(|g| {
        let mut top = node("If", &["x"], &["y"]);
        top.attribute = vec![
            graph_attr("then_branch", inner.clone()),
            graph_attr("else_branch", branch("else", "x")),
        ];
        g.node = vec![top];
    });
    let err = normshift::io::load_bytes(bytes.into(), "m.onnx".as_ref(), ".".as_ref()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not an ONNX model") && msg.contains("recursion limit"),
        "{msg}"
    );
}

#[test]
fn a_patch_may_not_redirect_a_value_a_subgraph_reads_by_name() {
    let mut model =
        normshift::io::load_bytes(if_model().into(), "if.onnx".as_ref(), ".".as_ref()).unwrap();
    let n = model.graph.value_id("n").unwrap();
    let x = model.graph.value_id("x").unwrap();
    let mut patch = normshift::ir::Patch::new();
    patch.rewire(n, x.into());
    assert_eq!(
        model.apply(patch),
        Err(normshift::ir::PatchError::RewiresCaptured("n".into()))
    );
}

#[test]
fn a_patch_may_not_remove_the_producer_of_a_value_a_subgraph_reads() {
    let mut model =
        normshift::io::load_bytes(if_model().into(), "if.onnx".as_ref(), ".".as_ref()).unwrap();
    let n = model.graph.value_id("n").unwrap();
    let (neg, _) = model.graph.producer(n).unwrap();
    let mut patch = normshift::ir::Patch::new();
    patch.remove(neg);
    assert_eq!(
        model.apply(patch),
        Err(normshift::ir::PatchError::OrphansCapture("n".into()))
    );
}
