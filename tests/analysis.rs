//! `analyze` on the project's own fixtures: every placement, parallel units, embedding and final norms.

mod common;

use common::*;
use normshift::analysis::{Placement, analyze};
use normshift::ir::index::GraphIndex;

fn analysis(name: &str) -> normshift::analysis::Analysis {
    let model = normshift::io::load(&fixture_model(name)).unwrap();
    analyze(&GraphIndex::new(&model.graph))
}

#[test]
fn every_fixture_is_classified_as_built() {
    // (fixture, placement, norm, units, parallel, embedding norm, final norm, norms)
    let table = [
        (
            "bert_post.opset14",
            Placement::Post,
            "layernorm",
            4,
            false,
            true,
            false,
            5,
        ),
        (
            "bert_post.opset17",
            Placement::Post,
            "layernorm",
            4,
            false,
            true,
            false,
            5,
        ),
        (
            "gpt2_pre.opset14",
            Placement::Pre,
            "layernorm",
            4,
            false,
            false,
            true,
            5,
        ),
        (
            "gpt2_pre.opset17",
            Placement::Pre,
            "layernorm",
            4,
            false,
            false,
            true,
            5,
        ),
        (
            "llama_rms.opset14",
            Placement::Pre,
            "rmsnorm",
            4,
            false,
            false,
            true,
            5,
        ),
        (
            "llama_rms.opset17",
            Placement::Pre,
            "rmsnorm",
            4,
            false,
            false,
            true,
            5,
        ),
        (
            "gemma2_peri.opset17",
            Placement::Peri,
            "rmsnorm",
            4,
            false,
            false,
            true,
            9,
        ),
        (
            "olmo2_out.opset17",
            Placement::BranchOutput,
            "rmsnorm",
            4,
            false,
            false,
            true,
            5,
        ),
        (
            "neox_parallel.opset17",
            Placement::Pre,
            "layernorm",
            2,
            true,
            false,
            true,
            5,
        ),
        (
            "deepnorm_post.opset17",
            Placement::Post,
            "layernorm",
            4,
            false,
            true,
            false,
            5,
        ),
    ];
    for (name, placement, norm, units, parallel, embedding, fin, norms) in table {
        let a = analysis(name);
        let got = (
            a.placement,
            a.norm.as_str(),
            a.unit_count,
            a.parallel,
            a.embedding_norm,
            a.final_norm,
            a.norm_count,
        );
        assert_eq!(
            got,
            (placement, norm, units, parallel, embedding, fin, norms),
            "{name}"
        );
    }
}

