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

/// `model` as optimum's `merge_decoders` writes it: the main graph keeps the inputs, the outputs and every
/// initializer, gains a boolean input `use_cache_branch`, and holds one `If` whose two branches each hold the
/// whole original graph (reading the initializers from the main graph).
fn merged(model: &[u8]) -> Vec<u8> {
    use prost::Message;
    let mut proto = normshift::onnx::ModelProto::decode(model).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let body = |name: &str| GraphProto {
        name: Some(name.into()),
        node: g.node.clone(),
        output: g.output.clone(),
        ..Default::default()
    };
    let mut iff = node(
        "If",
        &["use_cache_branch"],
        &g.output.iter().map(|o| o.name()).collect::<Vec<_>>(),
    );
    iff.name = Some("merged::if".into());
    iff.attribute = vec![
        graph_attr("then_branch", body("with_past")),
        graph_attr("else_branch", body("without_past")),
    ];
    g.node = vec![iff];
    g.value_info.clear();
    g.input.push(bool_info("use_cache_branch"));
    proto.encode_to_vec()
}

fn load(bytes: &[u8]) -> normshift::Model {
    normshift::io::load_bytes(bytes.to_vec().into(), "m.onnx".as_ref(), ".".as_ref()).unwrap()
}

#[test]
fn a_merged_decoder_is_analysed_as_the_decoder_in_its_branches() {
    let plain = std::fs::read(fixture_model("bert_post.opset14")).unwrap();
    let want = normshift::analysis::analyze_model(&load(&plain)).unwrap();
    let got = normshift::analysis::analyze_model(&load(&merged(&plain))).unwrap();
    assert!(got.summarised_by_subgraphs);
    let paths: Vec<&str> = got.subgraphs.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/merged::if/then_branch", "/merged::if/else_branch"]
    );
    let json = |a: &normshift::analysis::Analysis| serde_json::to_value(a).unwrap();
    for body in &got.subgraphs {
        // Units, branches, roles and ε of every norm, read through constants of the main graph.
        assert_eq!(json(&body.analysis), json(&want.main), "{}", body.path);
    }
    let summary = |a: &normshift::analysis::Analysis| {
        (
            a.placement,
            a.norm,
            a.unit_count,
            a.norm_count,
            a.embedding_norm,
            a.final_norm,
        )
    };
    assert_eq!(summary(&got.main), summary(&want.main));
    assert!(want.main.unit_count > 0 && got.main.residual_units.is_empty());
}

#[test]
fn passes_rewrite_inside_both_branches_and_count_their_changes_per_body() {
    let plain = std::fs::read(fixture_model("bert_post.opset14")).unwrap();
    let mut alone = load(&plain);
    let mut model = load(&merged(&plain));
    let pipeline = ["fuse-layernorm".to_string()];
    let alone_runs = passes::run_pipeline(&mut alone, &pipeline, &Default::default()).unwrap();
    let runs = passes::run_pipeline(&mut model, &pipeline, &Default::default()).unwrap();
    let per_body: Vec<(&str, usize)> = runs[0]
        .subgraphs
        .iter()
        .map(|b| (b.path.as_str(), b.changes))
        .collect();
    let fused = alone_runs[0].changes;
    assert!(fused > 0);
    assert_eq!(
        per_body,
        [
            ("/merged::if/then_branch", fused),
            ("/merged::if/else_branch", fused)
        ]
    );
    assert_eq!(runs[0].changes, 2 * fused);
    // LayerNormalization needs opset 17: the model (whose opset the bodies share) was raised from 14.
    assert_eq!(model.opset_version(""), Some(17));
    let summary = model.summary().unwrap();
    assert_eq!(summary.ops.get("LayerNormalization"), Some(&(2 * fused)));
    assert_eq!(summary.ops.get("ReduceMean"), None);
    // The decomposed norms' ε and exponent constants lived in the main graph; nothing reads them any more.
    let unread: Vec<&str> = model
        .graph
        .initializers
        .iter()
        .filter(|&&v| {
            model
                .graph
                .graph
                .node_indices()
                .all(|n| !model.graph.captured_values(n).contains(&v))
        })
        .map(|&v| model.graph.value(v).name.as_str())
        .collect();
    assert!(unread.is_empty(), "unread initializers left: {unread:?}");
    // What was written reloads, and analyses as the fused decoder in each branch.
    use prost::Message;
    let again = load(&model.to_proto().unwrap().encode_to_vec());
    let a = normshift::analysis::analyze_model(&again).unwrap();
    let b = normshift::analysis::analyze_model(&alone).unwrap();
    assert!(a.summarised_by_subgraphs);
    for body in &a.subgraphs {
        assert_eq!(
            serde_json::to_value(&body.analysis).unwrap(),
            serde_json::to_value(&b.main).unwrap()
        );
    }
}

