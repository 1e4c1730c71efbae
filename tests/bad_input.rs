//! Bad input gets one clear line and a non-zero exit, never a panic, and no output file.

mod common;

use std::path::Path;

use common::*;
use normshift::onnx::tensor_proto::DataLocation;
use normshift::onnx::{GraphProto, ModelProto, NodeProto, StringStringEntryProto};
use prost::Message;

/// Runs `convert` on `bytes` and checks the failure: exit 2, one line mentioning `expect`, no output.
fn refused(bytes: &[u8], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    refused_in(dir.path(), bytes, expect);
}

fn refused_in(dir: &Path, bytes: &[u8], expect: &str) {
    let input = dir.join("bad.onnx");
    std::fs::write(&input, bytes).unwrap();
    let out = dir.join("out.onnx");
    let o = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "no output may be written");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("normshift"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn empty_file() {
    refused(b"", "is empty");
}

#[test]
fn truncated_file() {
    let bytes = std::fs::read(fixture_model("bert_post.opset14")).unwrap();
    refused(&bytes[..bytes.len() / 2], "not an ONNX model");
}

#[test]
fn random_bytes() {
    // A fixed pseudo-random sequence (xorshift), so the test is reproducible.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    refused(&bytes, "not an ONNX model");
}

#[test]
fn a_cycle() {
    let bytes = tiny_model(|g| {
        g.node = vec![
            node("Add", &["x", "t"], &["s"]),
            node("Relu", &["s"], &["t"]),
            node("Identity", &["t"], &["y"]),
        ];
    });
    refused(&bytes, "cycle");
}

#[test]
fn a_node_reading_a_value_nobody_makes() {
    let bytes = tiny_model(|g| g.node[1].input[0] = "nowhere".into());
    refused(
        &bytes,
        "`nowhere`, which no node, input or initializer produces",
    );
}

#[test]
fn duplicate_output_names() {
    let bytes = tiny_model(|g| g.node.push(node("Neg", &["x"], &["s"])));
    refused(&bytes, "`s` is produced by more than one node");
}

#[test]
fn a_tensor_whose_dims_disagree_with_its_data() {
    let bytes = tiny_model(|g| g.initializer[0].dims = vec![4, 3]);
    refused(&bytes, "needs 48 bytes of raw data but 24 are stored");
}

#[test]
fn a_tensor_whose_dims_overflow() {
    let bytes = tiny_model(|g| g.initializer[0].dims = vec![i64::MAX, 4]);
    refused(&bytes, "overflows");
}

#[test]
fn a_4_bit_tensor_claiming_more_elements_than_its_bytes_hold() {
    // 24 bytes hold 48 int4 values; the dims claim 2^40.
    let bytes = tiny_model(|g| {
        g.initializer[0].data_type = Some(22);
        g.initializer[0].dims = vec![1 << 40];
    });
    refused(
        &bytes,
        "needs 549755813888 bytes of raw data but 24 are stored",
    );
    let fits = tiny_model(|g| {
        g.initializer[0].data_type = Some(22);
        g.initializer[0].dims = vec![47];
    });
    assert!(normshift::io::load_bytes(fits.into(), "m.onnx".as_ref(), ".".as_ref()).is_ok());
}

fn external(location: &str, offset: u64, length: u64) -> Vec<u8> {
    tiny_model(|g| {
        let t = &mut g.initializer[0];
        t.raw_data = None;
        t.data_location = Some(DataLocation::External as i32);
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            kv("location", location.into()),
            kv("offset", offset.to_string()),
            kv("length", length.to_string()),
        ];
    })
}

#[test]
fn external_data_path_with_dotdot_is_refused() {
    refused(
        &external("../secret.bin", 0, 24),
        "leaves the model's folder",
    );
}

#[test]
fn external_data_absolute_path_is_refused() {
    refused(&external("/etc/passwd", 0, 24), "leaves the model's folder");
}

