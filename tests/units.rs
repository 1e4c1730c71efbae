//! Verification unit by unit: it agrees with whole-model verification, names the unit a broken rewrite broke,
//! and `extract` cuts models into pieces that compute what the whole model computes.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use normshift::Model;
use normshift::analysis::analyze;
use normshift::ir::index::GraphIndex;
use normshift::passes::{PipelineOptions, run_pipeline};
use normshift::runtime::{Named, RuntimeKind};
use normshift::verify::{
    InputSet, InputSource, Judge, ModelRef, RuntimeChoice, Tolerance, VerifyBy, VerifyReport, cuts,
    input_sets, run_sets,
};

/// A fixture of each placement, and an exact pass that rewrites it.
const CASES: &[(&str, &str)] = &[
    ("bert_post.opset14", "fuse-layernorm"),
    ("gpt2_pre.opset14", "fuse-layernorm"),
    ("llama_rms.opset14", "fuse-rmsnorm"),
    ("gemma2_peri.opset17", "fuse-rmsnorm"),
    ("olmo2_out.opset17", "fuse-rmsnorm"),
    ("neox_parallel.opset17", "unfuse-norms"),
    ("deepnorm_post.opset17", "unfuse-norms"),
    ("t5_encdec.opset17", "fuse-rmsnorm"),
];

fn rewritten(fixture: &str, pass: &str) -> (PathBuf, Model, Model) {
    let path = fixture_model(fixture);
    let original = normshift::io::load(&path).expect("fixture loads");
    let mut model = original.clone();
    let runs = run_pipeline(&mut model, &[pass.to_string()], &PipelineOptions::default())
        .expect("the pass runs");
    assert!(runs[0].changes > 0, "{fixture}: {pass} changed nothing");
    (path, original, model)
}

fn check(path: &Path, original: &Model, candidate: &Model, by: VerifyBy) -> VerifyReport {
    let reference = ModelRef::loaded(original, path);
    let label = PathBuf::from("rewritten.onnx");
    let candidate = ModelRef {
        model: candidate,
        dir: reference.dir,
        label: &label,
    };
    Judge::new(
        reference,
        &InputSource::default(),
        Tolerance::default(),
        RuntimeChoice::Only(RuntimeKind::Tract),
    )
    .expect("inputs are made")
    .by(by, true)
    .check(&candidate)
    .expect("both models run")
}

fn unit_count(model: &Model) -> usize {
    analyze(&GraphIndex::new(&model.graph)).unit_count
}

#[test]
fn whole_and_unit_by_unit_verification_agree() {
    for &(fixture, pass) in CASES {
        let (path, original, model) = rewritten(fixture, pass);
        let whole = check(&path, &original, &model, VerifyBy::Model);
        let units = check(&path, &original, &model, VerifyBy::Unit);
        assert!(whole.ok && units.ok, "{fixture}: {whole:?}\n{units:?}");
        assert_eq!(whole.verified_by, VerifyBy::Model);
        assert_eq!(units.verified_by, VerifyBy::Unit);
        // The same outputs, figures within rounding.
        for (w, u) in whole.runs.iter().zip(&units.runs) {
            assert_eq!(w.outputs.len(), u.outputs.len(), "{fixture}");
            for (a, b) in w.outputs.iter().zip(&u.outputs) {
                assert_eq!(a.name, b.name, "{fixture}");
                assert!(
                    (a.max_abs - b.max_abs).abs() <= 1e-5 && (a.rel_l2 - b.rel_l2).abs() <= 1e-6,
                    "{fixture}: {a:?} against {b:?}"
                );
            }
        }
        // A row per unit and one for the prologue, in both; an own error per unit when run unit by unit.
        let n = unit_count(&original);
        assert_eq!(units.units.len(), n + 1, "{fixture}: {:?}", units.units);
        let labels = |r: &VerifyReport| -> Vec<String> {
            r.units.iter().map(|u| u.segment.clone()).collect()
        };
        assert_eq!(labels(&whole), labels(&units), "{fixture}");
        assert_eq!(units.units[0].segment, "prologue");
        assert_eq!(units.units[n].segment, format!("unit {}", n - 1));
        assert!(
            units.units[1..].iter().all(|r| r.own.is_some()),
            "{fixture}"
        );
        assert!(whole.units.iter().all(|r| r.own.is_none()), "{fixture}");
    }
}

