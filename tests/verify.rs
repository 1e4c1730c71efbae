//! The tract verifier: reference outputs, model-vs-model comparison, and a real difference caught.

mod common;

use bytes::Bytes;
use common::*;
use normshift::io::{SaveOptions, load, save};
use normshift::runtime::Values;
use normshift::verify::{
    DimSizes, InputSource, ModelRef, RuntimeChoice, Tolerance, generate_inputs, verify_pair,
    verify_reference,
};

#[test]
fn every_fixture_matches_its_reference_outputs_in_tract() {
    for name in FIXTURES {
        let path = fixture_model(name);
        let model = load(&path).unwrap();
        let report = verify_reference(
            &ModelRef::loaded(&model, &path),
            &fixture(name),
            Tolerance {
                rtol: 0.0,
                atol: 1e-4,
            },
            RuntimeChoice::Only(normshift::runtime::RuntimeKind::Tract),
        )
        .unwrap();
        assert!(report.ok, "{name}: {:?}", report.worst());
        assert!(report.worst().unwrap().cosine > 0.999_999, "{name}");
    }
}

#[test]
fn a_model_matches_itself_on_several_seeds() {
    let path = fixture_model("bert_post.opset14");
    let model = load(&path).unwrap();
    let source = InputSource::Seeds {
        seeds: vec![0, 1, 2],
        dims: DimSizes::default(),
    };
    let m = ModelRef::loaded(&model, &path);
    let report = verify_pair(&m, &m, &source, Tolerance::default(), RuntimeChoice::Auto).unwrap();
    assert_eq!(report.runtime, normshift::runtime::RuntimeKind::Tract);
    assert_eq!(report.runs.len(), 3);
    assert!(report.ok);
    assert_eq!(report.worst().unwrap().max_abs, 0.0);
}

#[test]
fn a_changed_weight_is_reported_as_a_difference_with_exit_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_model("gpt2_pre.opset17");
    let mut model = load(&path).unwrap();
    // Scale the final norm's weight: every output element moves.
    let id = model
        .graph
        .initializers
        .iter()
        .copied()
        .find(|&v| model.graph.value(v).name == "final_norm.weight")
        .unwrap();
    let t = model.graph.tensors.get_mut(&id).unwrap();
    let scaled: Vec<u8> = t
        .raw_bytes()
        .unwrap()
        .chunks_exact(4)
        .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 1.01).to_le_bytes())
        .collect();
    t.proto.raw_data = Some(Bytes::from(scaled));
    let changed = dir.path().join("changed.onnx");
    save(&model, &changed, &SaveOptions::default()).unwrap();

    let o = normshift(&["verify", path.to_str().unwrap(), changed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("DIFF"), "{}", stdout(&o));
    assert!(stdout(&o).contains("FAIL"));
}

#[test]
fn token_ids_stay_below_the_embedding_rows_and_masks_are_ones() {
    let model = load(&fixture_model("bert_post.opset14")).unwrap();
    let inputs = generate_inputs(&model, 7, &mut DimSizes::default()).unwrap();
    let ids = inputs.iter().find(|i| i.name == "input_ids").unwrap();
    let Values::I64(ids) = ids.tensor.values() else {
        panic!("int64 ids")
    };
    assert!(ids.iter().all(|&i| (0..64).contains(&i)), "{ids:?}");
    assert!(ids.iter().any(|&i| i != ids[0]), "ids vary");
    assert_eq!(
        inputs[0].tensor.shape(),
        &[2, 7],
        "batch 2, sequence 7 by default"
    );
    let mask = inputs.iter().find(|i| i.name == "attention_mask").unwrap();
    assert!(matches!(mask.tensor.values(), Values::I64(m) if m.iter().all(|&m| m == 1)));
}

#[test]
fn verify_json_reports_every_figure() {
    let path = fixture_model("llama_rms.opset14");
    let o = normshift(&[
        "verify",
        path.to_str().unwrap(),
        "--reference",
        fixture("llama_rms.opset14").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let out = &v["runs"][0]["outputs"][0];
    for key in ["max_abs", "max_rel", "cosine", "shape", "name"] {
        assert!(!out[key].is_null(), "missing {key}: {out}");
    }
}

#[test]
fn user_inputs_from_a_test_data_folder_are_used() {
    let path = fixture_model("gpt2_pre.opset14");
    let o = normshift(&[
        "verify",
        path.to_str().unwrap(),
        path.to_str().unwrap(),
        "--inputs",
        fixture("gpt2_pre.opset14")
            .join("test_data_set_0")
            .to_str()
            .unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["runs"][0]["input_shapes"][0][1],
        serde_json::json!([1, 5])
    );
}

#[test]
fn a_model_no_runtime_can_run_exits_3_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_model(|g| {
        g.node[1].op_type = Some("NoSuchOp".into());
        g.node[1].name = Some("the_bad_node".into());
    });
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, bytes).unwrap();
    let o = normshift(&[
        "verify",
        path.to_str().unwrap(),
        path.to_str().unwrap(),
        "--runtime",
        "tract",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("the_bad_node"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("PASS"));
}