#[test]
fn external_data_symlink_pointing_outside_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("w.bin"), [0u8; 24]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path().join("w.bin"), dir.path().join("w.bin")).unwrap();
    refused_in(
        dir.path(),
        &external("w.bin", 0, 24),
        "leaves the model's folder",
    );
}

#[test]
fn external_data_running_past_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 24]).unwrap();
    refused_in(dir.path(), &external("w.bin", 8, 24), "runs past the end");
}

#[test]
fn external_data_inside_the_folder_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = [0.5f32, -1.0, 2.0, 0.0, 1.5, -0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("w.bin"), &data).unwrap();
    let input = dir.path().join("m.onnx");
    std::fs::write(&input, external("w.bin", 0, 24)).unwrap();
    let model = normshift::io::load(&input).unwrap();
    let w = model.graph.value_id("w").unwrap();
    assert_eq!(
        model
            .graph
            .initializer(w)
            .unwrap()
            .raw_bytes()
            .unwrap()
            .as_ref(),
        data.as_slice()
    );
}

#[test]
fn a_missing_file_and_a_folder_are_one_line_errors() {
    let o = normshift(&["inspect", "/nonexistent/model.onnx"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    let o = normshift(&["inspect", env!("CARGO_MANIFEST_DIR")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("folder"), "{}", stderr(&o));
}

#[test]
fn a_node_in_a_domain_without_an_opset_import() {
    let bytes = tiny_model(|g| g.node[1].domain = Some("com.microsoft".into()));
    refused(
        &bytes,
        "is in domain `com.microsoft`, which the model imports no opset for",
    );
}

#[test]
fn a_model_importing_no_opset_at_all() {
    let mut model = ModelProto::decode(tiny_model(|_| {}).as_slice()).unwrap();
    model.opset_import.clear();
    refused(&model.encode_to_vec(), "imports no opset for");
}

/// A branch of an `If`: `out = Identity(reads)`, `reads` coming from the enclosing scope.
fn branch(reads: &str, out: &str) -> GraphProto {
    GraphProto {
        name: Some(format!("branch_{out}")),
        node: vec![node("Identity", &[reads], &[out])],
        output: vec![f32_info(out, &[2, 3])],
        ..Default::default()
    }
}

fn if_node(cond: &str, then: GraphProto, otherwise: GraphProto, out: &str) -> NodeProto {
    let mut n = node("If", &[cond], &[out]);
    n.attribute = vec![
        graph_attr("then_branch", then),
        graph_attr("else_branch", otherwise),
    ];
    n
}

#[test]
fn a_cycle_through_a_subgraph() {
    // `If`'s then-branch reads `t`, and `t` is computed from the `If`'s own output.
    let bytes = tiny_model(|g| {
        g.input.push(bool_info("c"));
        g.node = vec![
            if_node("c", branch("t", "o1"), branch("x", "o2"), "i"),
            node("Relu", &["i"], &["t"]),
            node("Identity", &["t"], &["y"]),
        ];
    });
    refused(&bytes, "cycle");
}

/// `If` nodes nested `depth` deep, the innermost branches reading the graph input `x`.
fn nested_ifs(depth: usize) -> Vec<u8> {
    let mut then = branch("x", "o0");
    for level in 1..depth {
        let out = format!("o{level}");
        then = GraphProto {
            name: Some(format!("level_{level}")),
            node: vec![if_node("c", then, branch("x", &format!("e{level}")), &out)],
            output: vec![f32_info(&out, &[2, 3])],
            ..Default::default()
        };
    }
    tiny_model(|g| {
        g.input.push(bool_info("c"));
        g.node = vec![
            if_node("c", then, branch("x", "top_else"), "s"),
            node("Relu", &["s"], &["y"]),
        ];
        g.initializer.clear();
    })
}

#[test]
fn deeply_nested_subgraphs_are_refused_without_overflowing_the_stack() {
    refused(&nested_ifs(500), "not an ONNX model");
}

#[test]
fn moderately_nested_subgraphs_are_converted() {
    let (o, _dir, out) = convert_bytes(&nested_ifs(20), &["--no-verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = normshift(&["analyze", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}
