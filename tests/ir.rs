//! Editing the IR: what passes will rely on.

mod common;

use common::*;
use normshift::io::load_bytes;
use normshift::ir::{Patch, Tensor};
use normshift::onnx::TensorProto;
use normshift::tensor::{TensorError, check_length, to_f64};

fn tiny() -> normshift::Model {
    load_bytes(
        tiny_model(|_| {}).into(),
        "tiny.onnx".as_ref(),
        ".".as_ref(),
    )
    .unwrap()
}

#[test]
fn an_inserted_node_is_exported_right_after_its_anchor_and_rewired() {
    let mut model = tiny();
    let s = model.graph.value_id("s").unwrap();
    let (add, _) = model.graph.producer(s).unwrap();
    // s -> Neg -> n, and Relu now reads n (the Neg itself keeps reading s).
    let mut patch = Patch::new();
    let n = patch.value("n");
    patch.add_node(
        node("Neg", &[], &[]),
        vec![Some(s.into())],
        vec![Some(n)],
        add,
    );
    patch.rewire(s, n);
    model.apply(patch).unwrap();
    model.graph.validate().unwrap();
    let text = model.to_text(Default::default());
    let body: Vec<&str> = text.lines().filter(|l| l.contains(" = ")).collect();
    assert_eq!(
        body,
        ["s = Add(x, w)", "n = Neg(s)", "y: f32[2, 3] = Relu(n)"],
        "{text}"
    );
}

#[test]
fn a_removed_producer_is_caught_by_validation_not_exported_as_an_empty_input() {
    let mut model = tiny();
    let (add, _) = model
        .graph
        .producer(model.graph.value_id("s").unwrap())
        .unwrap();
    let mut patch = Patch::new();
    patch.remove(add);
    model.apply(patch).unwrap();
    let err = model.graph.validate().unwrap_err();
    assert_eq!(
        err,
        normshift::ir::ValidationError::Unwired {
            node: "Relu_y (Relu)".into(),
            slot: 0
        },
        "{err}"
    );
}

#[test]
fn empty_optional_inputs_survive_the_round_trip() {
    // Clip(x, "", max): the middle input is deliberately empty.
    let bytes = tiny_model(|g| {
        g.initializer.push(f32_tensor("hi", &[], &[1.0]));
        g.node[1] = node("Clip", &["s", "", "hi"], &["y"]);
    });
    let model = load_bytes(bytes.clone().into(), "clip.onnx".as_ref(), ".".as_ref()).unwrap();
    model.graph.validate().unwrap();
    assert!(
        model
            .to_text(Default::default())
            .contains("= Clip(s, _, hi)")
    );
    use prost::Message;
    assert_eq!(model.to_proto().unwrap().encode_to_vec(), bytes);
}

#[test]
fn typed_tensor_fields_are_read_and_their_length_checked() {
    let t = Tensor {
        proto: TensorProto {
            name: Some("t".into()),
            dims: vec![3],
            data_type: Some(1),
            float_data: vec![1.0, 2.5, -3.0],
            ..Default::default()
        },
        external: None,
    };
    assert_eq!(to_f64(&t).unwrap(), vec![1.0, 2.5, -3.0]);
    let short = Tensor {
        proto: TensorProto {
            dims: vec![4],
            ..t.proto.clone()
        },
        external: None,
    };
    assert!(matches!(
        check_length(&short),
        Err(TensorError::LengthMismatch {
            expected: 4,
            found: 3,
            ..
        })
    ));
    // f16 in int32_data, as the spec stores it.
    let half = Tensor {
        proto: TensorProto {
            name: Some("h".into()),
            dims: vec![2],
            data_type: Some(10),
            int32_data: vec![0x3C00, 0xC000],
            ..Default::default()
        },
        external: None,
    };
    assert_eq!(to_f64(&half).unwrap(), vec![1.0, -2.0]);
}
