//! A model read and written with no pass in between must come back byte for byte.

mod common;

use common::*;
use normshift::io::{DataLayout, SaveOptions, load, save};

#[test]
fn every_fixture_round_trips_byte_identical_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let input = fixture_model(name);
        let model = load(&input).unwrap();
        assert!(model.warnings.is_empty(), "{name}: {:?}", model.warnings);
        let out = dir.path().join(format!("{name}.onnx"));
        save(&model, &out, &SaveOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(&input).unwrap(),
            std::fs::read(&out).unwrap(),
            "{name} changed"
        );
    }
}

#[test]
fn convert_without_passes_writes_an_identical_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture_model("bert_post.opset14");
    let out = dir.path().join("copy.onnx");
    let o = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&input).unwrap(), std::fs::read(&out).unwrap());
    // Nothing else is left in the folder: no temporary file, no staging folder.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn convert_refuses_to_overwrite_its_input_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::copy(fixture_model("gpt2_pre.opset17"), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let o = normshift(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = normshift(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        path.to_str().unwrap(),
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(before, std::fs::read(&path).unwrap());
}

#[test]
fn a_node_order_that_is_topological_is_kept_and_one_that_is_not_is_sorted() {
    // Nodes listed consumer-first: export must put the producer first.
    let bytes = tiny_model(|g| g.node.reverse());
    let model =
        normshift::io::load_bytes(bytes.into(), "reversed.onnx".as_ref(), ".".as_ref()).unwrap();
    let proto = model.to_proto().unwrap();
    let ops: Vec<_> = proto
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type().to_string())
        .collect();
    assert_eq!(ops, ["Add", "Relu"]);
}

#[test]
fn unknown_fields_are_reported_as_the_reason_bytes_will_differ() {
    let mut bytes = tiny_model(|_| {});
    // Field 99, varint 1: not in the schema; prost drops it.
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    let model = normshift::io::load_bytes(bytes.into(), "m.onnx".as_ref(), ".".as_ref()).unwrap();
    assert!(
        model.warnings.iter().any(|w| w.contains("does not know")),
        "{:?}",
        model.warnings
    );
}

#[test]
fn external_data_round_trips_and_inlines_back_to_the_original_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture_model("llama_rms.opset17");
    let model = load(&input).unwrap();
    let ext = dir.path().join("ext.onnx");
    let report = save(
        &model,
        &ext,
        &SaveOptions {
            layout: DataLayout::External { location: None },
            ..Default::default()
        },
    )
    .unwrap();
    let data = dir.path().join("ext.onnx.data");
    assert_eq!(report.data_file.as_deref(), Some(data.as_path()));
    assert!(std::fs::metadata(&data).unwrap().len() > 50_000);
    assert!(
        std::fs::metadata(&ext).unwrap().len() < 30_000,
        "weights moved out of the model file"
    );

    let reloaded = load(&ext).unwrap();
    assert_eq!(
        reloaded.to_text(Default::default()),
        model.to_text(Default::default())
    );
    // The default layout keeps external data external.
    let again = dir.path().join("again.onnx");
    let report = save(&reloaded, &again, &SaveOptions::default()).unwrap();
    assert!(report.data_file.is_some());
    // Inlined again, it is the original file.
    let inline = dir.path().join("inline.onnx");
    save(
        &reloaded,
        &inline,
        &SaveOptions {
            layout: DataLayout::Inline,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(&inline).unwrap()
    );
}

#[test]
fn convert_writes_external_data_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture_model("gpt2_pre.opset14");
    let out = dir.path().join("out.onnx");
    let o = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--external-data",
        "weights.bin",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("weights.bin").exists());
    let o = normshift(&["verify", input.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_write_never_replaces_the_external_data_its_input_reads_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    let o = normshift(&[
        "convert",
        fixture_model("gpt2_pre.opset17").to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--external-data",
        "w.bin",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let data_before = std::fs::read(dir.path().join("w.bin")).unwrap();
    let b = dir.path().join("b.onnx");
    let o = normshift(&[
        "convert",
        a.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "--external-data",
        "w.bin",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("holds the input's own external data"),
        "{}",
        stderr(&o)
    );
    assert!(!b.exists());
    assert_eq!(
        data_before,
        std::fs::read(dir.path().join("w.bin")).unwrap()
    );
}
