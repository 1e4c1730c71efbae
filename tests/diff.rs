//! `normshift diff`: what a rewrite changed, matched by structure — a fusion is its norms out and its fused ops
//! in, and renaming and reordering every node changes nothing.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use normshift::Model;
use normshift::analysis::analyze;
use normshift::ir::diff::diff;
use normshift::ir::index::GraphIndex;
use normshift::onnx::{GraphProto, ModelProto};
use normshift::passes::{PipelineOptions, run_pipeline};
use prost::Message;

/// Each fixture with the pass that rewrites its norms (fusing decomposed ones, unfusing fused ones).
const REWRITES: &[(&str, &str)] = &[
    ("bert_post.opset14", "fuse-layernorm"),
    ("gpt2_pre.opset14", "fuse-layernorm"),
    ("llama_rms.opset14", "fuse-rmsnorm"),
    ("bert_post.opset17", "unfuse-norms"),
    ("gpt2_pre.opset17", "unfuse-norms"),
    ("llama_rms.opset17", "fuse-rmsnorm"),
    ("gemma2_peri.opset17", "fuse-rmsnorm"),
    ("olmo2_out.opset17", "fuse-rmsnorm"),
    ("neox_parallel.opset17", "unfuse-norms"),
    ("deepnorm_post.opset17", "unfuse-norms"),
];

fn rewritten(fixture: &str, pass: &str) -> (Model, Model) {
    let original = normshift::io::load(&fixture_model(fixture)).unwrap();
    let mut model = original.clone();
    run_pipeline(&mut model, &[pass.to_string()], &PipelineOptions::default()).unwrap();
    (original, model)
}

/// The op nodes of `model`'s norms (those of the decomposed form, or the fused op), and the Constant ops that
/// feed only them.
fn norm_nodes(model: &Model) -> HashSet<petgraph::stable_graph::NodeIndex> {
    let ix = GraphIndex::new(&model.graph);
    let a = analyze(&ix);
    let mut nodes: HashSet<_> = a.norms.iter().flat_map(|n| n.norm.nodes.clone()).collect();
    for &n in ix.ops() {
        let op = model.graph.graph[n].op().unwrap();
        let feeds_norm_only = ix.output(n).is_some_and(|v| {
            let readers = ix.consumers(v);
            !readers.is_empty() && readers.iter().all(|(r, _)| nodes.contains(r))
        });
        if op.op_type() == "Constant" && feeds_norm_only {
            nodes.insert(n);
        }
    }
    nodes
}

#[test]
fn a_norm_rewrite_is_its_norm_nodes_out_and_its_new_nodes_in() {
    for &(fixture, pass) in REWRITES {
        let (original, model) = rewritten(fixture, pass);
        let d = diff(&original.graph, &model.graph);
        let (before, after) = (norm_nodes(&original), norm_nodes(&model));
        assert!(!d.removed.is_empty(), "{fixture}: {pass} changed nothing");
        // Exactly the norms' nodes, on both sides.
        let removed: HashSet<_> = d.removed_ops.iter().copied().collect();
        let added: HashSet<_> = d.added_ops.iter().copied().collect();
        assert_eq!(removed, before, "{fixture}:\n{}", d.to_text());
        assert_eq!(added, after, "{fixture}:\n{}", d.to_text());
        assert!(d.rewired.is_empty(), "{fixture}:\n{}", d.to_text());
        insta::assert_snapshot!(format!("{fixture}.{pass}"), d.to_text());
    }
}

/// `proto` with every value and node renamed and the nodes in reverse order.
fn renamed_and_reordered(proto: &ModelProto) -> ModelProto {
    let mut p = proto.clone();
    let g: &mut GraphProto = p.graph.as_mut().unwrap();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut rename = |n: &mut String| {
        if n.is_empty() {
            return;
        }
        let next = format!("v{}", names.len());
        *n = names.entry(n.clone()).or_insert(next).clone();
    };
    for (i, node) in g.node.iter_mut().enumerate() {
        node.name = Some(format!("node{i}"));
        node.input.iter_mut().for_each(&mut rename);
        node.output.iter_mut().for_each(&mut rename);
    }
    for vi in g
        .input
        .iter_mut()
        .chain(&mut g.output)
        .chain(&mut g.value_info)
    {
        rename(vi.name.get_or_insert_default());
    }
    for t in &mut g.initializer {
        rename(t.name.get_or_insert_default());
    }
    g.node.reverse();
    g.initializer.reverse();
    p
}

#[test]
fn renaming_and_reordering_every_node_leaves_an_empty_diff() {
    for fixture in FIXTURES {
        let path = fixture_model(fixture);
        let model = normshift::io::load(&path).unwrap();
        let proto = renamed_and_reordered(&model.to_proto().unwrap());
        let other = normshift::io::load_bytes(
            proto.encode_to_vec().into(),
            "renamed.onnx".as_ref(),
            path.parent().unwrap(),
        )
        .unwrap();
        assert_ne!(
            other.to_text(Default::default()),
            model.to_text(Default::default())
        );
        let d = diff(&model.graph, &other.graph);
        assert!(d.is_empty(), "{fixture}:\n{}", d.to_text());
        assert_eq!(d.unchanged, model.graph.op_count(), "{fixture}");
    }
}

#[test]
fn the_command_prints_the_diff_and_exits_1_when_the_graphs_differ() {
    let dir = tempfile::tempdir().unwrap();
    let fused = dir.path().join("fused.onnx");
    let original = fixture_model("llama_rms.opset14");
    let out = normshift(&[
        "convert",
        original.to_str().unwrap(),
        "-o",
        fused.to_str().unwrap(),
        "--passes",
        "fuse-rmsnorm",
        "--no-verify",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let o = normshift(&[
        "diff",
        original.to_str().unwrap(),
        fused.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["same"], false);
    let added = report["added"].as_array().unwrap();
    assert!(!added.is_empty());
    assert!(
        added
            .iter()
            .all(|l| l.as_str().unwrap().contains("RMSNormalization")),
        "{report}"
    );
    let o = normshift(&[
        "diff",
        original.to_str().unwrap(),
        original.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("ops unchanged\n"), "{}", stdout(&o));
}

/// The passes that move constants or skips rather than norms, on every fixture they change: the diff is what a
/// reviewer reads, one snapshot per fixture and pass (rustc's MIR tests keep one per test and pass).
const MOVES: &[(&str, &str)] = &[
    ("gpt2_pre.opset17", "fold-norm-affine"),
    ("llama_rms.opset17", "fold-norm-affine"),
    ("neox_parallel.opset17", "fold-norm-affine"),
    ("gemma2_peri.opset17", "fold-norm-affine"),
    ("gpt2_pre.opset17", "layernorm-to-rmsnorm"),
    ("neox_parallel.opset17", "layernorm-to-rmsnorm"),
    ("bert_post.opset17", "post-to-pre"),
    ("deepnorm_post.opset17", "post-to-pre"),
    ("gpt2_pre.opset17", "pre-to-post"),
    ("llama_rms.opset17", "pre-to-post"),
];

#[test]
fn every_move_of_constants_or_skips_is_snapshotted_as_its_diff() {
    for &(fixture, pass) in MOVES {
        let (original, model) = rewritten(fixture, pass);
        let d = diff(&original.graph, &model.graph);
        assert!(!d.to_text().is_empty(), "{fixture}: {pass} changed nothing");
        insta::assert_snapshot!(format!("{fixture}.{pass}"), d.to_text());
    }
}
