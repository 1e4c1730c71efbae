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
