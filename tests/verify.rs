//! The tract verifier: reference outputs, model-vs-model comparison, and a real difference caught.

mod common;

use bytes::Bytes;
use common::*;
use normshift::io::{SaveOptions, load, save};
use normshift::runtime::Values;
use normshift::verify::{
    DimSizes, InputSource, ModelRef, RuntimeChoice, Tolerance, VerifyBy, generate_inputs,
    verify_pair, verify_reference,
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
                ..Default::default()
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
    let report = verify_pair(
        &m,
        &m,
        &source,
        Tolerance::default(),
        RuntimeChoice::Auto,
        VerifyBy::Model,
    )
    .unwrap();
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

fn shapes_of(
    bytes: Vec<u8>,
    named: &[(&str, usize)],
) -> std::collections::HashMap<String, Vec<usize>> {
    let model = normshift::io::load_bytes(
        bytes.into(),
        std::path::Path::new("m.onnx"),
        std::path::Path::new("."),
    )
    .unwrap();
    let mut dims = DimSizes {
        by_name: named.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        ..Default::default()
    };
    generate_inputs(&model, 0, &mut dims)
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.tensor.shape().to_vec()))
        .collect()
}

#[test]
fn a_dim_written_as_an_expression_of_others_gets_its_value() {
    // An optimum KV-cache decoder: the mask covers the past and the new tokens.
    let bytes = tiny_model(|g| {
        g.initializer = vec![f32_tensor("table", &[10, 4], &[0.5; 40])];
        g.input = vec![
            typed_info("ids", 7, &["batch", "seq"]),
            typed_info("past.key", 1, &["batch", "2", "past", "4"]),
            typed_info("mask", 7, &["batch", "past + seq"]),
        ];
        g.node = vec![node("Gather", &["table", "ids"], &["y"])];
        g.output = vec![typed_info("y", 1, &["batch", "seq", "4"])];
    });
    let shapes = shapes_of(bytes.clone(), &[("past", 3)]);
    assert_eq!(shapes["ids"], [2, 7]);
    assert_eq!(shapes["past.key"], [2, 2, 3, 4]);
    assert_eq!(shapes["mask"], [2, 10], "past 3 + sequence 7");
    let empty_past = shapes_of(bytes, &[("past", 0)]);
    assert_eq!(empty_past["past.key"], [2, 2, 0, 4]);
    assert_eq!(empty_past["mask"], [2, 7]);
}

#[test]
fn group_query_attention_fixes_the_head_size_and_the_total_length() {
    // onnxruntime-genai's decoder: packed QKV of width (2 heads + 2 × 1 kv head) × 4, past [b, 1, past, kv_dim],
    // present and mask over `total`, which nothing declares as past + seq: the op's contract says it is.
    let int32 = |name: &str, dims: &[i64], v: &[i32]| normshift::onnx::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(6),
        int32_data: v.to_vec(),
        ..Default::default()
    };
    let mut bytes = tiny_model(|g| {
        g.initializer = vec![
            f32_tensor("table", &[10, 8], &[0.5; 80]),
            f32_tensor("w_qkv", &[8, 16], &[0.1; 128]),
            int32("seqlens", &[1], &[0]),
            int32("total_len", &[], &[1]),
        ];
        g.input = vec![
            typed_info("ids", 7, &["batch", "seq"]),
            typed_info("mask", 7, &["batch", "total"]),
            typed_info("past_key", 1, &["batch", "1", "past", "kv_dim"]),
            typed_info("past_value", 1, &["batch", "1", "past", "kv_dim"]),
        ];
        let mut gqa = node(
            "GroupQueryAttention",
            &[
                "qkv",
                "",
                "",
                "past_key",
                "past_value",
                "seqlens",
                "total_len",
            ],
            &["y", "present_key", "present_value"],
        );
        gqa.domain = Some("com.microsoft".into());
        gqa.attribute = vec![
            common::forms::int("num_heads", 2),
            common::forms::int("kv_num_heads", 1),
        ];
        g.node = vec![
            node("Gather", &["table", "ids"], &["x"]),
            node("MatMul", &["x", "w_qkv"], &["qkv"]),
            gqa,
        ];
        g.output = vec![
            typed_info("y", 1, &["batch", "seq", "8"]),
            typed_info("present_key", 1, &["batch", "1", "total", "kv_dim"]),
            typed_info("present_value", 1, &["batch", "1", "total", "kv_dim"]),
        ];
    });
    let mut proto =
        <normshift::onnx::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    proto
        .opset_import
        .push(normshift::onnx::OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
    bytes = prost::Message::encode_to_vec(&proto);
    let shapes = shapes_of(bytes, &[("past", 5)]);
    assert_eq!(shapes["past_key"], [2, 1, 5, 4], "head size 16 / (2 + 2·1)");
    assert_eq!(shapes["mask"], [2, 12], "total = past 5 + sequence 7");
}

