//! The text form before and after each pass on small graphs (insta snapshots): what a rewrite does, line by line.
//! Review a change with `cargo insta review`.

mod common;

use common::forms::*;
use common::*;
use normshift::Model;
use normshift::onnx::GraphProto;
use normshift::passes::{PassContext, PipelineOptions, Target, run_pipeline};

fn load(bytes: Vec<u8>) -> Model {
    normshift::io::load_bytes(bytes.into(), "m.onnx".as_ref(), ".".as_ref()).unwrap()
}

/// `before`, the pass's report, and `after`, as one snapshot.
fn before_after(bytes: Vec<u8>, passes: &[&str], target: Target) -> String {
    let mut model = load(bytes);
    let before = model.to_text(Default::default());
    let names: Vec<String> = passes.iter().map(|s| s.to_string()).collect();
    let options = PipelineOptions {
        context: PassContext {
            target,
            ..Default::default()
        },
        ..Default::default()
    };
    let runs = run_pipeline(&mut model, &names, &options).unwrap();
    let report: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{}: {} changed, {} cleaned {:?}",
                r.pass, r.changes, r.cleaned, r.notes
            )
        })
        .collect();
    let after = model.to_text(Default::default());
    format!("{before}\n--- {}\n\n{after}", report.join("\n--- "))
}

fn fused(form: Form) -> Vec<u8> {
    let mut model = load(norm_graph(form));
    let names = ["fuse-layernorm".to_string(), "fuse-rmsnorm".to_string()];
    run_pipeline(&mut model, &names, &Default::default()).unwrap();
    use prost::Message;
    model.to_proto().unwrap().encode_to_vec()
}

#[test]
fn fuse_layernorm_at_opset_14_upgrades_to_17() {
    insta::assert_snapshot!(before_after(
        norm_graph(Form { opset: 14, ..LN }),
        &["fuse-layernorm"],
        Target::Onnx
    ));
}

#[test]
fn fuse_rmsnorm_gemma_scale_reciprocal_form() {
    insta::assert_snapshot!(before_after(
        norm_graph(Form {
            gemma_scale: true,
            division: 2,
            ..RMS
        }),
        &["fuse-rmsnorm"],
        Target::Onnx
    ));
}

#[test]
fn fuse_rmsnorm_fp16_with_float32_statistics() {
    insta::assert_snapshot!(before_after(
        norm_graph(Form {
            casts: true,
            half: true,
            ..RMS
        }),
        &["fuse-rmsnorm"],
        Target::Onnx
    ));
}

#[test]
fn unfuse_norms_at_opset_17_and_18() {
    insta::assert_snapshot!(
        "unfuse_17",
        before_after(fused(LN), &["unfuse-norms"], Target::Onnx)
    );
    insta::assert_snapshot!(
        "unfuse_18",
        before_after(
            fused(Form {
                opset: 18,
                axes_input: true,
                ..LN
            }),
            &["unfuse-norms"],
            Target::Onnx
        )
    );
}

/// A graph with one of everything the cleanup passes remove.
fn cluttered() -> Vec<u8> {
    tiny_model(|g: &mut GraphProto| {
        g.initializer.extend([
            f32_tensor("w_copy", &[2, 3], &[0.5, -1.0, 2.0, 0.0, 1.5, -0.5]),
            f32_tensor("unused", &[1], &[7.0]),
        ]);
        g.node = vec![
            node("Identity", &["x"], &["x1"]),
            node("Identity", &["x1"], &["x2"]),
            node("Add", &["x2", "w"], &["s"]),
            node("Add", &["s", "w_copy"], &["t"]),
            node("Neg", &["t"], &["dead"]),
            node("Relu", &["t"], &["y"]),
        ];
        g.value_info = vec![f32_info("dead", &[2, 3])];
    })
}

#[test]
fn cleanup_passes_one_by_one() {
    for pass in [
        "remove-identity",
        "dedupe-constants",
        "eliminate-dead-nodes",
        "remove-unused",
        "cleanup",
    ] {
        insta::assert_snapshot!(pass, before_after(cluttered(), &[pass], Target::Onnx));
    }
}
