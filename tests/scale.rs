//! A graph of a million nodes: a Post-LN stack of 76 924 units (13 nodes each: a decomposed LayerNorm of 9, a
//! branch of 3, the residual Add) plus the embedding norm. Nothing may recurse per node (the stack would
//! overflow) or compare every node with every other (it would not finish): `analyze` finds every unit and
//! `convert --passes fuse-layernorm` fuses every norm. How the time grows with size is a benchmark in docs/reliability.md
//! (`tests/bench_scale.sh`), not a timed test.

mod common;

use common::forms::LN;
use common::stacks::{NormSpec, Placement, StackSpec, UnitSpec, residual_stack};
use common::*;

pub const UNITS: usize = 76_924;

fn deep_stack(units: usize) -> Vec<u8> {
    let hidden = 4;
    let norm = NormSpec {
        form: LN,
        eps: 1e-5,
        gamma: vec![1.0; hidden],
        beta: vec![0.0; hidden],
    };
    let unit = UnitSpec {
        norm: norm.clone(),
        w1: vec![0.1; hidden * hidden],
        w2: vec![0.1; hidden * hidden],
    };
    residual_stack(&StackSpec {
        placement: Placement::Post,
        hidden,
        seq: 2,
        units: vec![unit; units],
        outer: norm,
        opset: 17,
        shared_parameters: true,
    })
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("JSON on stdout")
}

#[test]
#[ignore = "a million nodes takes minutes in a debug build: .ci/run runs it with --release"]
fn a_million_node_graph_is_analyzed_and_fused() {
    analyze_and_fuse(UNITS);
}

/// The same at 5 000 units (65 014 nodes), on every `cargo test`.
#[test]
fn a_deep_graph_is_analyzed_and_fused() {
    analyze_and_fuse(5_000);
}

fn analyze_and_fuse(units: usize) {
    let (dir, input) = temp_model(&deep_stack(units), "deep.onnx");
    let a = json(&normshift(&["analyze", input.to_str().unwrap(), "--json"]));
    assert_eq!(a["placement"], "post");
    assert_eq!(a["unit_count"], units);
    assert_eq!(a["norm_count"], units + 1);

    let output = dir.path().join("fused.onnx");
    let o = normshift(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--passes",
        "fuse-layernorm",
        "--no-verify",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = json(&normshift(&["inspect", output.to_str().unwrap(), "--json"]));
    assert_eq!(
        s["ops"]["LayerNormalization"],
        units + 1,
        "every norm fused: {}",
        s["ops"]
    );
}

/// For `tests/bench_scale.sh`: writes the stack of `NORMSHIFT_UNITS` units to `NORMSHIFT_OUT`.
#[test]
#[ignore]
fn write_deep_stack() {
    let units = std::env::var("NORMSHIFT_UNITS")
        .ok()
        .and_then(|u| u.parse().ok())
        .unwrap_or(UNITS);
    let out = std::env::var("NORMSHIFT_OUT").expect("NORMSHIFT_OUT names the file to write");
    std::fs::write(out, deep_stack(units)).expect("writing the stack");
}