/// Generated inputs follow the graph's own constraints, not only its declarations: optimum's DINOv2 declares
/// `pixel_values` as `[batch, num_channels, height, width]` (all symbolic) and reads it through shape queries
/// and a Cast before its patch `Conv`, whose weights fix the channels at 3 and the size at one patch or more.
#[test]
fn generated_images_get_the_channels_and_size_the_patch_conv_takes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/wild/dinov2.optimum/model.onnx");
    let model = load(&path).unwrap();
    let inputs = normshift::verify::generate_inputs(&model, 0, &mut Default::default()).unwrap();
    let shape = inputs[0].tensor.shape().to_vec();
    assert_eq!(shape[1], 3, "{shape:?}");
    assert!(shape[2] >= 14 && shape[3] >= 14, "{shape:?}");
    let report = verify_pair(
        &ModelRef::loaded(&model, &path),
        &ModelRef::loaded(&model, &path),
        &InputSource::default(),
        Tolerance::default(),
        RuntimeChoice::Only(normshift::runtime::RuntimeKind::Tract),
        Default::default(),
    )
    .unwrap();
    assert!(report.ok);
}

/// A merged decoder's cache branch attends over the past and the new tokens: the input set that selects it gets
/// a mask of past + new positions (what the file declares for its `present` outputs), the other set a mask of
/// the new ones, so that default verification runs both branches (onnxruntime: tract cannot run `If` branches
/// whose shapes differ).
#[test]
fn a_merged_decoders_generated_mask_matches_the_branch_each_set_selects() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/wild/gpt2_lm.optimum_merged/model.onnx");
    let model = load(&path).unwrap();
    let mask_and_branch = |seed| {
        let inputs =
            normshift::verify::generate_inputs(&model, seed, &mut Default::default()).unwrap();
        let find = |name: &str| inputs.iter().find(|i| i.name == name).unwrap();
        let branch = match find("use_cache_branch").tensor.values() {
            normshift::runtime::Values::Bool(v) => v[0],
            other => panic!("{other:?}"),
        };
        let past = find("past_key_values.0.key").tensor.shape()[2];
        let tokens = find("input_ids").tensor.shape()[1];
        (
            branch,
            find("attention_mask").tensor.shape()[1],
            past,
            tokens,
        )
    };
    let (cache, mask, past, tokens) = mask_and_branch(0);
    assert!(cache);
    assert_eq!(mask, past + tokens);
    let (cache, mask, _, tokens) = mask_and_branch(1);
    assert!(!cache);
    assert_eq!(mask, tokens);
    if !onnxruntime_here("a_merged_decoders_generated_mask_matches_the_branch_each_set_selects") {
        return;
    }
    let report = verify_pair(
        &ModelRef::loaded(&model, &path),
        &ModelRef::loaded(&model, &path),
        &normshift::verify::InputSource::Seeds {
            seeds: vec![0, 1],
            dims: Default::default(),
        },
        Tolerance::default(),
        RuntimeChoice::Auto,
        Default::default(),
    )
    .unwrap();
    assert!(report.ok && report.runs.len() == 2, "{report:?}");
}
