//! Opset upgrades made to fit a fused op: every node whose signature changed is adapted (and tract still
//! computes the same outputs), or the pass refuses, naming the node, and writes nothing.

mod common;

use common::forms::*;
use common::*;
use normshift::onnx::{AttributeProto, GraphProto, ModelProto, attribute_proto::AttributeType};
use prost::Message;

/// A LayerNorm (or RMSNorm) at `opset` behind ops whose signatures changed at 13 and 18:
/// `Unsqueeze`/`Squeeze`/`Split` with attributes, an equal `Split`, `ReduceSum`/`ReduceMax` with `axes`, and a
/// `Softmax` written with `softmax_axis`.
fn old_model(form: Form, softmax_axis: i64) -> Vec<u8> {
    let mut model = ModelProto::decode(norm_graph(Form { opset: 12, ..form }).as_slice()).unwrap();
    let g = model.graph.as_mut().unwrap();
    g.input = vec![f32_info("raw", &[2, 3, 4])];
    let front = vec![
        with(
            node("Unsqueeze", &["raw"], &["u"]),
            vec![ints("axes", &[0])],
        ),
        with(node("Squeeze", &["u"], &["q"]), vec![ints("axes", &[0])]),
        with(
            node("Split", &["q"], &["a", "b"]),
            vec![int("axis", 2), ints("split", &[2, 2])],
        ),
        with(node("Split", &["q"], &["e1", "e2"]), vec![int("axis", 2)]),
        with(node("Concat", &["a", "e2"], &["c"]), vec![int("axis", 2)]),
        with(
            node("ReduceSum", &["c"], &["rs"]),
            vec![ints("axes", &[2]), int("keepdims", 1)],
        ),
        with(
            node("ReduceMax", &["c"], &["rm"]),
            vec![ints("axes", &[2]), int("keepdims", 1)],
        ),
        node("Sub", &["c", "rm"], &["t"]),
        node("Add", &["t", "rs"], &["t2"]),
        with(
            node("Softmax", &["t2"], &["x"]),
            vec![int("axis", softmax_axis)],
        ),
    ];
    g.node.splice(0..0, front);
    model.encode_to_vec()
}

fn convert(bytes: &[u8], passes: &str) -> (std::process::Output, String, bool) {
    let (out, _dir, output) = convert_bytes(bytes, &["--passes", passes]);
    let written = output.exists();
    let text = if written {
        normshift::io::load(&output)
            .unwrap()
            .to_text(Default::default())
    } else {
        String::new()
    };
    (out, text, written)
}

#[test]
fn opset_12_to_17_moves_attributes_to_inputs_and_keeps_the_outputs() {
    let (out, text, _) = convert(&old_model(LN, -1), "fuse-layernorm");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("model ir_version=8"), "{text}");
    assert!(text.contains("opsets=[ai.onnx:17]"), "{text}");
    assert!(text.contains("u = Unsqueeze(raw, u_axes)"), "{text}");
    assert!(text.contains("q = Squeeze(u, q_axes)"), "{text}");
    assert!(text.contains("a, b = Split[axis=2](q, a_axes)"), "{text}");
    assert!(
        text.contains("rs = ReduceSum[keepdims=1](c, rs_axes)"),
        "{text}"
    );
    // ReduceMax keeps its attribute until 18.
    assert!(
        text.contains("rm = ReduceMax[axes=[2], keepdims=1](c)"),
        "{text}"
    );
    assert!(text.contains("x = Softmax[axis=-1](t2)"), "{text}");
    assert!(text.contains("LayerNormalization"), "{text}");
}

#[test]
fn opset_12_to_23_also_crosses_18() {
    let (out, text, _) = convert(&old_model(RMS, -1), "fuse-rmsnorm");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.starts_with("model ir_version=11"), "{text}");
    assert!(
        text.contains("rm = ReduceMax[keepdims=1](c, rm_axes)"),
        "{text}"
    );
    // A Split with neither `split` input nor attribute needs `num_outputs` from 18 on.
    assert!(
        text.contains("e1, e2 = Split[axis=2, num_outputs=2](q)"),
        "{text}"
    );
    assert!(text.contains("RMSNormalization"), "{text}");
}

#[test]
fn an_op_without_an_adapter_is_named_and_nothing_is_written() {
    let (out, _, written) = convert(&old_model(LN, 1), "fuse-layernorm");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("node `Softmax_x` (Softmax)"), "{err}");
    assert!(err.contains("from opset 12 to 17"), "{err}");
    assert!(!written);
}

#[test]
fn nodes_inside_subgraphs_are_adapted_too() {
    // y = If(c) { ReduceMean(x, axes=[1]) } else { ReduceMean(x, axes=[0]) }, at opset 17, raised to 23.
    let branch = |name: &str, axis: i64| GraphProto {
        name: Some(name.into()),
        node: vec![with(
            node("ReduceMean", &["x"], &[&format!("{name}_out")]),
            vec![ints("axes", &[axis])],
        )],
        output: vec![f32_info(&format!("{name}_out"), &[])],
        ..Default::default()
    };
    let graph_attr = |name: &str, g: GraphProto| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    };
    let bytes = tiny_model(|g| {
        let mut iff = node("If", &["c"], &["y"]);
        iff.attribute = vec![
            graph_attr("then_branch", branch("then", 1)),
            graph_attr("else_branch", branch("else", 0)),
        ];
        g.node = vec![iff];
        g.input.push(bool_scalar("c"));
    });
    let model = normshift::io::load_bytes(bytes.into(), "m".as_ref(), ".".as_ref()).unwrap();
    let patch = normshift::passes::upgrade_opset::plan(&model, 23, &Default::default()).unwrap();
    let mut model = model;
    model.apply(patch).unwrap();
    model.graph.validate().unwrap();
    let proto = model.to_proto().unwrap();
    let iff = &proto.graph.as_ref().unwrap().node[0];
    for attr in &iff.attribute {
        let body = attr.g.as_ref().unwrap();
        assert_eq!(body.node[0].op_type(), "Constant");
        let mean = &body.node[1];
        assert_eq!(mean.input.len(), 2, "{mean:?}");
        assert!(mean.attribute.iter().all(|a| a.name() != "axes"));
    }
    assert_eq!(model.opset_version(""), Some(23));
}

/// A bool scalar graph input.
fn bool_scalar(name: &str) -> normshift::onnx::ValueInfoProto {
    let mut info = f32_info(name, &[]);
    if let Some(normshift::onnx::TypeProto {
        value: Some(normshift::onnx::type_proto::Value::TensorType(t)),
        ..
    }) = info.r#type.as_mut()
    {
        t.elem_type = Some(9);
    }
    info
}
