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

#[test]
fn run_writes_outputs_that_verify_accepts_as_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_model("llama_rms.opset17");
    let out = normshift(&[
        "run",
        model.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
        "--seed",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["outputs"][0]["shape"], serde_json::json!([2, 7, 32]));
    assert!(dir.path().join("input_0.pb").exists() && dir.path().join("output_0.pb").exists());
    let check = normshift(&[
        "verify",
        model.to_str().unwrap(),
        "--reference",
        dir.path().to_str().unwrap(),
        "--atol",
        "0",
        "--rtol",
        "0",
    ]);
    assert!(check.status.success(), "{}", stdout(&check));
}

#[test]
fn bench_times_models_on_the_same_inputs_and_compares_their_outputs() {
    let a = fixture_model("gpt2_pre.opset14");
    let b = fixture_model("gpt2_pre.opset17");
    let out = normshift(&[
        "bench",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--runs",
        "3",
        "--warmup",
        "1",
        "--seq",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["inputs"][0], "input_ids [1, 5]");
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["ratio"], 1.0);
    // The two fixtures are the same network written at two opsets.
    assert!(
        models.iter().all(|m| m["matches_first"] == true),
        "{report}"
    );
    assert!(
        models
            .iter()
            .all(|m| m["median_ms"].as_f64().unwrap() > 0.0)
    );
}