/// Multiplies the scale of the first norm of unit `k` by 1.1, in place: a rewrite that broke that unit.
fn break_unit(model: &mut Model, k: usize) -> String {
    let ix = GraphIndex::new(&model.graph);
    let a = analyze(&ix);
    let norm = a
        .norms
        .iter()
        .find(|n| n.unit == Some(k) && n.norm.scale.is_some())
        .expect("unit k has a scaled norm");
    let scale = norm.norm.scale.as_ref().unwrap().value;
    let name = model.graph.value(norm.norm.output).name.clone();
    let tensor = model
        .graph
        .tensors
        .get_mut(&scale)
        .expect("the scale is an initializer");
    let t = &mut tensor.proto;
    if !t.float_data.is_empty() {
        t.float_data.iter_mut().for_each(|x| *x *= 1.1);
    } else {
        let raw: Vec<u8> = tensor
            .external
            .take()
            .or(t.raw_data.take())
            .expect("raw data")
            .chunks(4)
            .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * 1.1).to_le_bytes())
            .collect();
        t.raw_data = Some(raw.into());
        t.external_data.clear();
        t.data_location = None;
    }
    name
}

#[test]
fn a_broken_unit_is_named_and_only_its_own_error_is_off() {
    for (fixture, pass, k) in [
        ("bert_post.opset14", "fuse-layernorm", 1),
        ("gpt2_pre.opset14", "fuse-layernorm", 2),
        ("neox_parallel.opset17", "unfuse-norms", 1),
        // The decoder's cross-attention unit, which reads the encoder's output across the cuts.
        ("t5_encdec.opset17", "fuse-rmsnorm", 4),
    ] {
        let (path, original, mut model) = rewritten(fixture, pass);
        let norm = break_unit(&mut model, k);
        let report = check(&path, &original, &model, VerifyBy::Unit);
        assert!(!report.ok, "{fixture}: the outputs differ");
        let unit = format!("unit {k}");
        assert_eq!(
            report.first_differing.as_deref(),
            Some(unit.as_str()),
            "{fixture} ({norm}): {:?}",
            report.units
        );
        for row in &report.units[1..] {
            let own = row.own.expect("own error measured");
            assert_eq!(
                own.ok,
                row.segment != unit,
                "{fixture}: {} {:?}",
                row.segment,
                row
            );
        }
        // The error accumulates from unit k on: every later row differs as well.
        let at = report.units.iter().position(|r| r.segment == unit).unwrap();
        assert!(report.units[..at].iter().all(|r| r.accumulated.ok));
        assert!(report.units[at..].iter().all(|r| !r.accumulated.ok));
        // Whole-model verification agrees on the verdict and on where the stream first differs.
        let whole = check(&path, &original, &model, VerifyBy::Model);
        assert!(!whole.ok);
        assert_eq!(whole.first_differing, report.first_differing, "{fixture}");
    }
}

#[test]
fn bisect_names_the_unit_and_the_node_a_broken_rewrite_broke() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, pass, k) in [
        ("bert_post.opset14", "fuse-layernorm", 2),
        ("gpt2_pre.opset14", "fuse-layernorm", 1),
        ("neox_parallel.opset17", "unfuse-norms", 1),
        ("t5_encdec.opset17", "fuse-rmsnorm", 4),
    ] {
        let (path, _, mut model) = rewritten(fixture, pass);
        let norm = break_unit(&mut model, k);
        let broken = dir.path().join(format!("{fixture}.onnx"));
        normshift::io::save(&model, &broken, &Default::default()).unwrap();
        let out = normshift(&[
            "verify",
            path.to_str().unwrap(),
            broken.to_str().unwrap(),
            "--bisect",
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1), "{fixture}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let b = &report["bisection"];
        assert_eq!(b["segment"], format!("unit {k}"), "{fixture}: {report}");
        assert_eq!(b["original_value"], norm.as_str(), "{fixture}: {b}");
        let node = b["rewritten_node"].as_str().unwrap();
        assert!(node.starts_with(&format!("{norm} = ")), "{fixture}: {node}");
        assert!(!b["figures"]["ok"].as_bool().unwrap());

        let text = normshift(&[
            "verify",
            path.to_str().unwrap(),
            broken.to_str().unwrap(),
            "--bisect",
        ]);
        let text = stdout(&text);
        assert!(text.contains(&format!("bisect: in unit {k}")), "{text}");
        assert!(text.contains(&format!("second model: {norm} = ")), "{text}");
    }
}

