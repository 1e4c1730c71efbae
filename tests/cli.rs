//! The commands' text and JSON output, and the text form as a snapshot.

mod common;

use common::*;

#[test]
fn inspect_json_describes_the_model() {
    let o = normshift(&[
        "inspect",
        fixture_model("bert_post.opset14").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ir_version"], 8);
    assert_eq!(v["opsets"][0]["version"], 14);
    assert_eq!(
        v["ops"]["ReduceMean"], 10,
        "5 decomposed LayerNorms, two means each"
    );
    assert_eq!(v["inputs"][0]["name"], "input_ids");
    assert_eq!(
        v["inputs"][0]["shape"],
        serde_json::json!(["batch", "sequence"])
    );
    assert_eq!(v["outputs"][0]["type"], "f32[batch, sequence, 32]");
    // 64x32 tokens + 16x32 positions + 5 norms x 64 + 2 layers x (4x(32x32+32) + 32x64+64 + 64x32+32)
    let expected =
        64 * 32 + 16 * 32 + 5 * 64 + 2 * (4 * (32 * 32 + 32) + 32 * 64 + 64 + 64 * 32 + 32);
    let consts = v["parameters"].as_u64().unwrap();
    assert!(
        consts >= expected as u64 && consts < expected as u64 + 32,
        "{consts} vs {expected}"
    );
}

#[test]
fn inspect_text_lists_the_op_histogram() {
    let o = normshift(&[
        "inspect",
        fixture_model("gpt2_pre.opset17").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("LayerNormalization"), "{text}");
    assert!(text.contains("ai.onnx:17"), "{text}");
}

#[test]
fn dump_of_the_rmsnorm_fixture() {
    let o = normshift(&["dump", fixture_model("llama_rms.opset14").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn passes_are_listed_with_their_class() {
    let o = normshift(&["passes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dce = v
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "eliminate-dead-nodes")
        .unwrap();
    assert_eq!(dce["class"], "exact");
}

#[test]
fn an_unknown_pass_is_refused_before_anything_is_read() {
    let o = normshift(&[
        "convert",
        "whatever.onnx",
        "-o",
        "/tmp/x.onnx",
        "--passes",
        "no-such-pass",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown pass `no-such-pass`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_pass_run_is_verified_and_removes_dead_nodes() {
    let dir = tempfile::tempdir().unwrap();
    // A dangling branch: Neg(x) that nothing reads.
    let input = dir.path().join("dead.onnx");
    std::fs::write(
        &input,
        tiny_model(|g| g.node.push(node("Neg", &["x"], &["unused"]))),
    )
    .unwrap();
    let out = dir.path().join("out.onnx");
    let o = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "eliminate-dead-nodes",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["passes"][0]["changes"], 1);
    assert_eq!(v["verification"]["ok"], true);
    let model = normshift::io::load(&out).unwrap();
    assert_eq!(model.graph.op_count(), 2);
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(entries.len(), 2, "no staging left: {entries:?}");
}