#[test]
fn sequential_units_alternate_attention_and_mlp_and_parallel_units_have_both() {
    use normshift::analysis::BranchKind::{Attention, Mlp};
    let kinds = |name| {
        analysis(name)
            .residual_units
            .iter()
            .map(|u| u.branches.iter().map(|b| b.kind).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds("llama_rms.opset14"),
        [vec![Attention], vec![Mlp], vec![Attention], vec![Mlp]]
    );
    let parallel = kinds("neox_parallel.opset17");
    assert!(
        parallel
            .iter()
            .all(|b| b.len() == 2 && b.contains(&Attention) && b.contains(&Mlp)),
        "{parallel:?}"
    );
}

#[test]
fn a_scaled_skip_is_still_a_unit_and_reports_its_scale() {
    let a = analysis("deepnorm_post.opset17");
    assert!(
        a.residual_units
            .iter()
            .all(|u| u.skip_scale.is_some_and(|s| (s - 1.7).abs() < 1e-6))
    );
}

#[test]
fn analyze_json_follows_the_documented_schema() {
    let o = normshift(&[
        "analyze",
        fixture_model("gemma2_peri.opset17").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "placement",
        "norm",
        "parallel",
        "embedding_norm",
        "final_norm",
        "residual_units",
        "norms",
    ] {
        assert!(!v[key].is_null(), "missing {key}");
    }
    let unit = &v["residual_units"][0];
    assert_eq!(unit["placement"], "peri");
    assert_eq!(unit["branches"], serde_json::json!(["attention"]));
    assert_eq!(
        unit["norms"],
        serde_json::json!([{"index": 0, "role": "peri"}, {"index": 1, "role": "peri"}])
    );
    let norm = &v["norms"][8];
    assert_eq!(
        (
            norm["kind"].as_str(),
            norm["form"].as_str(),
            norm["role"].as_str()
        ),
        (Some("rmsnorm"), Some("decomposed"), Some("final"))
    );
    assert_eq!(
        (norm["axis"].as_i64(), norm["epsilon"].as_f64()),
        (Some(-1), Some(1e-5))
    );
}

#[test]
fn analyze_table_bert_post() {
    let o = normshift(&[
        "analyze",
        fixture_model("bert_post.opset14").to_str().unwrap(),
    ]);
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn analyze_table_neox_parallel() {
    let o = normshift(&[
        "analyze",
        fixture_model("neox_parallel.opset17").to_str().unwrap(),
    ]);
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn analyze_table_gemma2_peri() {
    let o = normshift(&[
        "analyze",
        fixture_model("gemma2_peri.opset17").to_str().unwrap(),
    ]);
    insta::assert_snapshot!(stdout(&o));
}

#[test]
fn dot_draws_one_box_per_unit_with_norms_coloured_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("a.dot");
    let o = normshift(&[
        "analyze",
        fixture_model("bert_post.opset14").to_str().unwrap(),
        "--dot",
        dot.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph"));
    assert_eq!(text.matches("subgraph cluster_unit").count(), 4);
    assert_eq!(text.matches("(post)").count(), 4);
    assert_eq!(text.matches("(embedding)").count(), 1);
}

#[test]
fn svg_is_rendered_with_graphviz_or_refused_in_one_line_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("a.svg");
    let o = normshift(&[
        "analyze",
        fixture_model("gpt2_pre.opset17").to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let has_dot = std::process::Command::new("dot").arg("-V").output().is_ok();
    if has_dot {
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    } else {
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("Graphviz"), "{}", stderr(&o));
        assert!(!svg.exists());
    }
}

/// How a parallel layer's three terms (the stream `x`, attention `a`, MLP `m`) are added.
#[derive(Clone, Copy, Debug)]
enum Grouping {
    /// `(x + a) + m`: StableLM, Cohere.
    StreamFirst,
    /// `x + (a + m)`: GPT-J.
    BranchesFirst,
    /// `(m + a) + x`: GPT-NeoX.
    StreamLast,
}

/// Two parallel layers `x + attn(N(x)) + mlp(N(x))` sharing one LayerNorm each, summed as `grouping` says,
/// then a final norm; the embedding is multiplied by a mask (`x · mask[..., None]`, as DeBERTa does after its
/// embedding norm) before the first layer. Hidden 4, attention of one head.
fn parallel_model(grouping: Grouping, shape_query_on_partial_sum: bool) -> Vec<u8> {
    let h = 4i64;
    let mut nodes = vec![
        node("Gather", &["table", "ids"], &["emb"]),
        common::forms::with(
            node("Cast", &["mask"], &["mask_f"]),
            vec![common::forms::int("to", 1)],
        ),
        node("Unsqueeze", &["mask_f", "last"], &["mask_u"]),
        node("Mul", &["emb", "mask_u"], &["x0"]),
    ];
    let mut inits = vec![
        f32_tensor("table", &[10, h], &[0.1; 40]),
        normshift::onnx::TensorProto {
            name: Some("last".into()),
            dims: vec![1],
            data_type: Some(7),
            int64_data: vec![-1],
            ..Default::default()
        },
    ];
    for l in 0..2 {
        let p = |s: &str| format!("l{l}_{s}");
        let x = format!("x{l}");
        for w in ["q", "k", "v", "o", "up", "down"] {
            inits.push(f32_tensor(&p(w), &[h, h], &[0.05; 16]));
        }
        inits.push(f32_tensor(&p("g"), &[h], &[1.0; 4]));
        inits.push(f32_tensor(&p("b"), &[h], &[0.0; 4]));
        let (n, q, k, v, kt, s, pr, c, a, u, r, m) = (
            p("n"),
            p("qv"),
            p("kv"),
            p("vv"),
            p("kt"),
            p("s"),
            p("p"),
            p("c"),
            p("a"),
            p("u"),
            p("r"),
            p("m"),
        );
        nodes.extend([
            node("LayerNormalization", &[&x, &p("g"), &p("b")], &[&n]),
            node("MatMul", &[&n, &p("q")], &[&q]),
            node("MatMul", &[&n, &p("k")], &[&k]),
            node("MatMul", &[&n, &p("v")], &[&v]),
            common::forms::with(
                node("Transpose", &[&k], &[&kt]),
                vec![common::forms::ints("perm", &[0, 2, 1])],
            ),
            node("MatMul", &[&q, &kt], &[&s]),
            node("Softmax", &[&s], &[&pr]),
            node("MatMul", &[&pr, &v], &[&c]),
            node("MatMul", &[&c, &p("o")], &[&a]),
            node("MatMul", &[&n, &p("up")], &[&u]),
            node("Relu", &[&u], &[&r]),
            node("MatMul", &[&r, &p("down")], &[&m]),
        ]);
        let out = format!("x{}", l + 1);
        let partial = p("partial");
        match grouping {
            Grouping::StreamFirst => nodes.extend([
                node("Add", &[&x, &a], &[&partial]),
                node("Add", &[&partial, &m], &[&out]),
            ]),
            Grouping::BranchesFirst => nodes.extend([
                node("Add", &[&a, &m], &[&partial]),
                node("Add", &[&x, &partial], &[&out]),
            ]),
            Grouping::StreamLast => nodes.extend([
                node("Add", &[&m, &a], &[&partial]),
                node("Add", &[&partial, &x], &[&out]),
            ]),
        }
        if shape_query_on_partial_sum {
            nodes.push(node("Shape", &[&partial], &[&p("shape")]));
        }
    }
    inits.push(f32_tensor("gf", &[h], &[1.0; 4]));
    inits.push(f32_tensor("bf", &[h], &[0.0; 4]));
    nodes.push(node("LayerNormalization", &["x2", "gf", "bf"], &["y"]));
    let mut mask = f32_info("mask", &[1, 3]);
    let mut ids = f32_info("ids", &[1, 3]);
    for info in [&mut mask, &mut ids] {
        if let Some(normshift::onnx::type_proto::Value::TensorType(t)) =
            info.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.elem_type = Some(7);
        }
    }
    let graph = normshift::onnx::GraphProto {
        name: Some("parallel".into()),
        node: nodes,
        initializer: inits,
        input: vec![ids, mask],
        output: vec![f32_info("y", &[1, 3, h])],
        ..Default::default()
    };
    prost::Message::encode_to_vec(&normshift::onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![normshift::onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    })
}

#[test]
fn a_parallel_layer_is_one_unit_however_its_sum_is_grouped() {
    for grouping in [
        Grouping::StreamFirst,
        Grouping::BranchesFirst,
        Grouping::StreamLast,
    ] {
        for shape_query in [false, true] {
            let bytes = parallel_model(grouping, shape_query);
            let model =
                normshift::io::load_bytes(bytes.into(), "p.onnx".as_ref(), ".".as_ref()).unwrap();
            let a = analyze(&GraphIndex::new(&model.graph));
            let case = format!("{grouping:?}, shape query {shape_query}");
            assert_eq!(
                (a.placement, a.unit_count, a.parallel, a.final_norm),
                (Placement::Pre, 2, true, true),
                "{case}"
            );
            for u in &a.residual_units {
                let mut kinds: Vec<&str> = u.branches.iter().map(|b| b.kind.as_str()).collect();
                kinds.sort_unstable();
                assert_eq!(kinds, ["attention", "mlp"], "{case}");
                assert_eq!(u.pre_norms().len(), 1, "{case}: one shared norm");
                assert_eq!(u.adds.len(), 2, "{case}: the sum is two Adds");
            }
            // The stream is carried from the masked embedding to the last sum.
            let stream = a.stream(&GraphIndex::new(&model.graph)).unwrap();
            assert!(stream.values.len() >= 3, "{case}");
        }
    }
}

#[test]
fn a_parallel_layer_summed_stream_first_becomes_pre_rmsnorm_exactly() {
    use normshift::verify::{
        InputSource, ModelRef, RuntimeChoice, Tolerance, VerifyBy, verify_pair,
    };
    let bytes = parallel_model(Grouping::StreamFirst, false);
    let original =
        normshift::io::load_bytes(bytes.into(), "p.onnx".as_ref(), ".".as_ref()).unwrap();
    let mut model = original.clone();
    for pass in ["fold-norm-affine", "layernorm-to-rmsnorm"] {
        let pass = normshift::passes::by_name(pass).unwrap();
        normshift::passes::run_one(&mut model, pass.as_ref(), &Default::default()).unwrap();
    }
    let a = analyze(&GraphIndex::new(&model.graph));
    assert_eq!((a.placement, a.norm.as_str()), (Placement::Pre, "rmsnorm"));
    let path = std::path::Path::new("p.onnx");
    let report = verify_pair(
        &ModelRef::loaded(&original, path),
        &ModelRef::loaded(&model, path),
        &InputSource::default(),
        Tolerance::default(),
        RuntimeChoice::Only(normshift::runtime::RuntimeKind::Tract),
        VerifyBy::Model,
    )
    .unwrap();
    assert!(report.ok, "{:?}", report.worst());
}