#[test]
fn verify_prints_a_row_per_unit_and_reports_them_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let fused = dir.path().join("fused.onnx");
    let original = fixture_model("gpt2_pre.opset14");
    let out = normshift(&[
        "convert",
        original.to_str().unwrap(),
        "-o",
        fused.to_str().unwrap(),
        "--passes",
        "fuse-layernorm",
        "--verify-by",
        "unit",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let v = &report["verification"];
    assert_eq!(v["verified_by"], "unit");
    let rows = v["units"].as_array().unwrap();
    assert_eq!(rows.len(), 5, "prologue and four units: {v}");
    assert!(rows[1]["own"]["cosine"].as_f64().unwrap() > 0.999_999);

    let out = normshift(&[
        "verify",
        original.to_str().unwrap(),
        fused.to_str().unwrap(),
        "--verify-by",
        "unit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("per unit"), "{text}");
    for segment in ["prologue", "unit 0", "unit 3"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(segment)),
            "{segment}: {text}"
        );
    }
}

/// `model` with `names` as extra outputs.
fn with_outputs(model: &Model, names: &[String]) -> Model {
    let mut m = model.clone();
    for n in names {
        let id = m.graph.value_id(n).unwrap();
        if !m.graph.outputs.contains(&id) {
            m.graph.outputs.push(id);
        }
    }
    m
}

fn run(model: &Model, dir: &Path, sets: &[InputSet]) -> Vec<Vec<Named>> {
    let label = PathBuf::from("m.onnx");
    let at = ModelRef {
        model,
        dir,
        label: &label,
    };
    run_sets(RuntimeKind::Tract, &at, sets).expect("runs")
}

fn official_check(path: &Path) {
    // The official checker, when the tests are given a Python with onnx (CI sets PYTHON).
    let Ok(python) = std::env::var("PYTHON") else {
        return;
    };
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
}

#[test]
fn extracts_at_every_unit_boundary_reproduce_the_values_of_the_whole_model() {
    for &(fixture, _) in CASES {
        let path = fixture_model(fixture);
        let model = normshift::io::load(&path).unwrap();
        let cuts: Vec<String> = cuts(&model).into_iter().map(|c| c.value).collect();
        assert_eq!(cuts.len(), unit_count(&model) + 1, "{fixture}");
        let sets = input_sets(&model, &InputSource::default()).unwrap();
        let whole = run(&with_outputs(&model, &cuts), path.parent().unwrap(), &sets);
        let value = |set: usize, name: &str| {
            whole[set]
                .iter()
                .find(|n| n.name == name)
                .unwrap()
                .tensor
                .clone()
        };
        let dir = tempfile::tempdir().unwrap();
        for (i, pair) in cuts.windows(2).enumerate() {
            let out = dir.path().join(format!("unit{i}.onnx"));
            let o = normshift(&[
                "extract",
                path.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--from",
                &pair[0],
                "--to",
                &pair[1],
                "--json",
            ]);
            assert!(o.status.success(), "{fixture}: {}", stderr(&o));
            let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
            assert_eq!(report["added_inputs"][0], pair[0].as_str());
            assert_eq!(report["untyped"].as_array().unwrap().len(), 0, "{report}");
            official_check(&out);
            let part = normshift::io::load(&out).unwrap();
            let g = &part.graph;
            // The cut value, and whatever graph inputs the unit also reads (masks), from the whole run.
            let part_sets: Vec<InputSet> = (0..sets.len())
                .map(|s| InputSet {
                    label: format!("set {s}"),
                    inputs: g
                        .runtime_inputs()
                        .map(|v| {
                            let name = g.value(v).name.clone();
                            let tensor = sets[s]
                                .inputs
                                .iter()
                                .find(|n| n.name == name)
                                .map(|n| n.tensor.clone())
                                .unwrap_or_else(|| value(s, &name));
                            Named { name, tensor }
                        })
                        .collect(),
                })
                .collect();
            let got = run(&part, dir.path(), &part_sets);
            for (s, outs) in got.iter().enumerate() {
                let c = normshift::verify::compare(
                    &pair[1],
                    &outs[0].tensor,
                    &value(s, &pair[1]),
                    Tolerance {
                        rtol: 0.0,
                        atol: 1e-6,
                        ..Default::default()
                    },
                );
                assert!(c.ok, "{fixture} {}: {c:?}", pair[1]);
            }
        }
    }
}

#[test]
fn extract_names_a_value_the_model_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");
    let o = normshift(&[
        "extract",
        fixture_model("bert_post.opset14").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--to",
        "no_such_value",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no value named `no_such_value`"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}