#[test]
fn generated_inputs_run_both_branches_of_a_merged_decoder() {
    use normshift::runtime::Values;
    let plain = std::fs::read(fixture_model("bert_post.opset14")).unwrap();
    let model = load(&merged(&plain));
    let condition = |seed| {
        let inputs =
            normshift::verify::generate_inputs(&model, seed, &mut Default::default()).unwrap();
        let named = inputs
            .iter()
            .find(|n| n.name == "use_cache_branch")
            .unwrap();
        match named.tensor.values() {
            Values::Bool(v) => v[0],
            other => panic!("{other:?}"),
        }
    };
    // `convert` verifies on seeds 0 and 1: the branch with the cache, then the one without.
    assert_eq!((condition(0), condition(1)), (true, false));
}

/// `convert` on a fixture with its own test data, judged by onnxruntime; the JSON report.
fn convert_verified(
    folder: &str,
    passes: &str,
    input: &std::path::Path,
    output: &std::path::Path,
) -> serde_json::Value {
    let data = fixture(folder);
    let out = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--passes",
        passes,
        "--inputs",
        data.to_str().unwrap(),
        "--runtime",
        "ort",
        "--json",
    ]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)))
}

#[test]
fn merged_decoders_keep_their_function_and_interface_in_both_branches() {
    if !onnxruntime_here("merged_decoders_keep_their_function_and_interface_in_both_branches") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Test set 0 runs the branch without cache (past length 0), set 1 the one with it (past length 3).
    for (folder, exact) in [
        (
            "wild/gpt2_lm.optimum_merged",
            "unfuse-norms,fuse-layernorm,fold-norm-affine,layernorm-to-rmsnorm",
        ),
        (
            "wild/t5_decoder.optimum_merged",
            "fuse-rmsnorm,fold-norm-affine,unfuse-norms",
        ),
    ] {
        let original = fixture(folder).join("model.onnx");
        let rewritten = dir.path().join("exact.onnx");
        let report = convert_verified(folder, exact, &original, &rewritten);
        assert_eq!(report["written"], true, "{folder}: {report}");
        assert_eq!(
            report["verification"]["runs"].as_array().unwrap().len(),
            2,
            "{report}"
        );
        for run in &report["passes"].as_array().unwrap()[..1] {
            let bodies = run["subgraphs"].as_array().unwrap();
            assert_eq!(bodies.len(), 2, "{run}");
            assert!(
                bodies.iter().all(|b| b["changes"].as_u64() > Some(0)),
                "{run}"
            );
        }
        // The placement round trip inside both branches gives the original's outputs back.
        let (there, back) = (dir.path().join("post.onnx"), dir.path().join("back.onnx"));
        let report = convert_verified(folder, "pre-to-post", &original, &there);
        assert_eq!(report["written"], true, "{folder}: {report}");
        let report = convert_verified(folder, "post-to-pre", &there, &back);
        assert_eq!(report["written"], true, "{folder}: {report}");
        let check = normshift(&[
            "verify",
            original.to_str().unwrap(),
            back.to_str().unwrap(),
            "--inputs",
            fixture(folder).to_str().unwrap(),
            "--runtime",
            "ort",
        ]);
        assert!(check.status.success(), "{folder}: {}", stderr(&check));
        // The past/present interface is the original's.
        let interface = |p: &std::path::Path| {
            let m = normshift::io::load(p).unwrap();
            let names = |ids: &[normshift::ir::ValueId]| -> Vec<String> {
                ids.iter().map(|&v| m.graph.value(v).name.clone()).collect()
            };
            (names(&m.graph.inputs), names(&m.graph.outputs))
        };
        assert_eq!(interface(&back), interface(&original));
        assert_eq!(interface(&rewritten), interface(&original));
    }
}

#[test]
fn calibrating_a_model_with_units_inside_a_branch_is_refused_naming_the_branch() {
    // post-to-pre converts the units in both branches; calibration would fit none of them.
    let plain = std::fs::read(fixture_model("bert_post.opset14")).unwrap();
    let bytes = merged(&plain);
    let model = load(&bytes);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("m.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, &bytes).unwrap();
    let cal = dir.path().join("calibration");
    for seed in 0..2 {
        let inputs =
            normshift::verify::generate_inputs(&model, seed, &mut Default::default()).unwrap();
        let set = cal.join(format!("test_data_set_{seed}"));
        normshift::verify::write_test_data(&set, &inputs, &[]).unwrap();
    }
    let out = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--passes",
        "post-to-pre",
        "--calibration",
        cal.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the subgraph body `/merged::if/then_branch` holds residual units"),
        "{err}"
    );
    assert!(!output.exists());
}
